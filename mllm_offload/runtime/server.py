"""``mllm-offload route``: an OpenAI-compatible endpoint in front of the :class:`~.router.Router`.

===============================  ===========================================================
``POST /v1/chat/completions``    chat completion (streaming or not), routed; the response
                                 carries ``x-offload-mode`` (``edge_first``, ``speculative``,
                                 ``cloud``), ``x-offload-answered-by`` (``edge``, ``cloud``,
                                 ``edge-degraded``) and ``x-offload-request-id`` headers and an
                                 ``offload`` field with the decision (thresholds, MAS score,
                                 latency, fallback)
``GET /v1/models``               the router's model name
``GET /health``                  ``{"status": "ok", ...}`` with the policy and queue (open
                                 even with an API key)
``GET /metrics``                 (needs the key when one is set, unless ``public_metrics``)
                                 Prometheus text: ``offload_requests_total{mode}``,
                                 ``offload_answers_total{answered_by}``,
                                 ``offload_latency_seconds`` (histogram by mode),
                                 ``offload_cloud_cancelled_total``,
                                 ``offload_fallbacks_total{reason}``, ``offload_failed_total``,
                                 ``offload_rejected_total``, and gauges of the estimated
                                 bandwidth, RTT, edge queue and cloud calls in flight
===============================  ===========================================================

**Trade-off per request.** The policy is asked for thresholds under a trade-off
(:class:`~mllm_offload.tradeoff.TradeOff`): the router's default (``route --latency-price``),
or this request's prices, from the request headers ``x-offload-latency-price`` (a number in
[0, 100] or a preset name: ``quality-first``, ``balanced``, ``latency-first``) and
``x-offload-cost-price`` (a number in [0, 10000]), or from the body's ``offload`` object
(``{"latency_price": X, "cost_price": Y}``, JSON numbers, no other keys). A header wins over the
body field of the same price; a price given neither way keeps the router's default. A malformed
value, or prices outside the policy's trained range, get 400 with one line naming the header or
field (``param``). Once the trade-off is known, every response (answer, stream, 429, 503 and the
400s of routing) carries the prices used in ``x-offload-latency-price`` and
``x-offload-cost-price``; the trace record has them in ``route.tradeoff``.

**Upload plan.** Every answer (and stream) carries ``x-offload-upload-plan``: what an offload of
the request sends, per modality present (``image=model_res,audio=drop``; ``text`` for a request
without media; ``image=full`` etc. for a policy that chooses no plan), also in the body's
``offload.upload_plan`` with ``offload.bytes_sent`` (payload bytes the cloud was sent, ``null``
when it was not called).

A streamed request is answered once the routing has settled (a speculative edge answer is only
known to be accepted when the edge finishes), then its tokens are sent as chunks: the stream is
ordinary OpenAI SSE, but its first token comes with the routed answer, not earlier.

Guards: binds 127.0.0.1 unless an API key is set (then every path but ``/health`` needs it);
bodies over ``max_body_bytes`` get 413, counted while they are read (chunked too); a prompt over
the router's ``max_prompt_chars`` gets 400 (``context_length_exceeded``) and images over its
pixel limits 400, both before MAS or any backend; more than ``max_queue`` requests in flight get
429 with ``Retry-After``; when no backend can answer the request gets 503 with one line naming
both causes (and is written to ``errors.jsonl``), or 400 when both refused the request itself
(a prompt over both models' context).
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..errors import UserInputError
from ..mllm_backends.base import BackendError
from ..mllm_backends.openai_protocol import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChoiceLogprobs,
    DeltaMessage,
    FinishReason,
    ModelCard,
    ModelList,
    OffloadOptions,
    OpenAIBaseModel,
    RouteChatRequest,
    UsageInfo,
    error_response,
    finish_reason,
    install_guard,
    lp_entry,
    metrics_response,
    new_completion_id,
    parse_route_request,
    serve_app,
    sse_done,
    sse_event,
    to_mm_request,
    user_error_response,
)
from ..tradeoff import MAX_COST_PRICE, MAX_LATENCY_PRICE, PRESETS, TradeOff
from .router import RoutedAnswer, Router, RouterError

__all__ = ["COST_PRICE_HEADER", "LATENCY_PRICE_HEADER", "UPLOAD_PLAN_HEADER", "OffloadInfo", "RouteChatCompletion", "RouteChatCompletionChunk",
           "create_route_app", "request_tradeoff", "run_route_server", "tradeoff_headers"]

#: request and response header of the latency price (score per SLO of latency)
LATENCY_PRICE_HEADER = "x-offload-latency-price"
#: request and response header of the cost price (score per USD per 1k requests)
COST_PRICE_HEADER = "x-offload-cost-price"
#: response header of the upload plan (``image=model_res,audio=drop``)
UPLOAD_PLAN_HEADER = "x-offload-upload-plan"
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class RouteMetrics:
    """The Prometheus collectors of one route server (own registry, so apps do not collide)."""

    def __init__(self, router: Router) -> None:
        self.registry = reg = CollectorRegistry()
        self.requests = Counter("offload_requests", "requests routed, by the mode the policy chose", ["mode"], registry=reg)
        self.answers = Counter("offload_answers", "answers, by the side whose answer was used", ["answered_by"], registry=reg)
        self.latency = Histogram("offload_latency_seconds", "arrival to routed answer, seconds", ["mode"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.cancelled = Counter("offload_cloud_cancelled", "speculative cloud calls cancelled after an accepted edge answer", registry=reg)
        self.fallbacks = Counter("offload_fallbacks", "answers that were not the planned one, by reason", ["reason"], registry=reg)
        self.failed = Counter("offload_failed", "requests no backend could answer (HTTP 503)", registry=reg)
        self.rejected = Counter("offload_rejected", "requests refused with HTTP 429 (queue full)", registry=reg)
        self.in_flight = Gauge("offload_in_flight", "requests being routed", registry=reg)
        est = router.est
        gauges = [
            ("offload_bandwidth_estimate_mbps", "estimated uplink bandwidth (harmonic mean of measured uploads), Mbps", lambda: est.est.bw_est_mbps),
            ("offload_rtt_estimate_seconds", "last measured round-trip time, seconds", lambda: est.est.rtt_s),
            ("offload_edge_queue", "edge jobs waiting or running", lambda: est.edge_queue_n),
            ("offload_cloud_inflight", "cloud calls outstanding", lambda: est.cloud_inflight_n),
            ("offload_cloud_latency_recent_seconds", "moving average of cloud response time, seconds", lambda: est.est.cloud_latency_s),
        ]
        for name, help_, fn in gauges:
            Gauge(name, help_, registry=reg).set_function(fn)

    def observe(self, ans: RoutedAnswer) -> None:
        mode = ans.mode.label
        self.requests.labels(mode).inc()
        self.answers.labels(ans.answered_by).inc()
        self.latency.labels(mode).observe(ans.latency_s)
        if ans.cloud_cancelled:
            self.cancelled.inc()
        if ans.fallback:
            self.fallbacks.labels(ans.fallback).inc()


class ThresholdsInfo(OpenAIBaseModel):
    tau_low: float
    tau_high: float
    tau_conf: float


class TradeOffInfo(OpenAIBaseModel):
    """The trade-off the policy was asked for (also in the ``x-offload-*-price`` headers)."""

    latency_price: float
    cost_price: float


class OffloadInfo(OpenAIBaseModel):
    """The routing decision returned with an answer (the ``offload`` field)."""

    request_id: str
    mode: str
    answered_by: str
    mas_score: float
    thresholds: ThresholdsInfo
    confidence: float | None = None
    latency_s: float
    backend_latency_s: float
    router_overhead_s: float | None = None
    cloud_cancelled: bool = False
    fallback: str | None = None
    tradeoff: TradeOffInfo | None = None
    upload_plan: str | None = None
    bytes_sent: int | None = None

    @classmethod
    def from_answer(cls, ans: RoutedAnswer) -> OffloadInfo:
        th, t = ans.thresholds, ans.tradeoff
        return cls(request_id=ans.id, mode=ans.mode.label, answered_by=ans.answered_by, mas_score=ans.mas_score,
                   thresholds=ThresholdsInfo(tau_low=th.tau_low, tau_high=th.tau_high, tau_conf=th.tau_conf),
                   confidence=ans.generation.confidence, latency_s=ans.latency_s, backend_latency_s=ans.generation.latency_s,
                   router_overhead_s=ans.router_overhead_s, cloud_cancelled=ans.cloud_cancelled, fallback=ans.fallback,
                   tradeoff=TradeOffInfo(latency_price=t.latency_price, cost_price=t.cost_price),
                   upload_plan=ans.upload_plan or None, bytes_sent=ans.bytes_sent)


class RouteChatCompletion(ChatCompletionResponse):
    """A chat completion with the routing decision."""

    offload: OffloadInfo


class RouteChatCompletionChunk(ChatCompletionStreamResponse):
    """A streamed chunk; the one with the ``finish_reason`` carries the routing decision."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"usage", "offload"})

    offload: OffloadInfo | None = None


