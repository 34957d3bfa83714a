"""Cheap image access for MAS: decode small (JPEG draft mode) and downscale by integer factors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError

__all__ = ["small_gray", "source_bytes"]

#: MAS looks at images with their longer side reduced to at most this many pixels.
MAX_SIDE = 256


def source_bytes(image: Any) -> bytes | None:
    """The encoded bytes of ``image`` when it is bytes or a file path, else ``None``."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        p = Path(image)
        if not p.is_file():
            raise UserInputError(f"{p}: no such image file")
        return p.read_bytes()
    return None


def small_gray(image: Any, max_side: int = MAX_SIDE, what: str = "image") -> tuple[np.ndarray, tuple[int, int]]:
    """Grayscale float32 array (0-255) with longer side <= ``max_side``, and the original (width, height).

    Accepts a PIL image, an HxW/HxWxC array, encoded bytes or a path. JPEGs are decoded at a
    reduced scale (``draft``), other images are shrunk with PIL's fast integer ``reduce``.
    """
    from PIL import Image

    raw = source_bytes(image)
    if raw is not None:
        try:
            im = Image.open(io.BytesIO(raw))
            size = im.size
            im.draft("L", (max_side, max_side))
            im = im.convert("L")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserInputError(f"{what}: not a readable image ({type(e).__name__}: {e})") from None
    elif isinstance(image, Image.Image):
        size = image.size
        im = image
    elif isinstance(image, np.ndarray):
        a = image
        if a.ndim == 3 and a.shape[2] in (3, 4):
            a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        elif a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim != 2:
            raise UserInputError(f"{what}: array of shape {image.shape} is not an HxW or HxWxC image")
        a = a.astype(np.float32)
        if a.size and a.max() <= 1.0 and image.dtype.kind == "f":
            a = a * 255.0
        f = max(1, -(-max(a.shape) // max_side))
        if f > 1:
            h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
            a = a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        return a, (image.shape[1], image.shape[0])
    else:
        raise UserInputError(f"{what}: unsupported image type {type(image).__name__}")
    f = -(-max(im.size) // max_side)
    if f > 1:
        im = im.reduce(f)
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.float32), size
