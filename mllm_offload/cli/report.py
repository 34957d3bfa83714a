"""``mllm-offload report``: accuracy by difficulty, edge-confidence AUROC and MAS correlations of a
recorded trace."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    rp = sub.add_parser("report", help="accuracy by difficulty, edge confidence AUROC and MAS correlations of a recorded trace",
                        description="Figures of a trace with both outcomes (see mllm_offload.traces.analysis).")
    rp.add_argument("--trace", required=True, type=Path, help="trace file, log folder or embedded name (shapes-real)")
    rp.add_argument("--json", type=Path, help="also write the figures as JSON")
    rp.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..trace_format import load_trace
    from ..traces.analysis import format_report, trace_report

    rep = trace_report(load_trace(args.trace))
    print(f"{args.trace}: {rep.get('records', 0)} records with both outcomes")
    print(format_report(rep))
    if args.json is not None:
        atomic_write_json(args.json, rep)
    return 0 if rep.get("records") else 2
