"""``mllm-offload export``: a training run as a deployable policy artifact."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._parser import nonnegative_int


def add_parser(sub: Any) -> None:
    ex = sub.add_parser("export", help="export a training run as a deployable policy artifact",
                        description="Write policy.json + policy.npz + policy.onnx from RUN_DIR (after a parity check against SB3). "
                        "This unpickles RUN_DIR's SB3 model.zip: export only run folders you trust. The artifact written "
                        "holds no pickle; policy.json carries a digest of its content (and an HMAC with a key).")
    ex.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a training run folder (its model.zip is unpickled: only one you trust)")
    ex.add_argument("--out", type=Path, help="artifact folder [RUN_DIR/policy]")
    ex.add_argument("--which", choices=["best", "final"], help="best validated model or the last one [best]")
    ex.add_argument("--step", type=nonnegative_int, metavar="STEPS",
                    help="instead of --which: the model validated at STEPS, kept in RUN_DIR/evals/ by 'train --keep-evaluations' "
                    "[--out: RUN_DIR/evals/STEPS/policy]")
    ex.add_argument("--no-onnx", action="store_true", help="skip policy.onnx (numpy backend only)")
    ex.add_argument("--hmac-key-env", metavar="NAME",
                    help="sign policy.json with an HMAC keyed by the environment variable NAME; loading then needs the same key "
                    "in MLLM_OFFLOAD_POLICY_KEY [sign with MLLM_OFFLOAD_POLICY_KEY when it is set]")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..agents.export import export_run
    from ..errors import UserInputError

    key = None
    if args.hmac_key_env is not None:
        key = os.environ.get(args.hmac_key_env)
        if not key:
            raise UserInputError(f"--hmac-key-env {args.hmac_key_env}: that environment variable is not set or empty")
    if args.step is not None and args.which is not None:
        raise UserInputError("--step: a kept model instead of --which; give one of them")
    which = args.which or "best"
    out = export_run(args.run_dir, args.out, which=which, with_onnx=not args.no_onnx, key=key, step=args.step)
    what = f"the model validated at step {args.step}" if args.step is not None else f"{which} model"
    print(f"exported {what} of {args.run_dir} to {out}")
    return 0
