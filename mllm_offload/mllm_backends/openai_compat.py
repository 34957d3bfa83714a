"""OpenAI-compatible HTTP backend (``/v1/chat/completions``) for vLLM, SGLang, TGI, llama.cpp, Ollama.

Images (and video frames) are sent as ``image_url`` parts holding base64 ``data:`` URLs; encoded
JPEG/PNG bytes are passed through unchanged, anything else is encoded (JPEG by default). Audio is
sent as an ``input_audio`` WAV part; servers that cannot take it answer 400, reported as one line.

What the servers return (checked against their docs, late 2025; ``logprobs=true`` requested):

=================  ==================================================================  =========
server             log-probabilities                                                   usage
=================  ==================================================================  =========
vLLM, SGLang       ``choices[0].logprobs.content[*].logprob`` (+ ``top_logprobs``),     yes
                   streamed per chunk too
TGI (Messages API) same OpenAI shape; ``top_logprobs`` up to 5                          yes
llama.cpp server   same OpenAI shape in recent builds; older builds/llamafile ignore      yes
                   ``logprobs`` on the chat route or answer ``completion_probabilities``
                   (``probs[*].prob``), which is also parsed
Ollama ``/v1``     OpenAI shape in recent releases; older ones return none              yes
``mllm-offload     OpenAI shape, streamed and not                                       yes
serve``
=================  ==================================================================  =========

When a server returns no log-probabilities the call still succeeds with ``confidence=None``
(``extra["logprobs"] == "unavailable"``); when it *rejects* the ``logprobs`` field (HTTP 400 that
names it) the backend retries once without it and stops asking.

Robustness: a total deadline per call (``timeout_s``), a connect timeout, bounded retries with
exponential backoff and jitter on connection errors, 429 and 5xx (``Retry-After`` honoured),
never after the first byte of an answer; malformed JSON, HTTP errors and unreachable servers
raise :class:`~.base.BackendError` with one line. Cancellation closes the stream (or drops the
non-streamed request), which makes the server abort the generation.

Network measurements for the router's estimators, in ``Generation.extra["net"]``:
``bytes_sent`` (request body, bytes), ``headers_s`` (seconds from sending the request to the
response headers; with ``stream=True`` servers send headers once they have parsed the body, so
this is upload + one RTT + parsing), ``connect_s`` (TCP handshake, about one RTT; only when the
call opened a new connection) and ``streamed``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import wave
from typing import Any

import httpx
import numpy as np

from ..errors import UserInputError
from .base import AudioClip, BackendError, CancelToken, Generation, ImageLike, MMRequest, TokenCallback, TokenEvent, image_size, load_image, now
from .confidence import CONFIDENCE_METHODS, confidence_from_logprobs

__all__ = ["OpenAICompatBackend", "image_data_url", "normalize_base_url"]

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both become ``http://host:8000/v1``."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise UserInputError(f"{url}: not an http(s) URL")
    return u if u.endswith("/v1") else u + "/v1"


def _sniff_mime(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_data_url(image: ImageLike, fmt: str = "JPEG", quality: int = 90, what: str = "image") -> str:
    """A ``data:`` URL for an image; JPEG/PNG/WebP bytes or files pass through without re-encoding
    (or decoding: only their header is read, to refuse what is not an image here, not on the server)."""
    raw: bytes | None = None
    if isinstance(image, (bytes, bytearray)):
        raw = bytes(image)
    elif isinstance(image, str) or hasattr(image, "read_bytes"):
        from pathlib import Path

        p = Path(image)
        if p.is_file():
            raw = p.read_bytes()
    if raw is not None and (mime := _sniff_mime(raw)) is not None:
        image_size(raw, what)  # header only: refuse non-images here, not on the server
        return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    img = load_image(image, what)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": quality} if fmt.upper() == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _wav_b64(clip: AudioClip) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(clip.sample_rate))
        w.writeframes((np.clip(clip.samples, -1, 1) * 32767).astype("<i2").tobytes())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _logprob_entries(choice: dict[str, Any], chunk: dict[str, Any]) -> list[tuple[str, float | None, tuple[tuple[str, float], ...]]] | None:
    """(token, logprob, top) per token in an OpenAI-shaped choice, or llama.cpp's legacy field; ``None`` if absent."""
    lp = choice.get("logprobs")
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):
        out = []
        for e in lp["content"]:
            top = tuple((str(t.get("token", "")), float(t["logprob"])) for t in (e.get("top_logprobs") or []) if t.get("logprob") is not None)
            v = e.get("logprob")
            out.append((str(e.get("token", "")), None if v is None else float(v), top))
        return out
    legacy = chunk.get("completion_probabilities")
    if isinstance(legacy, list):
        out = []
        for e in legacy:
            tok = str(e.get("content", e.get("token", "")))
            v = e.get("logprob")
            if v is None:
                probs = e.get("probs") or []
                match = [p for p in probs if p.get("tok_str") == tok and p.get("prob") is not None]
                v = float(np.log(max(float(match[0]["prob"]), 1e-300))) if match else None
            out.append((tok, None if v is None else float(v), ()))
        return out
    return None