def create_route_app(router: Router, *, served_name: str = "mllm-offload-router", api_key: str | None = None, max_queue: int = 64,
                     max_body_bytes: int = 32 * 1024 * 1024, default_max_tokens: int = 64, public_metrics: bool = False) -> FastAPI:
    """A FastAPI app serving ``router`` (see the module docstring; the prompt and pixel limits are
    the router's ``RouterConfig``). Closing the app drains the router's log tasks and closes its
    backends."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await router.aclose()

    app = FastAPI(title="mllm-offload route", docs_url=None, redoc_url=None, lifespan=lifespan)
    metrics = RouteMetrics(router)
    app.state.router, app.state.metrics = router, metrics
    state = {"in_flight": 0}
    card = ModelCard(id=served_name)

    error = error_response
    install_guard(app, api_key, max_body_bytes, public_metrics=public_metrics)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        rng = router.tradeoff_range
        t = router.tradeoff
        return {"status": "ok", "policy": getattr(router.policy, "name", "?"), "in_flight": state["in_flight"],
                "tradeoff": {"latency_price": t.latency_price, "cost_price": t.cost_price},
                "tradeoff_range": rng.describe() if rng is not None and hasattr(rng, "describe") else None,
                **router.est.snapshot()}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[card]).model_dump(mode="json"))

    @app.get("/metrics")
    async def prometheus() -> Response:
        return metrics_response(metrics.registry)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        t_in = time.perf_counter()
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return error(413, f"request body over {max_body_bytes} bytes")
        try:
            body = await asyncio.to_thread(parse_route_request, raw)  # a large body must not stall the event loop
        except UserInputError as e:
            return user_error_response(e)
        try:
            trade = request_tradeoff(router, request.headers, body.offload)
        except _TradeOffError as e:
            return error(400, str(e), param=e.param)
        priced = tradeoff_headers(trade)
        try:
            req = await asyncio.to_thread(to_mm_request, body, default_max_tokens)
        except UserInputError as e:
            return _with(user_error_response(e), priced)
        if state["in_flight"] >= max_queue:
            metrics.rejected.inc()
            return error(429, f"router busy: {state['in_flight']} requests in flight", "rate_limit_error", {"retry-after": "1", **priced})
        state["in_flight"] += 1
        metrics.in_flight.inc()
        try:
            ans = await _unless_disconnected(router.generate(req, trade), request)
        except RouterError as e:
            if e.refused:  # both sides refused the request itself: the client's to fix
                return error(400, str(e), headers={"x-offload-request-id": e.request_id, **priced})
            metrics.failed.inc()
            return error(503, str(e), "server_error", {"x-offload-request-id": e.request_id, **priced})
        except UserInputError as e:  # over the limits, unreadable media
            return _with(user_error_response(e), priced)
        except BackendError as e:
            return error(400, str(e), headers=priced)
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()
        metrics.observe(ans)
        ans.router_overhead_s = max(time.perf_counter() - t_in - ans.generation.latency_s, 0.0)
        headers = {"x-offload-mode": ans.mode.label, "x-offload-answered-by": ans.answered_by, "x-offload-request-id": ans.id,
                   **tradeoff_headers(ans.tradeoff)}
        if ans.upload_plan:
            headers[UPLOAD_PLAN_HEADER] = ans.upload_plan
        cid = new_completion_id()
        if body.stream:
            return StreamingResponse(_chunks(ans, body, cid), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        gen = ans.generation
        doc = RouteChatCompletion(id=cid, model=served_name, choices=[ChatCompletionResponseChoice.from_generation(gen, logprobs=body.logprobs)],
                                  usage=UsageInfo.from_generation(gen), offload=OffloadInfo.from_answer(ans))
        return JSONResponse(doc.model_dump(mode="json"), headers=headers)

    async def _chunks(ans: RoutedAnswer, body: RouteChatRequest, cid: str) -> AsyncIterator[str]:
        gen = ans.generation
        base = RouteChatCompletionChunk(id=cid, model=served_name)

        def chunk(delta: DeltaMessage, finish: FinishReason | None = None, logprobs: ChoiceLogprobs | None = None,
                  offload: OffloadInfo | None = None) -> str:
            choice = ChatCompletionResponseStreamChoice(delta=delta, logprobs=logprobs, finish_reason=finish)
            return sse_event(base.model_copy(update={"choices": [choice], "offload": offload}))

        yield chunk(DeltaMessage(role="assistant", content=""))
        if gen.tokens and "".join(gen.tokens) == gen.text:
            tops = gen.top_logprobs or [[] for _ in gen.tokens]
            for tok, lp, top in zip(gen.tokens, gen.token_logprobs, tops, strict=False):
                yield chunk(DeltaMessage(content=tok), logprobs=ChoiceLogprobs(content=[lp_entry(tok, lp, top)]) if body.logprobs else None)
        elif gen.text:
            yield chunk(DeltaMessage(content=gen.text))
        yield chunk(DeltaMessage(), finish=finish_reason(gen), offload=OffloadInfo.from_answer(ans))
        if body.include_usage:
            yield sse_event(base.model_copy(update={"usage": UsageInfo.from_generation(gen)}))
        yield sse_done()

    return app


class _TradeOffError(UserInputError):
    """A request's trade-off that cannot be served; ``param``: the header or body field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _header_price(headers: Any, name: str, top: float, presets: dict[str, float]) -> float | None:
    """The price in request header ``name`` (``None`` when absent): a finite number in ``[0, top]``
    or a name of ``presets``; anything else raises :class:`_TradeOffError`."""
    values = headers.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise _TradeOffError(f"{name}: given {len(values)} times; send it once", name)
    text = values[0].strip()
    if text.lower() in presets:  # preset names in any case
        return presets[text.lower()]
    v = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not (math.isfinite(v) and 0.0 <= v <= top):
        shown = text if len(text) <= 40 else text[:40] + "..."
        names = f" or one of {', '.join(presets)}" if presets else ""
        raise _TradeOffError(f"{name}: {shown!r} is not a number in [0, {top:g}]{names}", name)
    return v


