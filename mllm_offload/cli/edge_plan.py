"""``mllm-offload edge-plan``: split a VLM over several edge devices; the planner against the uniform split.

Prints, for the planner (AdaptLink-style: least slowest stage subject to memory) and for the
uniform split (equal numbers of blocks per device): the blocks per device, the stage times, the
memory used and available, the pipeline throughput and the ratio; then, for the planner's plan,
where each stage's backup sits and what losing each device costs with and without it.
``--json F`` writes the same (SI units) atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._parser import positive_int

_EPILOG = ("--model-config: a model folder holding config.json, a config.json path, or a shipped name (qwen2-vl-2b, qwen2.5-vl-3b, "
           "llava-1.5-7b). --devices: a devices.yaml, a cluster preset (home-4, jetson-3) or device presets separated by commas "
           "(phone, tablet, laptop-rtx4060, jetson-orin-nano, jetson-orin-nano-super, jetson-agx-orin, rpi5); "
           "--list-presets prints every preset with its sources.")


def _image_px(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return w, h


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def add_parser(sub: Any) -> None:
    ep = sub.add_parser("edge-plan", help="split a VLM over several edge devices: planner vs uniform split",
                        description="Partition a vision-language model into contiguous sub-blocks over an ordered list of edge devices, "
                        "minimising the slowest pipeline stage subject to each device's memory, and compare with the uniform split.",
                        epilog=_EPILOG)
    ep.add_argument("--model-config", metavar="DIR_OR_CONFIG", help="model folder, config.json, or shipped config name")
    ep.add_argument("--devices", metavar="FILE_OR_PRESETS", help="devices.yaml, cluster preset, or PRESET[,PRESET...] in pipeline order")
    ep.add_argument("--tokens", type=positive_int, metavar="N", help="LM tokens per request, image tokens included [image tokens + 64]")
    ep.add_argument("--images", type=int, choices=range(0, 9), default=1, metavar="N", help="images per request, 0-8 [1]")
    ep.add_argument("--image-px", type=_image_px, default=(640, 480), metavar="WxH", help="image size for Qwen-class models [640x480]")
    ep.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "int8", "int4"], help="weight dtype [the config's]")
    ep.add_argument("--detect-s", type=_seconds, default=None, metavar="S", help="seconds to detect a dropped device [0.3]")
    ep.add_argument("--json", type=Path, metavar="F", help="write the plans, backups and dropout costs as JSON")
    ep.add_argument("--list-presets", action="store_true", help="print the device and cluster presets with their sources, then exit")
    ep.set_defaults(handler=run)


def _list_presets() -> int:
    from ..edge_tier import CLUSTERS, PRESETS

    for d in PRESETS.values():
        print(f"{d.name}: {d.description}; {d.flops_per_s / 1e12:.2f} TFLOP/s, {d.memory_bytes / 1e9:.1f} GB, {d.link_mbps:.0f} Mbps, "
              f"{d.link_latency_s * 1e3:.2f} ms")
        for k, v in d.sources.items():
            print(f"    {k}: {v}")
    for name, devices in CLUSTERS.items():
        print(f"cluster {name}: {', '.join(devices)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from .._io import atomic_write_text, json_text
    from ..edge_tier import DETECT_S, compare_plans, comparison_dict, format_comparison, load_model_config, resolve_devices
    from ..errors import UserInputError

    if args.list_presets:
        return _list_presets()
    missing = [f for f, v in (("--model-config", args.model_config), ("--devices", args.devices)) if not v]
    if missing:
        raise UserInputError(f"the following arguments are required: {', '.join(missing)}")
    model = load_model_config(args.model_config, weight_dtype=args.dtype, image_px=args.image_px)
    cluster = resolve_devices(args.devices)
    costs = model.costs(args.tokens, images=args.images)
    detect_s = DETECT_S if args.detect_s is None else args.detect_s
    comp = compare_plans(costs, cluster, detect_s=detect_s)
    data = comparison_dict(model, costs, cluster, comp, detect_s)
    if args.json:
        atomic_write_text(args.json, json_text(data, indent=2) + "\n")
    print(format_comparison(model, costs, cluster, comp, detect_s))
    if args.json:
        print(f"wrote {args.json}")
    return 0
