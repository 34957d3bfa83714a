"""The OpenAI chat-completions protocol of ``mllm-offload serve`` and ``mllm-offload route``.

One place for the wire format of both servers (modelled on vLLM's
``entrypoints/openai/protocol.py``):

* request models: :class:`ChatRequest` (the honoured subset of the chat-completions body) and
  its parts :class:`Message`, :class:`ContentPart`, :class:`ImageURL`, :class:`StreamOptions`;
  ``route``'s :class:`RouteChatRequest` adds the optional ``offload`` object
  (:class:`OffloadOptions`: this request's latency and cost prices), which ``serve`` ignores
  like any other unknown field;
* response models: :class:`ChatCompletionResponse` (its :class:`ChatCompletionResponseChoice`,
  :class:`ChatMessage`, :class:`UsageInfo`), the streamed :class:`ChatCompletionStreamResponse`
  (:class:`ChatCompletionResponseStreamChoice`, :class:`DeltaMessage`), log-probabilities
  (:class:`ChoiceLogprobs`, :class:`ChatCompletionTokenLogprob`, :class:`TopLogprob`), the model
  list (:class:`ModelList`, :class:`ModelCard`) and the error body (:class:`ErrorResponse`,
  :class:`ErrorInfo`);
* SSE framing (:func:`sse_event`, :func:`sse_done`), :func:`error_response` (and
  :func:`user_error_response` for a refused request), the API-key and body-size guard
  (:func:`install_guard`, a pure ASGI middleware: the key on every path but ``/health``, the body
  counted while it is read, chunked or not), :func:`metrics_response` (Prometheus text from a
  registry), and :func:`to_mm_request` (a chat body to one :class:`~.base.MMRequest`).

Serialisation: every field of a response model is written, ``null`` included (``logprobs``,
``finish_reason``, ``param`` ...), except the optional ones a model lists in ``_omit_if_none``
(a delta's ``role`` / ``content``, a chunk's ``usage``), which are left out while unset. Use
``model.model_dump(mode="json")`` or ``model.model_dump_json()``.

The pydantic models are this package's own: the ``openai`` package is a development dependency
only (the tests check these shapes against the stock client's types).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import math
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, StrictBool, ValidationError, model_serializer, model_validator
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from ..errors import UserInputError
from ..tradeoff import MAX_COST_PRICE, MAX_LATENCY_PRICE
from .base import Generation, MMRequest

__all__ = [
    "UNKNOWN_LOGPROB",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatCompletionTokenLogprob",
    "ChatMessage",
    "ChatRequest",
    "ChoiceLogprobs",
    "ContentPart",
    "DeltaMessage",
    "ErrorInfo",
    "ErrorResponse",
    "FinishReason",
    "ImageURL",
    "Message",
    "ModelCard",
    "ModelList",
    "OffloadOptions",
    "OpenAIBaseModel",
    "RequestGuard",
    "RouteChatRequest",
    "StreamOptions",
    "TopLogprob",
    "UsageInfo",
    "error_body",
    "error_response",
    "finish_reason",
    "install_guard",
    "is_loopback",
    "lp_entry",
    "metrics_response",
    "new_completion_id",
    "parse_chat_request",
    "parse_route_request",
    "sse_done",
    "sse_event",
    "to_mm_request",
    "user_error_response",
    "validation_message",
]

#: Why a choice ended (the OpenAI values; these servers send ``stop`` and ``length``).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

#: ``logprob`` reported for a token whose log-probability is unknown, and the floor of the others (as vLLM does).
UNKNOWN_LOGPROB = -9999.0


def _now() -> int:
    return int(time.time())


def new_completion_id() -> str:
    """A fresh ``chatcmpl-...`` id."""
    return "chatcmpl-" + secrets.token_hex(12)


class OpenAIBaseModel(BaseModel):
    """Base of all protocol models: unknown fields are ignored when parsing; when serialising,
    ``None`` is written as ``null`` except for the fields named in ``_omit_if_none``."""

    model_config = ConfigDict(extra="ignore")

    _omit_if_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        omit = type(self)._omit_if_none
        return {k: v for k, v in data.items() if v is not None or k not in omit} if omit else data


# ----------------------------------------------------------------------------- requests


class ImageURL(OpenAIBaseModel):
    url: str
    detail: str | None = None


class ContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None


class Message(OpenAIBaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_CONTENT_PARTS)] | None = None


#: Bounds on a request's structure (checked while parsing, before any media is touched).
MAX_MESSAGES = 1024
MAX_CONTENT_PARTS = 1024
MAX_IMAGES = 64


class StreamOptions(OpenAIBaseModel):
    include_usage: StrictBool = False


class ChatRequest(OpenAIBaseModel):
    """The subset of the OpenAI chat-completions body that is honoured (other fields are ignored)."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1)

    @model_validator(mode="after")
    def _bounded(self) -> ChatRequest:
        parts = [p for m in self.messages if isinstance(m.content, list) for p in m.content]
        if len(parts) > MAX_CONTENT_PARTS:
            raise ValueError(f"at most {MAX_CONTENT_PARTS} content parts per request, got {len(parts)}")
        images = sum(p.type in ("image_url", "input_image") for p in parts)
        if images > MAX_IMAGES:
            raise ValueError(f"at most {MAX_IMAGES} images per request, got {images}")
        return self

    @property
    def include_usage(self) -> bool:
        """A streamed response ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class OffloadOptions(BaseModel):
    """The ``offload`` object of a ``route`` request: this request's trade-off (see
    :class:`~mllm_offload.tradeoff.TradeOff`). Strict: finite JSON numbers within the bounds,
    no other keys; a price left out (or ``null``) keeps the router's default."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    latency_price: float | None = Field(None, ge=0.0, le=MAX_LATENCY_PRICE, description="score per SLO of latency")
    cost_price: float | None = Field(None, ge=0.0, le=MAX_COST_PRICE, description="score per USD per 1k requests")


