"""The limits of `mllm-offload serve` and `mllm-offload route`: each refused with a clear 4xx (an
OpenAI error body) before it costs memory or time. In process (raw ASGI calls, TestClient, httpx
ASGITransport) with fake backends or the tiny model; the subprocess checks are marked slow."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
PIL = pytest.importorskip("PIL")

from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from mllm_offload.decision import Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.mllm_backends.base import (
    CancelToken,
    ContextLengthError,
    Generation,
    ImageTooLargeError,
    MMRequest,
    TokenEvent,
    check_image_pixels,
    image_size,
    load_image,
)
from mllm_offload.mllm_backends.openai_compat import image_data_url
from mllm_offload.mllm_backends.serve import create_app
from mllm_offload.runtime.router import Router, RouterConfig
from mllm_offload.runtime.server import create_route_app

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own note on > 89 MP headers

CHAT = "/v1/chat/completions"


# ----------------------------------------------------------------------------- helpers


def huge_png(w: int = 13000, h: int = 13000) -> bytes:
    """A valid 1-bit PNG of ``w`` x ``h`` (a few KB; 169 MP at 13000 x 13000, 0.5 GB once decoded to RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def image_msg(*images: bytes, text: str = "what is it?") -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(b)}} for b in images]
    return [{"role": "user", "content": parts}]


def metric(text: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """The sizes of the images PIL decodes (``ImageFile.load``) while the test runs."""
    seen: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def spy(self: Any) -> Any:
        seen.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return seen


class FakeBackend:
    """Emits one token every ``step_s`` until ``max_new_tokens``, its cancel token or ``gate`` is set."""

    name = "fake"

    def __init__(self, step_s: float = 0.01, *, ignore_cancel: bool = False) -> None:
        self.step_s, self.ignore_cancel = step_s, ignore_cancel
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: Any = None) -> Generation:
        self.calls += 1
        n = 0
        while n < request.max_new_tokens and not (cancel is not None and cancel.cancelled and not self.ignore_cancel):
            if self.gate is not None and self.gate.is_set():
                break
            if on_token is not None:
                on_token(TokenEvent("a", "a", -0.1))
            n += 1
            await asyncio.sleep(self.step_s)
        cancelled = cancel is not None and cancel.cancelled
        return Generation(text="a" * n, tokens=["a"] * n, token_logprobs=[-0.1] * n, in_tokens=3, out_tokens=n,
                          finish_reason="cancelled" if cancelled else "stop", cancelled=cancelled, backend=self.name, confidence=0.9)

    async def aclose(self) -> None:
        return None


class Fixed:
    name = "fixed"

    def __init__(self, th: Thresholds) -> None:
        self.th = th

    def thresholds(self, obs: Any) -> Thresholds:
        return self.th


CLOUD_ONLY = Thresholds(0.0, 0.0, 1.0)


def route_app(edge: Any = None, cloud: Any = None, **cfg: Any) -> Any:
    max_body_bytes = cfg.pop("max_body_bytes", 32 * 1024 * 1024)
    router = Router(edge or FakeBackend(0.0), cloud or FakeBackend(0.0), Fixed(CLOUD_ONLY), RouterConfig(**cfg))
    return create_route_app(router, max_body_bytes=max_body_bytes)


