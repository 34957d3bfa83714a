"""What a policy sees: the ordered, named observation features (a contract, imports nothing below).

The simulator (:mod:`mllm_offload.envs`) and the deployed router (``mllm_offload.runtime``) both
call :func:`build_observation`, so there is no train/serve skew. Only quantities a deployed router
can actually know go in: this request's MAS features and sizes, the *estimated* uplink bandwidth
(harmonic mean of recently measured uploads, never the trace's true current rate), the last
measured RTT, the edge queue, the cloud calls in flight with their recently measured latency, and
the user's trade-off (:class:`~mllm_offload.tradeoff.TradeOff`), so that one policy can serve
every setting it was trained over, and the edge's current capacity (an edge of several devices
loses capacity while one is gone).

============================  ===========  ==================================================
feature (units in the name)   range        meaning
============================  ===========  ==================================================
``mas_score``                 [0, 1]       joint MAS score (activation density; high = hard)
``mas_spatial``               [0, 1]       spatial activation density of image/video frames
``mas_temporal``              [0, 1]       temporal novelty of video (1 - redundancy), 0 if none
``mas_audio``                 [0, 1]       audio activity (voiced fraction), 0 if none
``mas_text``                  [0, 1]       text complexity cue of the prompt
``payload_mb_log1p``          [0, 10]      ln(1 + bytes to upload / 1e6)
``input_tokens_log1p``        [0, 15]      ln(1 + input tokens, all modalities)
``has_video``                 {0, 1}       request carries video frames
``has_audio``                 {0, 1}       request carries audio
``bw_est_mbps_log``           [-7, 10]     ln(estimated uplink rate in Mbps)
``upload_est_s_log1p``        [0, 10]      ln(1 + payload / bw_est + RTT), seconds
``rtt_s``                     [0, 10]      last measured round-trip time, seconds
``uplink_queue_s``            [0, 600]     bytes already queued on the uplink / bw_est, seconds
``edge_queue_n``              [0, 1000]    edge jobs queued or running
``edge_queue_s``              [0, 600]     expected edge wait, seconds
``cloud_inflight_n``          [0, 1000]    this device's cloud calls outstanding
``cloud_latency_recent_s``    [0, 600]     moving average of measured cloud response times
``latency_price_log``         [-7, 5]      ln(latency price, score per SLO); 0 counts as 1e-3
``cost_price_log``            [-7, 10]     ln(cost price, score per USD per 1k requests)
``edge_capacity``             [0, 2]       edge throughput now over its normal throughput (1
                                           for one edge device; an edge tier's mode, 0 while
                                           it is down or switching, once the router knows)
============================  ===========  ==================================================

Version 2 of the spec added the two trade-off features, version 3 the edge capacity, at the end;
an exported policy of version 1 (the first 17 features) or 2 (19) still loads and reads only
those.

Values are clipped into their range, so an observation always lies in :data:`OBSERVATION_SPEC`'s
box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .tradeoff import TradeOff, price_features

__all__ = [
    "MAS_FEATURES",
    "N_FEATURES_V1",
    "N_FEATURES_V2",
    "OBSERVATION_SPEC",
    "Feature",
    "ObservationSpec",
    "RequestFeatures",
    "RunningEstimates",
    "SystemState",
    "build_observation",
    "request_features_batch",
]

#: Named MAS features every MAS producer emits (``score`` is the joint score in [0, 1]).
MAS_FEATURES: tuple[str, ...] = ("score", "spatial", "temporal", "audio", "text")


@dataclass(frozen=True, slots=True)
class Feature:
    """One observation feature: its name (with units), range and meaning."""

    name: str
    low: float
    high: float
    doc: str


@dataclass(frozen=True)
class ObservationSpec:
    """The ordered feature list; ``names`` is what exported policies record and check."""

    features: tuple[Feature, ...]
    version: int = 1

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def low(self) -> np.ndarray:
        return np.array([f.low for f in self.features], dtype=np.float32)

    @property
    def high(self) -> np.ndarray:
        return np.array([f.high for f in self.features], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.features)

    def index(self, name: str) -> int:
        """Position of feature ``name`` in the vector (``KeyError`` if unknown)."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown observation feature {name!r}") from None


