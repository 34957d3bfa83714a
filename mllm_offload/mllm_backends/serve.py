"""``mllm-offload serve``: a local transformers model behind an OpenAI-compatible HTTP API.

Endpoints:

===============================  ===========================================================
``POST /v1/chat/completions``    chat completion, streaming (SSE) or not; ``logprobs``,
                                 ``top_logprobs`` (0-20), ``max_tokens`` /
                                 ``max_completion_tokens``, ``temperature``,
                                 ``stream_options.include_usage``; images as ``image_url``
                                 parts holding ``data:`` URLs (no fetching of remote URLs)
``GET /v1/models``               the served model
``GET /health``                  ``{"status": "ok"}`` (open even with an API key)
``GET /metrics``                 Prometheus text: requests, cancellations, deadlines, tokens,
                                 queue (needs the key when one is set, unless
                                 ``public_metrics``)
===============================  ===========================================================

A client that disconnects (closes the stream, or drops a non-streamed request) cancels the
generation at the next token, and the cancellation is counted in
``mllm_serve_cancelled_total``: that is how a speculative cloud call is seen to really stop.
The server binds 127.0.0.1 by default and refuses any other address unless an API key is set.

Limits, each answered with an OpenAI error body before the request costs more than its check:

* the body: over ``max_body_bytes`` (counted while read, chunked too): 413;
* the prompt: over the backend's ``max_prompt_tokens`` (the model's context length unless set;
  ``HFLocalBackend.check_prompt``, run before the request is queued, and again with the image
  tokens before prefill): 400 with code ``context_length_exceeded``;
* images: over ``max_image_pixels`` each or ``max_request_pixels`` together, read from the
  headers, never decoded: 400;
* the queue: more than ``max_queue`` requests admitted and not finished, streamed or not: 429
  with ``Retry-After``;
* time: a generation still running ``request_timeout_s`` after admission is cancelled at the
  next token (the worker is freed), answered 504 (in the stream: an error event) and counted in
  ``mllm_serve_timeouts_total``.

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
from .base import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    Backend,
    CancelToken,
    Generation,
    MMRequest,
    TokenCallback,
    TokenEvent,
    check_image_pixels,
)
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
    lp_entry,
    metrics_response,
    new_completion_id,
    parse_chat_request,
    serve_app,
    sse_done,
    sse_event,
    to_mm_request,
    user_error_response,
    validation_message,
)

__all__ = ["ServeStats", "create_app", "run_server"]

MAX_BODY_BYTES = 32 * 1024 * 1024
#: Default per-request deadline, seconds (admission to the last token).
REQUEST_TIMEOUT_S = 120.0
#: How long past its deadline a non-streamed request waits for a backend that ignores cancellation.
_DEADLINE_GRACE_S = 5.0


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
        self.timeouts = counter("mllm_serve_timeouts", "requests stopped at the request deadline")
        self.prompt_tokens = counter("mllm_serve_prompt_tokens", "prompt tokens processed")
        self.completion_tokens = counter("mllm_serve_completion_tokens", "tokens generated (cancelled requests included)")
        Gauge("mllm_serve_in_flight", "requests running or waiting", ["model"], registry=reg).labels(model).set_function(lambda: self.in_flight)


class _Admission:
    """One admitted request's place in the queue (``in_flight``), held until its generation has
    really ended, and whether its deadline stopped it."""

    def __init__(self, stats: ServeStats) -> None:
        self.stats = stats
        self.held = True
        self.timed_out = False
        stats.in_flight += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.stats.in_flight -= 1


class _Stream(StreamingResponse):
    """A stream whose generation is cancelled however the response ends (a client gone before
    the first chunk included: the body iterator may then never run)."""

    def __init__(self, content: AsyncIterator[str], cancel: CancelToken, task: asyncio.Task[Generation]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self._cancel, self._task = cancel, task

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._task.done():
                self._cancel.cancel()


def create_app(backend: Backend, served_name: str, *, api_key: str | None = None, max_queue: int = 16, default_max_tokens: int = 64,
               max_body_bytes: int = MAX_BODY_BYTES, request_timeout_s: float | None = REQUEST_TIMEOUT_S,
               max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS,
               public_metrics: bool = False) -> FastAPI:
    """A FastAPI app serving ``backend`` under the model name ``served_name`` (limits: see the
    module docstring; ``request_timeout_s=None``: no deadline)."""
    app = FastAPI(title="mllm-offload serve", docs_url=None, redoc_url=None)
    stats = ServeStats(served_name)
    app.state.stats = stats
    card = ModelCard(id=served_name)

    error = error_response
    install_guard(app, api_key, max_body_bytes, public_metrics=public_metrics)
    check_prompt = getattr(backend, "check_prompt", None)

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

    def _check(req: MMRequest) -> None:
        """The limits that need no model run: image headers, then the prompt's tokens."""
        check_image_pixels([*req.images, *(req.video or ())], max_image_pixels, max_request_pixels)
        if check_prompt is not None:
            check_prompt(req.prompt)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return error(413, f"request body over {max_body_bytes} bytes")
        try:
            body = await asyncio.to_thread(parse_chat_request, raw)  # a large body must not stall the event loop
            if body.model not in (None, served_name):
                return error(404, f"model {body.model!r} not served here (serving {served_name!r})", "not_found_error")
            req = to_mm_request(body, default_max_tokens, getattr(backend, "unsupported", "error") == "ignore")
            await asyncio.to_thread(_check, req)  # off the event loop: headers and tokenizing only, nothing decoded
        except UserInputError as e:
            return user_error_response(e)
        if stats.in_flight >= max_queue:  # streamed or not: a slot is taken here, before the response starts
            stats.rejected.inc()
            return error(429, f"server busy: {stats.in_flight} requests in flight", "rate_limit_error", {"retry-after": "1"})
        stats.requests.inc()
        slot = _Admission(stats)
        cid = new_completion_id()
        cancel = CancelToken()
        if body.stream:
            queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
            task = _start(req, cancel, slot, queue.put_nowait)
            task.add_done_callback(lambda _t: queue.put_nowait(None))
            return _Stream(_stream(task, queue, slot, body, cid), cancel, task)
        return await _complete(_start(req, cancel, slot), cancel, slot, body, cid, request)

    def _start(req: MMRequest, cancel: CancelToken, slot: _Admission, on_token: TokenCallback | None = None) -> asyncio.Task[Generation]:
        """Run one generation under the deadline; the counters are settled and the slot released
        when it ends, however it ends."""
        task = asyncio.create_task(backend.generate(req, cancel=cancel, on_token=on_token))

        def expire() -> None:
            slot.timed_out = True
            cancel.cancel()  # stops decoding at the next token (a queued request is skipped by the worker)

        timer = asyncio.get_running_loop().call_later(request_timeout_s, expire) if request_timeout_s else None

        def settle(t: asyncio.Task[Generation]) -> None:
            if timer is not None:
                timer.cancel()
            slot.release()
            if t.cancelled() or t.exception() is not None:
                stats.errors.inc()
                return
            gen = t.result()
            stats.prompt_tokens.inc(gen.in_tokens)
            stats.completion_tokens.inc(gen.out_tokens)
            if slot.timed_out and gen.cancelled:
                stats.timeouts.inc()
            elif gen.cancelled:
                stats.cancelled.inc()
            else:
                stats.completed.inc()

        task.add_done_callback(settle)
        return task

    def _deadline_message(gen: Generation | None) -> str:
        spent = f"; {gen.out_tokens} tokens were generated" if gen is not None else ""
        return f"generation stopped at the request deadline of {request_timeout_s:g} s{spent}"

    async def _complete(task: asyncio.Task[Generation], cancel: CancelToken, slot: _Admission, body: ChatRequest, cid: str,
                        request: Request) -> Response:
        async def watch() -> None:  # a client that drops the request cancels it
            while not task.done():
                if await request.is_disconnected():
                    cancel.cancel()
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            limit = request_timeout_s + _DEADLINE_GRACE_S if request_timeout_s else None
            done, _ = await asyncio.wait({task}, timeout=limit)
            if task not in done:  # a backend that ignores cancellation: answer now, the slot stays held until it ends
                return error(504, _deadline_message(None), "server_error")
            gen = task.result()
        except UserInputError as e:
            return user_error_response(e)
        except asyncio.CancelledError:
            cancel.cancel()
            raise
        except Exception as e:  # report, never hang
            return error(500, f"generation failed: {e}", "server_error")
        finally:
            watcher.cancel()
        if slot.timed_out and gen.cancelled:
            return error(504, _deadline_message(gen), "server_error")
        doc = ChatCompletionResponse(id=cid, model=served_name, choices=[ChatCompletionResponseChoice.from_generation(gen, logprobs=body.logprobs)],
                                     usage=UsageInfo.from_generation(gen))
        return JSONResponse(doc.model_dump(mode="json"))

    async def _stream(task: asyncio.Task[Generation], queue: asyncio.Queue[TokenEvent | None], slot: _Admission, body: ChatRequest,
                      cid: str) -> AsyncIterator[str]:
        base = ChatCompletionStreamResponse(id=cid, model=served_name)

        def chunk(delta: DeltaMessage, finish: FinishReason | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
            choice = ChatCompletionResponseStreamChoice(delta=delta, logprobs=logprobs, finish_reason=finish)
            return sse_event(base.model_copy(update={"choices": [choice]}))

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
        except UserInputError as e:  # the stream already started: report in it
            code, param = getattr(e, "code", None), getattr(e, "param", None)
            yield sse_event(error_body(400, str(e), code=code if isinstance(code, str) else None, param=param if isinstance(param, str) else None))
            return
        except Exception as e:
            yield sse_event(error_body(500, f"generation failed: {e}", "server_error"))
            return
        if slot.timed_out and gen.cancelled:
            yield sse_event(error_body(504, _deadline_message(gen), "server_error"))
            return
        yield chunk(DeltaMessage(), finish=finish_reason(gen))
        if body.include_usage:
            yield sse_event(base.model_copy(update={"usage": UsageInfo.from_generation(gen)}))
        yield sse_done()

    return app


def run_server(backend: Backend, served_name: str, host: str = "127.0.0.1", port: int = 8000, *,
               api_key: str | None = None, max_queue: int = 16, log_level: str = "warning", sock: socket.socket | None = None,
               **limits: Any) -> None:
    """Serve ``backend`` with uvicorn until interrupted; refuses a non-loopback ``host`` without ``api_key``.
    ``sock``: a socket already bound to ``(host, port)`` to listen on (the CLI binds it before
    announcing, so a busy port is its own one-line error). ``limits``: the keyword arguments of
    :func:`create_app` (``request_timeout_s``, ``max_image_pixels``, ``public_metrics`` ...)."""
    serve_app(lambda: create_app(backend, served_name, api_key=api_key, max_queue=max_queue, **limits), host, port,
              api_key=api_key, log_level=log_level, sock=sock, graceful_s=2)
