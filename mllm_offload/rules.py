"""Hand-written threshold rules that need no training (a contract, imports nothing below).

They live at the contracts level so that both the simulator's baselines
(:mod:`mllm_offload.agents.heuristics`) and the deployed router
(:mod:`mllm_offload.runtime.policy`) use *the same code*: a deployment can start with MSAO and
switch to a learned policy by changing a path.

Every rule maps an observation in :data:`~mllm_offload.observation.OBSERVATION_SPEC` order to
:class:`~mllm_offload.decision.Thresholds`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

from .decision import Thresholds
from .errors import UserInputError
from .observation import OBSERVATION_SPEC

__all__ = ["MSAORule", "EDGE_ONLY", "CLOUD_ONLY", "RULES", "make_rule"]

_I_UPLOAD = OBSERVATION_SPEC.index("upload_est_s_log1p")
_I_UPLINK_Q = OBSERVATION_SPEC.index("uplink_queue_s")
_I_CLOUD_LAT = OBSERVATION_SPEC.index("cloud_latency_recent_s")
_I_EDGE_Q = OBSERVATION_SPEC.index("edge_queue_s")

#: Always the edge answer: EDGE_FIRST with ``tau_conf = 0`` (never escalates).
EDGE_ONLY = Thresholds(1.0, 1.0, 0.0)
#: Always the cloud: ``tau_high = 0`` sends every request to CLOUD.
CLOUD_ONLY = Thresholds(0.0, 0.0, 1.0)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


@dataclass(frozen=True)
class MSAORule:
    """Our written-down reading of MSAO's rule (Modality Activation Sparsity-aware Offloading).

    MAS decides: requests whose joint MAS score is high (dense activations, hard for a small
    model) go to the cloud, low ones run on the edge, the middle band runs speculatively with
    confidence-guided cancellation. The MAS thresholds move with the system state:

    * ``net = clip(log2(T_cloud / (net_share * SLO)), -2, 2) / 2`` in [-1, 1], where
      ``T_cloud`` (seconds) = estimated upload time (payload / estimated bandwidth + RTT) +
      uplink backlog + recently measured cloud response time: positive when the cloud path is
      slow;
    * ``load = clip(edge_wait / (load_share * SLO), 0, 1)``: the edge queue's expected wait;
    * ``tau_low = base_low + k_net*net - k_load*load`` and ``tau_high = base_high + k_net*net
      - k_load*load`` (clipped to [0, 1]): a slow network keeps more requests on the edge, a
      busy edge sends more to the cloud;
    * ``tau_conf = base_conf - k_conf*net``: when the network is slow, a less confident edge
      answer is accepted rather than waiting for the cloud.

    The defaults were set by hand once, from the paper's description (accuracy close to the
    cloud's, so a fairly strict ``base_conf``), and are not tuned per scenario.
    """

    slo_s: float
    base_low: float = 0.35
    base_high: float = 0.65
    base_conf: float = 0.75
    k_net: float = 0.25
    k_load: float = 0.25
    k_conf: float = 0.1
    net_share: float = 0.25
    load_share: float = 0.5

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise UserInputError(f"msao: {name} must be a finite number, got {v!r}")
        if self.slo_s <= 0 or self.net_share <= 0 or self.load_share <= 0:
            raise UserInputError("msao: slo_s, net_share and load_share must be > 0")

    def thresholds(self, obs: Any) -> Thresholds:
        """Thresholds for one observation (a sequence of floats in spec order)."""
        o = obs.tolist() if hasattr(obs, "tolist") else list(obs)
        t_cloud = math.expm1(o[_I_UPLOAD]) + o[_I_UPLINK_Q] + o[_I_CLOUD_LAT]
        net = min(max(math.log2(max(t_cloud, 1e-6) / (self.net_share * self.slo_s)), -2.0), 2.0) / 2.0
        load = _clip01(o[_I_EDGE_Q] / (self.load_share * self.slo_s))
        shift = self.k_net * net - self.k_load * load
        lo, hi = _clip01(self.base_low + shift), _clip01(self.base_high + shift)
        return Thresholds(min(lo, hi), hi, _clip01(self.base_conf - self.k_conf * net))

    def params(self) -> dict[str, float]:
        """The rule's parameters (what an artifact of kind ``heuristic`` records)."""
        return asdict(self)


@dataclass(frozen=True)
class _Static:
    th: Thresholds

    def thresholds(self, obs: Any) -> Thresholds:
        return self.th

    def params(self) -> dict[str, float]:
        return {}


#: Deployable rules by name: ``msao`` needs ``slo_s``; ``edge`` and ``cloud`` take no parameters.
RULES: dict[str, Callable[..., Any]] = {
    "msao": MSAORule,
    "edge": lambda: _Static(EDGE_ONLY),
    "cloud": lambda: _Static(CLOUD_ONLY),
}


def make_rule(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Build a rule by name with keyword parameters; unknown names or parameters are user errors."""
    if name not in RULES:
        raise UserInputError(f"heuristic: unknown rule {name!r} (known: {', '.join(RULES)})")
    try:
        return RULES[name](**dict(params or {}))
    except TypeError as e:
        raise UserInputError(f"heuristic {name}: bad parameters: {e}") from None
