"""``Router``: per request, MAS -> observation -> policy thresholds -> mode, then real execution.

===============  ==============================================================================
mode             what runs (``decision.py``)
===============  ==============================================================================
``edge_first``   the edge answers; if its confidence < ``tau_conf`` the cloud is called and
                 answers
``speculative``  the edge generation and the cloud call start together. The first to finish
                 decides: a cloud answer first is used (the edge is stopped); an edge answer
                 with confidence >= ``tau_conf`` is used and the cloud call is cancelled
                 (its HTTP stream is closed, which makes the server abort the generation);
                 otherwise the router waits for the cloud
``cloud``        the cloud answers
===============  ==============================================================================

Failures never lose a request: a cloud error or timeout falls back to the edge answer
(``answered_by = "edge-degraded"``, running the edge if it had not run), an edge error falls
back to the cloud, and only when both fail does :meth:`Router.generate` raise
:class:`RouterError` (one line naming both causes). Each backend has its own concurrency limit
and timeout. Every answered request is logged as a trace record (observation, thresholds, mode,
answer used, measured latencies, confidence, bytes) through :class:`~.tracelog.TraceLog` once
its side calls have settled; ``shadow_rate`` > 0 also runs the side that did not run for that
fraction of requests (after answering), so that logs hold both outcomes for training.

Limits (``RouterConfig``), checked before MAS and before any backend sees the request: a prompt
over ``max_prompt_chars`` characters raises :class:`~..mllm_backends.base.ContextLengthError`;
an image over ``max_image_pixels`` or a request's images over ``max_request_pixels`` raise
:class:`~..mllm_backends.base.ImageTooLargeError`, found from the headers, never decoded. Media
are checked and MAS computed in a worker thread, off the event loop.

The user's trade-off (:class:`~mllm_offload.tradeoff.TradeOff`: what one SLO of latency and one
dollar per 1k requests are worth) is part of the observation. The router has a default
(``tradeoff=``; else the policy's ``tradeoff_range.default()`` when it was trained over a range,
else ``TradeOff()``), and each call of :meth:`Router.generate` may pass its own
(:meth:`Router.tradeoff_for` builds one from per-request prices). A trade-off outside the
policy's trained range is refused with one-line :class:`~mllm_offload.errors.UserInputError`
before anything runs; a policy without a range (a rule, a version-1 artifact) accepts any. The
trade-off used is in :attr:`RoutedAnswer.tradeoff` and in the trace record
(``route.tradeoff``).

Upload plans: a policy that chooses what an offload sends (``decide(obs)``, e.g. ``moaoff``,
``msao-model-res`` or an artifact of six outputs; :func:`mllm_offload.policy.decide`) gets its
:class:`~mllm_offload.decision.UploadPlan` applied to the cloud's copy of the request by
:func:`~..mllm_backends.upload_plan.apply_plan` (images resized to what the cloud model consumes,
``cloud_image=``; keyframes by the temporal MAS; audio dropped), in a worker thread, only when the
cloud is called (an accepted edge-first answer never pays for it). The edge always gets the
request as given. A policy without a plan sends everything whole and pays nothing extra. The plan
over the request's modalities is in :attr:`RoutedAnswer.upload_plan` (the response header
``x-offload-upload-plan``) and the trace record's ``route.upload_plan``, with the bytes the cloud
was sent (``route.bytes_sent``, ``route.payload_sent``; ``null`` when the cloud was not called)
and the time the plan took (``route.upload_plan_s``). A plan that fails on a request (an image
Pillow cannot re-encode) sends it whole and logs why (``route.upload_plan_error``). The logged
``cloud`` outcome is that of the request as sent.

Pseudo-labels: deployment has no ground truth, so when both answers exist the cloud answer is the
reference (cloud score 1, edge score 1 if the normalised answers agree, else 0); otherwise the
score is logged as unknown (``null``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import SystemConfig
from ..decision import SEND_ALL, Mode, Thresholds, UploadPlan, accept_edge, decide
from ..errors import UserInputError
from ..mas import compute_mas, frame_novelty
from ..mllm_backends.base import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_PROMPT_CHARS,
    DEFAULT_MAX_REQUEST_PIXELS,
    Backend,
    BackendError,
    CancelToken,
    ContextLengthError,
    Generation,
    ImageTooLargeError,
    MMRequest,
    image_size,
    load_image,
    now,
)
from ..mllm_backends.upload_plan import CloudImageSpec, PlannedRequest, apply_plan, effective_plan
from ..observation import RequestFeatures, build_observation
from ..policy import Policy
from ..policy import decide as policy_decide
from ..scoring import normalize_answer
from ..tradeoff import TradeOff
from .estimators import RuntimeEstimators
from .tracelog import TraceLog

__all__ = ["RoutedAnswer", "Router", "RouterConfig", "RouterError", "SideResult"]

#: HTTP statuses of a backend that refused the request itself (not a failure of the backend).
_REFUSED = frozenset({400, 404, 413, 422})


class RouterConfig(BaseModel):
    """Router settings (validated; bad values name the field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edge_timeout_s: float = Field(120.0, gt=0, description="edge generation deadline, seconds")
    cloud_timeout_s: float = Field(30.0, gt=0, description="cloud call deadline, seconds")
    edge_concurrency: int = Field(1, ge=1, le=1024, description="edge generations at once")
    cloud_concurrency: int = Field(16, ge=1, le=4096, description="cloud calls at once")
    image_tokens: int = Field(576, ge=0, description="input tokens assumed per image/frame before a model counts them")
    audio_tokens_per_s: float = Field(25.0, ge=0, description="input tokens assumed per second of audio")
    shadow_rate: float = Field(0.0, ge=0.0, le=1.0, description="fraction of requests whose missing side is run for the log")
    cancel_grace_s: float = Field(5.0, gt=0, description="wait for a cancelled call to report what it spent, seconds")
    seed: int | None = Field(None, description="seed of the shadow sampling")
    max_prompt_chars: int | None = Field(DEFAULT_MAX_PROMPT_CHARS, ge=1, description="longest prompt, characters; longer is refused first (None: no limit)")
    max_image_pixels: int | None = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="largest image, width x height, from its header (None: no limit)")
    max_request_pixels: int | None = Field(DEFAULT_MAX_REQUEST_PIXELS, ge=1, description="all images and frames of a request together (None: no limit)")
    system: SystemConfig = Field(default_factory=SystemConfig, description="estimator priors (bw_prior_mbps, rtt_s, ...)")


