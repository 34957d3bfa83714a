"""Activation sparsity of the edge model's early vision-encoder layer.

Given one layer's output for an image, shape ``(tokens, hidden)`` (a CLS token first is fine),
each token's activation vector is centred on the layer's mean token, and its *Hoyer sparsity*
``(sqrt(d) - |v|_1 / |v|_2) / (sqrt(d) - 1)`` is taken (1 = one active unit, 0 = all equal).
Tokens whose centred norm is below a quarter of the median count as inactive patches.

=================  ======  ===========================================================
feature            range   definition
=================  ======  ===========================================================
``act_hoyer``      [0, 1]  mean Hoyer sparsity over tokens
``act_inactive``   [0, 1]  share of inactive tokens (patches like the average one)
``act_density``    [0, 1]  1 - (act_hoyer + act_inactive) / 2
=================  ======  ===========================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["activation_features"]


def activation_features(hidden: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
    """Sparsity of early vision activations, averaged over the images of a request."""
    arrays = [np.asarray(hidden)] if isinstance(hidden, np.ndarray) and np.asarray(hidden).ndim == 2 else [np.asarray(h) for h in hidden]
    if not arrays:
        return {"act_hoyer": 0.0, "act_inactive": 0.0, "act_density": 0.0}
    hoyers, inactive = [], []
    for h in arrays:
        h = h.reshape(-1, h.shape[-1]).astype(np.float64)
        c = h - h.mean(axis=0, keepdims=True)
        d = c.shape[1]
        l1 = np.abs(c).sum(axis=1)
        l2 = np.sqrt((c * c).sum(axis=1))
        ok = l2 > 1e-12
        hoy = np.where(ok, (np.sqrt(d) - l1 / np.where(ok, l2, 1.0)) / max(np.sqrt(d) - 1.0, 1e-12), 1.0)
        hoyers.append(float(np.clip(hoy, 0.0, 1.0).mean()))
        med = float(np.median(l2))
        inactive.append(float((l2 < 0.25 * med).mean()) if med > 0 else 1.0)
    hy, ia = float(np.mean(hoyers)), float(np.mean(inactive))
    return {"act_hoyer": hy, "act_inactive": ia, "act_density": float(1.0 - (hy + ia) / 2.0)}
