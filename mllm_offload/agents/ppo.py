"""PPO on ``Offload-v0`` with stable-baselines3 (a first, small trainer).

:func:`train_ppo` trains on the *training* split with observation normalisation
(``VecNormalize``) and returns a :class:`SB3Policy` that maps raw observations to thresholds the
way the environment does (normalise, deterministic action, clip to ``[0,1]^3``,
:meth:`Thresholds.from_action`). Requires the ``train`` extra (torch, stable-baselines3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..decision import Thresholds
from .heuristics import Policy

__all__ = ["SB3Policy", "train_ppo"]


class SB3Policy(Policy):
    """A trained SB3 model plus the observation statistics it was trained with."""

    name = "ppo"

    def __init__(self, model: Any, obs_mean: np.ndarray, obs_var: np.ndarray, clip_obs: float = 10.0, epsilon: float = 1e-8) -> None:
        self.model = model
        self.obs_mean = np.asarray(obs_mean, dtype=np.float64)
        self.obs_std = np.sqrt(np.asarray(obs_var, dtype=np.float64) + epsilon)
        self.clip_obs = clip_obs

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(obs, np.float64) - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs).astype(np.float32)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        action, _ = self.model.predict(self.normalize(obs), deterministic=True)
        return Thresholds.from_action(np.clip(action, 0.0, 1.0))


def train_ppo(
    make_env: Callable[[], Any],
    timesteps: int,
    seed: int = 0,
    n_envs: int = 1,
    out_dir: str | Path | None = None,
    progress_bar: bool = True,
    **ppo_kwargs: Any,
) -> SB3Policy:
    """Train PPO for ``timesteps`` steps on envs from ``make_env``; save ``model.zip`` into ``out_dir``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecNormalize

    venv = make_vec_env(make_env, n_envs=n_envs, seed=seed, vec_env_cls=SubprocVecEnv if n_envs > 1 else None)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=0.99)
    kwargs = dict(n_steps=512, batch_size=128, learning_rate=3e-4, gamma=0.9, gae_lambda=0.95, ent_coef=0.0, verbose=0)
    kwargs.update(ppo_kwargs)
    model = PPO("MlpPolicy", venv, seed=seed, **kwargs)
    model.learn(total_timesteps=timesteps, progress_bar=progress_bar)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "model.zip")
        venv.save(str(out / "vecnormalize.pkl"))
    policy = SB3Policy(model, venv.obs_rms.mean, venv.obs_rms.var, venv.clip_obs, venv.epsilon)
    venv.close()
    return policy
