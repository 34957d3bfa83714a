"""A training run folder: what was asked (``run.json``), resume, the score floor, hyperparameters.

``RUN_DIR/run.json`` records the scenario arguments, the hyperparameters and the seed, so that
``train --resume RUN_DIR`` rebuilds exactly the same scenario, and export can stamp the policy
with where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..._io import atomic_write_text
from ...config import PPOHyperparams, default_hyperparams_path, format_validation_error, load_hyperparams
from ...errors import UserInputError
from ...splits import SCORE_FLOOR_SEEDS

__all__ = ["RUN_ARGS", "hyperparams", "read_run_args", "score_floor", "write_run_record"]

#: The arguments that define a run's scenario and training (restored by ``--resume``).
RUN_ARGS = ("profile", "trace", "bandwidth", "config", "seed", "episode_len", "score_floor", "hyperparams")
_PATH_ARGS = ("trace", "config", "hyperparams")


def hyperparams(path: Path | None, section: str, timesteps: int | None = None, n_envs: int | None = None) -> tuple[PPOHyperparams, str]:
    """Hyperparameters of ``section`` (a profile name) from ``path`` or the shipped file, with
    ``--timesteps``/``--n-envs`` overrides; returns them and where they came from."""
    src = path if path is not None else default_hyperparams_path()
    hp = load_hyperparams(src, section) if src.is_file() or path is not None else PPOHyperparams()
    upd = {k: v for k, v in (("n_timesteps", timesteps), ("n_envs", n_envs)) if v is not None}
    if upd:
        try:
            hp = PPOHyperparams.model_validate({**hp.model_dump(), **upd})
        except ValidationError as e:
            raise UserInputError(format_validation_error("train: --timesteps/--n-envs", e)) from None
    return hp, str(src) if src.is_file() else "built-in defaults"


def read_run_args(run: Path) -> dict[str, Any]:
    """The arguments saved in ``run/run.json`` (paths as :class:`Path`), plus ``timesteps``."""
    rj = run / "run.json"
    if not rj.is_file():
        raise UserInputError(f"{run}: not a run directory (no run.json)")
    try:
        saved = json.loads(rj.read_text(encoding="utf-8"))["args"]
        if not isinstance(saved, dict):
            raise TypeError("args is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{rj}: unreadable: {e}") from None
    out: dict[str, Any] = {}
    for k in (*RUN_ARGS, "timesteps"):
        v = saved.get(k)
        out[k] = Path(v) if k in _PATH_ARGS and v is not None else v
    return out


def write_run_record(run: Path, args: dict[str, Any], hp: PPOHyperparams, hp_source: str, floor: float | None,
                     export_meta: dict[str, Any]) -> None:
    """``run/run.json`` (atomically): the arguments, the hyperparameters and export metadata."""
    run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    record = {"args": run_args, "hyperparams": hp.model_dump(), "hyperparams_source": hp_source,
              "score_floor_value": floor, "export_meta": export_meta}
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "run.json", json.dumps(record, indent=2) + "\n")


def score_floor(text: str, scenario: Any) -> float | None:
    """``none`` -> None; ``msao`` -> MSAO's mean score on training episodes
    (:data:`~mllm_offload.splits.SCORE_FLOOR_SEEDS`); else a number in [0, 1]."""
    if text == "none":
        return None
    if text == "msao":
        from .training import msao_reference

        return msao_reference(scenario.make_env("train"), list(SCORE_FLOOR_SEEDS))["score_mean"]
    try:
        v = float(text)
    except ValueError:
        raise UserInputError(f"--score-floor: expected 'msao', 'none' or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise UserInputError(f"--score-floor: must be in [0, 1], got {v}")
    return v
