"""Temporal MAS: how much new content the frames of a clip bring.

==================  ======  ========================================================================
feature             range   definition
==================  ======  ========================================================================
``dup_share``       [0, 1]  share of consecutive frame pairs that are near-duplicates: 64-bit
                            difference hashes (dHash, 9x8 grey) at Hamming distance <= ``DUP_BITS``
                            (6) *and* mean absolute difference of 32x32 grey copies < ``DUP_MAD`` (3)
``frame_mad``       >= 0    mean absolute difference between consecutive 32x32 grey frames (levels)
``temporal``        [0, 1]  novelty = 0.6 (1 - dup_share) + 0.4 min(1, frame_mad / 32)
==================  ======  ========================================================================

A clip of one repeated frame has ``temporal`` 0; a clip of unrelated frames close to 1. A single
frame counts as no video (0).

Per frame, :func:`frame_novelty` applies the same formula to each frame and its predecessor:
``0.6 (1 - dup) + 0.4 min(1, mad / 32)`` with ``dup`` the near-duplicate test above and ``mad``
their mean absolute difference; the first frame is new (1). A frame is novel (``>=``
:data:`NOVEL`, 0.6) exactly when it is not a near-duplicate of the frame before it: the
``keyframes`` upload plan sends those (:func:`mllm_offload.mllm_backends.upload_plan.keyframe_indices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._image import small_gray

__all__ = ["DUP_BITS", "DUP_MAD", "NOVEL", "dhash", "frame_novelty", "temporal_features"]

DUP_BITS = 6
DUP_MAD = 3.0
#: per-frame novelty at or above which a frame is not a near-duplicate of its predecessor
NOVEL = 0.6


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-average resize of a 2-D array (no interpolation library needed)."""
    ys = np.linspace(0, a.shape[0], h + 1).astype(int)
    xs = np.linspace(0, a.shape[1], w + 1).astype(int)
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), axis=0), axis=1)
    s = c[ys[1:, None], xs[None, 1:]] - c[ys[:-1, None], xs[None, 1:]] - c[ys[1:, None], xs[None, :-1]] + c[ys[:-1, None], xs[None, :-1]]
    area = np.maximum(1, (ys[1:] - ys[:-1])[:, None] * (xs[1:] - xs[:-1])[None, :])
    return s / area


def dhash(gray: np.ndarray) -> np.ndarray:
    """64 booleans: is each pixel of a 9x8 grey copy brighter than its right neighbour."""
    s = _resize(gray, 8, 9)
    return (s[:, 1:] > s[:, :-1]).ravel()


def _pair_stats(frames: Sequence[Any], what: str) -> tuple[list[bool], list[float]]:
    """Per consecutive pair of frames: near-duplicate (dHash and MAD test) and mean absolute difference, grey levels."""
    hashes, smalls = [], []
    for i, f in enumerate(frames):
        g, _ = small_gray(f, max_side=64, what=f"{what} frame {i}")
        hashes.append(dhash(g))
        smalls.append(_resize(g, 32, 32))
    dups, mads = [], []
    for a, b, ha, hb in zip(smalls, smalls[1:], hashes, hashes[1:]):
        mad = float(np.abs(a - b).mean())
        mads.append(mad)
        dups.append(int(np.count_nonzero(ha != hb)) <= DUP_BITS and mad < DUP_MAD)
    return dups, mads


def temporal_features(frames: Sequence[Any], what: str = "video") -> dict[str, float]:
    """Temporal MAS features of a clip (oldest frame first); see the module table."""
    if frames is None or len(frames) < 2:
        return {"dup_share": 0.0, "frame_mad": 0.0, "temporal": 0.0}
    dups, mads = _pair_stats(frames, what)
    dup_share = float(np.mean(dups))
    frame_mad = float(np.mean(mads))
    novelty = 0.6 * (1.0 - dup_share) + 0.4 * min(1.0, frame_mad / 32.0)
    return {"dup_share": dup_share, "frame_mad": frame_mad, "temporal": float(min(max(novelty, 0.0), 1.0))}


def frame_novelty(frames: Sequence[Any], what: str = "video") -> np.ndarray:
    """Novelty of each frame against the one before it, in [0, 1] (the first frame: 1); see the
    module docstring. Frames are decoded small (64 px grey), as for :func:`temporal_features`."""
    n = len(frames) if frames is not None else 0
    out = np.ones(n, dtype=np.float64)
    if n >= 2:
        dups, mads = _pair_stats(frames, what)
        out[1:] = 0.6 * (1.0 - np.asarray(dups, dtype=np.float64)) + 0.4 * np.minimum(1.0, np.asarray(mads) / 32.0)
    return out
