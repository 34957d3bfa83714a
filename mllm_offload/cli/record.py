"""``mllm-offload record``: run both backends on a dataset and write a request trace."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ._cloud_image import add_cloud_image_args, cloud_image_spec
from ._parser import positive_int
from ._servers import add_backend_args, add_verbose_arg, backend, library_output


def add_parser(sub: Any) -> None:
    rc = sub.add_parser("record", help="record a request trace by running both backends on a dataset",
                        description="Run the edge and the cloud on every item, measure latencies and confidences, score the answers, "
                        "compute MAS, and write a trace. Resumable: a rerun skips ids already recorded.")
    add_backend_args(rc)
    rc.add_argument("--dataset", required=True, metavar="SPEC", help="vqav2:QUESTIONS.json,ANNOTATIONS.json,IMAGE_DIR | mmbench:FILE.tsv | jsonl:FILE")
    rc.add_argument("--out", type=Path, required=True, help="output trace (.jsonl or .jsonl.gz)")
    rc.add_argument("--limit", type=positive_int, help="first N items only")
    rc.add_argument("--max-new-tokens", type=positive_int, default=16, help="tokens per answer [16]")
    rc.add_argument("--edge-concurrency", type=positive_int, default=1, help="edge generations at once [1]")
    rc.add_argument("--cloud-concurrency", type=positive_int, default=4, help="cloud calls at once [4]")
    rc.add_argument("--rate", type=float, default=1.0, help="arrival rate of the recorded trace, requests/s [1.0]")
    rc.add_argument("--seed", type=int, default=0, help="seed of the arrival times [0]")
    rc.add_argument("--variants", metavar="LIST",
                    help="also run the cloud on these upload-plan variants of each item that has the modality: "
                    "model_res, reduced (images; need the cloud's image size), keyframes (video), no_audio, "
                    "comma-separated; '+' joins several into one variant (image, video, audio order) [none]")
    add_cloud_image_args(rc)
    rc.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_arg(rc)

    rc.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..recording.record import parse_variants
    from ..traces.datasets import load_dataset

    if not args.rate > 0:
        raise UserInputError(f"--rate: must be > 0, got {args.rate}")
    if args.out.suffix not in (".jsonl", ".gz"):
        raise UserInputError(f"--out {args.out}: expected a .jsonl or .jsonl.gz file")
    try:
        variants = parse_variants(args.variants) if args.variants is not None else []
    except UserInputError as e:
        raise UserInputError(f"--{e}") from None
    needs_size = any(p in ("model_res", "reduced") for v in variants for p in v.split("+"))
    cloud_image = cloud_image_spec(args, args.cloud, strict=needs_size)
    if needs_size and cloud_image is None:
        raise UserInputError(f"--variants {args.variants}: the image variants need the cloud model's image input size: give "
                             "--cloud-image-size N, --cloud-image-pixels P or --cloud-image-family NAME (a local --cloud folder's "
                             "processor config is read by default)")
    items = load_dataset(args.dataset, limit=args.limit)
    with library_output(args.verbose):
        return _record(args, items, variants, cloud_image)


def _record(args: argparse.Namespace, items: Any, variants: list[str], cloud_image: Any) -> int:
    import asyncio

    from ..recording.record import record_dataset

    edge = backend(args.edge, "edge", args, 600.0)
    cloud = backend(args.cloud, "cloud", args, args.cloud_timeout)

    async def run():
        try:
            return await record_dataset(items, edge, cloud, args.out, meta={"dataset": args.dataset, "edge_path": args.edge, "cloud_path": args.cloud},
                                        max_new_tokens=args.max_new_tokens, edge_concurrency=args.edge_concurrency,
                                        cloud_concurrency=args.cloud_concurrency, rate_rps=args.rate, seed=args.seed,
                                        timeout_s=max(args.cloud_timeout, 600.0), progress=not args.quiet, variants=variants,
                                        cloud_image=cloud_image)
        finally:
            await edge.aclose()
            await cloud.aclose()

    s = asyncio.run(run())
    print(f"wrote {args.out}: {s.recorded} new records, {s.resumed} resumed, {s.skipped} skipped, {s.seconds:.1f} s; "
          f"mean score edge {s.edge_score:.3f}, cloud {s.cloud_score:.3f}")
    return 0
