"""``mllm-offload shapes``: the procedural shapes VQA demo (write a dataset, train the edge/cloud
VLM pair on CPU)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ._common import progress
from ._parser import nonnegative_int, positive_int
from ._servers import add_verbose_arg, library_output

#: fewer optimizer steps than this for a preset make ``shapes train`` a smoke run (its report says so)
SMOKE_STEPS = 100


def add_parser(sub: Any) -> None:
    sh = sub.add_parser("shapes", help="procedural shapes VQA: write a dataset, train the edge/cloud VLM pair",
                        description="Shapes VQA: drawn scenes with exact-answer questions, and two real VLMs trained on them on CPU.")
    shs = sh.add_subparsers(dest="shapes_command", required=True, metavar="{generate,train}")
    sg = shs.add_parser("generate", help="write a shapes VQA dataset (JSONL + PNG/WAV media)",
                        description="Write OUT/shapes.jsonl (the generic jsonl dataset format) and OUT/media/.")
    sg.add_argument("--out", type=Path, required=True, help="output folder")
    sg.add_argument("--n", type=positive_int, default=3000, help="items [3000]")
    sg.add_argument("--seed", type=int, default=0, help="item stream [0]; the models train on stream seed+1000")
    sg.add_argument("--size", type=positive_int, default=224, help="canvas side, pixels [224]")
    sg.add_argument("--video-share", type=float, default=0.05, help="share of items that are short videos [0.05]")
    sg.add_argument("--audio-share", type=float, default=0.05, help="share of items with an audio clip [0.05]")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    st = shs.add_parser("train", help="train the edge and cloud shapes VLMs on CPU and report accuracy by difficulty",
                        description="Train OUT/edge and OUT/cloud (transformers LLaVA checkpoints) from scratch, deterministically by seed; "
                        "write OUT/train_report.json.")
    st.add_argument("--out", type=Path, required=True, help="output folder (OUT/edge, OUT/cloud)")
    st.add_argument("--which", default="edge,cloud", help="presets to train [edge,cloud]")
    st.add_argument("--seed", type=int, default=0, help="weights, batch order and training scenes [0]")
    st.add_argument("--scenes", type=positive_int, default=5000, help="training scenes, a caption and 3 questions each [5000]")
    st.add_argument("--edge-steps", type=positive_int, help="optimizer steps of the edge model [preset: 4000]")
    st.add_argument("--cloud-steps", type=positive_int, help="optimizer steps of the cloud model [preset: 5400]")
    st.add_argument("--edge-vision-steps", type=nonnegative_int,
                    help="vision-tower pretraining steps of the edge model before those; 0: none [preset: 1200]")
    st.add_argument("--cloud-vision-steps", type=nonnegative_int,
                    help="vision-tower pretraining steps of the cloud model before those; 0: none [preset: 800]")
    st.add_argument("--eval", type=int, default=600, help="held-out items of `generate`'s stream 0 for the accuracy table; 0: none [600]")
    st.add_argument("--jobs", type=positive_int, help="presets trained side by side in worker processes [min(presets, cores)]")
    st.add_argument("--threads", type=positive_int, help="torch threads per preset [cores / jobs]")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    add_verbose_arg(st)
    sh.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.shapes_command == "generate":
        from ..shapes.vqa import write_dataset

        for flag, v in (("--video-share", args.video_share), ("--audio-share", args.audio_share)):
            if not 0.0 <= v <= 1.0:
                raise UserInputError(f"{flag}: must be in [0, 1], got {v}")
        t0 = time.perf_counter()
        path = write_dataset(args.out, args.n, seed=args.seed, size=args.size, video_share=args.video_share,
                             audio_share=args.audio_share, progress=progress("generate", args.quiet))
        print(f"wrote {args.n} items to {path} in {time.perf_counter() - t0:.1f} s; use --dataset jsonl:{path}")
        return 0

    from ..shapes.models import PRESETS, train_presets

    which = [w.strip() for w in args.which.split(",") if w.strip()]
    for w in which:
        if w not in PRESETS:
            raise UserInputError(f"--which: unknown preset {w!r} (known: {', '.join(PRESETS)})")
    if args.eval < 0:
        raise UserInputError(f"--eval: must be >= 0, got {args.eval}")
    if len(set(which)) != len(which):
        raise UserInputError(f"--which: a preset is named twice in {args.which!r}")
    import os

    jobs = args.jobs if args.jobs is not None else min(len(which), os.cpu_count() or 1)
    t0 = time.perf_counter()
    with library_output(args.verbose):
        done = train_presets(which, args.out, seed=args.seed, train_scenes=args.scenes, steps={w: getattr(args, f"{w}_steps") for w in which},
                             vision_steps={w: getattr(args, f"{w}_vision_steps") for w in which}, n_eval=args.eval, jobs=jobs, threads=args.threads,
                             # bars from two processes would overwrite each other: side by side, log lines instead
                             log_every=0 if args.quiet or jobs == 1 else 200, progress=not args.quiet and jobs == 1)
    wall = time.perf_counter() - t0
    reports = {}
    for w, rep in done.items():
        reports[w] = {"parameters": rep.parameters, "seconds": round(rep.seconds, 1), "steps": rep.steps, "vision_steps": rep.vision_steps,
                      "final_loss": round(rep.final_loss, 4), "accuracy": rep.accuracy, "accuracy_by_qtype": rep.accuracy_by_qtype}
    print(f"trained {', '.join(which)} in {wall:.0f} s wall time ({jobs} job{'s' if jobs > 1 else ''})")
    prior: dict[str, dict[str, float]] = {}
    if args.eval:
        from ..shapes.vqa import DIFFICULTIES, QUESTION_TYPES

        first = next(iter(done.values()))  # every preset trains on the same questions: one prior
        prior = {"accuracy": first.prior, "accuracy_by_qtype": first.prior_by_qtype}
        for key, cols in (("accuracy", ("all", *DIFFICULTIES)), ("accuracy_by_qtype", ("all", *QUESTION_TYPES))):
            print(f"{'accuracy on ' + str(args.eval) + ' held-out items (stream 0)':<41} | " + " | ".join(f"{c:>7}" for c in cols))
            rows = [(f"{w:<8} {r['parameters']:>10,} params, {r['seconds']:>6.0f} s", r[key]) for w, r in reports.items()]
            rows.append(("prior (question-blind majority answer)", prior[key]))
            for label, acc in rows:
                print(f"{label:<41} | " + " | ".join(f"{acc.get(c, float('nan')):7.3f}" for c in cols))
    smoke = [f"{w} {r['steps']}" for w, r in reports.items() if r["steps"] < SMOKE_STEPS]
    if smoke:
        print(f"note: a smoke run ({', '.join(smoke)} steps; presets: {', '.join(f'{w} {PRESETS[w].steps}' for w in reports)}): "
              "barely trained models, their accuracy is not meaningful")
    from .._io import atomic_write_text, json_text

    atomic_write_text(args.out / "train_report.json", json_text({"seed": args.seed, "scenes": args.scenes, "jobs": jobs, "wall_seconds": round(wall, 1), "models": reports,
                                                                    "prior": prior}, indent=2))
    return 0