def request_tradeoff(router: Router, headers: Any, body: OffloadOptions | None) -> TradeOff:
    """The trade-off of one request: each price from its header (:data:`LATENCY_PRICE_HEADER`,
    :data:`COST_PRICE_HEADER`) if present, else from the body's ``offload`` object, else the
    router's default; checked against the policy's trained range. A bad value raises a
    :class:`UserInputError` whose ``param`` names the header or field at fault."""
    lp = _header_price(headers, LATENCY_PRICE_HEADER, MAX_LATENCY_PRICE, PRESETS)
    cp = _header_price(headers, COST_PRICE_HEADER, MAX_COST_PRICE, {})
    lp_src, cp_src = LATENCY_PRICE_HEADER, COST_PRICE_HEADER
    if lp is None and body is not None and body.latency_price is not None:
        lp, lp_src = body.latency_price, "offload.latency_price"
    if cp is None and body is not None and body.cost_price is not None:
        cp, cp_src = body.cost_price, "offload.cost_price"
    src = lp_src
    try:  # the latency price alone first, so that the line names the price at fault
        if lp is not None:
            router.tradeoff_for(lp, None, src)
        src = cp_src if cp is not None else lp_src
        return router.tradeoff_for(lp, cp, src)
    except UserInputError as e:
        raise _TradeOffError(str(e), src) from None