class RouteChatRequest(ChatRequest):
    """A chat-completions body for ``mllm-offload route``: :class:`ChatRequest` and ``offload``."""

    offload: OffloadOptions | None = None


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """``loc: msg`` of the first pydantic/FastAPI validation error (a leading ``body`` dropped)."""
    if not errors:
        return "body: invalid body"
    e = errors[0]
    loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
    return f"{loc or 'body'}: {e.get('msg', 'invalid body')}"


def parse_chat_request(raw: bytes | str) -> ChatRequest:
    """Validate a chat-completions body; a bad one raises one-line :class:`UserInputError`."""
    try:
        return ChatRequest.model_validate_json(raw)
    except ValidationError as e:
        raise UserInputError(validation_message(e.errors())) from None


def parse_route_request(raw: bytes | str) -> RouteChatRequest:
    """:func:`parse_chat_request` for ``route``: also validates the ``offload`` object."""
    try:
        return RouteChatRequest.model_validate_json(raw)
    except ValidationError as e:
        raise UserInputError(validation_message(e.errors())) from None


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


# ----------------------------------------------------------------------------- responses


class TopLogprob(OpenAIBaseModel):
    """One alternative token: its text, natural-log probability and UTF-8 bytes."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatCompletionTokenLogprob(TopLogprob):
    """One generated token's log-probability entry with its ``top_logprobs`` alternatives."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


def _top(token: str, logprob: float | None) -> TopLogprob:
    lp = UNKNOWN_LOGPROB if logprob is None or math.isnan(logprob) else max(float(logprob), UNKNOWN_LOGPROB)
    return TopLogprob(token=token, logprob=lp, bytes=list(token.encode("utf-8")))


def lp_entry(token: str, logprob: float | None, top: Iterable[tuple[str, float]] = ()) -> ChatCompletionTokenLogprob:
    """The log-probability entry of one token (``logprob`` -9999.0 when unknown, never below)."""
    e = _top(token, logprob)
    return ChatCompletionTokenLogprob(token=e.token, logprob=e.logprob, bytes=e.bytes, top_logprobs=[_top(t, v) for t, v in top])


class ChoiceLogprobs(OpenAIBaseModel):
    content: list[ChatCompletionTokenLogprob] | None = None

    @classmethod
    def from_generation(cls, gen: Generation) -> ChoiceLogprobs:
        """One entry per generated token of ``gen`` (alternatives when it has them)."""
        tops: Sequence[Iterable[tuple[str, float]]] = gen.top_logprobs or [() for _ in gen.tokens]
        return cls(content=[lp_entry(t, lp, tp) for t, lp, tp in zip(gen.tokens, gen.token_logprobs, tops, strict=False)])


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_generation(cls, gen: Generation) -> UsageInfo:
        return cls(prompt_tokens=gen.in_tokens, completion_tokens=gen.out_tokens, total_tokens=gen.in_tokens + gen.out_tokens)


def finish_reason(gen: Generation) -> FinishReason:
    """``length`` when ``gen`` ran out of tokens, else ``stop`` (a cancelled one included)."""
    return "length" if gen.finish_reason == "length" else "stop"


