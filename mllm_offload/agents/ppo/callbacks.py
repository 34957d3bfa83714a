"""Training callbacks, subclassing SB3's own.

* :class:`ValidationCallback` (an ``EvalCallback``): every ``eval_freq`` env steps, evaluate the
  current policy on fixed validation episodes with the package's rollout (same metrics as
  ``evaluate``), log them next to MSAO's on the same episodes, and keep the best model.
* :class:`RunCheckpointCallback` (a ``CheckpointCallback`` with ``save_vecnormalize``): SB3's own
  save of the model and ``VecNormalize`` every ``checkpoint_freq // n_envs`` calls, into fixed
  names (the latest checkpoint of the run, for ``--resume``), made atomic.

Both write a model folder with :func:`save_model_dir`: ``model.zip``, ``vecnormalize.pkl`` (for
SB3 itself), ``vecnormalize.json`` (read by export without unpickling) and ``info.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback

from ..._io import append_jsonl, atomic_write_json
from ...evaluation.metrics import summarize
from ...evaluation.rollout import run_episodes
from ...policy import Policy
from .policy import RecordingPolicy, current_policy, save_vecnormalize_stats
from .reward_scale import reward_scale

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
    atomic_write_json(d / "info.json", info)


def eval_metrics(env: Any, policy: Policy, seeds: Sequence[int], options: Sequence[dict[str, Any]] | None = None,
                 expected_scores: bool = False) -> dict[str, Any]:
    """Metrics of ``policy`` on ``seeds`` plus the mean thresholds it chose (``tau_*_mean``) and
    ``selection_reward``: the mean reward, or with per-episode trade-offs in ``options`` (a
    conditioned policy), the mean over episodes of each episode's mean reward divided by
    :func:`~.reward_scale.reward_scale` of its price, so that every price weighs the same.

    With ``options`` also ``reward_by_price``: each episode's latency price (score per SLO) and
    mean reward per request (``reward_mean``, and with expected scores ``expected_reward_mean``
    too), by increasing price. ``best/info.json`` keeps it, so a reader sees what the model chosen
    on the average gives at each end of the range.

    ``expected_scores``: ``selection_reward`` (and ``expected_reward_mean``) score every answer by
    its expected score instead of its coin flip (synthetic traces; :mod:`.reward_scale`); every
    other metric stays realised."""
    rec = RecordingPolicy(policy)
    log = run_episodes(env, rec, seeds, options)
    m: dict[str, Any] = dict(summarize(log, env.unwrapped.slo_s))
    real = np.asarray(log.reward, np.float64)
    rew = real
    if expected_scores:
        q = env.unwrapped.episode_weights.quality
        rew = real - q * (np.asarray(log.score, np.float64) - np.asarray(log.expected_score, np.float64))
        m["expected_reward_mean"] = float(rew.mean())
    m["selection_reward"] = float(rew.mean())
    if options:
        n = env.unwrapped.n_requests
        r = rew.reshape(len(seeds), n).mean(axis=1)
        r_real = real.reshape(len(seeds), n).mean(axis=1)
        prices = [float(o["tradeoff"].latency_price) for o in options]
        m["selection_reward"] = float(np.mean([v / reward_scale(p) for v, p in zip(r, prices)]))
        m["reward_by_price"] = [{"latency_price": p, "reward_mean": float(v),
                                 **({"expected_reward_mean": float(e)} if expected_scores else {})}
                                for p, v, e in sorted(zip(prices, r_real, r))]
    th = np.asarray(rec.seen) if rec.seen else np.full((1, 3), np.nan)
    m["tau_low_mean"], m["tau_high_mean"], m["tau_conf_mean"] = (float(v) for v in th.mean(axis=0))
    return m


class ValidationCallback(EvalCallback):
    """Every ``eval_freq`` env steps: evaluate on validation episodes, log, keep the best.

    It keeps ``EvalCallback``'s interface (``best_model_save_path``, ``best_mean_reward``,
    ``last_mean_reward``, ``evaluations_timesteps``, ``evaluations_results``) but not its
    evaluation: SB3's runs ``evaluate_policy`` on whole episodes of a VecEnv; this one runs the
    package's rollout on fixed seeded validation episodes (:func:`eval_metrics`), the metrics
    ``evaluate`` reports. Its schedule counts environment steps (SB3's counts callback calls), so
    it stays on multiples of ``eval_freq`` across ``--resume`` and for any ``n_envs``.

    Logs ``eval/reward``, ``eval/selection_reward`` (what "best" compares, below), ``eval/score``,
    ``eval/latency_p50_s``, ``eval/latency_p95_s``, ``eval/slo_attainment``, ``eval/cloud_share``,
    ``eval/mb_uploaded_mean``, ``eval/tau_{low,high,conf}_mean`` and the MSAO heuristic's ``eval/msao_reward``,
    ``eval/msao_score``, ``eval/msao_latency_p95_s`` on the same episodes. ``RUN_DIR/best/`` keeps
    the model with the highest ``selection_reward`` among evaluations that meet ``score_floor``
    and the ``budgets`` (p95 latency, cost per 1k requests, MB uploaded per request; all
    evaluations when there are none):
    the mean validation reward; with ``expected_scores``, with every answer scored by its expected
    score; for a policy conditioned on the trade-off (``options`` give each validation episode its
    own latency price, spread over the range the policy serves), each episode's mean divided by
    the reward scale of its price (:mod:`.reward_scale`), so that high prices do not decide alone.
    The score floor and the budgets are checked on the realised metrics. ``eval_freq`` counts env
    steps summed over the ``n_envs`` training environments (SB3's own counts callback calls).

    Every evaluation's metrics are appended to ``RUN_DIR/validation.jsonl`` (one JSON object per
    line, ``reward_by_price`` included), so a reader can see what any rule would have selected;
    with ``keep_all`` (``train --keep-evaluations``) every evaluated model is kept too, in
    ``RUN_DIR/evals/STEPS/`` (``mllm-offload export RUN --step STEPS`` exports one).
    """

    def __init__(self, val_env: Any, seeds: Sequence[int], eval_freq: int, n_envs: int, run_dir: Path, msao: dict[str, float],
                 score_floor: float | None, log: Callable[[str], None], best: dict[str, Any] | None = None,
                 budgets: Any = None, options: Sequence[dict[str, Any]] | None = None,
                 info: dict[str, Any] | None = None, evaluate_at_start: bool = False, expected_scores: bool = False,
                 keep_all: bool = False) -> None:
        """``evaluate_at_start``: evaluate once before the first update of a new run (a warm-started
        actor, :mod:`.warm_start`, is then a candidate for ``best/`` at step 0)."""
        super().__init__(val_env, n_eval_episodes=len(seeds), eval_freq=eval_freq,
                         best_model_save_path=str(run_dir / "best"), deterministic=True, warn=False)
        self.val_env, self.seeds = val_env, list(seeds)
        self._next = eval_freq
        self.run_dir, self.msao, self.score_floor, self.log = run_dir, msao, score_floor, log
        self.budgets = budgets
        self.options = list(options) if options else None
        self.info = dict(info or {})
        self.best: dict[str, Any] = best or {}
        self.history: list[dict[str, Any]] = []
        self.evaluate_at_start = evaluate_at_start
        self.expected_scores = expected_scores
        self.keep_all = keep_all

    def _init_callback(self) -> None:
        # EvalCallback's own checks concern evaluate_policy's VecEnv; here: the first multiple of
        # eval_freq after the steps already done (a resumed model starts where it stopped).
        self._next = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.evaluate_at_start and self.model.num_timesteps == 0:
            self.evaluate()  # a warm-started actor is a candidate before any update

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
            self.evaluate()
        return True

    def feasible(self, m: dict[str, float]) -> bool:
        """Whether validation metrics ``m`` meet the score floor and the budgets."""
        return self.meets(m, self.score_floor, self.budgets)

    @staticmethod
    def meets(m: dict[str, Any], score_floor: float | None, budgets: Any) -> bool:
        """Whether metrics ``m`` meet ``score_floor`` and ``budgets`` (a metric a record lacks
        counts as not met)."""
        ok = score_floor is None or m.get("score_mean", -float("inf")) >= score_floor
        return bool(ok and (budgets is None or budgets.met_by(m)))

    def _key(self, m: dict[str, float]) -> tuple[bool, float]:
        return self.feasible(m), m["selection_reward"]

    def evaluate(self) -> dict[str, float]:
        """Evaluate now; save ``best/`` if this is the best feasible evaluation so far."""
        m = eval_metrics(self.val_env, current_policy(self.model), self.seeds, self.options, self.expected_scores)
        m["timesteps"] = float(self.num_timesteps)
        self.history.append(m)
        rec = self.logger.record
        for k in ("reward_mean", "score_mean", "latency_p50_s", "latency_p95_s", "slo_attainment", "cloud_share",
                  "mb_uploaded_mean", "tau_low_mean", "tau_high_mean", "tau_conf_mean"):
            rec(f"eval/{k.removesuffix('_mean') if k in ('reward_mean', 'score_mean') else k}", m[k])
        rec("eval/selection_reward", m["selection_reward"])
        rec("eval/msao_reward", self.msao["reward_mean"])
        rec("eval/msao_score", self.msao["score_mean"])
        rec("eval/msao_latency_p95_s", self.msao["latency_p95_s"])
        self.logger.dump(self.num_timesteps)
        self.evaluations_timesteps.append(self.num_timesteps)
        self.evaluations_results.append([m["reward_mean"]])
        key = self._key(m)
        better = not self.best or key > (self.best["feasible"], self.best.get("selection_reward", self.best["reward_mean"]))
        self.last_mean_reward = m["reward_mean"]
        if better:
            self.best = {"feasible": key[0], "reward_mean": m["reward_mean"], "selection_reward": m["selection_reward"],
                         "score_mean": m["score_mean"], "timesteps": self.num_timesteps}
            self.best_mean_reward = m["reward_mean"]
            save_model_dir(self.model, self.run_dir / "best", {"validation": m, "msao_validation": self.msao, **self.info})
        if self.keep_all:
            save_model_dir(self.model, self.run_dir / "evals" / str(self.num_timesteps), {"validation": m, **self.info})
        append_jsonl(self.run_dir / "validation.jsonl", {**m, "timesteps": int(self.num_timesteps), "feasible": key[0], "selected": better})
        self.log(
            f"[{self.num_timesteps:>8d} steps] val reward {m['reward_mean']:.4f} (MSAO {self.msao['reward_mean']:.4f}) "
            + (f"selection {m['selection_reward']:.4f} " if m["selection_reward"] != m["reward_mean"] else "") +
            f"score {m['score_mean']:.3f} (MSAO {self.msao['score_mean']:.3f}) p95 {m['latency_p95_s']:.2f} s "
            f"cloud {m['cloud_share']:.2f}"
            + (f" MB {m['mb_uploaded_mean']:.4f}" if self.budgets is not None and self.budgets.upload_mb_per_request is not None else "")
            + (" (misses the score floor or a budget)" if not key[0] else "")
            + (" *best" if better else "")
        )
        return m


class RunCheckpointCallback(CheckpointCallback):
    """The run's latest checkpoint in ``RUN_DIR/checkpoint/`` every ``checkpoint_freq`` env steps.

    SB3's ``CheckpointCallback`` decides when (every ``checkpoint_freq // n_envs`` calls of this
    ``learn()``) and saves the model and, with ``save_vecnormalize``, the ``VecNormalize``
    statistics; :meth:`_checkpoint_path` points those saves at temporary names, which are then
    renamed over ``model.zip`` and ``vecnormalize.pkl`` next to ``vecnormalize.json`` and
    ``info.json`` (``state``: seed, Lagrange multiplier, steps done; resume reads it back).
    """

    def __init__(self, run_dir: Path, checkpoint_freq: int, n_envs: int, state: dict[str, Any]) -> None:
        super().__init__(save_freq=max(checkpoint_freq // n_envs, 1), save_path=str(run_dir / "checkpoint"), save_vecnormalize=True)
        self.run_dir, self.state = run_dir, state
        self.dir = run_dir / "checkpoint"

    def _checkpoint_path(self, checkpoint_type: str = "", extension: str = "") -> str:
        return str(self.dir / (".vecnormalize.pkl.tmp" if checkpoint_type == "vecnormalize_" else f".model.tmp.{extension}"))

    def _on_step(self) -> bool:
        due = self.n_calls % self.save_freq == 0
        super()._on_step()
        if due:
            self._commit()
        return True

    def _commit(self) -> None:
        os.replace(self.dir / ".model.tmp.zip", self.dir / "model.zip")
        vn = self.model.get_vec_normalize_env()
        if vn is not None:
            os.replace(self.dir / ".vecnormalize.pkl.tmp", self.dir / "vecnormalize.pkl")
            save_vecnormalize_stats(vn, self.dir / "vecnormalize.json")
        self.state["num_timesteps"] = int(self.num_timesteps)
        atomic_write_json(self.dir / "info.json", self.state)

    def save(self) -> None:
        """Write the checkpoint now (at the end of training)."""
        self.num_timesteps = self.model.num_timesteps
        save_model_dir(self.model, self.dir, {**self.state, "num_timesteps": int(self.model.num_timesteps)})
        self.state["num_timesteps"] = int(self.model.num_timesteps)
