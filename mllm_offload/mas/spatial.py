"""Spatial MAS: how much of an image carries visual activity.

Computed on a grayscale copy whose longer side is at most 256 px (JPEG draft decoding or an
integer box reduction), so the cost does not grow with the camera resolution.

===================  ========  ======================================================================
feature              range     definition
===================  ========  ======================================================================
``patch_active``     [0, 1]    share of cells of a 16x16 grid whose mean gradient magnitude
                               exceeds ``ACTIVE_GRAD`` (4 grey levels per pixel);
                               ``1 - patch_active`` is the patch sparsity
``edge_density``     [0, 1]    share of pixels with gradient magnitude > ``EDGE_GRAD`` (24 levels)
``entropy``          [0, 1]    mean over the grid cells of the 16-bin grey-level entropy, / 4 bits
``jpeg_bpp``         >= 0      bits per pixel: of the source file when it is a JPEG, else of the
                               small copy encoded at quality 75
``spatial``          [0, 1]    density = 0.35 patch_active + 0.25 min(1, 4 edge_density)
                               + 0.2 entropy + 0.2 min(1, jpeg_bpp / 3)
===================  ========  ======================================================================

Flat or mostly empty images score low (sparse); cluttered, textured ones high (dense).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ._image import small_gray, source_bytes

__all__ = ["ACTIVE_GRAD", "EDGE_GRAD", "GRID", "spatial_features"]

GRID = 16
ACTIVE_GRAD = 4.0
EDGE_GRAD = 24.0
_W = {"patch_active": 0.35, "edge_density": 0.25, "entropy": 0.20, "jpeg_bpp": 0.20}


def _grid(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` cropped to a multiple of the grid and reshaped to (cells, pixels per cell)."""
    h, w = a.shape
    ch, cw = max(1, h // n), max(1, w // n)
    gh, gw = h // ch, w // cw
    a = a[: gh * ch, : gw * cw]
    return a.reshape(gh, ch, gw, cw).transpose(0, 2, 1, 3).reshape(gh * gw, ch * cw)


def spatial_features(image: Any, what: str = "image") -> dict[str, float]:
    """Spatial MAS features of one image (see the module table)."""
    g, (w0, h0) = small_gray(image, what=what)
    if g.shape[0] < 2 or g.shape[1] < 2:
        return {"patch_active": 0.0, "edge_density": 0.0, "entropy": 0.0, "jpeg_bpp": 0.0, "spatial": 0.0}
    gx = np.abs(np.diff(g, axis=1))[:-1, :]
    gy = np.abs(np.diff(g, axis=0))[:, :-1]
    mag = gx + gy
    cells = _grid(mag, GRID)
    patch_active = float((cells.mean(axis=1) > ACTIVE_GRAD).mean())
    edge_density = float((mag > EDGE_GRAD).mean())
    q = _grid(np.minimum(g[:-1, :-1] * (16.0 / 256.0), 15.0).astype(np.int64), GRID)
    counts = np.zeros((q.shape[0], 16), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(q.shape[0]), q.shape[1]), q.ravel()), 1.0)
    p = counts / q.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
    entropy = float(ent.mean() / 4.0)
    raw = source_bytes(image)
    if raw is not None and raw[:3] == b"\xff\xd8\xff":
        bpp = len(raw) * 8.0 / max(1, w0 * h0)
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(g.astype(np.uint8), "L").save(buf, format="JPEG", quality=75)
        bpp = buf.tell() * 8.0 / g.size
    density = (_W["patch_active"] * patch_active + _W["edge_density"] * min(1.0, 4.0 * edge_density)
               + _W["entropy"] * entropy + _W["jpeg_bpp"] * min(1.0, bpp / 3.0))
    return {"patch_active": patch_active, "edge_density": edge_density, "entropy": entropy, "jpeg_bpp": float(bpp),
            "spatial": float(min(max(density, 0.0), 1.0))}
