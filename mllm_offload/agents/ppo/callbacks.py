"""Training callbacks, subclassing SB3's own.

* :class:`ValidationCallback` (an ``EvalCallback``): every ``eval_freq`` env steps, evaluate the
  current policy on fixed validation episodes with the package's rollout (same metrics as
  ``evaluate``), log them next to MSAO's on the same episodes, and keep the best model.
* :class:`RunCheckpointCallback` (a ``CheckpointCallback`` with ``save_vecnormalize``): the
  latest checkpoint of the run, for ``--resume``.

Both write a model folder with :func:`save_model_dir`: ``model.zip``, ``vecnormalize.pkl`` (for
SB3 itself), ``vecnormalize.json`` (read by export without unpickling) and ``info.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback

from ..._io import atomic_write_text
from ...evaluation.metrics import summarize
from ...evaluation.rollout import run_episodes
from ...policy import Policy
from .policy import RecordingPolicy, current_policy, save_vecnormalize_stats

__all__ = ["RunCheckpointCallback", "ValidationCallback", "eval_metrics", "save_model_dir"]


def save_model_dir(model: BaseAlgorithm, d: Path, info: dict[str, Any]) -> None:
    """``model.zip``, the ``VecNormalize`` statistics and ``info.json`` into ``d`` (each file atomically)."""
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / ".model.zip.tmp.zip"
    model.save(tmp)
    os.replace(tmp, d / "model.zip")
    vn = model.get_vec_normalize_env()
    if vn is not None:
        tmp_pkl = d / ".vecnormalize.pkl.tmp"
        vn.save(str(tmp_pkl))
        os.replace(tmp_pkl, d / "vecnormalize.pkl")
        save_vecnormalize_stats(vn, d / "vecnormalize.json")
    atomic_write_text(d / "info.json", json.dumps(info, indent=2) + "\n")


def eval_metrics(env: Any, policy: Policy, seeds: Sequence[int]) -> dict[str, float]:
    """Metrics of ``policy`` on ``seeds`` plus the mean thresholds it chose (``tau_*_mean``)."""
    rec = RecordingPolicy(policy)
    m = summarize(run_episodes(env, rec, seeds), env.unwrapped.slo_s)
    th = np.asarray(rec.seen) if rec.seen else np.full((1, 3), np.nan)
    m["tau_low_mean"], m["tau_high_mean"], m["tau_conf_mean"] = (float(v) for v in th.mean(axis=0))
    return m


class ValidationCallback(EvalCallback):
    """Every ``eval_freq`` env steps: evaluate on validation episodes, log, keep the best.

    Logs ``eval/reward``, ``eval/score``, ``eval/latency_p50_s``, ``eval/latency_p95_s``,
    ``eval/slo_attainment``, ``eval/cloud_share``, ``eval/tau_{low,high,conf}_mean`` and the
    MSAO heuristic's ``eval/msao_reward``, ``eval/msao_score``, ``eval/msao_latency_p95_s`` on
    the same episodes. ``RUN_DIR/best/`` keeps the model with the highest validation reward among
    evaluations that meet ``score_floor`` (all of them when it is None). ``eval_freq`` counts env
    steps summed over the ``n_envs`` training environments (SB3's own counts callback calls).
    """

    def __init__(self, val_env: Any, seeds: Sequence[int], eval_freq: int, n_envs: int, run_dir: Path, msao: dict[str, float],
                 score_floor: float | None, log: Callable[[str], None], best: dict[str, Any] | None = None) -> None:
        super().__init__(val_env, n_eval_episodes=len(seeds), eval_freq=max(eval_freq // n_envs, 1),
                         best_model_save_path=str(run_dir / "best"), deterministic=True, warn=False)
        self.val_env, self.seeds = val_env, list(seeds)
        self.run_dir, self.msao, self.score_floor, self.log = run_dir, msao, score_floor, log
        self.best: dict[str, Any] = best or {}
        self.history: list[dict[str, float]] = []

    def _init_callback(self) -> None:
        # EvalCallback's checks compare env wrappers with SB3's evaluate_policy in mind; the
        # validation here runs the package's own rollout on the raw environment.
        pass

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            self.evaluate()
        return True

    def _key(self, m: dict[str, float]) -> tuple[bool, float]:
        ok = self.score_floor is None or m["score_mean"] >= self.score_floor
        return ok, m["reward_mean"]

    def evaluate(self) -> dict[str, float]:
        """Evaluate now; save ``best/`` if this is the best feasible evaluation so far."""
        m = eval_metrics(self.val_env, current_policy(self.model), self.seeds)
        m["timesteps"] = float(self.num_timesteps)
        self.history.append(m)
        rec = self.logger.record
        for k in ("reward_mean", "score_mean", "latency_p50_s", "latency_p95_s", "slo_attainment", "cloud_share",
                  "tau_low_mean", "tau_high_mean", "tau_conf_mean"):
            rec(f"eval/{k.removesuffix('_mean') if k in ('reward_mean', 'score_mean') else k}", m[k])
        rec("eval/msao_reward", self.msao["reward_mean"])
        rec("eval/msao_score", self.msao["score_mean"])
        rec("eval/msao_latency_p95_s", self.msao["latency_p95_s"])
        self.logger.dump(self.num_timesteps)
        key = self._key(m)
        better = not self.best or key > (self.best["feasible"], self.best["reward_mean"])
        self.last_mean_reward = m["reward_mean"]
        if better:
            self.best = {"feasible": key[0], "reward_mean": m["reward_mean"], "score_mean": m["score_mean"], "timesteps": self.num_timesteps}
            self.best_mean_reward = m["reward_mean"]
            save_model_dir(self.model, self.run_dir / "best", {"validation": m, "msao_validation": self.msao})
        self.log(
            f"[{self.num_timesteps:>8d} steps] val reward {m['reward_mean']:.4f} (MSAO {self.msao['reward_mean']:.4f}) "
            f"score {m['score_mean']:.3f} (MSAO {self.msao['score_mean']:.3f}) p95 {m['latency_p95_s']:.2f} s "
            f"cloud {m['cloud_share']:.2f}{' *best' if better else ''}"
        )
        return m


class RunCheckpointCallback(CheckpointCallback):
    """The run's latest checkpoint in ``RUN_DIR/checkpoint/`` every ``checkpoint_freq`` env steps.

    ``state`` (seed, Lagrange multiplier, steps done) goes to ``checkpoint/info.json``; resume
    reads it back. ``checkpoint_freq`` counts env steps summed over the ``n_envs`` environments.
    """

    def __init__(self, run_dir: Path, checkpoint_freq: int, n_envs: int, state: dict[str, Any]) -> None:
        super().__init__(save_freq=max(checkpoint_freq // n_envs, 1), save_path=str(run_dir / "checkpoint"), save_vecnormalize=True)
        self.run_dir, self.state = run_dir, state

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save()
        return True

    def save(self) -> None:
        """Write the checkpoint now (model, normalisation statistics, state)."""
        self.state["num_timesteps"] = int(self.num_timesteps)
        save_model_dir(self.model, self.run_dir / "checkpoint", dict(self.state))
