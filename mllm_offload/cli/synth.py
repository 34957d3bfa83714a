"""``mllm-offload synth``: draw requests from a synthetic profile and write them as a trace."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._parser import positive_int


def add_parser(sub: Any) -> None:
    sy = sub.add_parser("synth", help="write a synthetic request trace", description="Draw requests from a profile and write them as a JSONL trace.")
    sy.add_argument("--profile", default="mobile-3g", help="profile name [mobile-3g]")
    sy.add_argument("--requests", type=positive_int, default=2000, help="requests [2000]")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")
    sy.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..traces.synth import generate

    trace = generate(args.profile, args.requests, args.seed, with_records=True)
    trace.write_jsonl(args.out)
    print(f"wrote {len(trace)} requests of profile {args.profile} to {args.out}")
    return 0
