"""A trained SB3 model as a :class:`~mllm_offload.policy.Policy`, and its normalisation stats.

``VecNormalize`` statistics are kept as JSON beside SB3's pickle, so that export and evaluation
read them without unpickling anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_write_text, json_text
from ...artifact import Normalization
from ...decision import Thresholds, UploadPlan
from ...errors import UserInputError
from ...policy import Policy, decide

__all__ = ["RecordingPolicy", "SB3Policy", "current_policy", "load_vecnormalize_stats", "save_vecnormalize_stats"]


class SB3Policy:
    """A trained SB3 model plus the observation statistics it was trained with.

    ``obs_mean``/``obs_var`` ``None``: the model sees raw observations.
    """

    def __init__(self, model: Any, obs_mean: np.ndarray | None, obs_var: np.ndarray | None, clip_obs: float = 10.0,
                 epsilon: float = 1e-8, name: str = "ppo") -> None:
        self.model = model
        self.name = name
        self.norm: Normalization | None = None
        if obs_mean is not None and obs_var is not None:
            self.norm = Normalization(mean=[float(v) for v in obs_mean], var=[float(v) for v in obs_var], clip_obs=clip_obs, epsilon=epsilon)

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        """Stateless: nothing to do."""

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return self.norm.apply(obs) if self.norm is not None else np.asarray(obs, np.float32)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return self.decide(obs)[0]

    def decide(self, obs: np.ndarray) -> tuple[Thresholds, UploadPlan | None]:
        """Thresholds and, for a model of six actions, the upload plan."""
        action, _ = self.model.predict(self.normalize(obs), deterministic=True)
        a = np.clip(np.asarray(action, np.float64).reshape(-1), 0.0, 1.0)
        return Thresholds.from_action(a[:3]), (UploadPlan.from_action(a[3:6]) if a.shape[0] == 6 else None)


def current_policy(model: Any) -> SB3Policy:
    """The model being trained, with the live statistics of its ``VecNormalize`` (if any)."""
    vn = model.get_vec_normalize_env()
    if vn is None or not vn.norm_obs:
        return SB3Policy(model, None, None)
    return SB3Policy(model, vn.obs_rms.mean.copy(), vn.obs_rms.var.copy(), vn.clip_obs, vn.epsilon)


class RecordingPolicy:
    """Wraps a policy and records the thresholds it returns (for the thresholds' means)."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name
        self.seen: list[tuple[float, float, float]] = []

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        self.inner.reset(seed, env=env)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return self.decide(obs)[0]

    def decide(self, obs: np.ndarray) -> tuple[Thresholds, UploadPlan | None]:
        th, plan = decide(self.inner, obs)
        self.seen.append((th.tau_low, th.tau_high, th.tau_conf))
        return th, plan


def save_vecnormalize_stats(venv: Any, path: str | Path) -> None:
    """Observation statistics of a ``VecNormalize`` as JSON (read without unpickling)."""
    rms = venv.obs_rms
    atomic_write_text(path, json_text({
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
        if not isinstance(d, dict):
            raise TypeError(f"expected a JSON object, got {type(d).__name__}")
        if not d.get("norm_obs", True):
            return None, None, 10.0, 1e-8
        return np.asarray(d["mean"], np.float64), np.asarray(d["var"], np.float64), float(d["clip_obs"]), float(d["epsilon"])
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{p}: bad normalisation statistics: {e}") from None
