"""Rollouts: run a policy on a list of seeded episodes and log every request's outcome.

Every policy runs the same list of episodes (``env.reset(seed=s)`` for the same seeds, so the
same request windows, bandwidth traces, offsets and random draws); the seeds come from
:func:`mllm_offload.splits.evaluation_seeds`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..policy import Policy, decide

__all__ = ["EpisodeLog", "run_episodes"]


def _plan_label(plan: Any, env: Any) -> str:
    """``image=model_res,audio=drop`` over the modalities the request that just ran has."""
    present = getattr(env, "_present", None)
    if present is None or not getattr(env, "upload_plans", False):
        return "all"
    img, vid, aud = present[env._i - 1]
    return str(plan.label(img, vid, aud))


@dataclass
class EpisodeLog:
    """Per-request outcomes of one or more episodes (parallel lists)."""

    reward: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    cloud_called: list[bool] = field(default_factory=list)
    edge_answer: list[bool] = field(default_factory=list)
    cancelled: list[bool] = field(default_factory=list)
    bytes_sent: list[float] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    mode: list[int] = field(default_factory=list)
    #: per request: the upload plan applied (label over its modalities), "" when nothing was uploaded
    upload_plan: list[str] = field(default_factory=list)
    #: per request: the answer's expected score (synthetic traces), NaN where the trace has none
    expected_score: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.reward)


def run_episodes(env: Any, policy: Policy, seeds: Sequence[int],
                 options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> EpisodeLog:
    """Run ``policy`` for one episode per seed and log every request's outcome.

    ``options`` go to every ``env.reset``; a sequence gives each seed its own (same length).

    ``policy.reset(seed, env=env.unwrapped)`` starts every episode: a hindsight policy (the
    oracle) reads realised outcomes from the environment, causal ones ignore it.
    """
    log = EpisodeLog()
    base = env.unwrapped
    per_seed = options if options is not None and not isinstance(options, Mapping) else [options or {}] * len(seeds)
    if len(per_seed) != len(seeds):
        raise ValueError(f"run_episodes: {len(per_seed)} options for {len(seeds)} seeds")
    for s, opts in zip(seeds, per_seed):
        obs, _ = env.reset(seed=int(s), options=dict(opts))
        policy.reset(int(s), env=base)
        done = False
        while not done:
            th, plan = decide(policy, obs)
            obs, r, done, trunc, info = base.step_thresholds(th, plan)
            done = done or trunc
            o = info["outcome"]
            log.reward.append(r)
            log.latency_s.append(o.latency_s)
            log.score.append(o.score)
            log.cloud_called.append(o.cloud_called)
            log.edge_answer.append(o.answered_by == "edge")
            log.cancelled.append(o.cancelled)
            log.bytes_sent.append(o.bytes_sent)
            log.cost_usd.append(o.cloud_cost_usd)
            log.energy_j.append(o.energy_j)
            e = info.get("expected_score")
            log.expected_score.append(float("nan") if e is None else float(e))
            log.mode.append(int(o.mode))
            applied = info.get("upload_plan")
            log.upload_plan.append(_plan_label(applied, base) if o.cloud_called and applied is not None else "")
    return log
