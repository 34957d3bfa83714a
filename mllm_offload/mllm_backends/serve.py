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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from typing import Any, AsyncIterator, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserInputError
from .base import Backend, CancelToken, MMRequest, TokenEvent

__all__ = ["ChatRequest", "ServeStats", "create_app", "error_response", "install_guard", "is_loopback", "lp_entry", "run_server", "to_mm_request"]

MAX_BODY_BYTES = 32 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Model):
    url: str
    detail: str | None = None


class ContentPart(_Model):
    type: str
    text: str | None = None
    image_url: Union[ImageURL, str, None] = None


class Message(_Model):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(_Model):
    include_usage: bool = False


class ChatRequest(_Model):
    """The subset of the OpenAI chat-completions body that is honoured (other fields are ignored)."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)


class ServeStats:
    """Counters exposed at ``/metrics`` (Prometheus text format)."""

    def __init__(self) -> None:
        self.requests = 0
        self.completed = 0
        self.cancelled = 0
        self.errors = 0
        self.rejected = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0

    def prometheus(self, model: str) -> str:
        lab = f'{{model="{model}"}}'
        rows = [
            ("mllm_serve_requests_total", "counter", "chat completion requests accepted", self.requests),
            ("mllm_serve_completed_total", "counter", "requests answered in full", self.completed),
            ("mllm_serve_cancelled_total", "counter", "requests stopped because the client went away", self.cancelled),
            ("mllm_serve_errors_total", "counter", "requests that failed", self.errors),
            ("mllm_serve_rejected_total", "counter", "requests refused with 429 (queue full)", self.rejected),
            ("mllm_serve_prompt_tokens_total", "counter", "prompt tokens processed", self.prompt_tokens),
            ("mllm_serve_completion_tokens_total", "counter", "tokens generated (cancelled requests included)", self.completion_tokens),
            ("mllm_serve_in_flight", "gauge", "requests running or waiting", self.in_flight),
        ]
        out = []
        for name, kind, help_, v in rows:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name}{lab} {v}"]
        return "\n".join(out) + "\n"


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _decode_data_url(url: str, where: str) -> bytes:
    if not url.startswith("data:"):
        raise UserInputError(f"{where}: only data: URLs are accepted (this server fetches nothing from the network)")
    head, sep, data = url.partition(",")
    if not sep or ";base64" not in head:
        raise UserInputError(f"{where}: expected data:<mime>;base64,<data>")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UserInputError(f"{where}: invalid base64 data") from None


def to_mm_request(body: ChatRequest, default_max_tokens: int, drop_unsupported: bool = False) -> MMRequest:
    """Turn an OpenAI chat body into one :class:`MMRequest`.

    Earlier turns become text context (``role: text`` lines) before the last message; images of
    every message are passed in order. Parts other than text and image_url are refused, or
    dropped with ``drop_unsupported`` (a server whose model ignores modalities it cannot take).
    """
    lines: list[str] = []
    images: list[bytes] = []
    for i, m in enumerate(body.messages):
        parts = [ContentPart(type="text", text=m.content)] if isinstance(m.content, str) else (m.content or [])
        texts = []
        for j, p in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            if p.type == "text":
                texts.append(p.text or "")
            elif p.type == "image_url":
                if p.image_url is None:
                    raise UserInputError(f"{where}.image_url: missing")
                url = p.image_url if isinstance(p.image_url, str) else p.image_url.url
                images.append(_decode_data_url(url, f"{where}.image_url"))
            elif not drop_unsupported:
                raise UserInputError(f"{where}.type: unsupported modality {p.type!r} (this model takes text and image_url)")
        text = " ".join(t for t in texts if t)
        lines.append(text if i == len(body.messages) - 1 and m.role == "user" else f"{m.role}: {text}")
    k = body.top_logprobs or 0
    return MMRequest(
        prompt="\n".join(lines),
        images=images,
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        temperature=body.temperature or 0.0,
        top_logprobs=k if body.logprobs else 0,
    )


def lp_entry(token: str, lp: float | None, top: Any) -> dict[str, Any]:
    def one(t: str, v: float | None) -> dict[str, Any]:
        return {"token": t, "logprob": v if v is not None else -9999.0, "bytes": list(t.encode("utf-8"))}

    e = one(token, lp)
    e["top_logprobs"] = [one(t, v) for t, v in top]
    return e


def error_response(status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style one-line error body."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status_code=status, headers=headers)


def install_guard(app: FastAPI, api_key: str | None, max_body_bytes: int) -> None:
    """API key on ``/v1/*`` (401) and a body size limit from ``content-length`` (413)."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return error_response(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_body_bytes:
            return error_response(413, f"request body over {max_body_bytes} bytes")
        return await call_next(request)


def create_app(backend: Backend, served_name: str, *, api_key: str | None = None, max_queue: int = 16, default_max_tokens: int = 64) -> FastAPI:
    """A FastAPI app serving ``backend`` under the model name ``served_name``."""
    app = FastAPI(title="mllm-offload serve", docs_url=None, redoc_url=None)
    stats = ServeStats()
    app.state.stats = stats
    created = int(time.time())

    error = error_response
    install_guard(app, api_key, MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid body"}
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        return error(400, f"{loc or 'body'}: {e.get('msg')}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served_name, "in_flight": stats.in_flight}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served_name, "object": "model", "created": created, "owned_by": "mllm-offload"}]}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(stats.prometheus(served_name), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            return error(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = ChatRequest.model_validate_json(raw)
            if body.model not in (None, served_name):
                return error(404, f"model {body.model!r} not served here (serving {served_name!r})", "not_found_error")
            req = to_mm_request(body, default_max_tokens, getattr(backend, "unsupported", "error") == "ignore")
        except ValidationError as e:
            err = e.errors()[0]
            return error(400, f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['msg']}")
        except UserInputError as e:
            return error(400, str(e))
        if stats.in_flight >= max_queue:
            stats.rejected += 1
            return JSONResponse(
                {"error": {"message": f"server busy: {stats.in_flight} requests in flight", "type": "rate_limit_error", "param": None, "code": 429}},
                status_code=429, headers={"retry-after": "1"},
            )
        stats.requests += 1
        cid = "chatcmpl-" + secrets.token_hex(12)
        if body.stream:
            return StreamingResponse(_stream(req, body, cid), media_type="text/event-stream", headers={"cache-control": "no-cache"})
        return await _complete(req, body, cid, request)

    def _start(req: MMRequest, cancel: CancelToken, on_token: Any = None) -> asyncio.Task:
        """Run one generation; the counters are settled when it ends, however it ends."""
        stats.in_flight += 1
        task = asyncio.create_task(backend.generate(req, cancel=cancel, on_token=on_token))

        def settle(t: asyncio.Task) -> None:
            stats.in_flight -= 1
            if t.cancelled() or t.exception() is not None:
                stats.errors += 1
                return
            gen = t.result()
            stats.prompt_tokens += gen.in_tokens
            stats.completion_tokens += gen.out_tokens
            if gen.cancelled:
                stats.cancelled += 1
            else:
                stats.completed += 1

        task.add_done_callback(settle)
        return task

    async def _complete(req: MMRequest, body: ChatRequest, cid: str, request: Request) -> Any:
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
        except Exception as e:  # noqa: BLE001 - report, never hang
            return error(500, f"generation failed: {e}", "server_error")
        finally:
            watcher.cancel()
        logprobs = None
        if body.logprobs:
            tops = gen.top_logprobs or [[] for _ in gen.tokens]
            logprobs = {"content": [lp_entry(t, lp, tp) for t, lp, tp in zip(gen.tokens, gen.token_logprobs, tops)]}
        return {
            "id": cid, "object": "chat.completion", "created": int(time.time()), "model": served_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text}, "logprobs": logprobs,
                         "finish_reason": "length" if gen.finish_reason == "length" else "stop"}],
            "usage": {"prompt_tokens": gen.in_tokens, "completion_tokens": gen.out_tokens, "total_tokens": gen.in_tokens + gen.out_tokens},
        }

    async def _stream(req: MMRequest, body: ChatRequest, cid: str) -> AsyncIterator[str]:
        cancel = CancelToken()
        queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        task = _start(req, cancel, queue.put_nowait)
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        t_created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, usage: Any = None, choices: bool = True) -> str:
            d: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": t_created, "model": served_name,
                                 "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}] if choices else []}
            if usage is not None:
                d["usage"] = usage
            return f"data: {json.dumps(d)}\n\n"

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                ev = await queue.get()
                if ev is None:
                    break
                flush = ev.token == "" and ev.logprob is None  # held-back text, not a new token
                lp = {"content": [lp_entry(ev.token, ev.logprob, ev.top)]} if body.logprobs and not flush else None
                yield chunk({"content": ev.text}, logprobs=lp)
            try:
                gen = task.result()
            except Exception as e:  # noqa: BLE001
                yield f"data: {json.dumps({'error': {'message': f'generation failed: {e}', 'type': 'server_error', 'code': 500}})}\n\n"
                return
            yield chunk({}, finish="length" if gen.finish_reason == "length" else "stop")
            if body.stream_options and body.stream_options.include_usage:
                yield chunk({}, usage={"prompt_tokens": gen.in_tokens, "completion_tokens": gen.out_tokens,
                                       "total_tokens": gen.in_tokens + gen.out_tokens}, choices=False)
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away mid-stream: stop decoding at the next token
                cancel.cancel()

    return app


def run_server(backend: Backend, served_name: str, host: str = "127.0.0.1", port: int = 8000, *,
               api_key: str | None = None, max_queue: int = 16, log_level: str = "warning") -> None:
    """Serve ``backend`` with uvicorn until interrupted; refuses a non-loopback ``host`` without ``api_key``."""
    import uvicorn

    if not is_loopback(host) and not api_key:
        raise UserInputError(f"--host {host}: refusing to bind a non-loopback address without --api-key")
    app = create_app(backend, served_name, api_key=api_key, max_queue=max_queue)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
