"""Hand-written policies: baselines, the MSAO heuristic, tuned static thresholds, the oracle.

Every deployable policy maps an observation (:data:`~mllm_offload.observation.OBSERVATION_SPEC`
order) to :class:`~mllm_offload.decision.Thresholds`, exactly like a learned one.
:class:`HindsightOracle` is the exception: it looks at realised outcomes and is an upper bound,
not a deployable policy.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from ..decision import Thresholds
from ..rules import CLOUD_ONLY, EDGE_ONLY, make_rule

if TYPE_CHECKING:  # pragma: no cover
    from ..envs.offload_env import OffloadEnv

__all__ = [
    "Policy",
    "StaticThresholds",
    "EdgeOnly",
    "CloudOnly",
    "RandomPolicy",
    "MSAOHeuristic",
    "TunedStatic",
    "HindsightOracle",
    "POLICY_NAMES",
]

class Policy(ABC):
    """Maps an observation to thresholds. ``name`` labels it in reports."""

    name: str = "policy"

    def reset(self, seed: int | None = None) -> None:
        """Called at the start of every episode (stateless policies ignore it)."""

    @abstractmethod
    def thresholds(self, obs: np.ndarray) -> Thresholds:
        """Thresholds for the request described by ``obs``."""


class StaticThresholds(Policy):
    """The same thresholds for every request."""

    def __init__(self, th: Thresholds, name: str = "static") -> None:
        self.th = th
        self.name = name

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return self.th

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.th})"


class EdgeOnly(StaticThresholds):
    """Always the edge answer: EDGE_FIRST with ``tau_conf = 0`` (never escalates)."""

    def __init__(self) -> None:
        super().__init__(EDGE_ONLY, "edge")


class CloudOnly(StaticThresholds):
    """Always the cloud: ``tau_high = 0`` sends every request to CLOUD."""

    def __init__(self) -> None:
        super().__init__(CLOUD_ONLY, "cloud")


class RandomPolicy(Policy):
    """Uniformly random raw actions in ``[0,1]^3``."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng([self._seed, seed])

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return Thresholds.from_action(self.rng.random(3))


class MSAOHeuristic(Policy):
    """The MSAO heuristic as a policy: :class:`mllm_offload.rules.MSAORule` (documented there).

    The rule itself lives at the contracts level so that the deployed router runs the same code.
    Keyword arguments are the rule's parameters (``base_low``, ``base_high``, ``base_conf``,
    ``k_net``, ``k_load``, ``k_conf``, ``net_share``, ``load_share``).
    """

    name = "msao"

    def __init__(self, slo_s: float, **params: float) -> None:
        self.rule = make_rule("msao", {"slo_s": slo_s, **params})
        self.slo_s = slo_s

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return self.rule.thresholds(obs)


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


class TunedStatic(StaticThresholds):
    """The best fixed thresholds found by grid search on *training* episodes.

    Build it with :meth:`fit`; the bar a learned policy must clear to be worth deploying.
    """

    def __init__(self, th: Thresholds, train_reward: float = float("nan")) -> None:
        super().__init__(th, "tuned")
        self.train_reward = train_reward

    @classmethod
    def fit(
        cls,
        score: Callable[[Policy], float],
        grid: tuple[Sequence[float], Sequence[float]] = DEFAULT_GRID,
        progress: Callable[[Iterable], Iterable] | None = None,
    ) -> "TunedStatic":
        """Grid search: ``score(policy)`` is the mean training reward of a candidate policy."""
        cands = threshold_grid(grid)
        it = progress(cands) if progress else cands
        best, best_r = cands[0], -math.inf
        for th in it:
            r = score(StaticThresholds(th))
            if r > best_r:
                best, best_r = th, r
        return cls(best, best_r)


class HindsightOracle(Policy):
    """Per request, the mode whose *realised* outcome earns the most reward (an upper bound).

    Candidates: edge only, cloud only, speculative waiting for the cloud, edge-first always
    escalating. It needs the environment (:meth:`choose`); ``thresholds(obs)`` is not defined.
    """

    name = "oracle"
    CANDIDATES = (
        Thresholds(1.0, 1.0, 0.0),  # edge only
        Thresholds(0.0, 0.0, 1.0),  # cloud only
        Thresholds(0.0, 1.0, 1.0),  # speculative, never accept the edge
        Thresholds(1.0, 1.0, 1.0),  # edge first, always escalate
    )

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        raise TypeError("HindsightOracle needs realised outcomes: call choose(env)")

    def choose(self, env: "OffloadEnv") -> Thresholds:
        rewards = env.counterfactual_rewards(self.CANDIDATES)
        return self.CANDIDATES[int(np.argmax(rewards))]


#: Policy names the command line accepts, with what they build.
POLICY_NAMES: dict[str, str] = {
    "edge": "EdgeOnly",
    "cloud": "CloudOnly",
    "random": "RandomPolicy",
    "msao": "MSAOHeuristic",
    "tuned": "TunedStatic (grid search on the training split)",
    "oracle": "HindsightOracle (upper bound)",
}
