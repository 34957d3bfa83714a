"""Hand-written threshold rules as :class:`~mllm_offload.policy.Policy` objects (a contract).

They live at the contracts level so that the simulator's rollouts and the deployed router use
*the same code*: a deployment can start with MSAO and switch to a learned policy by changing a
path. Importing this module registers ``edge``, ``cloud``, ``random``, ``static``, ``msao``,
``msao-model-res`` and ``moaoff`` in :data:`mllm_offload.policy.REGISTRY`.

Every rule maps an observation in :data:`~mllm_offload.observation.OBSERVATION_SPEC` order to
:class:`~mllm_offload.decision.Thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .decision import Thresholds, UploadPlan
from .errors import UserInputError
from .observation import OBSERVATION_SPEC
from .policy import REGISTRY, PolicyContext, register

__all__ = ["CLOUD_ONLY", "EDGE_ONLY", "CloudOnly", "EdgeOnly", "MSAOModelRes", "MSAORule", "MoAOffRule", "RandomPolicy", "StaticPlan", "StaticThresholds",
           "make_rule"]

_I_UPLOAD = OBSERVATION_SPEC.index("upload_est_s_log1p")
_I_UPLINK_Q = OBSERVATION_SPEC.index("uplink_queue_s")
_I_CLOUD_LAT = OBSERVATION_SPEC.index("cloud_latency_recent_s")
_I_EDGE_Q = OBSERVATION_SPEC.index("edge_queue_s")
_I_SPATIAL = OBSERVATION_SPEC.index("mas_spatial")
_I_TEMPORAL = OBSERVATION_SPEC.index("mas_temporal")
_I_AUDIO = OBSERVATION_SPEC.index("mas_audio")

#: Always the edge answer: EDGE_FIRST with ``tau_conf = 0`` (never escalates).
EDGE_ONLY = Thresholds(1.0, 1.0, 0.0)
#: Always the cloud: ``tau_high = 0`` sends every request to CLOUD.
CLOUD_ONLY = Thresholds(0.0, 0.0, 1.0)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


class _Rule:
    """What every rule shares with :class:`~mllm_offload.artifact.ArtifactPolicy`."""

    name: str = "rule"
    kind = "heuristic"
    backend = "rule"
    manifest = None
    path = None

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        """Stateless rules ignore it."""


@dataclass
class MSAORule(_Rule):
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
    name: str = field(default="msao", compare=False)

    def __post_init__(self) -> None:
        for name, v in self.params().items():
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
        d = asdict(self)
        d.pop("name")
        return d


@dataclass
class MSAOModelRes(MSAORule):
    """MSAO's routing, sending images at the resolution the cloud model consumes (``model_res``);
    video and audio whole. The plan the cloud cannot notice: its input is unchanged."""

    name: str = field(default="msao-model-res", compare=False)

    def decide(self, obs: Any) -> tuple[Thresholds, UploadPlan]:
        return self.thresholds(obs), _MODEL_RES


_MODEL_RES = UploadPlan(image="model_res")


@dataclass
class MoAOffRule(MSAORule):
    """MSAO's routing with MoA-Off-style per-modality upload plans, from each modality's MAS.

    MoA-Off decides per modality from its complexity; TMO's action is the subset of modalities
    sent. Our reading, per offload:

    * image: ``model_res`` (what the cloud consumes), or ``reduced`` when the spatial activation
      density is below ``sparse_image`` (a sparse image keeps its content at fewer pixels);
    * video: ``keyframes`` when the temporal novelty is below ``redundant_video``, else all frames;
    * audio: ``drop`` when the audio activity is below ``silent_audio``, else keep it.
    """

    sparse_image: float = 0.3
    redundant_video: float = 0.5
    silent_audio: float = 0.2
    name: str = field(default="moaoff", compare=False)

    def decide(self, obs: Any) -> tuple[Thresholds, UploadPlan]:
        o = obs.tolist() if hasattr(obs, "tolist") else list(obs)
        plan = UploadPlan(image="reduced" if o[_I_SPATIAL] < self.sparse_image else "model_res",
                          video="keyframes" if o[_I_TEMPORAL] < self.redundant_video else "all",
                          audio="drop" if o[_I_AUDIO] < self.silent_audio else "keep")
        return self.thresholds(o), plan


class StaticThresholds(_Rule):
    """The same thresholds for every request."""

    def __init__(self, th: Thresholds, name: str = "static") -> None:
        self.th = th
        self.name = name

    def thresholds(self, obs: Any) -> Thresholds:
        return self.th

    def params(self) -> dict[str, float]:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.th})"


class StaticPlan(StaticThresholds):
    """The same thresholds and the same upload plan for every request (a candidate of TunedStatic)."""

    def __init__(self, th: Thresholds, plan: UploadPlan | None, name: str = "static") -> None:
        super().__init__(th, name)
        self.plan = plan

    def decide(self, obs: Any) -> tuple[Thresholds, UploadPlan | None]:
        return self.th, self.plan


class EdgeOnly(StaticThresholds):
    """Always the edge answer: EDGE_FIRST with ``tau_conf = 0`` (never escalates)."""

    def __init__(self) -> None:
        super().__init__(EDGE_ONLY, "edge")


class CloudOnly(StaticThresholds):
    """Always the cloud: ``tau_high = 0`` sends every request to CLOUD."""

    def __init__(self) -> None:
        super().__init__(CLOUD_ONLY, "cloud")


class RandomPolicy(_Rule):
    """Uniformly random raw actions in ``[0,1]^3``; episode ``s`` draws from ``[seed, s]``."""

    def __init__(self, seed: int = 0, name: str = "random") -> None:
        self._seed = seed
        self.name = name
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng([self._seed, seed])

    def thresholds(self, obs: Any) -> Thresholds:
        return Thresholds.from_action(self.rng.random(3))


def make_rule(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """A registered rule rebuilt from keyword parameters (``msao`` needs ``slo_s``; ``edge`` and
    ``cloud`` take none): how a ``heuristic`` artifact comes back. Unknown names or parameters
    are user errors."""
    entry = REGISTRY.get(name)
    if entry is None or entry.from_params is None:
        known = [n for n, e in REGISTRY.items() if e.from_params is not None]
        raise UserInputError(f"heuristic: unknown rule {name!r} (known: {', '.join(known)})")
    try:
        return entry.from_params(**dict(params or {}))
    except TypeError as e:
        raise UserInputError(f"heuristic {name}: bad parameters: {e}") from None


def _static(ctx: PolicyContext, arg: str | None) -> StaticThresholds:
    if arg is None:
        raise UserInputError("static: give the thresholds as static:TAU_LOW,TAU_HIGH,TAU_CONF (each in [0, 1])")
    try:
        lo, hi, conf = (float(x) for x in arg.split(","))
    except ValueError:
        raise UserInputError(f"static: expected static:TAU_LOW,TAU_HIGH,TAU_CONF, got static:{arg}") from None
    if not all(0.0 <= v <= 1.0 for v in (lo, hi, conf)) or lo > hi:
        raise UserInputError(f"static: need 0 <= TAU_LOW <= TAU_HIGH <= 1 and TAU_CONF in [0, 1], got static:{arg}")
    return StaticThresholds(Thresholds(lo, hi, conf), f"static:{arg}")


def _no_arg(name: str, build: Callable[[PolicyContext], Any]) -> Callable[[PolicyContext, str | None], Any]:
    def make(ctx: PolicyContext, arg: str | None) -> Any:
        if arg is not None:
            raise UserInputError(f"{name}: takes no parameter, got {name}:{arg}")
        return build(ctx)

    return make


register("edge", "EdgeOnly: always the edge answer", _no_arg("edge", lambda ctx: EdgeOnly()), from_params=EdgeOnly)
register("cloud", "CloudOnly: always the cloud", _no_arg("cloud", lambda ctx: CloudOnly()), from_params=CloudOnly)
register("random", "RandomPolicy: uniformly random thresholds", _no_arg("random", lambda ctx: RandomPolicy(ctx.seed)))
register("static", "StaticThresholds: static:TAU_LOW,TAU_HIGH,TAU_CONF", _static)
register("msao", "MSAORule: the MSAO heuristic (MAS score and system state)", _no_arg("msao", lambda ctx: MSAORule(ctx.slo_s)),
         from_params=MSAORule)
register("msao-model-res", "MSAOModelRes: MSAO, images sent at the cloud model's resolution",
         _no_arg("msao-model-res", lambda ctx: MSAOModelRes(ctx.slo_s)), from_params=MSAOModelRes)
register("moaoff", "MoAOffRule: MSAO's routing with MoA-Off-style per-modality upload plans from MAS",
         _no_arg("moaoff", lambda ctx: MoAOffRule(ctx.slo_s)), from_params=MoAOffRule)