class ChatMessage(OpenAIBaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int = 0
    message: ChatMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = "stop"

    @classmethod
    def from_generation(cls, gen: Generation, *, logprobs: bool = False) -> ChatCompletionResponseChoice:
        """The single choice answering with ``gen`` (its log-probabilities when ``logprobs``)."""
        return cls(message=ChatMessage(content=gen.text), logprobs=ChoiceLogprobs.from_generation(gen) if logprobs else None,
                   finish_reason=finish_reason(gen))


class ChatCompletionResponse(OpenAIBaseModel):
    """A non-streamed chat completion (``object: chat.completion``)."""

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo


class DeltaMessage(OpenAIBaseModel):
    """What a chunk adds: ``role`` on the first, ``content`` text after; unset fields are left out."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"role", "content"})

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionResponseStreamChoice(OpenAIBaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    """One streamed chunk (``object: chat.completion.chunk``); the usage chunk has no choices."""

    _omit_if_none: ClassVar[frozenset[str]] = frozenset({"usage"})

    id: str = Field(default_factory=new_completion_id)
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseStreamChoice] = Field(default_factory=list)
    usage: UsageInfo | None = None


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "mllm-offload"


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: int | str | None = None


class ErrorResponse(OpenAIBaseModel):
    """The OpenAI error body ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo


def error_body(status: int, message: str, kind: str = "invalid_request_error", *, code: str | None = None, param: str | None = None) -> ErrorResponse:
    """The error body for HTTP ``status`` (its ``code``, unless a named ``code`` such as
    ``context_length_exceeded`` is given)."""
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code or status))


def error_response(status: int, message: str, kind: str = "invalid_request_error", headers: Mapping[str, str] | None = None, *,
                   code: str | None = None, param: str | None = None) -> JSONResponse:
    """An OpenAI-style one-line error response."""
    return JSONResponse(error_body(status, message, kind, code=code, param=param).model_dump(mode="json"), status_code=status, headers=headers)


def user_error_response(e: UserInputError, status: int = 400) -> JSONResponse:
    """The error response of a refused request: its one line, with the ``code`` and ``param`` the
    exception names (a :class:`~.base.ContextLengthError`: ``context_length_exceeded``, ``messages``)."""
    code, param = getattr(e, "code", None), getattr(e, "param", None)
    return error_response(status, str(e), code=code if isinstance(code, str) else None, param=param if isinstance(param, str) else None)


# ----------------------------------------------------------------------------- SSE, guard, metrics


def sse_event(payload: OpenAIBaseModel) -> str:
    """One server-sent event ``data: <json>\\n\\n`` (a chunk, or an error body mid-stream)."""
    return f"data: {payload.model_dump_json()}\n\n"


def sse_done() -> str:
    """The end of an OpenAI stream."""
    return "data: [DONE]\n\n"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``); a host *name*
    that merely starts with ``127.`` is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_app(make_app: Callable[[], FastAPI], host: str, port: int, *, api_key: str | None, log_level: str = "warning",
              sock: socket.socket | None = None, graceful_s: int = 2) -> None:
    """Run the app ``make_app()`` builds with uvicorn until interrupted (both servers' way of
    serving). A non-loopback ``host`` without ``api_key`` is refused before anything is built.
    ``sock``: a socket already bound to ``(host, port)`` to listen on (it is closed at the end); a
    failed startup on it exits with status 3, Ctrl-C is a normal stop (as ``uvicorn.run``)."""
    import uvicorn

    if not is_loopback(host) and not api_key:
        raise UserInputError(f"--host {host}: refusing to bind a non-loopback address without --api-key")
    app = make_app()
    if sock is None:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s)
        return
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_s))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(3)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a request body has passed the limit."""


#: After a refusal, the least time (seconds) before a connection whose client is still sending
#: is closed: time for the response already written to leave the server's socket, which the
#: reset that follows a close with unread bytes would otherwise discard.
_MIN_LINGER_S = 0.1


async def _drain(receive: Receive, seconds: float, max_bytes: int) -> int:
    """Read and discard a request body until it ends, the client leaves, ``seconds`` pass or
    ``max_bytes`` have been dropped, whichever comes first; stopped by ``max_bytes``, wait
    without reading until :data:`_MIN_LINGER_S` (at most ``seconds``) have passed.

    Returns the bytes discarded. Nothing is kept, so memory stays flat whatever the client sends.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline, dropped = start + seconds, 0
    while (left := deadline - loop.time()) > 0:
        if dropped >= max_bytes:
            await asyncio.sleep(max(0.0, min(start + _MIN_LINGER_S, deadline) - loop.time()))
            break
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            break
        if message["type"] != "http.request":
            break
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return dropped


