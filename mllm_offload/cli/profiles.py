"""``mllm-offload profiles``: the synthetic profiles and the sources of their figures."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    pr = sub.add_parser("profiles", help="list synthetic profiles and their sources")
    pr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..traces.synth import PROFILES

    for p in PROFILES.values():
        print(f"{p.name}: {p.description}")
        for k, v in p.sources.items():
            print(f"    {k}: {v}")
    return 0
