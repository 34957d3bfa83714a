"""``mllm-offload export``: a training run as a deployable policy artifact."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    ex = sub.add_parser("export", help="export a training run as a deployable policy artifact",
                        description="Write policy.json + policy.npz + policy.onnx from RUN_DIR (after a parity check against SB3).")
    ex.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ex.add_argument("--out", type=Path, help="artifact folder [RUN_DIR/policy]")
    ex.add_argument("--which", choices=["best", "final"], default="best", help="best validated model or the last one [best]")
    ex.add_argument("--no-onnx", action="store_true", help="skip policy.onnx (numpy backend only)")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..agents.export import export_run

    out = export_run(args.run_dir, args.out, which=args.which, with_onnx=not args.no_onnx)
    print(f"exported {args.which} model of {args.run_dir} to {out}")
    return 0
