"""Baselines of the simulator: the deployable rules of :mod:`mllm_offload.rules` (re-exported)
and :class:`TunedStatic`, the best fixed thresholds found by grid search on training episodes.

Importing this module registers ``tuned`` in :data:`mllm_offload.policy.REGISTRY`: it needs a
:class:`~mllm_offload.scenario.Scenario` to fit on (``PolicyContext.scenario``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..decision import SEND_ALL, Thresholds, UploadPlan
from ..errors import UserInputError
from ..policy import Policy, PolicyContext, register
from ..rules import CloudOnly, EdgeOnly, MSAORule, RandomPolicy, StaticPlan, StaticThresholds
from ..splits import TUNING_SEEDS

__all__ = [
    "DEFAULT_GRID",
    "CloudOnly",
    "EdgeOnly",
    "MSAORule",
    "RandomPolicy",
    "StaticPlan",
    "StaticThresholds",
    "TunedStatic",
    "threshold_grid",
]

DEFAULT_GRID: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0),  # tau_low and tau_high values
    (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0),  # tau_conf values
)


def threshold_grid(grid: tuple[Sequence[float], Sequence[float]] = DEFAULT_GRID) -> list[Thresholds]:
    """The candidate settings of :meth:`TunedStatic.fit`: every ``tau_low <= tau_high`` pair of
    the first tuple's values with every ``tau_conf`` of the second."""
    mas_values, conf_values = grid
    return [Thresholds(lo, hi, c)
            for lo, hi in itertools.combinations_with_replacement(sorted(mas_values), 2)
            for c in conf_values]


class TunedStatic(StaticPlan):
    """The best fixed thresholds (and, where policies choose upload plans, the best fixed plan)
    found by grid search on *training* episodes.

    Build it with :meth:`fit` (or :meth:`fit_scenario`); the bar a learned policy must clear to be
    worth deploying.
    """

    def __init__(self, th: Thresholds, train_reward: float = float("nan"), plan: UploadPlan | None = None) -> None:
        super().__init__(th, plan, "tuned")
        self.train_reward = train_reward

    def __repr__(self) -> str:
        return f"TunedStatic({self.th}" + (f", plan={self.plan.variant()}" if self.plan is not None else "") + ")"

    @classmethod
    def fit(
        cls,
        score: Callable[[Policy], float],
        grid: tuple[Sequence[float], Sequence[float]] = DEFAULT_GRID,
        progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
        plans: Sequence[UploadPlan] | None = None,
    ) -> TunedStatic:
        """Grid search: ``score(policy)`` is the mean training reward of a candidate policy.

        With ``plans`` (the plans a fixed-plan policy may use, :meth:`Scenario.static_plans
        <mllm_offload.scenario.Scenario.static_plans>`), a coordinate
        search: (1) the best thresholds sending everything whole; (2) the best plan at those
        thresholds; (3) if a plan beat sending everything whole, the best thresholds under that
        plan. Ties keep the earlier candidate. :func:`mllm_offload.evaluation.frontier` repeats
        exactly this search at every price.
        """
        cands = threshold_grid(grid)

        def search(plan: UploadPlan | None) -> tuple[Thresholds, float]:
            best, best_r = cands[0], -math.inf
            for th in (progress(cands) if progress else cands):
                try:
                    r = score(StaticPlan(th, plan))
                except UserInputError:
                    if plan is None:
                        raise
                    continue  # the trace lacks the plan's variant for one of the episodes' requests
                if r > best_r:
                    best, best_r = th, r
            return best, best_r

        th, r = search(None)
        others = [p for p in (plans or ()) if p != SEND_ALL]
        if not others:
            return cls(th, r)
        plan: UploadPlan | None = None
        for p in others:
            try:
                rp = score(StaticPlan(th, p))
            except UserInputError:  # the trace lacks this plan's variant for one of the episodes' requests
                continue
            if rp > r:
                plan, r = p, rp
        if plan is None:
            return cls(th, r)
        th3, r3 = search(plan)
        return cls(th3, r3, plan) if r3 > r else cls(th, r, plan)

    @classmethod
    def fit_scenario(cls, scenario: Any, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> TunedStatic:
        """Fit on the training split of ``scenario``, episodes :data:`~mllm_offload.splits.TUNING_SEEDS`
        (with the plan search where the scenario's policies choose upload plans)."""
        from ..evaluation.rollout import run_episodes

        env = scenario.make_env("train")
        seeds = list(TUNING_SEEDS)

        def score(p: Policy) -> float:
            return sum(run_episodes(env, p, seeds).reward) / (len(seeds) * env.n_requests)

        return cls.fit(score, progress=progress, plans=scenario.static_plans())


def _tuned(ctx: PolicyContext, arg: str | None) -> TunedStatic:
    if arg is not None:
        raise UserInputError(f"tuned: takes no parameter, got tuned:{arg}")
    if ctx.scenario is None:
        raise UserInputError("tuned: fitted on a scenario's training episodes; only evaluate and train can build it")
    return TunedStatic.fit_scenario(ctx.scenario, progress=ctx.progress)


register("tuned", "TunedStatic: best fixed thresholds (and fixed upload plan) by grid search on the training split", _tuned, needs="scenario")
