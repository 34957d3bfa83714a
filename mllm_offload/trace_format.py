"""Request traces: the versioned JSON Lines format and its columnar in-memory form.

File layout (optionally gzip-compressed, ``.jsonl.gz``)::

    {"format": "mllm-offload-trace", "version": 2, "meta": {"source": "...", ...}}
    {"id": "r0", "arrival_s": 0.0, "modalities": {...}, "payload_bytes": {...},
     "mas": {...}, "edge": {...}, "cloud": {...}}
    ...

One record per request, ``arrival_s`` non-decreasing:

=====================  ===================================================================
field                  meaning (units)
=====================  ===================================================================
``id``                 unique request id (string)
``arrival_s``          arrival time since the trace start, seconds
``modalities``         per modality (``image``, ``video``, ``audio``, ``text``): ``tokens``
                       (input tokens, cloud model's count) and optional sizes ``width``,
                       ``height`` (pixels), ``count``, ``frames``, ``seconds``
``payload_bytes``      bytes an offload uploads, per modality
``mas``                MAS features in [0, 1]; ``score`` (joint) is required, the names of
                       :data:`~mllm_offload.observation.MAS_FEATURES` are used by policies,
                       other named features are kept
``edge``               edge outcome: ``latency_s``, ``ttft_s`` (seconds, ttft <= latency),
                       ``out_tokens``, ``confidence`` in [0, 1], ``score`` in [0, 1];
                       ``null`` when not observed (deployment logs, see below)
``cloud``              cloud outcome: ``latency_s`` (server-side compute + queue at record
                       time), ``ttft_s``, ``out_tokens``, ``score``; ``null`` when not observed
``*.expected_score``   optional, synthetic traces only: the probability of a correct answer
                       implied by the request's latent difficulty (``score`` is one coin flip
                       of it); ``edge.expected_score_given_confidence`` also conditions on
                       the edge answer's confidence. Never in recordings (nobody knows it)
``route``              optional: what a deployed router decided and measured (observation,
                       thresholds, mode, answer used, end-to-end latency, bytes sent, ...);
                       ``route.tradeoff`` (optional, absent in logs that predate it): the
                       ``latency_price`` and ``cost_price`` the policy was asked for
``cloud_subsets``      optional: cloud outcomes when only a subset of modalities is sent,
                       keyed by ``+``-joined sorted modality names (e.g. ``"image+text"``)
``variants``           optional (version 2): the cloud's outcome when the request is sent as
                       an upload plan's variant (:class:`~mllm_offload.decision.UploadPlan`),
                       keyed by the variant name (``model_res``, ``reduced``, ``keyframes``,
                       ``no_audio``, or several joined by ``+`` in that order); each holds the
                       changed modalities' ``payload_bytes`` and ``tokens`` and the ``cloud``
                       outcome (:class:`VariantOutcome`)
=====================  ===================================================================

Version 2 added ``variants``; files of version 1 still load. A trace with variants has a
:class:`PlanTable` (``RequestTrace.plans``): per request and plan, the bytes sent, the cloud's
input tokens and its outcome, ``NaN`` where the trace has no outcome for that variant (the
simulator then refuses the plan rather than guessing).

``score`` is the task metric in [0, 1] (VQA accuracy, MMBench option match). Every bad line is
reported as ``file:line: field: problem``. Numbers must be finite and within sane bounds (e.g. at
most ``10**13`` bytes per modality, ``10**6`` s of latency); a file holds at most
:data:`MAX_TRACE_BYTES` (uncompressed).

A **truncated last line** (the file does not end with a newline and its last line is not valid
JSON: a write cut short by a crash) is skipped with a warning; how many were skipped is in
``meta["truncated_lines"]``. A bad line anywhere else is an error.

Deployment logs (written by :mod:`mllm_offload.runtime.router`) observe only what ran: an
accepted edge answer has no cloud outcome, a CLOUD request no edge outcome, and a ``score`` is
unknown without labels (``null``), except that when both answers exist the cloud answer is the
reference (cloud score 1, edge score 1 when the normalised answers agree). Their header sets
``"ordered": false`` (records are written as requests finish) and the loader sorts them by
arrival. :func:`load_trace` fills every unobserved value with the median (``score``: the mean)
of the observed ones of the same column and counts what it filled in ``meta["imputed"]``; a
column with no observed value at all is an error.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import os
import platform
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._io import atomic_write
from .config import format_validation_error
from .decision import N_PLANS, SEND_ALL, UploadPlan, all_plans
from .errors import UserInputError
from .observation import MAS_FEATURES, RequestFeatures, request_features_batch
from .splits import split_slice
from .tradeoff import MAX_COST_PRICE, MAX_LATENCY_PRICE

__all__ = [
    "EMBEDDED_TRACES",
    "EXPECTED_COLUMNS",
    "MAX_TRACE_BYTES",
    "MODALITIES",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "EdgeOutcome",
    "Outcome",
    "PlanTable",
    "RequestTrace",
    "TraceHeader",
    "TraceRecord",
    "VariantOutcome",
    "embedded_trace_name",
    "hardware_info",
    "load_trace",
    "resolve_trace",
]

TRACE_FORMAT = "mllm-offload-trace"
TRACE_VERSION = 2
#: versions this reader loads (version 1: no ``variants``)
TRACE_VERSIONS = (1, 2)
MODALITIES: tuple[str, ...] = ("image", "video", "audio", "text")


#: largest trace file read, bytes (after decompression); a trace of 10^6 requests is about 1 GB
MAX_TRACE_BYTES = 1 << 30
_MAX_TOKENS = 10**9  # per modality or answer
_MAX_BYTES = 10**13  # per modality
_MAX_SECONDS = 1e6  # latency, ttft, media duration (about 11 days)
_MAX_ARRIVAL_S = 1e10  # about 300 years


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TraceHeader(_Strict):
    """First line of a trace file."""

    format: Literal["mllm-offload-trace"]
    version: int
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v not in TRACE_VERSIONS:
            raise ValueError(f"unsupported trace version {v} (this reader knows {', '.join(map(str, TRACE_VERSIONS))})")
        return v


class ModalityInfo(_Strict):
    """Sizes of one modality of a request."""

    tokens: int = Field(ge=0, le=_MAX_TOKENS, description="input tokens of this modality")
    width: int | None = Field(None, gt=0, le=10**6, description="pixels")
    height: int | None = Field(None, gt=0, le=10**6, description="pixels")
    count: int | None = Field(None, ge=0, le=10**6, description="images")
    frames: int | None = Field(None, ge=0, le=10**9, description="video frames")
    seconds: float | None = Field(None, ge=0.0, le=_MAX_SECONDS, description="audio or video duration, s")


class Outcome(_Strict):
    """What a model produced for a request (cloud side)."""

    latency_s: float = Field(ge=0.0, le=_MAX_SECONDS, allow_inf_nan=False, description="seconds")
    ttft_s: float = Field(ge=0.0, le=_MAX_SECONDS, allow_inf_nan=False, description="time to first token, s")
    out_tokens: int = Field(ge=0, le=_MAX_TOKENS)
    score: float | None = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="None: unknown (no label)")
    #: synthetic traces only: P(correct) implied by the latent difficulty (``score`` is a draw of it)
    expected_score: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False,
                                         description="synthetic only: P(correct) given the latent difficulty")

    @model_validator(mode="after")
    def _ttft(self) -> Outcome:
        if self.ttft_s > self.latency_s:
            raise ValueError(f"ttft_s {self.ttft_s} exceeds latency_s {self.latency_s}")
        return self


class EdgeOutcome(Outcome):
    """Edge outcome: also the answer's confidence in [0, 1]."""

    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    #: synthetic traces only: P(correct) given the latent difficulty *and* this confidence
    expected_score_given_confidence: float | None = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False, description="synthetic only: P(correct) given the difficulty and the confidence")


