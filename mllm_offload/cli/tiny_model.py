"""``mllm-offload tiny-model``: a tiny random-weight VLM checkpoint for tests and demos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._servers import add_verbose_arg, library_output


def add_parser(sub: Any) -> None:
    tm = sub.add_parser("tiny-model", help="write a tiny random-weight VLM checkpoint (for tests and demos)",
                        description="Build a small LLaVA (CLIP vision tower + Llama text model) with an offline tokenizer and processor; "
                        "it loads with AutoProcessor + AutoModelForImageTextToText like any checkpoint.")
    tm.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    tm.add_argument("--seed", type=int, default=0, help="weight seed [0]")
    add_verbose_arg(tm)
    tm.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..shapes.tiny import build_tiny_vlm

    with library_output(args.verbose):
        model = build_tiny_vlm(args.out, seed=args.seed)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({n:,} parameters, seed {args.seed})")
    print("note: random weights, never trained: its answers are noise; for tests and demos of the plumbing only")
    return 0
