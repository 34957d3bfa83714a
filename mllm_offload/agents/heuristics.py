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
from ..errors import UserInputError
from ..observation import OBSERVATION_SPEC

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

_IX = {name: OBSERVATION_SPEC.index(name) for name in OBSERVATION_SPEC.names}


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
        super().__init__(Thresholds(1.0, 1.0, 0.0), "edge")


class CloudOnly(StaticThresholds):
    """Always the cloud: ``tau_high = 0`` sends every request to CLOUD."""

    def __init__(self) -> None:
        super().__init__(Thresholds(0.0, 0.0, 1.0), "cloud")


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
    """Our written-down reading of MSAO's rule (Modality Activation Sparsity-aware Offloading).

    MAS decides: requests whose joint MAS score is high (dense activations, hard for a small
    model) go to the cloud, low ones run on the edge, the middle band runs speculatively with
    confidence-guided cancellation. The MAS thresholds move with the system state:

    * ``net = clip(log2(T_cloud / (net_share * SLO)), -2, 2) / 2`` in [-1, 1], where
      ``T_cloud`` = estimated upload time (payload / estimated bandwidth + RTT) + uplink backlog
      + recently measured cloud response time: positive when the cloud path is slow;
    * ``load = clip(edge_wait / (load_share * SLO), 0, 1)``: the edge queue's expected wait;
    * ``tau_low = base_low + k_net*net - k_load*load`` and ``tau_high = base_high + k_net*net
      - k_load*load`` (clipped to [0, 1]): a slow network keeps more requests on the edge, a
      busy edge sends more to the cloud;
    * ``tau_conf = base_conf - k_conf*net``: when the network is slow, a less confident edge
      answer is accepted rather than waiting for the cloud.

    The defaults were set by hand once, from the paper's description (accuracy close to the
    cloud's, so a fairly strict ``base_conf``), and are not tuned per scenario (that is what
    :class:`TunedStatic` and PPO are compared for).
    """

    name = "msao"

    def __init__(
        self,
        slo_s: float,
        base_low: float = 0.35,
        base_high: float = 0.65,
        base_conf: float = 0.75,
        k_net: float = 0.25,
        k_load: float = 0.25,
        k_conf: float = 0.1,
        net_share: float = 0.25,
        load_share: float = 0.5,
    ) -> None:
        if slo_s <= 0:
            raise UserInputError(f"msao: slo_s must be > 0, got {slo_s}")
        self.slo_s = slo_s
        self.base_low, self.base_high, self.base_conf = base_low, base_high, base_conf
        self.k_net, self.k_load, self.k_conf = k_net, k_load, k_conf
        self.net_share, self.load_share = net_share, load_share

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        o = obs.tolist() if hasattr(obs, "tolist") else list(obs)
        t_cloud = math.expm1(o[_IX["upload_est_s_log1p"]]) + o[_IX["uplink_queue_s"]] + o[_IX["cloud_latency_recent_s"]]
        net = min(max(math.log2(max(t_cloud, 1e-6) / (self.net_share * self.slo_s)), -2.0), 2.0) / 2.0
        load = min(max(o[_IX["edge_queue_s"]] / (self.load_share * self.slo_s), 0.0), 1.0)
        shift = self.k_net * net - self.k_load * load

        def clip(x: float) -> float:
            return min(max(x, 0.0), 1.0)

        lo, hi = clip(self.base_low + shift), clip(self.base_high + shift)
        return Thresholds(min(lo, hi), hi, clip(self.base_conf - self.k_conf * net))


DEFAULT_GRID: tuple[tuple[float, ...], tuple[float, ...]] = (
    (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0),  # tau_low and tau_high values
    (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0),  # tau_conf values
)


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
        mas_values, conf_values = grid
        cands = [
            Thresholds(lo, hi, c)
            for lo, hi in itertools.combinations_with_replacement(sorted(mas_values), 2)
            for c in conf_values
        ]
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