class RouterError(RuntimeError):
    """Neither backend could answer (the message names both causes). ``refused``: every side
    that ran refused the request itself (a prompt over its context, an image it cannot take),
    so it is the request's fault, not the backends' (the server answers 400, not 503)."""

    def __init__(self, message: str, request_id: str, refused: bool = False) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.refused = refused


@dataclass
class SideResult:
    """How one side (edge or cloud) of a request went.

    ``status``: ``ok``, ``error``, ``timeout``, ``cancelled`` (stopped by the router) or
    ``not_run``; ``gen``: its generation (also for ``cancelled``: what was spent); ``upload_s``:
    cloud upload time implied by the measurements, seconds.
    """

    status: str = "not_run"
    gen: Generation | None = None
    error: str | None = None
    upload_s: float = 0.0
    shadow: bool = False
    refused: bool = False  # the backend refused the request itself (4xx, bad input), an ``error``

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class RoutedAnswer:
    """What :meth:`Router.generate` returns.

    Attributes:
        id: request id (the trace record's id).
        generation: the answer that was used.
        mode: the mode the policy chose.
        answered_by: ``edge``, ``cloud`` or ``edge-degraded`` (cloud failed, edge answer used).
        thresholds: the policy's thresholds for this request.
        mas_score: the request's joint MAS score.
        latency_s: seconds from arrival to the answer.
        cloud_cancelled: a speculative cloud call was cancelled.
        fallback: why the planned answer was not used (``cloud_error``, ``cloud_timeout``,
            ``edge_error`` ...), or ``None``.
        observation: the observation vector the policy saw.
        tradeoff: the trade-off the policy was asked for (its prices are in the observation).
        upload_plan: what an offload of this request sends, over its modalities
            (``image=model_res,audio=drop``; ``text`` without media; everything ``full``/``all``/
            ``keep`` for a policy without plans): the ``x-offload-upload-plan`` header.
        bytes_sent: payload bytes the cloud was sent (media as base64 data URLs, text), ``None``
            when the cloud was not called.
    """

    id: str
    generation: Generation
    mode: Mode
    answered_by: str
    thresholds: Thresholds
    mas_score: float
    latency_s: float
    cloud_cancelled: bool = False
    fallback: str | None = None
    observation: list[float] = field(default_factory=list)
    #: seconds the server spent on this request besides the answering backend call (set by the server)
    router_overhead_s: float | None = None
    tradeoff: TradeOff = field(default_factory=TradeOff)
    upload_plan: str = ""
    bytes_sent: int | None = None


