"""``mllm-offload synth``, ``profiles`` and ``report``: synthetic traces, their profiles, and the
figures of a recorded trace."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import positive_int


def add_parser(sub: Any) -> None:
    sy = sub.add_parser("synth", help="write a synthetic request trace", description="Draw requests from a profile and write them as a JSONL trace.")
    sy.add_argument("--profile", default="mobile-3g", help="profile name [mobile-3g]")
    sy.add_argument("--requests", type=positive_int, default=2000, help="requests [2000]")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")
    sy.set_defaults(handler=run_synth)

    pr = sub.add_parser("profiles", help="list synthetic profiles and their sources")
    pr.set_defaults(handler=run_profiles)

    rp = sub.add_parser("report", help="accuracy by difficulty, edge confidence AUROC and MAS correlations of a recorded trace",
                        description="Figures of a trace with both outcomes (see mllm_offload.traces.analysis).")
    rp.add_argument("--trace", required=True, type=Path, help="trace file, log folder or embedded name (shapes-real)")
    rp.add_argument("--json", type=Path, help="also write the figures as JSON")
    rp.set_defaults(handler=run_report)


def run_synth(args: argparse.Namespace) -> int:
    from ..traces.synth import generate

    trace = generate(args.profile, args.requests, args.seed, with_records=True)
    trace.write_jsonl(args.out)
    print(f"wrote {len(trace)} requests of profile {args.profile} to {args.out}")
    return 0


def run_profiles(args: argparse.Namespace) -> int:
    from ..traces.synth import PROFILES

    for p in PROFILES.values():
        print(f"{p.name}: {p.description}")
        for k, v in p.sources.items():
            print(f"    {k}: {v}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text
    from ..trace_format import load_trace
    from ..traces.analysis import format_report, trace_report

    rep = trace_report(load_trace(args.trace))
    print(f"{args.trace}: {rep.get('records', 0)} records with both outcomes")
    print(format_report(rep))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(rep, indent=2))
    return 0 if rep.get("records") else 2
