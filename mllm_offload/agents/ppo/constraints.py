"""Constraints as Lagrangians (PPO-Lagrangian, Ray et al. 2019, "Benchmarking Safe Exploration
in Deep RL").

**Score floor.** A policy that simply maximises the reward may buy latency with quality. With a
floor, training solves "maximise reward subject to mean score >= floor": the training reward
becomes ``r + lam * (score - floor)`` (:class:`ScoreLagrangian`, a ``VecEnvWrapper``) and after
every rollout ``lam <- max(0, lam + lam_lr * (floor - mean rollout score))``
(:class:`DualAscentCallback`). ``lam`` is logged as ``train/lagrange_lambda``. Every reported
reward is the unmodified one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, unwrap_vec_wrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

__all__ = ["DualAscentCallback", "ScoreLagrangian"]


class ScoreLagrangian(VecEnvWrapper):
    """Adds ``lam * (score - floor)`` to every reward; :meth:`update` does the dual step."""

    def __init__(self, venv: VecEnv, floor: float, lam: float = 0.0, lam_lr: float = 2.0) -> None:
        super().__init__(venv)
        self.floor, self.lam, self.lam_lr = floor, lam, lam_lr
        self._scores: list[float] = []

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rew, done, infos = self.venv.step_wait()
        scores = np.array([info["outcome"].score for info in infos], dtype=np.float64)
        self._scores.extend(scores.tolist())
        return obs, rew + self.lam * (scores - self.floor), done, infos

    def update(self) -> float:
        """Dual ascent on the rollout's mean score; returns that mean (nan if no steps)."""
        if not self._scores:
            return float("nan")
        mean = float(np.mean(self._scores))
        self._scores.clear()
        self.lam = max(0.0, self.lam + self.lam_lr * (self.floor - mean))
        return mean


class DualAscentCallback(BaseCallback):
    """After every rollout: the dual step of the training env's :class:`ScoreLagrangian` (if any).

    ``state["lam"]`` follows the multiplier so that checkpoints carry it.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.state = state

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        env = self.model.get_env()
        lag = unwrap_vec_wrapper(env, ScoreLagrangian) if env is not None else None
        if isinstance(lag, ScoreLagrangian):
            mean = lag.update()
            self.logger.record("train/lagrange_lambda", lag.lam)
            self.logger.record("train/rollout_score", mean)
            self.state["lam"] = lag.lam
