"""PPO on ``Offload-v0`` with stable-baselines3: training, validation against MSAO, checkpoints.

A run directory holds::

    RUN_DIR/run.json          what was asked (scenario, hyperparameters, seed), for --resume
    RUN_DIR/tb/               TensorBoard scalars (SB3's train/rollout ones and eval/*)
    RUN_DIR/checkpoint/       latest checkpoint: model.zip, vecnormalize.pkl, state.json
    RUN_DIR/best/             best model on validation episodes (+ vecnormalize.json, info.json)
    RUN_DIR/final/            model at the end of training
    RUN_DIR/policy/           the exported artifact (written by the CLI after training)

Training uses the *training* split (requests and bandwidth traces); :class:`ValidationCallback`
evaluates on the *validation* split with fixed seeds and logs the MSAO heuristic's metrics on the
same episodes for reference.

**Score floor (constrained PPO).** A policy that simply maximises the reward may buy latency
with quality. With ``score_floor`` set, training solves the constrained problem "maximise reward
subject to mean score >= floor" with a Lagrange multiplier (PPO-Lagrangian, Ray et al. 2019,
"Benchmarking Safe Exploration in Deep RL"): the training reward becomes
``r + lam * (score - floor)`` and after every rollout ``lam <- max(0, lam + lam_lr * (floor -
mean rollout score))``. ``lam`` is logged as ``train/lagrange_lambda``. Every reported reward is
the unmodified one. The CLI sets the floor to MSAO's mean score on training episodes, so the
learned policy is held to MSAO's quality and competes on latency, cost and energy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..config import PPOHyperparams
from ..decision import Thresholds
from ..errors import UserInputError
from .evaluation import run_episodes, summarize
from .baselines import MSAOHeuristic, Policy

__all__ = [
    "SB3Policy",
    "RecordingPolicy",
    "TrainResult",
    "msao_reference",
    "train",
    "save_vecnormalize_stats",
    "load_vecnormalize_stats",
]


class SB3Policy(Policy):
    """A trained SB3 model plus the observation statistics it was trained with."""

    name = "ppo"

    def __init__(self, model: Any, obs_mean: np.ndarray | None, obs_var: np.ndarray | None, clip_obs: float = 10.0, epsilon: float = 1e-8) -> None:
        self.model = model
        self.obs_mean = None if obs_mean is None else np.array(obs_mean, dtype=np.float64)
        self.obs_std = None if obs_var is None else np.sqrt(np.array(obs_var, dtype=np.float64) + epsilon)
        self.clip_obs = clip_obs

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        if self.obs_mean is None:
            return np.asarray(obs, np.float32)
        return np.clip((np.asarray(obs, np.float64) - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs).astype(np.float32)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        action, _ = self.model.predict(self.normalize(obs), deterministic=True)
        return Thresholds.from_action(np.clip(action, 0.0, 1.0))


class RecordingPolicy(Policy):
    """Wraps a policy and records the thresholds it returns (for the thresholds' means)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name
        self.seen: list[tuple[float, float, float]] = []

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        th = self.inner.thresholds(obs)
        self.seen.append((th.tau_low, th.tau_high, th.tau_conf))
        return th


def save_vecnormalize_stats(venv: Any, path: str | Path) -> None:
    """Observation statistics of a ``VecNormalize`` as JSON (read without unpickling)."""
    rms = venv.obs_rms
    atomic_write_text(path, json.dumps({
        "mean": [float(v) for v in rms.mean], "var": [float(v) for v in rms.var], "count": float(rms.count),
        "clip_obs": float(venv.clip_obs), "epsilon": float(venv.epsilon), "norm_obs": bool(venv.norm_obs),
    }) + "\n")


def load_vecnormalize_stats(path: str | Path) -> tuple[np.ndarray | None, np.ndarray | None, float, float]:
    """``(mean, var, clip_obs, epsilon)`` from :func:`save_vecnormalize_stats`; no file -> no normalisation."""
    p = Path(path)
    if not p.exists():
        return None, None, 10.0, 1e-8
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if not d.get("norm_obs", True):
            return None, None, 10.0, 1e-8
        return np.asarray(d["mean"], np.float64), np.asarray(d["var"], np.float64), float(d["clip_obs"]), float(d["epsilon"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{p}: bad normalisation statistics: {e}") from None


def _sb3() -> Any:
    try:
        import stable_baselines3 as sb3
        from stable_baselines3.common import callbacks, vec_env
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserInputError(f"train: needs the 'train' extra (pip install 'mllm-offload[train]'): {e}") from None
    return sb3, callbacks, vec_env


def _make_score_lagrangian() -> type:
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class _ScoreLagrangian(VecEnvWrapper):
        """Adds ``lam * (score - floor)`` to every reward; ``update()`` does the dual step."""

        def __init__(self, venv: Any, floor: float, lam: float = 0.0, lam_lr: float = 2.0) -> None:
            super().__init__(venv)
            self.floor, self.lam, self.lam_lr = floor, lam, lam_lr
            self._scores: list[float] = []

        def reset(self) -> Any:
            return self.venv.reset()

        def step_wait(self) -> Any:
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

    return _ScoreLagrangian


def _find(venv: Any, name: str) -> Any:
    while venv is not None:
        if type(venv).__name__ == name:
            return venv
        venv = getattr(venv, "venv", None)
    return None


def _save_model_dir(model: Any, venv: Any, d: Path, info: dict[str, Any]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / ".model.zip.tmp.zip"
    model.save(tmp)
    os.replace(tmp, d / "model.zip")
    vn = _find(venv, "VecNormalize")
    if vn is not None:
        tmp_pkl = d / ".vecnormalize.pkl.tmp"
        vn.save(str(tmp_pkl))
        os.replace(tmp_pkl, d / "vecnormalize.pkl")
        save_vecnormalize_stats(vn, d / "vecnormalize.json")
    atomic_write_text(d / "info.json", json.dumps(info, indent=2) + "\n")


def _current_policy(model: Any) -> SB3Policy:
    vn = _find(model.get_env(), "VecNormalize")
    if vn is None or not vn.norm_obs:
        return SB3Policy(model, None, None)
    return SB3Policy(model, vn.obs_rms.mean.copy(), vn.obs_rms.var.copy(), vn.clip_obs, vn.epsilon)


def _eval_metrics(env: Any, policy: Policy, seeds: Sequence[int]) -> dict[str, float]:
    rec = RecordingPolicy(policy)
    m = summarize(run_episodes(env, rec, seeds), env.unwrapped.slo_s)
    th = np.asarray(rec.seen) if rec.seen else np.full((1, 3), np.nan)
    m["tau_low_mean"], m["tau_high_mean"], m["tau_conf_mean"] = (float(v) for v in th.mean(axis=0))
    return m


def _make_callbacks(base: type) -> tuple[type, type]:
    class ValidationCallback(base):  # type: ignore[misc, valid-type]
        """Every ``eval_freq`` env steps: evaluate on validation episodes, log, keep the best.

        Logs ``eval/reward``, ``eval/score``, ``eval/latency_p50_s``, ``eval/latency_p95_s``,
        ``eval/slo_attainment``, ``eval/cloud_share``, ``eval/tau_{low,high,conf}_mean`` and the
        MSAO heuristic's ``eval/msao_reward``, ``eval/msao_score``, ``eval/msao_latency_p95_s``
        on the same episodes. ``best/`` keeps the model with the highest validation reward among
        evaluations that meet ``score_floor`` (all of them when it is None).
        """

        def __init__(self, val_env: Any, seeds: Sequence[int], eval_freq: int, run_dir: Path, msao: dict[str, float], score_floor: float | None, log: Callable[[str], None], best: dict[str, Any] | None = None) -> None:
            super().__init__()
            self.val_env, self.seeds, self.eval_freq = val_env, list(seeds), eval_freq
            self.run_dir, self.msao, self.score_floor, self.log = run_dir, msao, score_floor, log
            self.best = best or {}
            self.history: list[dict[str, float]] = []
            self._next = 0

        def _init_callback(self) -> None:
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self._next += self.eval_freq
                self.evaluate()
            return True

        def _key(self, m: dict[str, float]) -> tuple[bool, float]:
            ok = self.score_floor is None or m["score_mean"] >= self.score_floor
            return ok, m["reward_mean"]

        def evaluate(self) -> dict[str, float]:
            m = _eval_metrics(self.val_env, _current_policy(self.model), self.seeds)
            m["timesteps"] = float(self.num_timesteps)
            self.history.append(m)
            rec = self.logger.record
            for k in ("reward_mean", "score_mean", "latency_p50_s", "latency_p95_s", "slo_attainment", "cloud_share", "tau_low_mean", "tau_high_mean", "tau_conf_mean"):
                rec(f"eval/{k.removesuffix('_mean') if k in ('reward_mean', 'score_mean') else k}", m[k])
            rec("eval/msao_reward", self.msao["reward_mean"])
            rec("eval/msao_score", self.msao["score_mean"])
            rec("eval/msao_latency_p95_s", self.msao["latency_p95_s"])
            self.logger.dump(self.num_timesteps)
            key = self._key(m)
            better = not self.best or key > (self.best["feasible"], self.best["reward_mean"])
            if better:
                self.best = {"feasible": key[0], "reward_mean": m["reward_mean"], "score_mean": m["score_mean"], "timesteps": self.num_timesteps}
                _save_model_dir(self.model, self.model.get_env(), self.run_dir / "best", {"validation": m, "msao_validation": self.msao})
            self.log(
                f"[{self.num_timesteps:>8d} steps] val reward {m['reward_mean']:.4f} (MSAO {self.msao['reward_mean']:.4f}) "
                f"score {m['score_mean']:.3f} (MSAO {self.msao['score_mean']:.3f}) p95 {m['latency_p95_s']:.2f} s "
                f"cloud {m['cloud_share']:.2f}{' *best' if better else ''}"
            )
            return m

        def _on_training_end(self) -> None:
            pass

    class CheckpointAndDual(base):  # type: ignore[misc, valid-type]
        """Checkpoints every ``checkpoint_freq`` env steps; the Lagrangian dual step per rollout."""

        def __init__(self, run_dir: Path, checkpoint_freq: int, state: dict[str, Any]) -> None:
            super().__init__()
            self.run_dir, self.freq, self.state = run_dir, checkpoint_freq, state
            self._next = 0

        def _init_callback(self) -> None:
            self._next = (self.num_timesteps // self.freq + 1) * self.freq

        def _on_step(self) -> bool:
            if self.num_timesteps >= self._next:
                self._next += self.freq
                self.save()
            return True

        def _on_rollout_end(self) -> None:
            lag = _find(self.model.get_env(), "_ScoreLagrangian")
            if lag is not None:
                mean = lag.update()
                self.logger.record("train/lagrange_lambda", lag.lam)
                self.logger.record("train/rollout_score", mean)
                self.state["lam"] = lag.lam

        def save(self) -> None:
            self.state["num_timesteps"] = int(self.num_timesteps)
            _save_model_dir(self.model, self.model.get_env(), self.run_dir / "checkpoint", dict(self.state))

    return ValidationCallback, CheckpointAndDual


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    timesteps: int
    seconds: float
    best: dict[str, Any]
    msao_validation: dict[str, float]
    score_floor: float | None
    history: list[dict[str, float]] = field(default_factory=list)


def msao_reference(env: Any, seeds: Sequence[int]) -> dict[str, float]:
    """MSAO's metrics on ``env`` for ``seeds`` (the reference of validation and the score floor)."""
    return _eval_metrics(env, MSAOHeuristic(env.unwrapped.slo_s), seeds)


def train(
    make_env: Callable[[str], Any],
    hp: PPOHyperparams,
    run_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    progress_bar: bool = True,
    score_floor: float | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> TrainResult:
    """Train PPO for ``hp.n_timesteps`` env steps in total (``resume`` continues ``run_dir/checkpoint``).

    ``make_env(split)`` builds an :class:`~mllm_offload.envs.OffloadEnv` for a split (``train``
    or ``val``); it is called in worker processes when ``hp.n_envs > 1``, so it must be
    picklable by cloudpickle (closures are fine). ``score_floor``: see the module docstring.
    """
    import time

    import torch

    sb3, callbacks, vec_env = _sb3()
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint"
    state: dict[str, Any] = {"seed": seed, "lam": hp.lagrange_init, "num_timesteps": 0}
    if resume:
        if not (ckpt / "model.zip").exists():
            raise UserInputError(f"{run}: nothing to resume (no checkpoint/model.zip)")
        state.update(json.loads((ckpt / "info.json").read_text(encoding="utf-8")))
    torch.set_num_threads(1)  # small MLP: threads only add overhead; workers are processes
    val_env = make_env("val")
    seeds = [900_000 + k for k in range(hp.eval_episodes)]
    msao_val = msao_reference(val_env, seeds)
    venv = make_vec_env(
        lambda: make_env("train"), n_envs=hp.n_envs, seed=seed + 7919 * int(state["num_timesteps"]),
        vec_env_cls=vec_env.SubprocVecEnv if hp.n_envs > 1 else vec_env.DummyVecEnv,
    )
    if score_floor is not None:
        venv = _make_score_lagrangian()(venv, score_floor, float(state["lam"]), hp.lagrange_lr)
    norm = hp.normalize
    if resume and (ckpt / "vecnormalize.pkl").exists():
        venv = vec_env.VecNormalize.load(str(ckpt / "vecnormalize.pkl"), venv)
        venv.training = True
    elif norm.norm_obs or norm.norm_reward:
        venv = vec_env.VecNormalize(venv, norm_obs=norm.norm_obs, norm_reward=norm.norm_reward, clip_obs=norm.clip_obs, gamma=hp.gamma)
    pk = hp.policy_kwargs
    policy_kwargs = dict(net_arch=list(pk.net_arch), activation_fn={"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[pk.activation_fn], log_std_init=pk.log_std_init, ortho_init=pk.ortho_init)
    if resume:
        model = sb3.PPO.load(ckpt / "model.zip", env=venv, device="cpu")
    else:
        model = sb3.PPO(
            hp.policy, venv, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs,
            n_steps=hp.n_steps, batch_size=hp.batch_size, n_epochs=hp.n_epochs, learning_rate=hp.learning_rate,
            gamma=hp.gamma, gae_lambda=hp.gae_lambda, clip_range=hp.clip_range, ent_coef=hp.ent_coef,
            vf_coef=hp.vf_coef, max_grad_norm=hp.max_grad_norm, target_kl=hp.target_kl,
        )
    model.set_logger(configure(str(run / "tb"), ["tensorboard"]))
    best_prev: dict[str, Any] = {}
    if resume and (run / "best" / "info.json").exists():
        v = json.loads((run / "best" / "info.json").read_text(encoding="utf-8"))["validation"]
        ok = score_floor is None or v["score_mean"] >= (score_floor if score_floor is not None else 0)
        best_prev = {"feasible": ok, "reward_mean": v["reward_mean"], "score_mean": v["score_mean"], "timesteps": int(v["timesteps"])}
    Val, Ckpt = _make_callbacks(callbacks.BaseCallback)
    val_floor = None if score_floor is None else msao_val["score_mean"] - 0.005
    val_cb = Val(val_env, seeds, hp.eval_freq, run, msao_val, val_floor, log, best_prev)
    ck_cb = Ckpt(run, hp.checkpoint_freq, state)
    remaining = hp.n_timesteps - int(model.num_timesteps)
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=[ck_cb, val_cb], reset_num_timesteps=not resume, progress_bar=progress_bar)
    if not val_cb.history or val_cb.history[-1]["timesteps"] != model.num_timesteps:
        val_cb.evaluate()  # always judge the final weights too
    ck_cb.save()
    _save_model_dir(model, venv, run / "final", {"validation": val_cb.history[-1], "msao_validation": msao_val})
    venv.close()
    return TrainResult(run, int(model.num_timesteps), time.perf_counter() - t0, val_cb.best, msao_val, score_floor, val_cb.history)
