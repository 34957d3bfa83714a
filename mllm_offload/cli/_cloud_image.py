"""The cloud model's image input size on the command line (``route`` and ``record``):
``--cloud-image-size N``, ``--cloud-image-pixels P`` or ``--cloud-image-family NAME``; by default
read from a local ``--cloud`` folder's processor config."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserInputError
from ._parser import int_at_least

__all__ = ["add_cloud_image_args", "cloud_image_spec"]


def add_cloud_image_args(p: argparse.ArgumentParser) -> None:
    """The three mutually exclusive flags that say what the cloud model's image processor consumes."""
    from ..mllm_backends.upload_plan import FAMILIES

    g = p.add_argument_group("cloud image input (for the model_res and reduced image plans)").add_mutually_exclusive_group()
    g.add_argument("--cloud-image-size", type=int_at_least(8), metavar="N",
                   help="the cloud model takes images of N px a side (CLIP/SigLIP towers: shortest side to N, centre crop; "
                   "e.g. 336 for LLaVA-1.5) [read from a local --cloud folder's processor config; unknown for a URL: images sent whole]")
    g.add_argument("--cloud-image-pixels", type=int_at_least(784), metavar="P",
                   help="the cloud model takes at most P pixels per image on a 28 px grid (Qwen2-VL class max_pixels, "
                   "e.g. 1003520 = 1280 x 28^2)")
    g.add_argument("--cloud-image-family", metavar="NAME",
                   help=f"the defaults of a known model family: {', '.join(FAMILIES)} (sources in docs/deployment.md)")


def cloud_image_spec(args: argparse.Namespace, cloud: str, strict: bool = True) -> Any:
    """The :class:`~mllm_offload.mllm_backends.upload_plan.CloudImageSpec` the flags name, else
    the one a local ``cloud`` folder's processor config gives, else ``None`` (an HTTP cloud whose
    input size nobody gave). Errors are one line naming the flag or file; a local folder whose
    config says no size is an error only when ``strict`` (else ``None``)."""
    from ..mllm_backends.upload_plan import CloudImageSpec

    if args.cloud_image_size is not None:
        return CloudImageSpec.side(args.cloud_image_size, f"--cloud-image-size {args.cloud_image_size}")
    if args.cloud_image_pixels is not None:
        return CloudImageSpec.pixels(args.cloud_image_pixels, source=f"--cloud-image-pixels {args.cloud_image_pixels}")
    if args.cloud_image_family is not None:
        try:
            return CloudImageSpec.family(args.cloud_image_family)
        except UserInputError as e:
            raise UserInputError(f"--cloud-image-family: {e}") from None
    if cloud.startswith(("http://", "https://")):
        return None
    try:
        return CloudImageSpec.from_model_dir(cloud)
    except UserInputError:
        if strict:
            raise
        return None
