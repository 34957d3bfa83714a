"""The joint MAS score: one number in [0, 1] from the per-modality MAS features.

Each per-modality feature is an *activation density* in [0, 1] (1 - sparsity): high means the
modality carries much information the model must process, which is when the small edge model
tends to fail. The joint score is the weighted mean of the features of the modalities present:

===============  ======  =============================================
feature          weight  present when
===============  ======  =============================================
``spatial``      0.50    the request has an image or video
``temporal``     0.20    the request has video
``audio``        0.15    the request has audio
``text``         0.15    always (the prompt)
===============  ======  =============================================

Weights of absent modalities are dropped and the rest renormalised, so a text+image request's
score is ``(0.5 * spatial + 0.15 * text) / 0.65``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["JOINT_WEIGHTS", "joint_score", "joint_score_array"]

JOINT_WEIGHTS: dict[str, float] = {"spatial": 0.50, "temporal": 0.20, "audio": 0.15, "text": 0.15}


def joint_score(features: Mapping[str, float], present: Mapping[str, bool]) -> float:
    """Joint MAS score of one request; ``present`` says which of the weighted features apply."""
    num = den = 0.0
    for name, w in JOINT_WEIGHTS.items():
        if present.get(name, False):
            num += w * float(features.get(name, 0.0))
            den += w
    return min(max(num / den, 0.0), 1.0) if den > 0 else 0.0


def joint_score_array(features: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray]) -> np.ndarray:
    """Vectorised :func:`joint_score` over columns of equal length."""
    n = len(next(iter(features.values())))
    num = np.zeros(n)
    den = np.zeros(n)
    for name, w in JOINT_WEIGHTS.items():
        mask = np.asarray(present.get(name, np.zeros(n, bool)), dtype=bool)
        num += np.where(mask, w * np.asarray(features.get(name, np.zeros(n))), 0.0)
        den += np.where(mask, w, 0.0)
    return np.clip(np.divide(num, den, out=np.zeros(n), where=den > 0), 0.0, 1.0)