OBSERVATION_SPEC = ObservationSpec(
    (
        Feature("mas_score", 0.0, 1.0, "joint MAS score (activation density; high = hard)"),
        Feature("mas_spatial", 0.0, 1.0, "spatial activation density of image/video frames"),
        Feature("mas_temporal", 0.0, 1.0, "temporal novelty of video frames, 0 if no video"),
        Feature("mas_audio", 0.0, 1.0, "audio activity (voiced fraction), 0 if no audio"),
        Feature("mas_text", 0.0, 1.0, "text complexity cue of the prompt"),
        Feature("payload_mb_log1p", 0.0, 10.0, "ln(1 + bytes to upload / 1e6)"),
        Feature("input_tokens_log1p", 0.0, 15.0, "ln(1 + input tokens over all modalities)"),
        Feature("has_video", 0.0, 1.0, "1 if the request carries video frames"),
        Feature("has_audio", 0.0, 1.0, "1 if the request carries audio"),
        Feature("bw_est_mbps_log", -7.0, 10.0, "ln(estimated uplink Mbps)"),
        Feature("upload_est_s_log1p", 0.0, 10.0, "ln(1 + payload/bw_est + RTT in seconds)"),
        Feature("rtt_s", 0.0, 10.0, "last measured round-trip time, seconds"),
        Feature("uplink_queue_s", 0.0, 600.0, "queued upload bytes / bw_est, seconds"),
        Feature("edge_queue_n", 0.0, 1000.0, "edge jobs queued or running"),
        Feature("edge_queue_s", 0.0, 600.0, "expected edge wait, seconds"),
        Feature("cloud_inflight_n", 0.0, 1000.0, "cloud calls of this device outstanding"),
        Feature("cloud_latency_recent_s", 0.0, 600.0, "moving average of cloud response time, s"),
        Feature("latency_price_log", -7.0, 5.0, "ln(latency price, score per SLO of latency)"),
        Feature("cost_price_log", -7.0, 10.0, "ln(cost price, score per USD per 1k requests)"),
        Feature("edge_capacity", 0.0, 2.0, "edge throughput now over its normal throughput (1: one device)"),
    ),
    version=3,
)

_LOW_L = [f.low for f in OBSERVATION_SPEC.features]
_HIGH_L = [f.high for f in OBSERVATION_SPEC.features]
_N_STATIC = 9  # request features come first; the system features follow
if OBSERVATION_SPEC.names[_N_STATIC:] != (
    "bw_est_mbps_log", "upload_est_s_log1p", "rtt_s", "uplink_queue_s", "edge_queue_n",
    "edge_queue_s", "cloud_inflight_n", "cloud_latency_recent_s", "latency_price_log", "cost_price_log", "edge_capacity",
):  # pragma: no cover - guards build_observation's fixed positions
    raise RuntimeError("OBSERVATION_SPEC order changed: update build_observation")
(_BW_LO, _UP_HI, _RTT_HI, _UQ_HI, _EN_HI, _ES_HI, _CN_HI, _CL_HI) = (
    _LOW_L[9], _HIGH_L[10], _HIGH_L[11], _HIGH_L[12], _HIGH_L[13], _HIGH_L[14], _HIGH_L[15], _HIGH_L[16]
)
(_LP_LO, _LP_HI, _CP_LO, _CP_HI) = (_LOW_L[17], _HIGH_L[17], _LOW_L[18], _HIGH_L[18])
(_CAP_HI,) = (_HIGH_L[19],)
#: features of observation spec version 1 (an artifact of version 1 reads only these)
N_FEATURES_V1 = 17
#: features of observation spec version 2 (the trade-off, no edge capacity)
N_FEATURES_V2 = 19


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """What the router knows about *this* request before running anything.

    Attributes:
        mas: MAS features keyed by :data:`MAS_FEATURES` names (missing ones count as 0).
        payload_bytes: bytes that an offload uploads (all modalities plus the prompt), bytes.
        input_tokens: input tokens over all modalities (the cloud model's count).
        has_video: the request carries video frames.
        has_audio: the request carries audio.
    """

    mas: Mapping[str, float]
    payload_bytes: float
    input_tokens: float
    has_video: bool = False
    has_audio: bool = False
    _static: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the request's own features never change: compute (and clip) them once
        values = (
            *(float(self.mas.get(k, 0.0)) for k in MAS_FEATURES),
            math.log1p(max(self.payload_bytes, 0.0) / 1e6),
            math.log1p(max(self.input_tokens, 0.0)),
            1.0 if self.has_video else 0.0,
            1.0 if self.has_audio else 0.0,
        )
        object.__setattr__(self, "_static", tuple(min(max(v, lo), hi) for v, lo, hi in zip(values, _LOW_L, _HIGH_L)))