@dataclass
class _Prepared:
    request: MMRequest  # media as encoded bytes, sent to both sides
    features: RequestFeatures
    mas: dict[str, float]
    modalities: dict[str, dict[str, Any]]
    payload: dict[str, int]


@dataclass
class _Upload:
    """The cloud's copy of one request under the policy's plan, built at most once, when the cloud
    is first called (:meth:`Router._cloud_request`)."""

    plan: UploadPlan  # the effective plan (SEND_ALL: the request as given)
    label: str
    planned: PlannedRequest | None = None
    request: MMRequest | None = None
    payload: dict[str, int] | None = None
    error: str | None = None
    called: bool = False

    @property
    def bytes(self) -> int | None:
        return sum(self.payload.values()) if self.called and self.payload is not None else None


def _payload(prompt: str, images: Sequence[Any], frames: Sequence[Any], audio: Any) -> dict[str, int]:
    """Bytes of each modality on the wire: media as base64 ``data:`` URLs, text as UTF-8."""
    payload = {"text": len(prompt.encode())}
    if images:
        payload["image"] = sum(_b64_len(len(b)) + 23 for b in images)  # data:image/jpeg;base64,
    if frames:
        payload["video"] = sum(_b64_len(len(b)) + 23 for b in frames)
    if audio is not None:
        payload["audio"] = _b64_len(44 + 2 * len(audio.samples))
    return payload


