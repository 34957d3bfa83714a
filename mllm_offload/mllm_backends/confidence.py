"""Answer confidence in [0, 1] from per-token log-probabilities.

=============  ==============================================================================
method         confidence
=============  ==============================================================================
``mean``       mean token probability ``mean(exp(lp))``
``min``        probability of the least likely token ``exp(min(lp))``
``quantile``   a low quantile (default ``q = 0.1``) of the token probabilities; unlike the
               sequence average it does not drift with answer length (Gupta et al., ICLR 2024,
               "Language Model Cascades: Token-level uncertainty and beyond")
``geomean``    ``exp(mean(lp))``, the length-normalised sequence probability
=============  ==============================================================================

No tokens (or no log-probabilities from the server) give ``None``: the caller decides what an
unknown confidence means (the router treats it as "not confident").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["CONFIDENCE_METHODS", "ConfidenceMethod", "confidence_from_logprobs"]

ConfidenceMethod = Literal["mean", "min", "quantile", "geomean"]
CONFIDENCE_METHODS: tuple[str, ...] = ("mean", "min", "quantile", "geomean")


def confidence_from_logprobs(logprobs: Sequence[float], method: str = "quantile", q: float = 0.1) -> float | None:
    """Confidence in [0, 1] of an answer from its token log-probabilities (natural log)."""
    if method not in CONFIDENCE_METHODS:
        raise ValueError(f"confidence method must be one of {', '.join(CONFIDENCE_METHODS)}, got {method!r}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    lp = np.asarray(list(logprobs), dtype=np.float64)
    lp = lp[~np.isnan(lp)]
    if lp.size == 0:
        return None
    lp = np.minimum(lp, 0.0)  # rounding can give +1e-7
    p = np.exp(lp)  # -inf -> 0
    if method == "mean":
        c = float(p.mean())
    elif method == "min":
        c = float(p.min())
    elif method == "quantile":
        c = float(np.quantile(p, q))
    else:
        c = float(np.exp(lp.mean())) if np.all(np.isfinite(lp)) else 0.0
    return min(max(c, 0.0), 1.0)