@dataclass(slots=True)
class SystemState:
    """What the router has measured about the system at the request's arrival.

    Attributes:
        bw_est_mbps: estimated uplink rate (harmonic mean of the last k uploads), Mbps.
        rtt_s: last measured round-trip time, seconds.
        uplink_queue_bytes: bytes of uploads queued or in progress, bytes.
        edge_queue_n: edge jobs queued or running.
        edge_queue_s: expected wait before a new edge job starts, seconds.
        cloud_inflight_n: this device's cloud calls outstanding.
        cloud_latency_recent_s: moving average of measured cloud response times, seconds.
        edge_capacity: the edge's throughput now over its normal throughput (1 for one device).
    """

    bw_est_mbps: float
    rtt_s: float
    uplink_queue_bytes: float = 0.0
    edge_queue_n: int = 0
    edge_queue_s: float = 0.0
    cloud_inflight_n: int = 0
    cloud_latency_recent_s: float = 0.0
    edge_capacity: float = 1.0


def request_features_batch(
    mas: Mapping[str, np.ndarray],
    payload_bytes: np.ndarray,
    input_tokens: np.ndarray,
    has_video: np.ndarray,
    has_audio: np.ndarray,
) -> list[RequestFeatures]:
    """:class:`RequestFeatures` for many requests at once (columns of equal length).

    Same values as building each one, computed with numpy (what environments use at start-up).
    """
    n = len(payload_bytes)
    zeros = np.zeros(n)
    cols = [np.asarray(mas.get(k, zeros), dtype=np.float64) for k in MAS_FEATURES]
    pb = np.asarray(payload_bytes, dtype=np.float64)
    tok = np.asarray(input_tokens, dtype=np.float64)
    hv = np.asarray(has_video, dtype=bool)
    ha = np.asarray(has_audio, dtype=bool)
    static = np.stack([*cols, np.log1p(np.maximum(pb, 0.0) / 1000000.0), np.log1p(np.maximum(tok, 0.0)), hv.astype(np.float64), ha.astype(np.float64)], axis=1)
    static = np.clip(static, _LOW_L[:_N_STATIC], _HIGH_L[:_N_STATIC])
    out = []
    new, setattr_ = object.__new__, object.__setattr__
    mas_rows = np.stack(cols, axis=1).tolist()
    for row, m, b, t, v, a in zip(static.tolist(), mas_rows, pb.tolist(), tok.tolist(), hv.tolist(), ha.tolist()):
        rf = new(RequestFeatures)
        setattr_(rf, "mas", dict(zip(MAS_FEATURES, m)))
        setattr_(rf, "payload_bytes", b)
        setattr_(rf, "input_tokens", t)
        setattr_(rf, "has_video", v)
        setattr_(rf, "has_audio", a)
        setattr_(rf, "_static", tuple(row))
        out.append(rf)
    return out


def build_observation(request: RequestFeatures, state: SystemState, tradeoff: TradeOff) -> np.ndarray:
    """The observation vector (float32, order of :data:`OBSERVATION_SPEC`) for one request under
    the user's ``tradeoff``."""
    bw = max(state.bw_est_mbps, 1e-3)
    bytes_per_s = bw * 125_000.0  # Mbps -> bytes/s
    rtt = state.rtt_s
    upload_s = request.payload_bytes / bytes_per_s + rtt
    # system features, clipped to their ranges (all are >= 0 except the log bandwidth)
    values = (*request._static, min(max(math.log(bw), _BW_LO), _HIGH_L[9]), min(math.log1p(upload_s), _UP_HI), min(max(rtt, 0.0), _RTT_HI), min(max(state.uplink_queue_bytes / bytes_per_s, 0.0), _UQ_HI), min(max(state.edge_queue_n, 0), _EN_HI), min(max(state.edge_queue_s, 0.0), _ES_HI), min(max(state.cloud_inflight_n, 0), _CN_HI), min(max(state.cloud_latency_recent_s, 0.0), _CL_HI), *_tradeoff_features(tradeoff), min(max(state.edge_capacity, 0.0), _CAP_HI))
    return np.array(values, dtype=np.float32)


def _tradeoff_features(t: TradeOff) -> tuple[float, float]:
    return _clipped_price_features(t.latency_price, t.cost_price)