def _encode(image: Any, what: str, max_pixels: int | None) -> tuple[bytes, int, int]:
    """Encoded bytes of an image (bytes and files pass through, undecoded: only their header is
    read) and its size in pixels; over ``max_pixels`` raises :class:`ImageTooLargeError` first."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as e:
            raise BackendError(f"{what}: {image}: {e.strerror or e}") from None
    else:  # already decoded (PIL, numpy): checked, then encoded once
        w, h = image_size(image, what)
        if max_pixels is not None and w * h > max_pixels:
            raise ImageTooLargeError(f"{what}: {w}x{h} = {w * h / 1e6:.1f} MP is over the limit of {max_pixels / 1e6:g} MP per image")
        im = load_image(image, what)
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
    w, h = image_size(data, what)  # the header only
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"{what}: {w}x{h} = {w * h / 1e6:.1f} MP is over the limit of {max_pixels / 1e6:g} MP per image")
    return data, w, h


def _b64_len(n: int) -> int:
    return 4 * math.ceil(n / 3)


class Router:
    """Routes requests between an edge and a cloud backend with a threshold policy.

    Args:
        edge: the edge backend (usually a local model).
        cloud: the cloud backend (usually an OpenAI-compatible server).
        policy: anything with ``thresholds(obs) -> Thresholds`` and a ``name``
            (:class:`~mllm_offload.runtime.OffloadPolicy`).
        config: :class:`RouterConfig`.
        log: where trace records go (``None``: not logged).
        tradeoff: the trade-off of a request that names none (``None``: the policy's
            ``tradeoff_range.default()`` when it has a range, else ``TradeOff()``); one outside
            the policy's trained range raises :class:`~mllm_offload.errors.UserInputError`.
        cloud_image: what the cloud model's image processor consumes, for the ``model_res`` and
            ``reduced`` image plans (``None``: unknown, images are sent whole whatever the plan).
    """

    def __init__(self, edge: Backend, cloud: Backend, policy: Policy, config: RouterConfig | None = None, log: TraceLog | None = None,
                 tradeoff: TradeOff | None = None, cloud_image: CloudImageSpec | None = None) -> None:
        self.edge, self.cloud, self.policy = edge, cloud, policy
        self.cloud_image = cloud_image
        self.cfg = config or RouterConfig()
        self.log = log
        #: the trade-off of a request that names none
        self.tradeoff: TradeOff = check_tradeoff(policy, tradeoff, "router trade-off") if tradeoff is not None \
            else default_tradeoff(policy)
        self.est = RuntimeEstimators.from_config(self.cfg.system)
        self._rng = random.Random(self.cfg.seed)
        self._edge_sem: asyncio.Semaphore | None = None
        self._cloud_sem: asyncio.Semaphore | None = None
        self._background: set[asyncio.Task] = set()

    # -- trade-off -----------------------------------------------------------------------------

    @property
    def tradeoff_range(self) -> Any:
        """The policy's trained :class:`~mllm_offload.tradeoff.TradeOffRange` (``None``: the
        policy ignores the trade-off and accepts any)."""
        return getattr(self.policy, "tradeoff_range", None)

    def check_tradeoff(self, t: TradeOff, source: str = "trade-off") -> TradeOff:
        """:func:`check_tradeoff` for this router's policy."""
        return check_tradeoff(self.policy, t, source)

    def tradeoff_for(self, latency_price: float | None = None, cost_price: float | None = None, source: str = "trade-off") -> TradeOff:
        """The router's default trade-off with the prices given here in place of its own (a
        price of ``None`` keeps the default's), checked against the policy's range
        (:meth:`check_tradeoff` with ``source``). A price that is not a finite number in its
        bounds raises :class:`UserInputError` too."""
        d = self.tradeoff
        if latency_price is None and cost_price is None:
            return d
        try:
            t = TradeOff(latency_price=d.latency_price if latency_price is None else latency_price,
                         cost_price=d.cost_price if cost_price is None else cost_price, budgets=d.budgets)
        except ValueError as e:  # pydantic's ValidationError: out of [0, max] or not finite
            raise UserInputError(f"{source}: {_first_error(e)}") from None
        return self.check_tradeoff(t, source)

    # -- sides ---------------------------------------------------------------------------------

    def _sems(self) -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
        if self._edge_sem is None or self._cloud_sem is None:
            self._edge_sem = asyncio.Semaphore(self.cfg.edge_concurrency)
            self._cloud_sem = asyncio.Semaphore(self.cfg.cloud_concurrency)
        return self._edge_sem, self._cloud_sem

    async def _call(self, backend: Backend, req: MMRequest, cancel: CancelToken, timeout_s: float, on_token: Any = None) -> SideResult:
        task = asyncio.ensure_future(backend.generate(req, cancel=cancel, on_token=on_token))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except asyncio.CancelledError:
            cancel.cancel()
            task.cancel()
            raise
        if task not in done:
            cancel.cancel()  # stops the upstream work; the backend reports what it spent
            gen = None
            try:
                gen = await asyncio.wait_for(task, self.cfg.cancel_grace_s)
            except BaseException:
                task.cancel()
            return SideResult("timeout", gen, f"no answer within {timeout_s:g} s")
        try:
            gen = task.result()
        except Exception as e:
            refused = isinstance(e, UserInputError) or (isinstance(e, BackendError) and e.status in _REFUSED)
            return SideResult("error", None, str(e).splitlines()[0] if str(e) else type(e).__name__, refused=refused)
        return SideResult("cancelled" if gen.cancelled else "ok", gen)

    async def _run_edge(self, req: MMRequest, cancel: CancelToken) -> SideResult:
        edge_sem, _ = self._sems()
        self.est.edge_enter()
        service: float | None = None
        try:
            async with edge_sem:
                if cancel.cancelled:
                    return SideResult("cancelled")
                res = await self._call(self.edge, req, cancel, self.cfg.edge_timeout_s)
                if res.ok and res.gen is not None:
                    service = res.gen.latency_s
                return res
        finally:
            self.est.edge_exit(service)

    async def _run_cloud(self, req: MMRequest, cancel: CancelToken, payload: int) -> SideResult:
        _, cloud_sem = self._sems()
        est = self.est
        est.cloud_enter(payload)
        started = False

        def first_token(_ev: Any) -> None:
            nonlocal started
            if not started:
                started = True
                est.cloud_answer_started(payload)

        res = SideResult("error", None, "not started")
        try:
            async with cloud_sem:
                if cancel.cancelled:
                    res = SideResult("cancelled")
                    return res
                res = await self._call(self.cloud, req, cancel, self.cfg.cloud_timeout_s, first_token)
                return res
        finally:
            gen = res.gen
            res.upload_s = est.cloud_exit(payload, started, gen.latency_s if gen else None,
                                          gen.extra.get("net") if gen else None, completed=res.ok)

    # -- one request ---------------------------------------------------------------------------

    def _prepare(self, request: MMRequest) -> _Prepared:
        """Media checked from their headers (nothing over the pixel limits is decoded), then MAS
        (which decodes within-limit images small); runs in a worker thread when there are media."""
        rid = request.id
        cfg = self.cfg
        images, sizes, frames, total = [], [], [], 0
        media = [(f"request {rid}: image {i}", im, True) for i, im in enumerate(request.images)]
        media += [(f"request {rid}: video frame {i}", fr, False) for i, fr in enumerate(request.video or ())]
        for what, item, is_image in media:
            data, w, h = _encode(item, what, cfg.max_image_pixels)
            total += w * h
            if cfg.max_request_pixels is not None and total > cfg.max_request_pixels:
                raise ImageTooLargeError(f"request {rid}: its images come to {total / 1e6:.1f} MP, over the limit of "
                                         f"{cfg.max_request_pixels / 1e6:g} MP per request")
            if is_image:
                images.append(data)
                sizes.append((w, h))
            else:
                frames.append(data)
        req = dataclasses.replace(request, images=images, video=frames or None)
        audio = request.audio
        mas = compute_mas(request.prompt, images=images, video=frames or None,
                          audio=audio.samples if audio is not None else None,
                          sample_rate=audio.sample_rate if audio is not None else None)
        text_tokens = max(1, len(request.prompt.encode()) // 4)
        modalities: dict[str, dict[str, Any]] = {"text": {"tokens": text_tokens}}
        payload = _payload(request.prompt, images, frames, audio)
        if images:
            modalities["image"] = {"tokens": self.cfg.image_tokens * len(images), "count": len(images),
                                   "width": max(w for w, _ in sizes), "height": max(h for _, h in sizes)}
        if frames:
            modalities["video"] = {"tokens": self.cfg.image_tokens * len(frames), "frames": len(frames)}
        if audio is not None:
            modalities["audio"] = {"tokens": int(self.cfg.audio_tokens_per_s * audio.duration_s), "seconds": audio.duration_s}
        feats = RequestFeatures(mas=mas, payload_bytes=float(sum(payload.values())),
                                input_tokens=float(sum(m["tokens"] for m in modalities.values())),
                                has_video=bool(frames), has_audio=audio is not None)
        return _Prepared(req, feats, mas, modalities, payload)

    async def generate(self, request: MMRequest, tradeoff: TradeOff | None = None) -> RoutedAnswer:
        """Route and answer one request (see the module docstring) under ``tradeoff`` (``None``:
        the router's default, :attr:`tradeoff`); raises :class:`RouterError` only when neither
        backend answered (``refused`` when both refused the request itself), and
        ``UserInputError``/``BackendError`` for a trade-off outside the policy's range, a request
        over the limits or whose media cannot be read."""
        t0, wall0 = now(), time.time()
        trade = self.tradeoff if tradeoff is None else self.check_tradeoff(tradeoff)
        if not request.id:
            request = dataclasses.replace(request, id="req-" + uuid.uuid4().hex[:16])
        rid = request.id
        limit = self.cfg.max_prompt_chars
        if limit is not None and len(request.prompt) > limit:  # before MAS and before any backend sees it
            raise ContextLengthError(f"request {rid}: the prompt has {len(request.prompt)} characters, over this router's limit of {limit}")
        if request.images or request.video or request.audio is not None:  # headers, MAS decoding: off the event loop
            prep = await asyncio.to_thread(self._prepare, request)
        else:
            prep = self._prepare(request)
        obs = build_observation(prep.features, self.est.state(), trade)
        th, plan = policy_decide(self.policy, obs)
        s_mas = float(prep.mas["score"])
        mode = decide(s_mas, th)
        req = prep.request
        eff = SEND_ALL if plan is None else effective_plan(req, plan, self.cloud_image)
        up = _Upload(eff, eff.label(bool(req.images), bool(req.video), req.audio is not None))
        edge = cloud = SideResult()
        tasks: list[asyncio.Task] = []
        answered_by: str | None = None
        fallback: str | None = None
        cancelled = False
        try:
            if mode is Mode.CLOUD:
                creq, csize = await self._cloud_request(prep, up)
                cloud = await self._run_cloud(creq, CancelToken(), csize)
                if cloud.ok:
                    answered_by = "cloud"
                else:
                    fallback = f"cloud_{cloud.status}"
                    edge = await self._run_edge(req, CancelToken())
                    answered_by = "edge-degraded" if edge.ok else None
            elif mode is Mode.EDGE_FIRST:
                edge = await self._run_edge(req, CancelToken())
                if edge.ok and accept_edge(_conf(edge), th):
                    answered_by = "edge"
                else:
                    if not edge.ok:
                        fallback = f"edge_{edge.status}"
                    creq, csize = await self._cloud_request(prep, up)
                    cloud = await self._run_cloud(creq, CancelToken(), csize)
                    if cloud.ok:
                        answered_by = "cloud"
                    elif edge.ok:
                        answered_by, fallback = "edge-degraded", f"cloud_{cloud.status}"
            else:
                answered_by, fallback, cancelled, edge, cloud, tasks = await self._speculate(prep, up, th)
        except asyncio.CancelledError:  # the caller went away: stop whatever still runs
            for t in tasks:
                t.cancel()
            raise
        latency = now() - t0
        if answered_by is None:
            msg = f"request {rid}: no backend answered (edge: {edge.error or edge.status}; cloud: {cloud.error or cloud.status})"
            self._spawn(self._finish(edge, cloud, tasks, rid=rid, wall0=wall0, prep=prep, obs=obs, th=th, mode=mode, latency=latency,
                                     up=up, answered_by=None, fallback=fallback, error=msg, trade=trade))
            ran = [s for s in (edge, cloud) if s.status != "not_run"]
            raise RouterError(msg, rid, refused=bool(ran) and all(s.refused for s in ran))
        used = cloud if answered_by == "cloud" else edge
        assert used.gen is not None
        self._spawn(self._finish(edge, cloud, tasks, rid=rid, wall0=wall0, prep=prep, obs=obs, th=th, mode=mode, latency=latency,
                                 up=up, answered_by=answered_by, fallback=fallback, error=None, cancelled=cancelled, trade=trade))
        return RoutedAnswer(rid, used.gen, mode, answered_by, th, s_mas, latency, cancelled, fallback, obs.tolist(), tradeoff=trade,
                            upload_plan=up.label, bytes_sent=up.bytes)

    async def _cloud_request(self, prep: _Prepared, up: _Upload) -> tuple[MMRequest, int]:
        """The cloud's copy of the request and its payload bytes: the plan applied (in a worker
        thread, once per request), or the request as given for :data:`SEND_ALL` or when applying
        the plan failed (``up.error``)."""
        up.called = True
        if up.request is not None:
            return up.request, sum((up.payload or {}).values())
        req = prep.request
        if up.plan != SEND_ALL:
            try:
                planned = await asyncio.to_thread(apply_plan, req, up.plan, self.cloud_image, frame_novelty,
                                                  max_image_pixels=self.cfg.max_image_pixels, max_request_pixels=self.cfg.max_request_pixels)
            except (UserInputError, ValueError, OSError) as e:  # sent whole rather than not at all
                up.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                up.label = SEND_ALL.label(bool(req.images), bool(req.video), req.audio is not None)
            else:
                up.planned, req = planned, planned.request
        up.request = req
        up.payload = _payload(req.prompt, req.images, req.video or (), req.audio) if req is not prep.request else dict(prep.payload)
        return req, sum(up.payload.values())

    async def _speculate(self, prep: _Prepared, up: _Upload, th: Thresholds) -> tuple[str | None, str | None, bool, SideResult, SideResult, list[asyncio.Task]]:
        ce, cc = CancelToken(), CancelToken()
        et = asyncio.create_task(self._run_edge(prep.request, ce))
        try:
            creq, csize = await self._cloud_request(prep, up)  # the edge is already running
        except BaseException:  # the caller went away while the plan was applied: stop the edge too
            et.cancel()
            raise
        ct = asyncio.create_task(self._run_cloud(creq, cc, csize))
        tasks = [et, ct]
        done, _ = await asyncio.wait({et, ct}, return_when=asyncio.FIRST_COMPLETED)
        if ct in done and ct.result().ok and et not in done:  # the cloud answered first: stop the edge
            ce.cancel()
            return "cloud", None, False, SideResult("cancelled"), ct.result(), tasks
        edge = await et
        if edge.ok and accept_edge(_conf(edge), th):
            cancelled = not ct.done()
            if cancelled:
                cc.cancel()  # closes the upstream stream; the task settles in the background
            return "edge", None, cancelled, edge, ct.result() if ct.done() else SideResult("cancelled"), tasks
        cloud = await ct
        if cloud.ok:
            return "cloud", None if edge.ok else f"edge_{edge.status}", False, edge, cloud, tasks
        if edge.ok:
            return "edge-degraded", f"cloud_{cloud.status}", False, edge, cloud, tasks
        return None, f"cloud_{cloud.status}", False, edge, cloud, tasks

    # -- logging -------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, edge: SideResult, cloud: SideResult, tasks: list[asyncio.Task], *, rid: str, wall0: float, prep: _Prepared,
                      obs: Any, th: Thresholds, mode: Mode, latency: float, up: _Upload, answered_by: str | None,
                      fallback: str | None, error: str | None, cancelled: bool = False, trade: TradeOff | None = None) -> None:
        """Settle cancelled side calls, run the shadow side if sampled, and log the record."""
        if tasks:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            et, ct = results
            if isinstance(et, SideResult) and edge.status == "cancelled":
                edge = et
            if isinstance(ct, SideResult) and cloud.status in ("cancelled", "not_run"):
                cloud = ct
        if self.log is None:
            return
        trade = self.tradeoff if trade is None else trade
        if error is not None:
            self.log.write_error({"id": rid, "time_unix": wall0, "mode": mode.label, "error": error,
                                  "thresholds": [th.tau_low, th.tau_high, th.tau_conf], "tradeoff": _tradeoff_record(trade)})
            return
        if self.cfg.shadow_rate > 0 and (edge.ok != cloud.ok) and self._rng.random() < self.cfg.shadow_rate:
            if edge.ok:
                creq, csize = await self._cloud_request(prep, up)
                cloud = await self._run_cloud(creq, CancelToken(), csize)
            else:
                edge = await self._run_edge(prep.request, CancelToken())
            (cloud if edge.ok else edge).shadow = True
        self.log.write(self._record(rid, wall0, prep, obs, th, mode, latency, answered_by, fallback, cancelled, edge, cloud, trade, up))

    def _record(self, rid: str, wall0: float, prep: _Prepared, obs: Any, th: Thresholds, mode: Mode, latency: float,
                answered_by: str | None, fallback: str | None, cancelled: bool, edge: SideResult, cloud: SideResult,
                trade: TradeOff, up: _Upload) -> dict[str, Any]:
        assert self.log is not None
        both = edge.ok and cloud.ok and edge.gen is not None and cloud.gen is not None
        agree = both and normalize_answer(edge.gen.text) == normalize_answer(cloud.gen.text)  # type: ignore[union-attr]
        rec: dict[str, Any] = {
            "id": rid, "arrival_s": self.log.arrival_s(wall0), "modalities": prep.modalities,
            "payload_bytes": prep.payload, "mas": {k: float(v) for k, v in prep.mas.items()}, "edge": None, "cloud": None,
        }
        if edge.ok and edge.gen is not None:
            g = edge.gen
            lat, ttft = g.server_times()
            rec["edge"] = {"latency_s": lat, "ttft_s": ttft, "out_tokens": g.out_tokens,
                           "confidence": min(max(g.confidence or 0.0, 0.0), 1.0), "score": (1.0 if agree else 0.0) if both else None}
        if cloud.ok and cloud.gen is not None:
            g = cloud.gen
            lat, ttft = g.server_times()
            rec["cloud"] = {"latency_s": lat, "ttft_s": ttft, "out_tokens": g.out_tokens, "score": 1.0 if both else None}
            if g.in_tokens:  # the cloud model's own count replaces the estimate
                rest = sum(m["tokens"] for k, m in prep.modalities.items() if k != "text")
                rec["modalities"] = {k: dict(v) for k, v in prep.modalities.items()}
                rec["modalities"]["text"]["tokens"] = max(g.in_tokens - rest, 1) if rest < g.in_tokens else rec["modalities"]["text"]["tokens"]
        sent = cloud.gen.extra.get("net", {}).get("bytes_sent") if cloud.gen is not None else None
        rec["route"] = {
            "policy": getattr(self.policy, "name", type(self.policy).__name__),
            "observation": [round(float(x), 6) for x in obs],
            "thresholds": [th.tau_low, th.tau_high, th.tau_conf],
            "tradeoff": _tradeoff_record(trade),
            "mode": mode.label, "answered_by": answered_by, "latency_s": latency,
            "edge_status": edge.status, "cloud_status": cloud.status,
            "edge_error": edge.error, "cloud_error": cloud.error,
            "cloud_cancelled": cancelled, "fallback": fallback, "degraded": answered_by == "edge-degraded",
            "shadow": edge.shadow or cloud.shadow, "cloud_bytes_sent": sent,
            "upload_plan": up.label, "bytes_sent": up.bytes, "payload_sent": dict(up.payload) if up.called and up.payload else None,
            "upload_plan_s": up.planned.seconds if up.planned is not None else None,
            "edge_confidence": edge.gen.confidence if edge.gen is not None else None,
            "score_source": "cloud-agreement" if both else None,
            "time_unix": wall0,
        }
        if up.error is not None:
            rec["route"]["upload_plan_error"] = up.error
        return rec

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait (at most ``timeout_s``) until every background log task has finished."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout_s)

    async def aclose(self) -> None:
        """Drain the background work, close the log and both backends."""
        await self.drain()
        if self.log is not None:
            self.log.close()
        for b in (self.edge, self.cloud):
            try:
                await b.aclose()
            except Exception:
                pass