class VariantOutcome(_Strict):
    """A request sent as an upload plan's variant: the changed modalities' sizes and the cloud's outcome."""

    payload_bytes: dict[Literal["image", "video", "audio"], int]
    tokens: dict[Literal["image", "video", "audio"], int]
    cloud: Outcome

    @field_validator("payload_bytes", "tokens")
    @classmethod
    def _sizes(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if not 0 <= n <= _MAX_BYTES:
                raise ValueError(f"{k}: must be in [0, {_MAX_BYTES:.0e}], got {_short(n)}")
        return v


#: variant names a record may hold, each with the modality it changes (in plan order)
_VARIANT_MODALITY = {"model_res": "image", "reduced": "image", "keyframes": "video", "no_audio": "audio"}


def _check_variant_key(key: str, present: set[str]) -> None:
    parts = key.split("+")
    mods = [_VARIANT_MODALITY.get(p) for p in parts]
    order = ["image", "video", "audio"]
    if None in mods or len(set(mods)) != len(mods) or [order.index(m) for m in mods] != sorted(order.index(m) for m in mods):  # type: ignore[arg-type]
        raise ValueError(f"{key!r}: a variant is one of {', '.join(_VARIANT_MODALITY)} per modality, joined by '+' in the order "
                         "image, video, audio")
    missing = [m for m in mods if m not in present]
    if missing:
        raise ValueError(f"{key!r}: the request has no {missing[0]}")


class TraceRecord(_Strict):
    """One request of a trace (see the module table)."""

    id: str = Field(min_length=1, max_length=1024)
    arrival_s: float = Field(ge=0.0, le=_MAX_ARRIVAL_S, allow_inf_nan=False)
    modalities: dict[Literal["image", "video", "audio", "text"], ModalityInfo]
    payload_bytes: dict[Literal["image", "video", "audio", "text"], int]
    mas: dict[str, float]
    edge: EdgeOutcome | None
    cloud: Outcome | None
    cloud_subsets: dict[str, Outcome] | None = None
    variants: dict[str, VariantOutcome] | None = None
    route: dict[str, Any] | None = None
    #: the dataset item's metadata (e.g. shapes VQA difficulty, question type), for analysis only:
    #: never part of an observation
    item: dict[str, Any] | None = None

    @field_validator("modalities")
    @classmethod
    def _some_modality(cls, v: dict) -> dict:
        if not v:
            raise ValueError("at least one modality is required")
        return v

    @field_validator("payload_bytes")
    @classmethod
    def _bytes(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if not 0 <= n <= _MAX_BYTES:
                raise ValueError(f"{k}: must be in [0, {_MAX_BYTES:.0e}] bytes, got {_short(n)}")
        return v

    @field_validator("mas")
    @classmethod
    def _mas(cls, v: dict[str, float]) -> dict[str, float]:
        if "score" not in v:
            raise ValueError("the joint MAS 'score' is required")
        for k, x in v.items():
            if not (0.0 <= x <= 1.0):
                raise ValueError(f"{k}: must be in [0, 1], got {x}")
        return v

    @field_validator("route")
    @classmethod
    def _route(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        t = (v or {}).get("tradeoff")
        if t is None:  # optional: logs written before the trade-off existed have none
            return v
        if not isinstance(t, dict) or set(t) != {"latency_price", "cost_price"}:
            raise ValueError("tradeoff: must be {\"latency_price\": X, \"cost_price\": Y}")
        for k, top in (("latency_price", MAX_LATENCY_PRICE), ("cost_price", MAX_COST_PRICE)):
            x = t[k]
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= top:
                raise ValueError(f"tradeoff.{k}: must be a number in [0, {top:g}], got {x!r}")
        return v

    @model_validator(mode="after")
    def _variants(self) -> TraceRecord:
        for key, v in (self.variants or {}).items():
            _check_variant_key(key, set(self.modalities))
            changed = {_VARIANT_MODALITY[p] for p in key.split("+")}
            if set(v.payload_bytes) != changed or set(v.tokens) != changed:
                raise ValueError(f"variants.{key}: payload_bytes and tokens must name exactly the changed modalities "
                                 f"({', '.join(sorted(changed))})")
        return self

    @field_validator("cloud_subsets")
    @classmethod
    def _subsets(cls, v: dict[str, Outcome] | None) -> dict[str, Outcome] | None:
        for key in v or {}:
            parts = key.split("+")
            if not parts or any(p not in MODALITIES for p in parts) or parts != sorted(set(parts)):
                raise ValueError(f"{key!r}: keys are '+'-joined sorted modality names")
        return v


_OUTCOME_COLUMNS = (  # measurements first: a side never observed is named by its latency
    "edge_latency_s cloud_latency_s edge_ttft_s cloud_ttft_s edge_out_tokens cloud_out_tokens "
    "edge_confidence edge_score cloud_score"
).split()

_COLUMNS = (
    "arrival_s payload_bytes input_tokens has_video has_audio "
    "edge_latency_s edge_ttft_s edge_out_tokens edge_confidence edge_score "
    "cloud_latency_s cloud_ttft_s cloud_out_tokens cloud_score"
).split()

#: optional columns (``None`` when the trace has none): the expected scores of a synthetic trace,
#: with the record field each is read from (``side``, ``attribute``)
EXPECTED_COLUMNS: dict[str, tuple[str, str]] = {
    "edge_score_expected": ("edge", "expected_score"),
    "cloud_score_expected": ("cloud", "expected_score"),
    "edge_score_expected_given_conf": ("edge", "expected_score_given_confidence"),
}


def hardware_info() -> dict[str, Any]:
    """Where a trace was written (recording or routing): machine, processor, CPU count, Python and
    torch versions (torch only if it is already imported), for the header's ``meta.hardware``."""
    info: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                            "cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _short(n: int) -> str:
    """``n``, or its order of magnitude when it has too many digits to print."""
    return str(n) if abs(n) < 10**30 else f"about 10^{int(abs(n).bit_length() * math.log10(2))}"


def _mas_value(r: TraceRecord, key: str) -> float:
    return float(r.mas.get(key, 0.0))


def _expected_column(recs: list[TraceRecord], side: str, attr: str) -> np.ndarray | None:
    """An expected-score column, or ``None`` unless every record has the value (synthetic traces)."""
    vals = []
    for r in recs:
        o = getattr(r, side)
        v = None if o is None else getattr(o, attr, None)
        if v is None:
            return None
        vals.append(v)
    return np.asarray(vals, dtype=np.float64)


@dataclass
class PlanTable:
    """Per request (rows) and upload plan (columns, :attr:`UploadPlan.index`): what an offload under
    that plan sends and what the cloud returns. ``NaN``: the trace has no outcome for the variant
    the plan needs on that request. A plan that changes only modalities a request lacks is the
    request as given (its column repeats the base values).

    ``present`` holds, per request, whether it has an image, a video and audio.
    """

    present: np.ndarray  #: (n, 3) bool: image, video, audio
    payload_bytes: np.ndarray  #: (n, N_PLANS) bytes uploaded
    input_tokens: np.ndarray  #: (n, N_PLANS) the cloud model's input tokens
    cloud_latency_s: np.ndarray  #: (n, N_PLANS) seconds
    cloud_out_tokens: np.ndarray  #: (n, N_PLANS)
    cloud_score: np.ndarray  #: (n, N_PLANS) in [0, 1]
    cloud_score_expected: np.ndarray | None = None  #: synthetic traces only

    def subset(self, idx: np.ndarray) -> PlanTable:
        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]
        return PlanTable(self.present[idx], self.payload_bytes[idx], self.input_tokens[idx], self.cloud_latency_s[idx],
                         self.cloud_out_tokens[idx], self.cloud_score[idx], cut(self.cloud_score_expected))

    def missing(self, i: int, plan: UploadPlan) -> bool:
        """Whether request ``i`` has no outcome under ``plan``."""
        return bool(np.isnan(self.cloud_latency_s[i, plan.index]))

    def complete(self, plan: UploadPlan) -> bool:
        """Whether every request has an outcome under ``plan`` (restricted to its modalities)."""
        idx = np.array([plan.effective(*row).index for row in self.present.tolist()], dtype=np.int64)
        return bool(not np.isnan(self.cloud_latency_s[np.arange(len(idx)), idx]).any()) if len(idx) else True

    def coverage(self) -> dict[str, float]:
        """Share of requests with an outcome, per variant name (the base excluded)."""
        out: dict[str, float] = {}
        for plan in all_plans():
            need = [m for m, h in zip(("image", "video", "audio"), (plan.image != "full", plan.video != "all", plan.audio != "keep")) if h]
            if not need:
                continue
            has = np.all(self.present[:, [("image", "video", "audio").index(m) for m in need]], axis=1)
            if has.any():
                out[plan.variant()] = float(np.mean(~np.isnan(self.cloud_latency_s[has, plan.index])))
        return out


def _plan_table(recs: list[TraceRecord], base: RequestTrace) -> PlanTable | None:
    """The plan table of records with ``variants`` (``None`` when none has any)."""
    if not any(r.variants for r in recs):
        return None
    n = len(recs)
    shape = (n, N_PLANS)
    cols = {k: np.full(shape, np.nan) for k in ("payload_bytes", "input_tokens", "cloud_latency_s", "cloud_out_tokens", "cloud_score")}
    present = np.array([[m in r.modalities for m in ("image", "video", "audio")] for r in recs], dtype=bool)
    plans = all_plans()
    for i, r in enumerate(recs):
        eff = [p.effective(*present[i]) for p in plans]
        for j, p in enumerate(eff):
            if p == SEND_ALL:
                vals = (base.payload_bytes[i], base.input_tokens[i], base.cloud_latency_s[i], base.cloud_out_tokens[i], base.cloud_score[i])
            else:
                v = (r.variants or {}).get(p.variant())
                if v is None:
                    continue
                nb = base.payload_bytes[i] - sum(r.payload_bytes.get(m, 0) for m in v.payload_bytes) + sum(v.payload_bytes.values())
                nt = base.input_tokens[i] - sum(r.modalities[m].tokens for m in v.tokens) + sum(v.tokens.values())
                sc = np.nan if v.cloud.score is None else v.cloud.score
                vals = (nb, nt, v.cloud.latency_s, v.cloud.out_tokens, sc)
            for k, x in zip(cols, vals):
                cols[k][i, j] = x
    return PlanTable(present, **cols)


@dataclass
class RequestTrace:
    """A request trace in columnar form (numpy arrays of equal length, one entry per request).

    ``mas`` maps every MAS feature name found in the trace to its column; the names of
    :data:`~mllm_offload.observation.MAS_FEATURES` are always present (0 where absent).

    The expected-score columns (:data:`EXPECTED_COLUMNS`) exist only for synthetic traces (``None``
    otherwise): ``edge_score_expected`` / ``cloud_score_expected`` are each model's probability of
    a correct answer given the request's latent difficulty (``edge_score`` / ``cloud_score`` are
    coin flips of them), ``edge_score_expected_given_conf`` the edge's given the difficulty and
    the realised edge confidence (what an answer accepted on its confidence is worth).
    """

    ids: list[str]
    arrival_s: np.ndarray
    payload_bytes: np.ndarray
    input_tokens: np.ndarray
    has_video: np.ndarray
    has_audio: np.ndarray
    mas: dict[str, np.ndarray]
    edge_latency_s: np.ndarray
    edge_ttft_s: np.ndarray
    edge_out_tokens: np.ndarray
    edge_confidence: np.ndarray
    edge_score: np.ndarray
    cloud_latency_s: np.ndarray
    cloud_ttft_s: np.ndarray
    cloud_out_tokens: np.ndarray
    cloud_score: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    records: list[TraceRecord] | None = None
    #: columns outside the file format (e.g. a synthetic trace's latent difficulty); not written
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    edge_score_expected: np.ndarray | None = None
    cloud_score_expected: np.ndarray | None = None
    edge_score_expected_given_conf: np.ndarray | None = None
    #: per request and upload plan: bytes, tokens and cloud outcome (traces with ``variants``)
    plans: PlanTable | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_expected_scores(self) -> bool:
        """Whether the trace knows its expected scores (synthetic traces: yes; recordings: no)."""
        return all(getattr(self, c) is not None for c in EXPECTED_COLUMNS)

    def expected_scores(self, name: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(edge_score_expected, cloud_score_expected, edge_score_expected_given_conf)``;
        ``UserInputError`` naming the trace (``name``, else its path or source) when it has none."""
        e, c, g = self.edge_score_expected, self.cloud_score_expected, self.edge_score_expected_given_conf
        if e is None or c is None or g is None:
            name = name or self.meta.get("path") or self.meta.get("source") or "in memory"
            raise UserInputError(f"the expected-outcome oracle needs a synthetic profile (expected scores); trace {name} has none "
                                 "(evaluate on a --profile without --trace, or use the hindsight 'oracle')")
        return e, c, g

    @property
    def mas_score(self) -> np.ndarray:
        return self.mas["score"]

    def request_features(self, i: int) -> RequestFeatures:
        """What a router knows about request ``i`` before running it."""
        return RequestFeatures(
            mas={k: float(self.mas[k][i]) for k in MAS_FEATURES},
            payload_bytes=float(self.payload_bytes[i]),
            input_tokens=float(self.input_tokens[i]),
            has_video=bool(self.has_video[i]),
            has_audio=bool(self.has_audio[i]),
        )

    def all_request_features(self) -> list[RequestFeatures]:
        """:meth:`request_features` of every request, computed once and cached."""
        cached = self.__dict__.get("_features")
        if cached is None:
            cached = request_features_batch(self.mas, self.payload_bytes, self.input_tokens, self.has_video, self.has_audio)
            self.__dict__["_features"] = cached
        return cached

    def subset(self, index: slice | np.ndarray) -> RequestTrace:
        """The requests at ``index`` (arrival times kept as they are)."""
        idx = np.arange(len(self))[index]
        cols = {c: getattr(self, c)[idx] for c in _COLUMNS}
        for c in EXPECTED_COLUMNS:
            v = getattr(self, c)
            cols[c] = None if v is None else v[idx]
        recs = [self.records[i] for i in idx] if self.records is not None else None
        return RequestTrace(
            ids=[self.ids[i] for i in idx],
            mas={k: v[idx] for k, v in self.mas.items()},
            meta=dict(self.meta),
            records=recs,
            extra={k: v[idx] for k, v in self.extra.items()},
            plans=None if self.plans is None else self.plans.subset(idx),
            **cols,
        )

    def split(self, part: str) -> RequestTrace:
        """Time-ordered split (:func:`mllm_offload.splits.split_slice`): ``train`` the first 70 %,
        ``val`` the next 15 %, ``test`` the rest."""
        return self.subset(split_slice(len(self), part))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_records(
        cls, records: Iterable[TraceRecord], meta: Mapping[str, Any] | None = None
    ) -> RequestTrace:
        recs = list(records)
        if not recs:
            raise UserInputError("trace: holds no request records")
        mas_names = list(MAS_FEATURES) + sorted(
            {k for r in recs for k in r.mas} - set(MAS_FEATURES)
        )

        def col(fn: Callable[[TraceRecord], Any], dtype: Any = np.float64) -> np.ndarray:
            return np.fromiter((fn(r) for r in recs), dtype=dtype, count=len(recs))

        nan = float("nan")

        def side(name: str, attr: str) -> np.ndarray:
            def get(r: TraceRecord) -> float:
                o = getattr(r, name)
                v = None if o is None else getattr(o, attr)
                return nan if v is None else v
            return col(get)

        return cls(
            ids=[r.id for r in recs],
            arrival_s=col(lambda r: r.arrival_s),
            payload_bytes=col(lambda r: sum(r.payload_bytes.values())),
            input_tokens=col(lambda r: sum(m.tokens for m in r.modalities.values())),
            has_video=col(lambda r: "video" in r.modalities, bool),
            has_audio=col(lambda r: "audio" in r.modalities, bool),
            mas={k: col(functools.partial(_mas_value, key=k)) for k in mas_names},
            edge_latency_s=side("edge", "latency_s"),
            edge_ttft_s=side("edge", "ttft_s"),
            edge_out_tokens=side("edge", "out_tokens"),
            edge_confidence=side("edge", "confidence"),
            edge_score=side("edge", "score"),
            cloud_latency_s=side("cloud", "latency_s"),
            cloud_ttft_s=side("cloud", "ttft_s"),
            cloud_out_tokens=side("cloud", "out_tokens"),
            cloud_score=side("cloud", "score"),
            meta=dict(meta or {}),
            records=recs,
            edge_score_expected=_expected_column(recs, *EXPECTED_COLUMNS["edge_score_expected"]),
            cloud_score_expected=_expected_column(recs, *EXPECTED_COLUMNS["cloud_score_expected"]),
            edge_score_expected_given_conf=_expected_column(recs, *EXPECTED_COLUMNS["edge_score_expected_given_conf"]),
        )._impute()._with_plans()

    def _with_plans(self) -> RequestTrace:
        assert self.records is not None
        self.plans = _plan_table(self.records, self)
        return self

    def _impute(self) -> RequestTrace:
        """Fill unobserved outcome values (NaN) as the module docstring says; counts go to ``meta["imputed"]``."""
        filled: dict[str, int] = {}
        for c in _OUTCOME_COLUMNS:
            v = getattr(self, c)
            miss = np.isnan(v)
            n = int(miss.sum())
            if not n:
                continue
            if n == len(v):
                side, _, what = c.partition("_")
                raise UserInputError(
                    f"{self.meta.get('path', 'trace')}: {side}.{what}: no record observed it, so it cannot be filled in"
                    + (" (log both sides for some requests: route --shadow-rate > 0)" if side in ("edge", "cloud") else "")
                )
            fill = float(np.mean(v[~miss])) if c.endswith("_score") else float(np.median(v[~miss]))
            v[miss] = fill
            filled[c] = n
        if filled:
            np.minimum(self.edge_ttft_s, self.edge_latency_s, out=self.edge_ttft_s)
            np.minimum(self.cloud_ttft_s, self.cloud_latency_s, out=self.cloud_ttft_s)
            self.meta["imputed"] = filled
        return self

    def write_jsonl(self, path: str | Path) -> None:
        """Write the trace (header + records) atomically; ``.gz`` suffix compresses."""
        if self.records is None:
            raise ValueError("this trace keeps no records to write")
        header = TraceHeader(format=TRACE_FORMAT, version=TRACE_VERSION, meta=self.meta)
        p = Path(path)
        with atomic_write(p, "wb") as raw:
            fh: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if p.suffix == ".gz" else raw
            fh.write((header.model_dump_json() + "\n").encode())
            for r in self.records:
                fh.write((r.model_dump_json(exclude_none=True) + "\n").encode())
            if fh is not raw:
                fh.close()


def _open_lines(path: Path) -> tuple[list[str], bool]:
    """The lines of a trace file (split at ``\\n`` only: JSON strings may hold other line
    separators) and whether the text ends with a newline."""
    too_big = UserInputError(f"{path}: larger than {MAX_TRACE_BYTES} bytes, the most a trace file may hold")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read(MAX_TRACE_BYTES + 1)
        else:
            if path.stat().st_size > MAX_TRACE_BYTES:
                raise too_big
            data = path.read_bytes()
        if len(data) > MAX_TRACE_BYTES:
            raise too_big
        text = data.decode("utf-8")
    except (OSError, EOFError, zlib.error) as e:
        raise UserInputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not text:
        return [], True
    ends_with_newline = text.endswith("\n")
    lines = text.split("\n")
    if ends_with_newline:
        lines.pop()
    return lines, ends_with_newline


#: traces shipped inside the package, loadable by name (``--trace shapes-real``); see the README
EMBEDDED_TRACES: dict[str, str] = {
    "shapes-real": "shapes-real.jsonl.gz",
}


def embedded_trace_name(path: str | Path) -> str | None:
    """The embedded trace ``path`` names (``shapes-real``), or ``None``: a path that exists is a
    file or folder, never the embedded trace."""
    return str(path) if str(path) in EMBEDDED_TRACES and not Path(path).exists() else None


def resolve_trace(path: str | Path) -> Path:
    """``path`` itself, or the packaged file of an embedded trace name when no such path exists."""
    p = Path(path)
    if embedded_trace_name(path) is not None:
        from importlib import resources

        f = Path(str(resources.files("mllm_offload") / "traces" / "data" / EMBEDDED_TRACES[str(path)]))
        if not f.is_file():
            raise UserInputError(f"trace {path}: the embedded trace file {f} is missing from this installation")
        return f
    return p


def _unknown_trace(name: str) -> UserInputError:
    """One line for a bare name that is neither a file/folder nor an embedded trace."""
    import difflib

    close = difflib.get_close_matches(name, list(EMBEDDED_TRACES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UserInputError(f"{name}: cannot read: no such file or folder, and no embedded trace of that name{hint} "
                          f"(embedded: {', '.join(EMBEDDED_TRACES)})")


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_trace(path: str | Path, warn: Callable[[str], None] | None = None) -> RequestTrace:
    """Read and validate a JSONL trace, or a folder of them (a router's log dir: every
    ``*.jsonl``/``*.jsonl.gz`` except ``errors.jsonl``, merged on the clock of their headers'
    ``started_unix``), or an embedded trace by name (:data:`EMBEDDED_TRACES`); any problem raises
    ``UserInputError`` (``file:line: field: problem``).

    A truncated last line of a file (see the module docstring) is skipped: ``warn`` gets one line
    about it (default: printed to stderr) and ``meta["truncated_lines"]`` counts them. In a
    folder, a file left with no complete record by the truncation is skipped too.
    """
    warn = warn or _stderr_warning
    try:
        p = resolve_trace(path)
        exists, is_dir = p.exists(), p.is_dir()
    except (OSError, ValueError) as e:  # a name too long, a NUL byte
        raise UserInputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not exists and not any(sep in str(path) for sep in ("/", os.sep)):
        raise _unknown_trace(str(path))
    if is_dir:
        files = sorted(f for f in [*p.glob("*.jsonl"), *p.glob("*.jsonl.gz")] if f.name != "errors.jsonl")
        if not files:
            raise UserInputError(f"{p}: no *.jsonl or *.jsonl.gz trace in this folder")
        used, metas, recs = [], [], []
        truncated = 0
        for f in files:
            meta, rs, cut = _read_records(f, warn, in_folder=True)
            truncated += cut
            if not rs:  # only a truncated record (or header): the writer died before its first record
                continue
            used.append(f)
            metas.append(meta)
            recs.append(rs)
        if not recs:
            raise UserInputError(f"{p}: no complete request record in any trace file of this folder")
        starts = [_started_unix(f, m) for f, m in zip(used, metas)]
        t0 = min(starts)
        merged: list[TraceRecord] = []
        seen: set[str] = set()
        for f, start, rs in zip(used, starts, recs):
            shift = start - t0
            for r in rs:
                if r.id in seen:
                    raise UserInputError(f"{f}: id: {r.id!r} also appears in another file of {p}")
                seen.add(r.id)
                merged.append(r.model_copy(update={"arrival_s": r.arrival_s + shift}) if shift else r)
        merged.sort(key=lambda r: r.arrival_s)
        meta = {**metas[0], "path": str(p), "files": len(used)}
        if truncated:
            meta["truncated_lines"] = truncated
        return RequestTrace.from_records(merged, meta=meta)
    meta, records, cut = _read_records(p, warn)
    meta = {**meta, "path": str(p)}
    if cut:
        meta["truncated_lines"] = cut
    return RequestTrace.from_records(records, meta=meta)


def _started_unix(f: Path, meta: Mapping[str, Any]) -> float:
    """The header's ``meta.started_unix`` (0 when absent): a finite number of seconds."""
    v = meta.get("started_unix", 0.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= _MAX_ARRIVAL_S:  # also NaN; no float(int) overflow
        raise UserInputError(f"{f}:1: header: meta.started_unix: expected a finite number of seconds, got {str(v)[:40]!r}")
    return float(v)


def _read_records(p: Path, warn: Callable[[str], None], in_folder: bool = False) -> tuple[dict[str, Any], list[TraceRecord], int]:
    """Header meta, records and the number of truncated last lines skipped (0 or 1) of one file.

    In a folder (``in_folder``), a file whose only content is a truncated header, or a header and
    a truncated record, gives no records instead of an error."""
    lines, ends_with_newline = _open_lines(p)
    last_line = len(lines)  # 1-based number of the last line

    def parse(n: int, text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{p}:{n}: invalid JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:
            raise UserInputError(f"{p}:{n}: invalid JSON: nested too deeply") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise UserInputError(f"{p}:{n}: invalid JSON: {e}") from None

    def truncated(n: int, text: str) -> bool:
        """Line ``n`` is the last, unterminated, and not JSON: a write cut short."""
        if n != last_line or ends_with_newline:
            return False
        try:
            parse(n, text)
        except UserInputError:
            warn(f"{p}:{n}: skipped a truncated last line (no final newline, not valid JSON: a write cut short, e.g. by a crash)")
            return True
        return False

    if not lines or not lines[0].strip():
        raise UserInputError(f"{p}:1: header: missing (expected {{\"format\": \"{TRACE_FORMAT}\", ...}})")
    if in_folder and truncated(1, lines[0]):
        return {}, [], 1
    try:
        header = TraceHeader.model_validate(parse(1, lines[0]))
    except ValidationError as e:
        raise UserInputError(format_validation_error(f"{p}:1: header", e)) from None
    records: list[TraceRecord] = []
    ordered = header.meta.get("ordered", True) is not False
    seen: set[str] = set()
    last = -1.0
    cut = 0
    for n, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        if truncated(n, text):
            cut = 1
            break
        try:
            rec = TraceRecord.model_validate(parse(n, text))
        except ValidationError as e:
            raise UserInputError(format_validation_error(f"{p}:{n}", e)) from None
        if rec.id in seen:
            raise UserInputError(f"{p}:{n}: id: duplicate id {rec.id!r}")
        if rec.arrival_s < last and ordered:
            raise UserInputError(f"{p}:{n}: arrival_s: {rec.arrival_s} is before the previous record's {last}")
        seen.add(rec.id)
        last = rec.arrival_s
        records.append(rec)
    if not records and not (in_folder and cut):
        raise UserInputError(f"{p}: holds a header but no {'complete ' if cut else ''}request records")
    if not ordered:
        records.sort(key=lambda r: r.arrival_s)
    return dict(header.meta), records, cut
