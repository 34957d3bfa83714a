"""The decision rule every policy's thresholds go through (a contract, imports nothing below).

A policy emits three thresholds; the rule below turns them, the request's joint MAS score ``s``
and (later) the edge answer's confidence into what actually runs:

==========================  ===============  ==================================================
condition                   mode             what runs
==========================  ===============  ==================================================
``s >= tau_high``           ``CLOUD``        upload, the cloud answers
``tau_low <= s < tau_high`` ``SPECULATIVE``  edge runs *and* upload starts; at edge completion
                                             accept the edge answer if ``conf >= tau_conf``
                                             (the cloud call is cancelled), else wait for cloud
``s < tau_low``             ``EDGE_FIRST``   edge runs; escalate to the cloud only if
                                             ``conf < tau_conf`` (``tau_conf = 0``: edge only)
==========================  ===============  ==================================================

Raw policy actions live in ``[0, 1]^3`` and are mapped by :meth:`Thresholds.from_action`:
``tau_high = a[1]``, ``tau_low = a[0] * a[1]`` (a fraction of ``tau_high``, so that
``tau_low <= tau_high`` always holds) and ``tau_conf = a[2]``. :meth:`Thresholds.to_action` is the
inverse, so a heuristic's thresholds can be replayed as an action.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Mode", "Thresholds", "accept_edge", "decide"]


class Mode(enum.IntEnum):
    """Where a request runs. Values are stable (used in traces and metrics)."""

    EDGE_FIRST = 0
    SPECULATIVE = 1
    CLOUD = 2

    @property
    def label(self) -> str:
        """Lower-case name used in traces, headers and metrics (``edge_first`` ...)."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Offloading thresholds on the MAS score and the edge-confidence threshold, all in [0, 1].

    Attributes:
        tau_low: MAS score below which a request runs EDGE_FIRST.
        tau_high: MAS score at or above which a request goes straight to the CLOUD.
        tau_conf: edge confidence at or above which the edge answer is accepted.
    """

    tau_low: float
    tau_high: float
    tau_conf: float

    def __post_init__(self) -> None:
        for name in ("tau_low", "tau_high", "tau_conf"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"Thresholds.{name} must be a number in [0, 1], got {v!r}")
        if self.tau_low > self.tau_high:
            raise ValueError(
                f"Thresholds need tau_low <= tau_high, got {self.tau_low} > {self.tau_high}"
            )

    @classmethod
    def from_action(cls, action: Sequence[float] | np.ndarray) -> Thresholds:
        """Map a raw action in ``[0,1]^3`` (clipped first) to thresholds with ``tau_low <= tau_high``."""
        values = action.tolist() if hasattr(action, "tolist") else list(action)
        if len(values) != 3:
            raise ValueError(f"a threshold action has 3 components, got {len(values)}")
        a0, a1, a2 = values
        if a0 != a0 or a1 != a1 or a2 != a2:
            raise ValueError("threshold action contains NaN")
        a0 = 0.0 if a0 < 0.0 else 1.0 if a0 > 1.0 else float(a0)
        a1 = 0.0 if a1 < 0.0 else 1.0 if a1 > 1.0 else float(a1)
        a2 = 0.0 if a2 < 0.0 else 1.0 if a2 > 1.0 else float(a2)
        # the clipped values satisfy every invariant, so skip __post_init__ (hot path of env.step)
        t = object.__new__(cls)
        object.__setattr__(t, "tau_low", a0 * a1)
        object.__setattr__(t, "tau_high", a1)
        object.__setattr__(t, "tau_conf", a2)
        return t

    def to_action(self) -> tuple[float, float, float]:
        """Inverse of :meth:`from_action` (``a0 = tau_low / tau_high``, 0 when ``tau_high == 0``)."""
        a0 = self.tau_low / self.tau_high if self.tau_high > 0.0 else 0.0
        return (min(a0, 1.0), self.tau_high, self.tau_conf)

    def mode(self, mas_score: float) -> Mode:
        """The mode for a request with joint MAS score ``mas_score`` (see module table)."""
        return decide(mas_score, self)


def decide(mas_score: float, t: Thresholds) -> Mode:
    """Apply the fixed rule: CLOUD if ``s >= tau_high``, SPECULATIVE if ``s >= tau_low``, else EDGE_FIRST."""
    if mas_score >= t.tau_high:
        return Mode.CLOUD
    if mas_score >= t.tau_low:
        return Mode.SPECULATIVE
    return Mode.EDGE_FIRST


def accept_edge(confidence: float, t: Thresholds) -> bool:
    """Whether an edge answer with ``confidence`` in [0, 1] is accepted (``confidence >= tau_conf``)."""
    return confidence >= t.tau_conf
