"""Constraints as Lagrangians (PPO-Lagrangian, Ray et al. 2019, "Benchmarking Safe Exploration
in Deep RL").

Every constraint has the form ``E[g(outcome)] <= limit`` over the requests of a rollout, with
its own multiplier ``lam >= 0``. The training reward becomes ``r - sum lam * (g - limit) / scale``
(:class:`Lagrangian`, a ``VecEnvWrapper``) and after every rollout each multiplier takes a dual
step ``lam <- max(0, lam + lam_lr * (mean g - limit) / scale)`` (:class:`DualAscentCallback`).
Every reported reward is the unmodified one.

==================  ==========================  ===========  =======  ==============================
constraint          ``g`` per request           ``limit``    scale    from
==================  ==========================  ===========  =======  ==============================
``score_floor``     ``-score``                  ``-floor``   1        ``train --score-floor``
``p95_latency``     ``[latency > B]``           0.05         1        ``TradeOff.budgets.p95_latency_s``
``cost``            cost, USD per 1k requests   the budget   budget   ``TradeOff.budgets.cost_usd_per_1k``
``upload``          MB uploaded                 the budget   1 MB     ``TradeOff.budgets.upload_mb_per_request``
==================  ==========================  ===========  =======  ==============================

The cost scale is at least 0.01 USD per 1k requests, so that a budget of 0 does not multiply the
penalty by 1000s. The upload's is 1 MB whatever the budget, so that its multiplier is a price
(score per MB uploaded): one request's upload is 0 or a whole payload, many times a budget of a
fraction of the mean, and scaled by the budget the first dual steps made every upload cost
several times a request's reward (measured: the policy fell to the edge alone within 20k steps
and never left).

A p95 budget ``B`` is held as "at most 5 % of requests slower than ``B``", which is the same
statement as ``p95 <= B``. The multipliers are logged as ``train/lagrange_<name>`` (the score
floor's also as ``train/lagrange_lambda``) and follow ``state["lams"]`` so that checkpoints
carry them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, unwrap_vec_wrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from ...tradeoff import PER_1K, Budgets

__all__ = ["Constraint", "DualAscentCallback", "Lagrangian", "constraints_for"]


@dataclass
class Constraint:
    """``E[signal(outcome)] <= limit``, multiplier ``lam``; violations are divided by ``scale``."""

    name: str
    signal: Callable[[Any], float]
    limit: float
    lam: float = 0.0
    scale: float = 1.0


def _neg_score(o: Any) -> float:
    return -float(o.score)


def _slower_than(budget_s: float) -> Callable[[Any], float]:
    def over(o: Any) -> float:
        return 1.0 if o.latency_s > budget_s else 0.0

    return over


def _cost_per_1k(o: Any) -> float:
    return float(o.cloud_cost_usd) * PER_1K


def _mb_uploaded(o: Any) -> float:
    return float(o.bytes_sent) / 1e6


def constraints_for(score_floor: float | None, budgets: Budgets | None, lam_init: float,
                    lams: dict[str, float] | None = None) -> list[Constraint]:
    """The constraints of a run: a score floor and the trade-off's budgets (``lams``: saved
    multipliers by name, else ``lam_init``)."""
    saved = lams or {}
    out: list[Constraint] = []
    if score_floor is not None:
        out.append(Constraint("score_floor", _neg_score, -score_floor, saved.get("score_floor", lam_init)))
    if budgets is not None and budgets.p95_latency_s is not None:
        out.append(Constraint("p95_latency", _slower_than(budgets.p95_latency_s), 0.05, saved.get("p95_latency", lam_init)))
    if budgets is not None and budgets.cost_usd_per_1k is not None:
        c = budgets.cost_usd_per_1k
        out.append(Constraint("cost", _cost_per_1k, c, saved.get("cost", lam_init), max(c, 0.01)))
    if budgets is not None and budgets.upload_mb_per_request is not None:
        b = budgets.upload_mb_per_request
        out.append(Constraint("upload", _mb_uploaded, b, saved.get("upload", lam_init), 1.0))
    return out


class Lagrangian(VecEnvWrapper):
    """Adds ``-lam * (g - limit) / scale`` of every constraint to every reward; :meth:`update`
    does the dual step."""

    def __init__(self, venv: VecEnv, constraints: Sequence[Constraint], lam_lr: float = 2.0) -> None:
        super().__init__(venv)
        self.constraints = list(constraints)
        self.lam_lr = lam_lr
        self._sums = np.zeros(len(self.constraints))
        self._n = 0

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rew, done, infos = self.venv.step_wait()
        rew = np.asarray(rew, dtype=np.float64).copy()
        for k, c in enumerate(self.constraints):
            g = np.array([c.signal(info["outcome"]) for info in infos], dtype=np.float64)
            self._sums[k] += g.sum()
            rew -= c.lam * (g - c.limit) / c.scale
        self._n += len(infos)
        return obs, rew.astype(np.float32), done, infos

    def update(self) -> dict[str, float]:
        """Dual ascent on the rollout's means; returns ``{name: mean g}`` (empty if no steps)."""
        if self._n == 0:
            return {}
        means = {}
        for k, c in enumerate(self.constraints):
            mean = float(self._sums[k] / self._n)
            c.lam = max(0.0, c.lam + self.lam_lr * (mean - c.limit) / c.scale)
            means[c.name] = mean
        self._sums[:] = 0.0
        self._n = 0
        return means

    @property
    def lams(self) -> dict[str, float]:
        """The multipliers by constraint name."""
        return {c.name: c.lam for c in self.constraints}


class DualAscentCallback(BaseCallback):
    """After every rollout: the dual step of the training env's :class:`Lagrangian` (if any).

    ``state["lams"]`` follows the multipliers (and ``state["lam"]`` the score floor's) so that
    checkpoints carry them.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        env = self.model.get_env()
        lag = unwrap_vec_wrapper(env, Lagrangian) if env is not None else None
        if isinstance(lag, Lagrangian):
            means = lag.update()
            for c in lag.constraints:
                self.logger.record(f"train/lagrange_{c.name}", c.lam)
            if "score_floor" in means:
                self.logger.record("train/lagrange_lambda", lag.lams["score_floor"])
                self.logger.record("train/rollout_score", -means["score_floor"])
                self.state["lam"] = lag.lams["score_floor"]
            if "p95_latency" in means:
                self.logger.record("train/rollout_over_p95_budget", means["p95_latency"])
            if "upload" in means:
                self.logger.record("train/rollout_mb_uploaded", means["upload"])
            self.state["lams"] = lag.lams