def check_tradeoff(policy: Any, t: TradeOff, source: str = "trade-off") -> TradeOff:
    """``t`` if ``policy`` serves it, else a one-line :class:`UserInputError` starting with
    ``source`` and naming the trained range (the range's own ``check`` when the policy has a
    ``tradeoff_range``, so that no server path leaks into a client's error; else the policy's
    ``check_tradeoff``; neither: any trade-off)."""
    rng = getattr(policy, "tradeoff_range", None)
    if rng is not None and callable(getattr(rng, "check", None)):
        checked: TradeOff = rng.check(t, source)
        return checked
    check = getattr(policy, "check_tradeoff", None)
    if callable(check):
        checked = check(t, source)
        return checked
    return t


def default_tradeoff(policy: Any, latency_price: float | None = None, cost_price: float | None = None,
                     source: str = "trade-off") -> TradeOff:
    """The default trade-off of a router running ``policy``: its range's default (``TradeOff()``
    for a policy without a range), with the prices given in place of its own, checked with
    :func:`check_tradeoff`."""
    rng = getattr(policy, "tradeoff_range", None)
    base = rng.default() if rng is not None else TradeOff()
    if latency_price is None and cost_price is None:
        return check_tradeoff(policy, base, source)
    try:
        t = TradeOff(latency_price=base.latency_price if latency_price is None else latency_price,
                     cost_price=base.cost_price if cost_price is None else cost_price, budgets=base.budgets)
    except ValueError as e:  # pydantic's ValidationError: out of [0, max] or not finite
        raise UserInputError(f"{source}: {_first_error(e)}") from None
    return check_tradeoff(policy, t, source)


def _tradeoff_record(t: TradeOff) -> dict[str, float]:
    """What a trace record's ``route.tradeoff`` holds: the prices the policy was asked for."""
    return {"latency_price": t.latency_price, "cost_price": t.cost_price}


def _first_error(e: ValueError) -> str:
    """The first problem of a pydantic validation error, as ``field: message`` (else the text)."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", e))
    return str(e).splitlines()[0]


def _conf(side: SideResult) -> float:
    """An edge answer's confidence; a backend that reports none counts as 0 (never accepted
    unless ``tau_conf == 0``)."""
    c = side.gen.confidence if side.gen is not None else None
    return 0.0 if c is None else float(c)