def _has_body(headers: Mapping[bytes, bytes]) -> bool:
    """Whether a request announces a body the client will send now: a non-zero
    ``content-length`` or chunked encoding, and no ``expect: 100-continue`` (such a client waits
    for a 100 that a refusal never sends)."""
    if b"100-continue" in headers.get(b"expect", b"").lower():
        return False
    size = headers.get(b"content-length", b"").strip()
    return (size.isdigit() and int(size) > 0) or b"chunked" in headers.get(b"transfer-encoding", b"").lower()


class RequestGuard:
    """Pure ASGI middleware of both servers: the API key and the body size limit.

    * With an API key, every path but ``open_paths`` needs ``Authorization: Bearer KEY``
      (compared in constant time; 401 otherwise): ``/v1/*``, ``/metrics``, ``/openapi.json`` and
      any unknown path alike.
    * A ``content-length`` over ``max_body_bytes`` gets 413 before anything is read; otherwise the
      body is counted while the app reads it, chunked or not, and the app's ``receive`` raises as
      soon as the count passes the limit: the client gets 413 without the rest being buffered.
    * A refusal with a body still coming (the 413, and a 401 to a request with a body) closes the
      connection with a lingering close, as nginx and Apache do: the response is sent whole
      first, then the rest of the body is read and dropped until it ends, for at most
      ``drain_seconds`` and ``drain_bytes``, and only then does the response end and the
      connection close. Closing a socket with unread bytes makes the kernel answer with a reset,
      which can destroy a response still on its way: a client still sending would see a broken
      connection instead of the refusal. A client still sending past either bound is cut off, so
      a refused request costs the server at most that long and that much reading (a response
      already delivered survives the reset). A 401 without a body keeps the connection open.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, max_body_bytes: int, open_paths: Iterable[str] = ("/health",),
                 drain_seconds: float = 0.5, drain_bytes: int = 8 << 20) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.open_paths = frozenset(open_paths)
        self.drain_seconds, self.drain_bytes = drain_seconds, drain_bytes

    async def _refuse(self, resp: Response, receive: Receive, send: Send, *, drain: bool) -> None:
        """Send ``resp`` (given ``connection: close``); with ``drain``, drop the rest of the body
        (bounded) before the response ends and the server closes the connection."""
        await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
        await send({"type": "http.response.body", "body": resp.body, "more_body": drain})
        if drain:
            await _drain(receive, self.drain_seconds, self.drain_bytes)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _too_large(self) -> JSONResponse:
        return error_response(413, f"request body over {self.max_body_bytes} bytes", headers={"connection": "close"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])  # names are lower-case bytes in ASGI
        if self.expected is not None and scope.get("path", "") not in self.open_paths:
            if not secrets.compare_digest(headers.get(b"authorization", b""), self.expected):
                body = _has_body(headers)  # with a body coming: close, or the server would read all of it
                resp = error_response(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error",
                                      headers={"connection": "close"} if body else None)
                await self._refuse(resp, receive, send, drain=body)
                return
        size = headers.get(b"content-length", b"").strip()
        if size.isdigit() and int(size) > self.max_body_bytes:
            await self._refuse(self._too_large(), receive, send, drain=_has_body(headers))
            return
        received, over, started, more = 0, False, False, True

        async def counted() -> ASGIMessage:
            nonlocal received, over, more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if received > self.max_body_bytes:
                    over = True
                    raise _BodyTooLarge
            return message

        async def tracked(message: ASGIMessage) -> None:
            nonlocal started
            if over and not started:  # the app answering a body it could not read: the 413 below instead
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if started:
                raise
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(self._too_large(), receive, send, drain=more)  # nothing to drain when the last piece came


def install_guard(app: FastAPI, api_key: str | None, max_body_bytes: int, *, public_metrics: bool = False) -> None:
    """Add :class:`RequestGuard` to ``app``: with ``api_key``, every path but ``/health`` (and
    ``/metrics`` when ``public_metrics``) needs the key; bodies over ``max_body_bytes`` get 413,
    counted while they are read."""
    open_paths = ("/health", "/metrics") if public_metrics else ("/health",)
    app.add_middleware(RequestGuard, api_key=api_key, max_body_bytes=max_body_bytes, open_paths=open_paths)


def metrics_response(registry: CollectorRegistry) -> Response:
    """``GET /metrics``: the Prometheus text of ``registry``."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
