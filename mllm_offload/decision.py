"""The decision rule every policy's thresholds go through (a contract, imports nothing below).

A policy emits three thresholds; the rule below turns them, the request's joint MAS score ``s``
and (later) the edge answer's confidence into what actually runs:

==========================  ===============  ==================================================
condition                   mode             what runs
==========================  ===============  ==================================================
``s >= tau_high``           ``CLOUD``        upload, the cloud answers
``tau_low <= s < tau_high`` ``SPECULATIVE``  edge runs *and* upload starts; at edge completion
                                             accept the edge answer if ``conf >= tau_conf``
                                             (the cloud call is cancelled), else wait for cloud
``s < tau_low``             ``EDGE_FIRST``   edge runs; escalate to the cloud only if
                                             ``conf < tau_conf`` (``tau_conf = 0``: edge only)
==========================  ===============  ==================================================

An :class:`UploadPlan` says, per modality, what an offload sends (the cloud call of any mode):

==========  ===============  ==================================================================
modality    choices          what is sent (variant name in traces)
==========  ===============  ==================================================================
image       ``full``         the image as the user gave it
            ``model_res``    resized to what the cloud model consumes (``model_res``): the cloud
                             model resizes to that size itself, so its input is unchanged
            ``reduced``      half the model's consumed size per side (``reduced``): fewer image
                             tokens, some accuracy lost
video       ``all``          every frame
            ``keyframes``    the frames the temporal MAS marks as novel (``keyframes``)
audio       ``keep``         the audio track
            ``drop``         no audio (``no_audio``)
text        always sent
==========  ===============  ==================================================================

A plan that changes several modalities is the variant of the changed ones' names joined by
``+`` in the order image, video, audio (:meth:`UploadPlan.variant`), e.g. ``model_res+no_audio``.

Raw policy actions live in ``[0, 1]^3`` and are mapped by :meth:`Thresholds.from_action`:
``tau_high = a[1]``, ``tau_low = a[0] * a[1]`` (a fraction of ``tau_high``, so that
``tau_low <= tau_high`` always holds) and ``tau_conf = a[2]``. :meth:`Thresholds.to_action` is the
inverse, so a heuristic's thresholds can be replayed as an action. A policy that also chooses
the plan has three more action components, mapped by :meth:`UploadPlan.from_action`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AUDIO_PLANS", "IMAGE_PLANS", "N_PLANS", "SEND_ALL", "VARIANTS", "VIDEO_PLANS", "Mode", "Thresholds", "UploadPlan",
           "accept_edge", "all_plans", "decide", "distinct_plans"]


class Mode(enum.IntEnum):
    """Where a request runs. Values are stable (used in traces and metrics)."""

    EDGE_FIRST = 0
    SPECULATIVE = 1
    CLOUD = 2

    @property
    def label(self) -> str:
        """Lower-case name used in traces, headers and metrics (``edge_first`` ...)."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Offloading thresholds on the MAS score and the edge-confidence threshold, all in [0, 1].

    Attributes:
        tau_low: MAS score below which a request runs EDGE_FIRST.
        tau_high: MAS score at or above which a request goes straight to the CLOUD.
        tau_conf: edge confidence at or above which the edge answer is accepted.
    """

    tau_low: float
    tau_high: float
    tau_conf: float

    def __post_init__(self) -> None:
        for name in ("tau_low", "tau_high", "tau_conf"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"Thresholds.{name} must be a number in [0, 1], got {v!r}")
        if self.tau_low > self.tau_high:
            raise ValueError(
                f"Thresholds need tau_low <= tau_high, got {self.tau_low} > {self.tau_high}"
            )

    @classmethod
    def from_action(cls, action: Sequence[float] | np.ndarray) -> Thresholds:
        """Map a raw action in ``[0,1]^3`` (clipped first) to thresholds with ``tau_low <= tau_high``."""
        values = action.tolist() if hasattr(action, "tolist") else list(action)
        if len(values) != 3:
            raise ValueError(f"a threshold action has 3 components, got {len(values)}")
        a0, a1, a2 = values
        if a0 != a0 or a1 != a1 or a2 != a2:
            raise ValueError("threshold action contains NaN")
        a0 = 0.0 if a0 < 0.0 else 1.0 if a0 > 1.0 else float(a0)
        a1 = 0.0 if a1 < 0.0 else 1.0 if a1 > 1.0 else float(a1)
        a2 = 0.0 if a2 < 0.0 else 1.0 if a2 > 1.0 else float(a2)
        # the clipped values satisfy every invariant, so skip __post_init__ (hot path of env.step)
        t = object.__new__(cls)
        object.__setattr__(t, "tau_low", a0 * a1)
        object.__setattr__(t, "tau_high", a1)
        object.__setattr__(t, "tau_conf", a2)
        return t

    def to_action(self) -> tuple[float, float, float]:
        """Inverse of :meth:`from_action` (``a0 = tau_low / tau_high``, 0 when ``tau_high == 0``)."""
        a0 = self.tau_low / self.tau_high if self.tau_high > 0.0 else 0.0
        return (min(a0, 1.0), self.tau_high, self.tau_conf)

    def mode(self, mas_score: float) -> Mode:
        """The mode for a request with joint MAS score ``mas_score`` (see module table)."""
        return decide(mas_score, self)


def decide(mas_score: float, t: Thresholds) -> Mode:
    """Apply the fixed rule: CLOUD if ``s >= tau_high``, SPECULATIVE if ``s >= tau_low``, else EDGE_FIRST."""
    if mas_score >= t.tau_high:
        return Mode.CLOUD
    if mas_score >= t.tau_low:
        return Mode.SPECULATIVE
    return Mode.EDGE_FIRST


def accept_edge(confidence: float, t: Thresholds) -> bool:
    """Whether an edge answer with ``confidence`` in [0, 1] is accepted (``confidence >= tau_conf``)."""
    return confidence >= t.tau_conf


#: choices per modality, in action order (index 0 sends the modality whole)
IMAGE_PLANS: tuple[str, ...] = ("full", "model_res", "reduced")
VIDEO_PLANS: tuple[str, ...] = ("all", "keyframes")
AUDIO_PLANS: tuple[str, ...] = ("keep", "drop")
#: trace variant name of each non-default choice
VARIANTS: dict[str, str] = {"model_res": "model_res", "reduced": "reduced", "keyframes": "keyframes", "drop": "no_audio"}
#: number of distinct plans (:attr:`UploadPlan.index` ranges over ``range(N_PLANS)``)
N_PLANS = len(IMAGE_PLANS) * len(VIDEO_PLANS) * len(AUDIO_PLANS)


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """What an offload sends of each modality (see the module table); text is always sent.

    Attributes:
        image: ``full``, ``model_res`` or ``reduced``.
        video: ``all`` or ``keyframes``.
        audio: ``keep`` or ``drop``.
    """

    image: str = "full"
    video: str = "all"
    audio: str = "keep"

    def __post_init__(self) -> None:
        for name, allowed in (("image", IMAGE_PLANS), ("video", VIDEO_PLANS), ("audio", AUDIO_PLANS)):
            v = getattr(self, name)
            if v not in allowed:
                raise ValueError(f"UploadPlan.{name} must be one of {', '.join(allowed)}, got {v!r}")

    @classmethod
    def from_action(cls, action: Sequence[float] | np.ndarray) -> UploadPlan:
        """Map three raw action components in ``[0, 1]`` (clipped) to a plan: the image's in thirds
        (``full``, ``model_res``, ``reduced``), video's and audio's in halves."""
        values = action.tolist() if hasattr(action, "tolist") else list(action)
        if len(values) != 3:
            raise ValueError(f"an upload-plan action has 3 components, got {len(values)}")
        if any(v != v for v in values):
            raise ValueError("upload-plan action contains NaN")
        a_img, a_vid, a_aud = (0.0 if v < 0.0 else 1.0 if v > 1.0 else float(v) for v in values)
        return _PLANS[min(int(a_img * 3.0), 2) * 4 + (a_vid >= 0.5) * 2 + (a_aud >= 0.5)]

    def to_action(self) -> tuple[float, float, float]:
        """An action that maps back to this plan (the middle of each choice's interval)."""
        return ((IMAGE_PLANS.index(self.image) + 0.5) / 3.0, (VIDEO_PLANS.index(self.video) + 0.5) / 2.0,
                (AUDIO_PLANS.index(self.audio) + 0.5) / 2.0)

    @property
    def index(self) -> int:
        """Position in ``range(N_PLANS)``: ``image * 4 + video * 2 + audio`` (choice indices)."""
        return IMAGE_PLANS.index(self.image) * 4 + VIDEO_PLANS.index(self.video) * 2 + AUDIO_PLANS.index(self.audio)

    def effective(self, has_image: bool, has_video: bool, has_audio: bool) -> UploadPlan:
        """The plan restricted to the modalities a request has (the others sent whole: nothing to send)."""
        return _PLANS[(IMAGE_PLANS.index(self.image) if has_image else 0) * 4 + (VIDEO_PLANS.index(self.video) if has_video else 0) * 2
                      + (AUDIO_PLANS.index(self.audio) if has_audio else 0)]

    def variant(self) -> str:
        """The trace variant this plan needs (``""``: the request as given)."""
        return "+".join(VARIANTS[c] for c in (self.image, self.video, self.audio) if c in VARIANTS)

    def label(self, has_image: bool = True, has_video: bool = True, has_audio: bool = True) -> str:
        """``image=model_res,audio=drop`` over the modalities present (the response header); ``text``
        alone when the request has no media."""
        parts = [f"{m}={c}" for m, c, h in (("image", self.image, has_image), ("video", self.video, has_video),
                                             ("audio", self.audio, has_audio)) if h]
        return ",".join(parts) or "text"

    @classmethod
    def parse(cls, text: str) -> UploadPlan:
        """The inverse of :meth:`label` (``image=model_res,audio=drop``; absent modalities whole)."""
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in ("image", "video", "audio") or key in fields:
                raise ValueError(f"upload plan {text!r}: expected image=...,video=...,audio=... (each once)")
            fields[key] = value
        return cls(**fields)


_PLANS: tuple[UploadPlan, ...] = tuple(UploadPlan(i, v, a) for i in IMAGE_PLANS for v in VIDEO_PLANS for a in AUDIO_PLANS)
#: send every modality whole (what MSAO does, and every policy that does not choose a plan)
SEND_ALL = _PLANS[0]


def all_plans() -> tuple[UploadPlan, ...]:
    """Every plan, in :attr:`UploadPlan.index` order."""
    return _PLANS


def distinct_plans(present: Sequence[bool]) -> list[UploadPlan]:
    """The plans that differ on requests whose modalities (image, video, audio) occur as in
    ``present`` (a choice for a modality no request has changes nothing), in index order:
    ``SEND_ALL`` first."""
    out: dict[UploadPlan, None] = {}
    for p in _PLANS:
        out.setdefault(p.effective(*(bool(x) for x in present)), None)
    return list(out)