def tradeoff_headers(t: TradeOff) -> dict[str, str]:
    """The response headers that report the trade-off used."""
    return {LATENCY_PRICE_HEADER: repr(float(t.latency_price)), COST_PRICE_HEADER: repr(float(t.cost_price))}


def _with(resp: Response, headers: dict[str, str]) -> Response:
    resp.headers.update(headers)
    return resp


async def _unless_disconnected(coro: Any, request: Request, poll_s: float = 0.25) -> Any:
    """Await ``coro``; if the client goes away first, cancel it (the router then cancels both sides)
    and re-raise the cancellation, so a dropped request frees its queue slot and its backends."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise asyncio.CancelledError("client disconnected")
    finally:
        if not task.done():
            task.cancel()


def run_route_server(router: Router, host: str = "127.0.0.1", port: int = 8080, *, api_key: str | None = None, max_queue: int = 64,
                     max_body_bytes: int = 32 * 1024 * 1024, log_level: str = "warning", sock: socket.socket | None = None,
                     public_metrics: bool = False) -> None:
    """Serve ``router`` with uvicorn until interrupted; refuses a non-loopback ``host`` without ``api_key``.
    ``sock``: a socket already bound to ``(host, port)`` to listen on (the CLI binds it before
    announcing, so a busy port is its own one-line error)."""
    serve_app(lambda: create_route_app(router, api_key=api_key, max_queue=max_queue, max_body_bytes=max_body_bytes,
                                       public_metrics=public_metrics), host, port, api_key=api_key, log_level=log_level, sock=sock, graceful_s=5)
