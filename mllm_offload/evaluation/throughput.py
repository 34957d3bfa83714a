"""Throughput at the SLO: the highest arrival rate a policy serves with >= 90 % SLO attainment."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..policy import Policy
from .rollout import run_episodes

__all__ = ["find_throughput"]


def find_throughput(
    env: Any, policy: Policy, seeds: Sequence[int], base_rps: float, slo_s: float,
    target: float = 0.9, iters: int = 5, max_scale: float = 64.0,
) -> float:
    """Highest arrival rate (req/s) at which ``policy`` keeps SLO attainment >= ``target``.

    Arrival times are scaled by a factor searched by doubling/halving and then bisection in log
    space; 0.0 when even ``1/max_scale`` of the trace's rate misses the target.
    """

    def ok(scale: float) -> bool:
        log = run_episodes(env, policy, seeds, {"rate_scale": scale})
        return float(np.mean(np.asarray(log.latency_s) <= slo_s)) >= target

    x = 1.0
    if ok(x):
        lo = x
        while x < max_scale:
            x *= 2.0
            if not ok(x):
                break
            lo = x
        else:
            return lo * base_rps
        hi = x
    else:
        hi = x
        while x > 1.0 / max_scale:
            x /= 2.0
            if ok(x):
                break
            hi = x
        else:
            return 0.0
        lo = x
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo * base_rps