@lru_cache(maxsize=4096)
def _clipped_price_features(latency_price: float, cost_price: float) -> tuple[float, float]:
    # an episode (and a router) keeps its prices: computed once per pair, not on every step
    lp, cp = price_features(latency_price, cost_price)
    return (min(max(lp, _LP_LO), _LP_HI), min(max(cp, _CP_LO), _CP_HI))


class RunningEstimates:
    """The running estimates behind :class:`SystemState`, from completed measurements only.

    The simulator (:mod:`mllm_offload.envs.system`) and the deployed router
    (:mod:`mllm_offload.runtime.estimators`) both feed their measurements into this class, so the
    same measurements give the same observation.

    =========================  ===================================================================
    estimate                   rule
    =========================  ===================================================================
    ``bw_est_mbps``            harmonic mean of the last ``bw_window`` measured upload rates
                               (Mbps), as Pensieve/MPC do; ``bw_prior_mbps`` before the first
    ``rtt_s``                  the last measured round-trip time (seconds); ``rtt_prior_s`` first
    ``cloud_latency_recent_s`` exponential moving average of cloud response times (seconds,
                               upload excluded), newest sample weighted ``latency_ema``; the first
                               sample is taken as it is, 0 before any
    ``edge_service_s``         the same average over edge service times (seconds)
    =========================  ===================================================================

    Args:
        bw_window: uploads in the harmonic mean (>= 1).
        bw_prior_mbps: bandwidth assumed before any upload was measured, Mbps.
        rtt_prior_s: RTT assumed before any was measured, seconds.
        latency_ema: weight of the newest latency sample, in (0, 1].
    """

    __slots__ = ("_inv", "_inv_sum", "alpha", "bw_est_mbps", "bw_window", "cloud_latency_s", "edge_service_s", "rtt_s")

    def __init__(self, bw_window: int = 5, bw_prior_mbps: float = 10.0, rtt_prior_s: float = 0.05, latency_ema: float = 0.2) -> None:
        if bw_window < 1 or bw_prior_mbps <= 0 or rtt_prior_s < 0 or not 0 < latency_ema <= 1:
            raise ValueError("RunningEstimates: need bw_window >= 1, bw_prior_mbps > 0, rtt_prior_s >= 0, 0 < latency_ema <= 1")
        self.bw_window = int(bw_window)
        self.alpha = float(latency_ema)
        self.bw_est_mbps = float(bw_prior_mbps)
        self.rtt_s = float(rtt_prior_s)
        self.cloud_latency_s = 0.0
        self.edge_service_s = 0.0
        self._inv: list[float] = []  # 1 / rate of the recent uploads, 1/Mbps
        self._inv_sum = 0.0

    def upload(self, mbps: float) -> None:
        """One completed upload, measured at ``mbps`` (bytes * 8e-6 / seconds)."""
        inv = 1.0 / max(mbps, 1e-6)
        ups = self._inv
        ups.append(inv)
        self._inv_sum += inv
        if len(ups) > self.bw_window:
            self._inv_sum -= ups.pop(0)
        self.bw_est_mbps = len(ups) / self._inv_sum

    def rtt(self, rtt_s: float) -> None:
        """A round-trip time measurement, seconds."""
        self.rtt_s = rtt_s

    def cloud_response(self, response_s: float, rtt_s: float | None = None) -> None:
        """A cloud answer arrived ``response_s`` seconds after its upload ended (and an RTT sample)."""
        a = self.alpha
        self.cloud_latency_s = response_s if self.cloud_latency_s == 0.0 else (1 - a) * self.cloud_latency_s + a * response_s
        if rtt_s is not None:
            self.rtt_s = rtt_s

    def edge_done(self, service_s: float) -> None:
        """An edge job finished after ``service_s`` seconds of compute (queueing excluded)."""
        a = self.alpha
        self.edge_service_s = service_s if self.edge_service_s == 0.0 else (1 - a) * self.edge_service_s + a * service_s

    def state(self, uplink_queue_bytes: float, edge_queue_n: int, cloud_inflight_n: int) -> SystemState:
        """The :class:`SystemState` given the current queues (the expected edge wait is
        ``edge_queue_n`` times the average edge service time)."""
        return SystemState(
            bw_est_mbps=self.bw_est_mbps,
            rtt_s=self.rtt_s,
            uplink_queue_bytes=max(uplink_queue_bytes, 0.0),
            edge_queue_n=edge_queue_n,
            edge_queue_s=edge_queue_n * self.edge_service_s,
            cloud_inflight_n=cloud_inflight_n,
            cloud_latency_recent_s=self.cloud_latency_s,
        )
