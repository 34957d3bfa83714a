"""Evaluate policies side by side on the same requests, bandwidth traces and seeds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..policy import Policy
from ..splits import evaluation_seeds
from .metrics import summarize
from .rollout import EpisodeLog, run_episodes
from .throughput import find_throughput

__all__ = ["evaluate"]


def evaluate(
    env: Any,
    policies: Sequence[Policy],
    requests: int,
    seed: int = 0,
    throughput: bool = True,
    throughput_episodes: int = 6,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, EpisodeLog]]:
    """Evaluate ``policies`` on the same ``ceil(requests / episode length)`` episodes.

    Returns (metrics per policy name, logs per policy name).
    """
    base = env.unwrapped
    seeds = evaluation_seeds(requests, base.n_requests, seed)
    trace = base.trace
    span = float(trace.arrival_s[-1] - trace.arrival_s[0])
    base_rps = (len(trace) - 1) / span if span > 0 else float("nan")
    results: dict[str, dict[str, float]] = {}
    logs: dict[str, EpisodeLog] = {}
    it = progress(policies) if progress else policies
    for pol in it:
        log = run_episodes(env, pol, seeds)
        m = summarize(log, base.slo_s)
        if throughput:
            m["throughput_rps"] = find_throughput(env, pol, seeds[:throughput_episodes], base_rps, base.slo_s)
        results[pol.name] = m
        logs[pol.name] = log
    return results, logs