class OpenAICompatBackend:
    """An OpenAI-compatible chat-completions server (see the module docstring).

    Args:
        base_url: ``http://host:port`` or ``http://host:port/v1``.
        model: model name to request (``None``: the first one ``/v1/models`` lists).
        api_key: sent as ``Authorization: Bearer``.
        timeout_s: total deadline per call, retries included (seconds).
        connect_timeout_s: TCP connect timeout per attempt (seconds).
        max_retries: further attempts after the first on connection errors, 408/429/5xx.
        backoff_s: first backoff (doubled per retry, with jitter, capped at ``max_backoff_s``).
        stream: use server-sent events (real TTFT); ``False`` measures TTFT as the latency.
        logprobs: ask for token log-probabilities (for the confidence).
        confidence: ``quantile`` (default), ``mean``, ``min`` or ``geomean``.
        max_concurrency: calls in flight at once from this backend.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        stream: bool = True,
        logprobs: bool = True,
        include_usage: bool = True,
        confidence: str = "quantile",
        confidence_q: float = 0.1,
        image_format: str = "JPEG",
        max_concurrency: int = 8,
        name: str | None = None,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if confidence not in CONFIDENCE_METHODS:
            raise UserInputError(f"confidence: must be one of {', '.join(CONFIDENCE_METHODS)}, got {confidence!r}")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise UserInputError("timeout_s and connect_timeout_s must be > 0")
        if max_retries < 0:
            raise UserInputError(f"max_retries: must be >= 0, got {max_retries}")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.name = name or (model or self.base_url)
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.stream = stream
        self.logprobs = logprobs
        self.include_usage = include_usage
        self.confidence_method = confidence
        self.confidence_q = confidence_q
        self.image_format = image_format
        self.extra_body = dict(extra_body or {})
        self._transport = transport
        self._max_concurrency = max_concurrency
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    # -- plumbing -----------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=headers, transport=self._transport,
                timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=self._max_concurrency * 2),
            )
            self._sem = asyncio.Semaphore(self._max_concurrency)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                await self._client.aclose()
            except RuntimeError:  # its loop is gone
                pass
            self._client = None

    async def _backoff(self, attempt: int, retry_after: str | None, deadline: float) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2 ** attempt)) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
            except ValueError:
                pass
        await asyncio.sleep(max(0.0, min(delay, deadline - now())))

    async def resolve_model(self) -> str:
        """The model name to use: the configured one, else the first listed by ``/v1/models``."""
        if self.model:
            return self.model
        try:
            r = await self._http().get("/models", timeout=min(self.timeout_s, 10.0))
            r.raise_for_status()
            data = r.json()["data"]
            self.model = str(data[0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{self.base_url}/models: cannot determine the model name ({type(e).__name__}: {e}); pass model=...") from None
        if self.name == self.base_url:
            self.name = self.model
        return self.model

    def payload(self, request: MMRequest, model: str) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        parts: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        rid = request.id or "?"
        for i, im in enumerate(request.images):
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(im, self.image_format, what=f"request {rid}: image {i}")}})
        for i, fr in enumerate(request.video or ()):
            parts.append({"type": "image_url", "image_url": {"url": image_data_url(fr, self.image_format, what=f"request {rid}: video frame {i}")}})
        if request.audio is not None:
            parts.append({"type": "input_audio", "input_audio": {"data": _wav_b64(request.audio), "format": "wav"}})
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": parts}],
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "stream": self.stream,
        }
        if self.logprobs:
            body["logprobs"] = True
            if request.top_logprobs:
                body["top_logprobs"] = request.top_logprobs
        if self.stream and self.include_usage:
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return body

    # -- the call -----------------------------------------------------------------------------

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: TokenCallback | None = None) -> Generation:
        """Call the server; see the module docstring for retries, deadlines and cancellation."""
        cancel = cancel or CancelToken()
        t0 = now()
        deadline = t0 + self.timeout_s
        self._http()
        model = await self.resolve_model()
        media = bool(request.images or request.video or request.audio is not None)
        body = await asyncio.to_thread(self.payload, request, model) if media else self.payload(request, model)  # encoding off the event loop
        state: dict[str, Any] = {"text": [], "lps": [], "toks": [], "tops": [], "ttft": None, "usage": None,
                                 "finish": None, "chunks": 0, "saw_lp": False, "net": {}}
        assert self._sem is not None
        async with self._sem:
            work = asyncio.create_task(self._attempts(body, state, t0, deadline, on_token))
            waiter = asyncio.create_task(cancel.wait())
            try:
                done, _ = await asyncio.wait({work, waiter}, timeout=max(0.0, deadline - now()), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                work.cancel()
                waiter.cancel()
                raise
            waiter.cancel()
            if work not in done:
                work.cancel()  # closes the HTTP stream: the server aborts the generation
                try:
                    await work
                except (asyncio.CancelledError, BackendError, httpx.HTTPError):
                    pass
                if not cancel.cancelled:
                    raise BackendError(f"{self.name}: no complete answer within {self.timeout_s:g} s ({self.base_url})")
            else:
                work.result()  # re-raise BackendError
        return self._generation(state, t0, cancelled=cancel.cancelled and work not in done)

    def _generation(self, st: dict[str, Any], t0: float, cancelled: bool) -> Generation:
        lps = st["lps"]
        usage = st["usage"] or {}
        out_tokens = int(usage.get("completion_tokens") or (len(lps) if st["saw_lp"] else st["chunks"]))
        conf = confidence_from_logprobs([v for v in lps if v is not None], self.confidence_method, self.confidence_q) if st["saw_lp"] else None
        finish = "cancelled" if cancelled else (st["finish"] or "stop")
        return Generation(
            text="".join(st["text"]), token_logprobs=[float("nan") if v is None else v for v in lps], tokens=st["toks"],
            top_logprobs=[list(t) for t in st["tops"]] if any(st["tops"]) else [], confidence=conf,
            ttft_s=st["ttft"], latency_s=now() - t0, in_tokens=int(usage.get("prompt_tokens") or 0), out_tokens=out_tokens,
            finish_reason=finish, cancelled=cancelled, backend=self.name,
            extra={"logprobs": "ok" if st["saw_lp"] else "unavailable", "usage_reported": bool(usage),
                   "net": {k: v for k, v in st["net"].items() if not k.startswith("_")} | {"streamed": self.stream}},
        )

    async def _attempts(self, body: dict[str, Any], st: dict[str, Any], t0: float, deadline: float, on_token: TokenCallback | None) -> None:
        client = self._http()
        last = ""
        net = st["net"]

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "connection.connect_tcp.started":
                net["_connect0"] = now()
            elif event == "connection.connect_tcp.complete" and "_connect0" in net:
                net["connect_s"] = now() - net.pop("_connect0")

        for attempt in range(self.max_retries + 1):
            try:
                content = json.dumps(body, separators=(",", ":")).encode()
                net["bytes_sent"] = len(content)
                t_send = now()
                async with client.stream("POST", "/chat/completions", content=content, headers={"content-type": "application/json"},
                                         extensions={"trace": trace}) as resp:
                    net["headers_s"] = now() - t_send
                    if resp.status_code != 200:
                        text = (await resp.aread()).decode("utf-8", "replace")
                        msg = _error_message(text)
                        if resp.status_code == 400 and "logprob" in msg.lower() and body.get("logprobs"):
                            body.pop("logprobs", None)
                            body.pop("top_logprobs", None)
                            self.logprobs = False  # this server does not take them: stop asking
                            continue
                        last = f"HTTP {resp.status_code}: {msg}"
                        if resp.status_code in RETRY_STATUS and attempt < self.max_retries and now() < deadline:
                            await self._backoff(attempt, resp.headers.get("retry-after"), deadline)
                            continue
                        raise BackendError(f"{self.name}: {last}" + (f" (after {attempt + 1} attempts)" if attempt else ""),
                                           status=resp.status_code, retryable=resp.status_code in RETRY_STATUS)
                    if body.get("stream"):
                        await self._read_stream(resp, st, t0, on_token)
                    else:
                        await self._read_json(resp, st, t0, on_token)
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError) as e:
                if st["chunks"]:  # the answer had started: never replay a generation
                    raise BackendError(f"{self.name}: connection lost mid-answer ({type(e).__name__})") from None
                last = f"cannot reach {self.base_url} ({type(e).__name__}: {e or 'connection failed'})"
                if attempt < self.max_retries and now() < deadline:
                    await self._backoff(attempt, None, deadline)
                    continue
                raise BackendError(f"{self.name}: {last}" + (f" after {attempt + 1} attempts" if attempt else ""), retryable=True) from None
            except httpx.TimeoutException as e:
                raise BackendError(f"{self.name}: timed out ({type(e).__name__}) talking to {self.base_url}", retryable=True) from None
        raise BackendError(f"{self.name}: {last or 'no answer'}")

    def _take(self, choice: dict[str, Any], chunk: dict[str, Any], st: dict[str, Any], t0: float, text: str | None, on_token: TokenCallback | None) -> None:
        entries = _logprob_entries(choice, chunk)
        if entries is not None and entries:
            st["saw_lp"] = True
        if (text or entries) and st["ttft"] is None:
            st["ttft"] = now() - t0
        if text:
            st["text"].append(text)
        if entries:
            for i, (tok, lp, top) in enumerate(entries):
                st["lps"].append(lp)
                st["toks"].append(tok)
                st["tops"].append(top)
                if on_token is not None:
                    on_token(TokenEvent((text or "") if i == 0 else "", tok, lp, top))
        elif text and on_token is not None:
            on_token(TokenEvent(text, text, None, ()))
        if choice.get("finish_reason"):
            st["finish"] = str(choice["finish_reason"])

    async def _read_stream(self, resp: httpx.Response, st: dict[str, Any], t0: float, on_token: TokenCallback | None) -> None:
        async for line in resp.aiter_lines():
            line = line.strip()
            if not line or line.startswith(":") or not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except json.JSONDecodeError:
                raise BackendError(f"{self.name}: malformed JSON in the event stream: {data[:80]!r}") from None
            if not isinstance(chunk, dict):
                raise BackendError(f"{self.name}: unexpected event {data[:80]!r}")
            if "error" in chunk:
                err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                # a refusal of the request itself (e.g. over the model's context) keeps its 400
                status = 400 if err.get("code") == "context_length_exceeded" or err.get("type") == "invalid_request_error" else None
                raise BackendError(f"{self.name}: server error mid-stream: {_error_message(json.dumps(chunk))}", status=status)
            st["chunks"] += 1
            if chunk.get("usage"):
                st["usage"] = chunk["usage"]
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) == 0:
                    delta = choice.get("delta") or {}
                    self._take(choice, chunk, st, t0, delta.get("content"), on_token)

    async def _read_json(self, resp: httpx.Response, st: dict[str, Any], t0: float, on_token: TokenCallback | None) -> None:
        raw = await resp.aread()
        try:
            doc = json.loads(raw)
            choice = doc["choices"][0]
            text = (choice.get("message") or {}).get("content")
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.name}: malformed JSON response: {raw[:80]!r}") from None
        st["chunks"] += 1
        st["usage"] = doc.get("usage")
        self._take(choice, doc, st, t0, text, None)
        if on_token is not None and text:
            on_token(TokenEvent(text, text, None, ()))

    def __repr__(self) -> str:
        return f"OpenAICompatBackend({self.base_url!r}, model={self.model!r})"


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's first 200 characters."""
    try:
        doc = json.loads(text)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        if isinstance(msg, (dict, list)):
            msg = json.dumps(msg)
        return " ".join(str(msg).split())[:200]
    except (json.JSONDecodeError, AttributeError):
        return " ".join(text.split())[:200] or "(empty body)"
