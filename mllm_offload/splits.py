"""The one place for splits and seeds (a contract: imports nothing from the package but errors).

Every split and every seed the package uses is defined here, so the simulator, the CLI, the
examples, the tests and the benchmarks cannot drift apart.

=====================  ===================================================================
what                   rule
=====================  ===================================================================
bandwidth folder       a trace file's split comes from the sha256 of its *file name*:
                       ``train`` 70 %, ``val`` 15 %, ``test`` 15 % (:func:`split_of_name`),
                       so adding a file never moves another one
request trace          time-ordered: ``train`` the first 70 %, ``val`` the next 15 %,
                       ``test`` the rest (:func:`split_slice`)
synthetic requests     each split draws its own realisation (:data:`SYNTHETIC_TRACE_SEED`)
Markov bandwidth       each split draws its own traces (:data:`MARKOV_TRACE_SEED`)
evaluation episodes    ``seed * 100003 + k`` for ``k < ceil(requests / episode length)``
                       (:func:`evaluation_seeds`), the same for every policy
TunedStatic fitting    4 training-split episodes (:data:`TUNING_SEEDS`)
score floor ``msao``   16 training-split episodes (:data:`SCORE_FLOOR_SEEDS`)
PPO warm start         8 to 64 training-split episodes per price (:data:`WARM_START_SEEDS`)
PPO validation         ``900000 + k`` on the validation split (:func:`validation_seeds`)
PPO environments       ``seed + 7919 * steps done`` (:func:`vec_env_seed`: a resumed run
                       draws new episodes)
=====================  ===================================================================
"""

from __future__ import annotations

import hashlib
import math

from .errors import UserInputError

__all__ = [
    "MARKOV_TRACE_SEED",
    "SCORE_FLOOR_SEEDS",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "SYNTHETIC_TRACE_SEED",
    "TUNING_SEEDS",
    "WARM_START_SEEDS",
    "check_split",
    "evaluation_seeds",
    "split_of_name",
    "split_slice",
    "validation_seeds",
    "vec_env_seed",
]

#: The parts of the data: ``all`` is the union of the other three.
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
#: Shares of ``train`` and ``val``; ``test`` is the rest.
SPLIT_FRACTIONS: tuple[float, float] = (0.7, 0.15)
#: Seed of the synthetic request trace of each split (disjoint request realisations).
SYNTHETIC_TRACE_SEED: dict[str, int] = {"train": 0, "val": 1, "test": 2, "all": 3}
#: Seed of the traces a Markov bandwidth model draws for each split.
MARKOV_TRACE_SEED: dict[str, int] = {"train": 101, "val": 202, "test": 303, "all": 404}
#: Training-split episodes on which TunedStatic's grid search scores each candidate.
TUNING_SEEDS: tuple[int, ...] = tuple(10_000 + k for k in range(4))
#: Training-split episodes on which ``--score-floor msao`` measures MSAO's mean score.
SCORE_FLOOR_SEEDS: tuple[int, ...] = tuple(50_000 + k for k in range(16))
#: Training-split episodes whose observations a PPO warm start imitates TunedStatic on (the first
#: 8 per price, more up to all 64 when fewer prices and shorter episodes leave < 5000 observations).
WARM_START_SEEDS: tuple[int, ...] = tuple(60_000 + k for k in range(64))

_EVAL_STRIDE = 100_003
_VALIDATION_BASE = 900_000
_RESUME_STRIDE = 7919


def check_split(part: str) -> str:
    """``part`` if it names a split, else a :class:`UserInputError` listing them."""
    if part not in SPLITS:
        raise UserInputError(f"split: unknown part {part!r} ({', '.join(SPLITS)})")
    return part


def split_of_name(name: str, fractions: tuple[float, float] = SPLIT_FRACTIONS) -> str:
    """Stable split of a file by its name: ``train`` (70 %), ``val`` (15 %) or ``test``."""
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def split_slice(n: int, part: str, fractions: tuple[float, float] = SPLIT_FRACTIONS) -> slice:
    """Positions of ``part`` among ``n`` time-ordered requests."""
    check_split(part)
    a = round(n * fractions[0])
    b = round(n * (fractions[0] + fractions[1]))
    return {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n), "all": slice(0, n)}[part]


def evaluation_seeds(requests: int, episode_len: int, seed: int = 0) -> list[int]:
    """Seeds of the ``ceil(requests / episode_len)`` episodes every policy is evaluated on."""
    return [seed * _EVAL_STRIDE + k for k in range(max(1, math.ceil(requests / episode_len)))]


def validation_seeds(n: int) -> list[int]:
    """Seeds of the ``n`` validation episodes of PPO training (and of MSAO's reference on them)."""
    return [_VALIDATION_BASE + k for k in range(n)]


def vec_env_seed(seed: int, timesteps_done: int) -> int:
    """Seed of the training environments; a resumed run (``timesteps_done > 0``) draws new episodes."""
    return seed + _RESUME_STRIDE * int(timesteps_done)
