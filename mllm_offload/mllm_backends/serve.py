"""``mllm-offload serve``: a local transformers model behind an OpenAI-compatible HTTP API.

Endpoints:

===============================  ===========================================================
``POST /v1/chat/completions``    chat completion, streaming (SSE) or not; ``logprobs``,
                                 ``top_logprobs`` (0-20), ``max_tokens`` /
                                 ``max_completion_tokens``, ``temperature``,
                                 ``stream_options.include_usage``; images as ``image_url``
                                 parts holding ``data:`` URLs (no fetching of remote URLs)
``GET /v1/models``               the served model
``GET /health``                  ``{"status": "ok"}``
``GET /metrics``                 Prometheus text: requests, cancellations, tokens, queue
===============================  ===========================================================

A client that disconnects (closes the stream, or drops a non-streamed request) cancels the
generation at the next token, and the cancellation is counted in
``mllm_serve_cancelled_total``: that is how a speculative cloud call is seen to really stop.
Requests beyond ``max_queue`` waiting ones get HTTP 429. The server binds 127.0.0.1 by default
and refuses any other address unless an API key is set.

The request and response models, SSE framing, error body and API-key guard are those of
:mod:`.openai_protocol` (shared with ``mllm-offload route``); ``/metrics`` is prometheus-client
text from a registry of this app (:class:`ServeStats`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..errors import UserInputError
from .base import Backend, CancelToken, Generation, MMRequest, TokenCallback, TokenEvent
from .openai_protocol import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatRequest,
    ChoiceLogprobs,
    DeltaMessage,
    FinishReason,
    ModelCard,
    ModelList,
    UsageInfo,
    error_body,
    error_response,
    finish_reason,
    install_guard,
    is_loopback,
    lp_entry,
    metrics_response,
    new_completion_id,
    parse_chat_request,
    sse_done,
    sse_event,
    to_mm_request,
    validation_message,
)

__all__ = ["ServeStats", "create_app", "run_server"]

MAX_BODY_BYTES = 32 * 1024 * 1024


class ServeStats:
    """The Prometheus collectors of one serve app, in its own registry (served at ``/metrics``),
    each labelled with the served model name; ``in_flight`` is a plain count read by the gauge."""

    def __init__(self, model: str) -> None:
        self.registry = reg = CollectorRegistry()
        self.in_flight = 0

        def counter(name: str, help_: str) -> Counter:
            return Counter(name, help_, ["model"], registry=reg).labels(model)

        self.requests = counter("mllm_serve_requests", "chat completion requests accepted")
        self.completed = counter("mllm_serve_completed", "requests answered in full")
        self.cancelled = counter("mllm_serve_cancelled", "requests stopped because the client went away")
        self.errors = counter("mllm_serve_errors", "requests that failed")
        self.rejected = counter("mllm_serve_rejected", "requests refused with 429 (queue full)")
        self.prompt_tokens = counter("mllm_serve_prompt_tokens", "prompt tokens processed")
        self.completion_tokens = counter("mllm_serve_completion_tokens", "tokens generated (cancelled requests included)")
        Gauge("mllm_serve_in_flight", "requests running or waiting", ["model"], registry=reg).labels(model).set_function(lambda: self.in_flight)


def create_app(backend: Backend, served_name: str, *, api_key: str | None = None, max_queue: int = 16, default_max_tokens: int = 64) -> FastAPI:
    """A FastAPI app serving ``backend`` under the model name ``served_name``."""
    app = FastAPI(title="mllm-offload serve", docs_url=None, redoc_url=None)
    stats = ServeStats(served_name)
    app.state.stats = stats
    card = ModelCard(id=served_name)

    error = error_response
    install_guard(app, api_key, MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: Sequence[Mapping[str, Any]] = exc.errors()
        return error(400, validation_message(errors))

    @app.get("/health")
    async def health() -> dict[str, str | int]:
        return {"status": "ok", "model": served_name, "in_flight": stats.in_flight}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(ModelList(data=[card]).model_dump(mode="json"))

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response(stats.registry)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = parse_chat_request(raw)
            if body.model not in (None, served_name):
                return error(404, f"model {body.model!r} not served here (serving {served_name!r})", "not_found_error")
            req = to_mm_request(body, default_max_tokens, getattr(backend, "unsupported", "error") == "ignore")
        except UserInputError as e:
            return error(400, str(e))
        if stats.in_flight >= max_queue:
            stats.rejected.inc()
            return error(429, f"server busy: {stats.in_flight} requests in flight", "rate_limit_error", {"retry-after": "1"})
        stats.requests.inc()
        cid = new_completion_id()
        if body.stream:
            return StreamingResponse(_stream(req, body, cid), media_type="text/event-stream", headers={"cache-control": "no-cache"})
        return await _complete(req, body, cid, request)

    def _start(req: MMRequest, cancel: CancelToken, on_token: TokenCallback | None = None) -> asyncio.Task[Generation]:
        """Run one generation; the counters are settled when it ends, however it ends."""
        stats.in_flight += 1
        task = asyncio.create_task(backend.generate(req, cancel=cancel, on_token=on_token))

        def settle(t: asyncio.Task[Generation]) -> None:
            stats.in_flight -= 1
            if t.cancelled() or t.exception() is not None:
                stats.errors.inc()
                return
            gen = t.result()
            stats.prompt_tokens.inc(gen.in_tokens)
            stats.completion_tokens.inc(gen.out_tokens)
            if gen.cancelled:
                stats.cancelled.inc()
            else:
                stats.completed.inc()

        task.add_done_callback(settle)
        return task

    async def _complete(req: MMRequest, body: ChatRequest, cid: str, request: Request) -> Response:
        cancel = CancelToken()
        task = _start(req, cancel)

        async def watch() -> None:
            while not task.done():
                if await request.is_disconnected():
                    cancel.cancel()
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            gen = await asyncio.shield(task)
        except UserInputError as e:
            return error(400, str(e))
        except asyncio.CancelledError:
            cancel.cancel()
            raise
        except Exception as e:  # report, never hang
            return error(500, f"generation failed: {e}", "server_error")
        finally:
            watcher.cancel()
        doc = ChatCompletionResponse(id=cid, model=served_name, choices=[ChatCompletionResponseChoice.from_generation(gen, logprobs=body.logprobs)],
                                     usage=UsageInfo.from_generation(gen))
        return JSONResponse(doc.model_dump(mode="json"))

    async def _stream(req: MMRequest, body: ChatRequest, cid: str) -> AsyncIterator[str]:
        cancel = CancelToken()
        queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        task = _start(req, cancel, queue.put_nowait)
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        base = ChatCompletionStreamResponse(id=cid, model=served_name)

        def chunk(delta: DeltaMessage, finish: FinishReason | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
            choice = ChatCompletionResponseStreamChoice(delta=delta, logprobs=logprobs, finish_reason=finish)
            return sse_event(base.model_copy(update={"choices": [choice]}))

        try:
            yield chunk(DeltaMessage(role="assistant", content=""))
            while True:
                ev = await queue.get()
                if ev is None:
                    break
                flush = ev.token == "" and ev.logprob is None  # held-back text, not a new token
                lp = ChoiceLogprobs(content=[lp_entry(ev.token, ev.logprob, ev.top)]) if body.logprobs and not flush else None
                yield chunk(DeltaMessage(content=ev.text), logprobs=lp)
            try:
                gen = task.result()
            except Exception as e:  # the stream already started: report in it
                yield sse_event(error_body(500, f"generation failed: {e}", "server_error"))
                return
            yield chunk(DeltaMessage(), finish=finish_reason(gen))
            if body.include_usage:
                yield sse_event(base.model_copy(update={"usage": UsageInfo.from_generation(gen)}))
            yield sse_done()
        finally:
            if not task.done():  # the client went away mid-stream: stop decoding at the next token
                cancel.cancel()

    return app


def run_server(backend: Backend, served_name: str, host: str = "127.0.0.1", port: int = 8000, *,
               api_key: str | None = None, max_queue: int = 16, log_level: str = "warning", sock: socket.socket | None = None) -> None:
    """Serve ``backend`` with uvicorn until interrupted; refuses a non-loopback ``host`` without ``api_key``.
    ``sock``: a socket already bound to ``(host, port)`` to listen on (the CLI binds it before
    announcing, so a busy port is its own one-line error)."""
    import uvicorn

    if not is_loopback(host) and not api_key:
        raise UserInputError(f"--host {host}: refusing to bind a non-loopback address without --api-key")
    app = create_app(backend, served_name, api_key=api_key, max_queue=max_queue)
    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
        return
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C is a normal stop, a failed startup exits 3
        pass
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(3)