async def asgi_post(app: Any, body_chunks: Callable[[], Any], *, headers: list[tuple[bytes, bytes]] | None = None,
                    disconnect: asyncio.Event | None = None, log: list[tuple[str, bool, int]] | None = None) -> tuple[int, bytes, int]:
    """POST to ``app`` over raw ASGI: ``body_chunks()`` yields the body's pieces (chunked, no
    content-length unless given); after the body, ``receive`` reports a disconnect once
    ``disconnect`` is set. Returns (status, body, pieces pulled); ``log`` gets one
    (message type, more_body, pieces pulled so far) per message the app sends."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": CHAT,
             "raw_path": CHAT.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), *(headers or [])]}
    it = iter(body_chunks())
    pending: list[bytes] = []
    state = {"pulled": 0, "done": False}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not state["done"]:
            piece = pending.pop() if pending else next(it, None)
            if piece is not None:
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(nxt)
                state["pulled"] += 1
                return {"type": "http.request", "body": piece, "more_body": nxt is not None}
            state["done"] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if disconnect is not None:
            await disconnect.wait()
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client that stays
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if log is not None:
            log.append((message["type"], bool(message.get("more_body", False)), state["pulled"]))

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), state["pulled"]


# ----------------------------------------------------------------------------- prompt length


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    b = HFLocalBackend(tiny_model_dir)
    yield b
    b.close()


def test_the_prompt_limit_defaults_to_the_context_length(tiny):
    assert tiny.context_length == 512 and tiny.max_prompt_tokens == 512
    assert tiny.check_prompt("hello there") > 0
    with pytest.raises(ContextLengthError, match="characters, over this model's limit of 512 tokens"):
        tiny.check_prompt("x" * (8 * 512 + 1))  # not even tokenized
    with pytest.raises(ContextLengthError, match="tokens, over this model's limit of 512"):
        tiny.check_prompt("hello world " * 300)  # 3600 characters: tokenized, then refused
    with pytest.raises(ContextLengthError, match="images and chat template included"):  # the final check, before prefill
        asyncio.run(tiny.generate(MMRequest("hello world " * 60, images=[_jpeg(64, 64)] * 30, max_new_tokens=1)))


def test_a_long_prompt_is_refused_at_once_by_serve(tiny):
    client = TestClient(create_app(tiny, "tiny"))
    for prompt in ("hello world " * 160_000, "hello world " * 300):  # 1.9 MB, and 3600 characters (over 512 tokens)
        t = time.perf_counter()
        r = client.post(CHAT, json={"messages": [{"role": "user", "content": prompt}], "max_tokens": 4})
        took = time.perf_counter() - t
        err = r.json()["error"]
        assert r.status_code == 400 and err["code"] == "context_length_exceeded" and err["param"] == "messages", err
        assert "limit of 512 tokens" in err["message"] and took < 2.0
    text = client.get("/metrics").text
    assert metric(text, "mllm_serve_requests_total") == 0 and metric(text, "mllm_serve_prompt_tokens_total") == 0  # never admitted
    assert client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code == 200


def test_route_refuses_a_prompt_over_max_prompt_chars_before_any_backend():
    edge, cloud = FakeBackend(0.0), FakeBackend(0.0)
    client = TestClient(route_app(edge, cloud, max_prompt_chars=1000))
    t = time.perf_counter()
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "y" * 1_900_000}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded" and time.perf_counter() - t < 2.0
    assert "1900000 characters, over this router's limit of 1000" in r.json()["error"]["message"]
    assert edge.calls == cloud.calls == 0
    assert client.post(CHAT, json={"messages": [{"role": "user", "content": "y" * 1000}]}).status_code == 200


def test_route_answers_400_not_503_when_both_sides_refuse_the_request():
    class Refuses(FakeBackend):
        async def generate(self, request: MMRequest, **kw: Any) -> Generation:
            self.calls += 1
            raise ContextLengthError("the prompt has 900 tokens, over this model's limit of 512 tokens")

    client = TestClient(route_app(Refuses(), Refuses()))
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "long"}]})
    assert r.status_code == 400 and "no backend answered" in r.json()["error"]["message"] and "512 tokens" in r.json()["error"]["message"]
    assert "offload_failed_total 0.0" in client.get("/metrics").text


# ----------------------------------------------------------------------------- image pixels


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def test_image_limits_read_the_header_only(decodes):
    big = huge_png()
    assert len(big) < 100_000 and image_size(big) == (13000, 13000)
    with pytest.raises(ImageTooLargeError, match=r"13000x13000 = 169.0 MP is over the limit of 40 MP per image"):
        load_image(big, max_pixels=40_000_000)
    with pytest.raises(ImageTooLargeError, match="per request"):
        check_image_pixels([huge_png(6000, 6000)] * 3, 40_000_000, 100_000_000)  # 36 MP each, 108 MP together
    assert image_data_url(big).startswith("data:image/png;base64,")  # passes through: not decoded either
    assert decodes == []
    with pytest.raises(UserInputError, match="not a readable image"):
        check_image_pixels([b"not an image"])


def test_large_images_are_decoded_reduced_to_what_the_model_uses(tiny, decodes):
    im = load_image(_jpeg(4000, 3000), min_side=1024)
    assert im.mode == "RGB" and min(im.size) == 1024 and im.size[0] == pytest.approx(1365, abs=2)
    assert decodes and max(w * h for w, h in decodes) <= 2000 * 1500  # JPEG draft: decoded at half scale or less
    assert load_image(_jpeg(1500, 1200), min_side=1024).size == (1500, 1200)  # within twice the side: left alone
    assert tiny.image_side == 1024  # the tiny model's processor wants 32 px: reduced to the 1024 floor


@pytest.mark.parametrize("server", ["serve", "route"])
def test_a_13000_square_png_is_refused_without_decoding(server, decodes):
    big = huge_png()
    backend = FakeBackend(0.0)
    app = create_app(backend, "fake") if server == "serve" else route_app(backend, backend)
    client = TestClient(app)
    t = time.perf_counter()
    r = client.post(CHAT, json={"messages": image_msg(big)})
    assert r.status_code == 400 and time.perf_counter() - t < 2.0
    assert "13000x13000 = 169.0 MP is over the limit of 40 MP per image" in r.json()["error"]["message"]
    r = client.post(CHAT, json={"messages": image_msg(*[huge_png(6000, 6000)] * 3)})
    assert r.status_code == 400 and "per request" in r.json()["error"]["message"]
    assert decodes == [] and backend.calls == 0  # nothing decoded (the subprocess test also bounds the servers' RSS)
    small = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(small, "PNG")
    assert client.post(CHAT, json={"messages": image_msg(small.getvalue())}).status_code == 200


def test_tiny_model_refuses_a_huge_image_before_decoding(tiny, decodes):
    with pytest.raises(ImageTooLargeError, match="over the limit of 40 MP"):
        asyncio.run(tiny.generate(MMRequest("q", images=[huge_png()], max_new_tokens=1)))
    assert decodes == []


def test_route_decodes_within_limit_images_off_the_event_loop(monkeypatch):
    import threading

    from mllm_offload.runtime import router as router_mod

    loop_threads: list[bool] = []
    real = router_mod.compute_mas

    def spy(*a: Any, **kw: Any) -> Any:
        loop_threads.append(threading.current_thread() is threading.main_thread())
        return real(*a, **kw)

    monkeypatch.setattr(router_mod, "compute_mas", spy)
    router = Router(FakeBackend(0.0), FakeBackend(0.0), Fixed(CLOUD_ONLY), RouterConfig())
    ans = asyncio.run(router.generate(MMRequest("q", images=[_jpeg(640, 480)], max_new_tokens=2)))
    assert ans.answered_by == "cloud" and loop_threads == [False]


# ----------------------------------------------------------------------------- body bytes


@pytest.mark.parametrize("server", ["serve", "route"])
def test_a_chunked_body_over_the_limit_is_refused_while_reading(server):
    limit = 1 << 20
    app = create_app(FakeBackend(0.0), "fake", max_body_bytes=limit) if server == "serve" else route_app(max_body_bytes=limit)
    piece = b" " * 65536

    def endless():  # 4 x the limit (a server that buffers all of it would still end, and fail the count)
        for _ in range(4 * limit // len(piece)):
            yield piece

    log: list[tuple[str, bool, int]] = []
    status, body, pulled = asyncio.run(asgi_post(app, endless, log=log))
    assert status == 413 and json.loads(body)["error"]["message"] == f"request body over {limit} bytes"
    # the whole 413 went out at the first piece past the limit; the rest was then drained (read and
    # dropped, so the connection closes with nothing unread), and only then did the response end
    first_over = limit // len(piece) + 1
    assert log[:2] == [("http.response.start", False, first_over), ("http.response.body", True, first_over)]
    assert log[2:] == [("http.response.body", False, 4 * limit // len(piece))] and pulled == 4 * limit // len(piece)
    # a declared length over the limit: the 413 goes out before anything is read
    log.clear()
    status, _, pulled = asyncio.run(asgi_post(app, endless, headers=[(b"content-length", str(limit + 1).encode())], log=log))
    assert status == 413 and log[1] == ("http.response.body", True, 0)
    ok = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    status, _, _ = asyncio.run(asgi_post(app, lambda: iter([ok[:10], ok[10:]])))
    assert status == 200


def _guarded(**kw: Any) -> Any:
    from mllm_offload.mllm_backends.openai_protocol import RequestGuard

    async def app(scope: Any, receive: Any, send: Any) -> None:  # reads its whole body, then answers, as the servers do
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return RequestGuard(app, max_body_bytes=1 << 20, **kw)


def _forever():
    while True:
        yield b" " * 65536


def _post(app: Any, chunks: Callable[[], Any], **kw: Any) -> tuple[int, bytes, int, float]:
    t = time.perf_counter()
    status, body, pulled = asyncio.run(asyncio.wait_for(asgi_post(app, chunks, **kw), 5))  # an unbounded drain fails, not hangs
    return status, body, pulled, time.perf_counter() - t


def test_the_drain_after_a_refusal_is_bounded():
    """A client that never stops sending is cut off after ``drain_seconds`` or ``drain_bytes``:
    a refused request costs the server that long (that much reading) at most, nothing is kept;
    a body whose last piece has come is not waited for."""
    log: list[tuple[str, bool, int]] = []
    status, body, pulled, took = _post(_guarded(api_key=None, drain_seconds=0.3, drain_bytes=1 << 40), _forever, log=log)
    assert status == 413 and json.loads(body)["error"]["code"] == 413 and 0.3 <= took < 2.0, took
    assert [m[:2] for m in log] == [("http.response.start", False), ("http.response.body", True), ("http.response.body", False)]
    assert log[1][2] == 17 and pulled > 17  # sent at the first piece over 1 MiB, then drained until the deadline
    # the byte bound: 64 pieces of 64 KiB = 4 MiB more, then cut off long before the deadline
    status, _, pulled, took = _post(_guarded(api_key=None, drain_seconds=30, drain_bytes=4 << 20), _forever)
    assert status == 413 and pulled == 17 + 64 and 0.1 <= took < 2.0  # then a short linger without reading
    # the piece over the limit is the last one: the 413 ends at once, nothing is waited for
    log.clear()
    status, _, pulled, took = _post(_guarded(api_key=None, drain_seconds=30), lambda: iter([b" " * ((1 << 20) + 1)]), log=log)
    assert status == 413 and pulled == 1 and took < 2.0 and log[-1] == ("http.response.body", False, 1)


def test_a_401_with_a_body_coming_closes_the_connection_after_a_bounded_drain():
    """Before, a wrong key kept the connection open and the server read the whole body, unbounded."""
    key = [(b"authorization", b"Bearer wrong")]
    guard = _guarded(api_key="right", drain_seconds=30, drain_bytes=4 << 20)
    log: list[tuple[str, bool, int]] = []
    status, body, pulled, took = _post(guard, _forever, headers=[*key, (b"transfer-encoding", b"chunked")], log=log)
    assert status == 401 and json.loads(body)["error"]["type"] == "authentication_error"
    assert log[1] == ("http.response.body", True, 0) and pulled == 64 and took < 2.0  # the 401 went out first, then 4 MiB dropped
    # no body coming (a GET, or a client waiting for 100-continue): no drain, no close
    for extra in ([], [(b"content-length", b"100"), (b"expect", b"100-continue")]):
        log.clear()
        status, _, pulled, _ = _post(guard, _forever, headers=[*key, *extra], log=log)
        assert status == 401 and pulled == 0 and log[-1] == ("http.response.body", False, 0)
    with TestClient(create_app(FakeBackend(0.0), "fake", api_key="right")) as client:
        r = client.post(CHAT, content=b"x" * 1000, headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.headers["connection"] == "close"
        r = client.get("/v1/models", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401 and "connection" not in r.headers


# ----------------------------------------------------------------------------- queue, deadline, dropped requests


def test_streams_count_against_the_queue():
    backend = FakeBackend(0.01)

    async def run() -> tuple[list[int], int, int]:
        backend.gate = asyncio.Event()
        app = create_app(backend, "fake", max_queue=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096, "stream": True}
            burst = [asyncio.create_task(c.post(CHAT, json=body)) for _ in range(6)]  # all at once
            await asyncio.wait(burst, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.1)
            assert (await c.get("/health")).json()["in_flight"] == 2
            third = await c.post(CHAT, json=body)
            plain = await c.post(CHAT, json={**body, "stream": False})
            backend.gate.set()
            done = await asyncio.gather(*burst)
            assert all("data: [DONE]" in r.text for r in done if r.status_code == 200)
            return sorted(r.status_code for r in done), third.status_code, plain.status_code

    statuses, third, plain = asyncio.run(run())
    assert statuses == [200, 200, 429, 429, 429, 429] and third == 429 and plain == 429
    assert backend.calls == 2


def test_the_deadline_stops_generation_and_frees_the_worker(tiny):
    app = create_app(tiny, "tiny", request_timeout_s=0.5)
    client = TestClient(app)
    t = time.perf_counter()
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096})
    took = time.perf_counter() - t
    assert r.status_code == 504 and "request deadline of 0.5 s" in r.json()["error"]["message"] and took < 3.0
    assert client.get("/health").json()["in_flight"] == 0  # the worker is free
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096, "stream": True})
    events = [e[6:] for e in r.text.split("\n\n") if e.startswith("data: ")]
    assert json.loads(events[-1])["error"]["code"] == 504 and "[DONE]" not in events
    text = client.get("/metrics").text
    assert metric(text, "mllm_serve_timeouts_total") == 2 and metric(text, "mllm_serve_cancelled_total") == 0
    assert metric(text, "mllm_serve_completion_tokens_total") < 2 * 4096
    assert client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code == 200


def test_the_deadline_answers_even_when_the_backend_ignores_cancellation(monkeypatch):
    from mllm_offload.mllm_backends import serve as serve_mod

    monkeypatch.setattr(serve_mod, "_DEADLINE_GRACE_S", 0.2)
    backend = FakeBackend(0.01, ignore_cancel=True)
    client = TestClient(create_app(backend, "fake", request_timeout_s=0.2))
    t = time.perf_counter()
    r = client.post(CHAT, json={"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096})
    assert r.status_code == 504 and time.perf_counter() - t < 2.0


def test_a_dropped_non_streamed_request_is_cancelled(tiny):
    app = create_app(tiny, "tiny")
    body = json.dumps({"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096}).encode()

    async def run() -> float:
        gone = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, gone.set)
        t = time.perf_counter()
        await asgi_post(app, lambda: iter([body]), disconnect=gone)
        return time.perf_counter() - t

    took = asyncio.run(run())
    text = TestClient(app).get("/metrics").text
    assert metric(text, "mllm_serve_cancelled_total") == 1 and metric(text, "mllm_serve_completed_total") == 0
    assert metric(text, "mllm_serve_completion_tokens_total") < 4096 and took < 5.0
    assert metric(text, "mllm_serve_in_flight") == 0


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("server", ["serve", "route"])
def test_metrics_and_the_schema_need_the_key(server):
    def make(public: bool) -> TestClient:
        if server == "serve":
            return TestClient(create_app(FakeBackend(0.0), "fake", api_key="k3y", public_metrics=public))
        router = Router(FakeBackend(0.0), FakeBackend(0.0), Fixed(CLOUD_ONLY), RouterConfig())
        return TestClient(create_route_app(router, api_key="k3y", public_metrics=public))

    client, key = make(False), {"authorization": "Bearer k3y"}
    for path in ("/metrics", "/openapi.json", "/v1/models", "/docs", "/anything"):
        r = client.get(path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", path
    assert client.get("/metrics", headers=key).status_code == 200 and client.get("/openapi.json", headers=key).status_code == 200
    assert client.get("/health").status_code == 200  # open, documented
    public = make(True)
    assert public.get("/metrics").status_code == 200 and public.get("/openapi.json").status_code == 401
    assert TestClient(create_app(FakeBackend(0.0), "fake")).get("/metrics").status_code == 200  # no key: all open (loopback only)


# ----------------------------------------------------------------------------- subprocess servers


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


@pytest.mark.slow
def test_serve_and_route_on_loopback_hold_their_limits(tiny_model_dir, tmp_path):
    """The attacks over real sockets: each answered 4xx in under 2 s with a small peak RSS growth,
    and a dropped non-streamed request cancelled on the server."""
    from routing_helpers import cli, free_port, start, stop

    sp = free_port()
    serve_url = f"http://127.0.0.1:{sp}"
    serve = start(cli("serve", "--model", str(tiny_model_dir), "--port", str(sp), "--served-name", "tiny"), serve_url)
    procs = [serve]
    try:
        rp = free_port()
        route_url = f"http://127.0.0.1:{rp}"
        route = start(cli("route", "--edge", str(tiny_model_dir), "--cloud", serve_url, "--policy", "cloud", "--port", str(rp),
                          "--log-dir", str(tmp_path / "logs"), "--max-body-mb", "2"), route_url)
        procs.append(route)
        big = data_url(huge_png())
        for url in (serve_url, route_url):  # untimed warm-up: the first generation of a fresh process is no steady state
            assert httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=60).status_code == 200
        for url, proc in ((serve_url, serve), (route_url, route)):
            attacks = {
                "long prompt": lambda u=url: httpx.post(u + CHAT, json={"messages": [{"role": "user", "content": "hello world " * 160_000}]}, timeout=30),
                "13000x13000 png": lambda u=url: httpx.post(u + CHAT, json={"messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": big}}]}]}, timeout=30),
                "chunked 200 MB": lambda u=url: httpx.post(u + CHAT, content=(b" " * (1 << 20) for _ in range(200)), timeout=30),
            }
            for name, attack in attacks.items():
                before = _rss_mb(proc.pid)
                t = time.perf_counter()
                r = attack()
                took = time.perf_counter() - t
                assert r.status_code in (400, 413) and took < 2.0, (url, name, r.status_code, took, r.text[:200])
                assert _rss_mb(proc.pid) - before < 100, (url, name)
                t = time.perf_counter()
                ok = httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, timeout=30)
                assert ok.status_code == 200 and time.perf_counter() - t < 2.0, (url, name)
        # a dropped non-streamed request: the socket closes after 0.5 s, the server cancels
        payload = json.dumps({"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096}).encode()
        with socket.create_connection(("127.0.0.1", sp)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n" % len(payload) + payload)
            time.sleep(0.5)
        deadline = time.time() + 10
        while metric(httpx.get(serve_url + "/metrics").text, "mllm_serve_cancelled_total") < 1 and time.time() < deadline:
            time.sleep(0.1)
        text = httpx.get(serve_url + "/metrics").text
        assert metric(text, "mllm_serve_cancelled_total") == 1 and metric(text, "mllm_serve_in_flight") == 0
    finally:
        for p in procs:
            stop(p)
