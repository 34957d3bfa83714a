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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..config import SystemConfig
from ..decision import Mode, Thresholds, accept_edge, decide
from ..mas import compute_mas
from ..mllm_backends.base import Backend, BackendError, CancelToken, Generation, MMRequest, load_image, now
from ..observation import RequestFeatures, build_observation
from ..policy import Policy
from ..scoring import normalize_answer
from .estimators import RuntimeEstimators
from .tracelog import TraceLog

__all__ = ["RoutedAnswer", "Router", "RouterConfig", "RouterError", "SideResult"]

#: Requests whose media exceed this many bytes get their MAS computed in a worker thread.
_MAS_INLINE_BYTES = 256 * 1024


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
    system: SystemConfig = Field(default_factory=SystemConfig, description="estimator priors (bw_prior_mbps, rtt_s, ...)")


class RouterError(RuntimeError):
    """Neither backend could answer (the message names both causes)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


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


@dataclass
class _Prepared:
    request: MMRequest  # media as encoded bytes, sent to both sides
    features: RequestFeatures
    mas: dict[str, float]
    modalities: dict[str, dict[str, Any]]
    payload: dict[str, int]


def _encode(image: Any, what: str) -> tuple[bytes, int, int]:
    """Encoded bytes of an image (bytes and files pass through) and its size in pixels."""
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    elif isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as e:
            raise BackendError(f"{what}: {image}: {e.strerror or e}") from None
    else:
        im = load_image(image, what)
        buf = io.BytesIO()
        im.convert("RGB").save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
    im = load_image(data, what)  # header only: PIL decodes lazily
    return data, im.width, im.height


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
    """

    def __init__(self, edge: Backend, cloud: Backend, policy: Policy, config: RouterConfig | None = None, log: TraceLog | None = None) -> None:
        self.edge, self.cloud, self.policy = edge, cloud, policy
        self.cfg = config or RouterConfig()
        self.log = log
        self.est = RuntimeEstimators.from_config(self.cfg.system)
        self._rng = random.Random(self.cfg.seed)
        self._edge_sem: asyncio.Semaphore | None = None
        self._cloud_sem: asyncio.Semaphore | None = None
        self._background: set[asyncio.Task] = set()

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
        except (BackendError, Exception) as e:
            return SideResult("error", None, str(e).splitlines()[0] if str(e) else type(e).__name__)
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
        rid = request.id
        images, sizes = [], []
        for i, im in enumerate(request.images):
            data, w, h = _encode(im, f"request {rid}: image {i}")
            images.append(data)
            sizes.append((w, h))
        frames = [_encode(fr, f"request {rid}: video frame {i}")[0] for i, fr in enumerate(request.video or ())]
        req = dataclasses.replace(request, images=images, video=frames or None)
        audio = request.audio
        mas = compute_mas(request.prompt, images=images, video=frames or None,
                          audio=audio.samples if audio is not None else None,
                          sample_rate=audio.sample_rate if audio is not None else None)
        text_tokens = max(1, len(request.prompt.encode()) // 4)
        modalities: dict[str, dict[str, Any]] = {"text": {"tokens": text_tokens}}
        payload = {"text": len(request.prompt.encode())}
        if images:
            modalities["image"] = {"tokens": self.cfg.image_tokens * len(images), "count": len(images),
                                   "width": max(w for w, _ in sizes), "height": max(h for _, h in sizes)}
            payload["image"] = sum(_b64_len(len(b)) + 23 for b in images)  # data:image/jpeg;base64,
        if frames:
            modalities["video"] = {"tokens": self.cfg.image_tokens * len(frames), "frames": len(frames)}
            payload["video"] = sum(_b64_len(len(b)) + 23 for b in frames)
        if audio is not None:
            modalities["audio"] = {"tokens": int(self.cfg.audio_tokens_per_s * audio.duration_s), "seconds": audio.duration_s}
            payload["audio"] = _b64_len(44 + 2 * len(audio.samples))
        feats = RequestFeatures(mas=mas, payload_bytes=float(sum(payload.values())),
                                input_tokens=float(sum(m["tokens"] for m in modalities.values())),
                                has_video=bool(frames), has_audio=audio is not None)
        return _Prepared(req, feats, mas, modalities, payload)

    async def generate(self, request: MMRequest) -> RoutedAnswer:
        """Route and answer one request (see the module docstring); raises :class:`RouterError`
        only when neither backend answered, and ``UserInputError``/``BackendError`` for a request
        whose media cannot be read."""
        t0, wall0 = now(), time.time()
        if not request.id:
            request = dataclasses.replace(request, id="req-" + uuid.uuid4().hex[:16])
        rid = request.id
        media = sum(len(x) for x in (*request.images, *(request.video or ())) if isinstance(x, (bytes, bytearray)))
        if media > _MAS_INLINE_BYTES or any(not isinstance(x, (bytes, bytearray)) for x in request.images):
            prep = await asyncio.to_thread(self._prepare, request)
        else:
            prep = self._prepare(request)
        obs = build_observation(prep.features, self.est.state())
        th = self.policy.thresholds(obs)
        s_mas = float(prep.mas["score"])
        mode = decide(s_mas, th)
        size = int(prep.features.payload_bytes)
        edge = cloud = SideResult()
        tasks: list[asyncio.Task] = []
        answered_by: str | None = None
        fallback: str | None = None
        cancelled = False
        req = prep.request
        try:
            if mode is Mode.CLOUD:
                cloud = await self._run_cloud(req, CancelToken(), size)
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
                    cloud = await self._run_cloud(req, CancelToken(), size)
                    if cloud.ok:
                        answered_by = "cloud"
                    elif edge.ok:
                        answered_by, fallback = "edge-degraded", f"cloud_{cloud.status}"
            else:
                answered_by, fallback, cancelled, edge, cloud, tasks = await self._speculate(req, th, size)
        except asyncio.CancelledError:  # the caller went away: stop whatever still runs
            for t in tasks:
                t.cancel()
            raise
        latency = now() - t0
        if answered_by is None:
            msg = f"request {rid}: no backend answered (edge: {edge.error or edge.status}; cloud: {cloud.error or cloud.status})"
            self._spawn(self._finish(edge, cloud, tasks, rid=rid, wall0=wall0, prep=prep, obs=obs, th=th, mode=mode, latency=latency,
                                     size=size, answered_by=None, fallback=fallback, error=msg))
            raise RouterError(msg, rid)
        used = cloud if answered_by == "cloud" else edge
        assert used.gen is not None
        self._spawn(self._finish(edge, cloud, tasks, rid=rid, wall0=wall0, prep=prep, obs=obs, th=th, mode=mode, latency=latency,
                                 size=size, answered_by=answered_by, fallback=fallback, error=None, cancelled=cancelled))
        return RoutedAnswer(rid, used.gen, mode, answered_by, th, s_mas, latency, cancelled, fallback, obs.tolist())

    async def _speculate(self, req: MMRequest, th: Thresholds, size: int) -> tuple[str | None, str | None, bool, SideResult, SideResult, list[asyncio.Task]]:
        ce, cc = CancelToken(), CancelToken()
        et = asyncio.create_task(self._run_edge(req, ce))
        ct = asyncio.create_task(self._run_cloud(req, cc, size))
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
                      obs: Any, th: Thresholds, mode: Mode, latency: float, size: int, answered_by: str | None,
                      fallback: str | None, error: str | None, cancelled: bool = False) -> None:
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
        if error is not None:
            self.log.write_error({"id": rid, "time_unix": wall0, "mode": mode.label, "error": error,
                                  "thresholds": [th.tau_low, th.tau_high, th.tau_conf]})
            return
        if self.cfg.shadow_rate > 0 and (edge.ok != cloud.ok) and self._rng.random() < self.cfg.shadow_rate:
            if edge.ok:
                cloud = await self._run_cloud(prep.request, CancelToken(), size)
            else:
                edge = await self._run_edge(prep.request, CancelToken())
            (cloud if edge.ok else edge).shadow = True
        self.log.write(self._record(rid, wall0, prep, obs, th, mode, latency, answered_by, fallback, cancelled, edge, cloud))

    def _record(self, rid: str, wall0: float, prep: _Prepared, obs: Any, th: Thresholds, mode: Mode, latency: float,
                answered_by: str | None, fallback: str | None, cancelled: bool, edge: SideResult, cloud: SideResult) -> dict[str, Any]:
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
            "mode": mode.label, "answered_by": answered_by, "latency_s": latency,
            "edge_status": edge.status, "cloud_status": cloud.status,
            "edge_error": edge.error, "cloud_error": cloud.error,
            "cloud_cancelled": cancelled, "fallback": fallback, "degraded": answered_by == "edge-degraded",
            "shadow": edge.shadow or cloud.shadow, "cloud_bytes_sent": sent,
            "edge_confidence": edge.gen.confidence if edge.gen is not None else None,
            "score_source": "cloud-agreement" if both else None,
            "time_unix": wall0,
        }
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


def _conf(side: SideResult) -> float:
    """An edge answer's confidence; a backend that reports none counts as 0 (never accepted
    unless ``tau_conf == 0``)."""
    c = side.gen.confidence if side.gen is not None else None
    return 0.0 if c is None else float(c)
