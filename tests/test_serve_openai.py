"""`mllm-offload serve` on loopback driven by the OpenAI-compatible backend and the stock openai client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from routing_helpers import cli, free_port

from mllm_offload.mllm_backends import BackendError, CancelToken, MMRequest, confidence_from_logprobs
from mllm_offload.mllm_backends.openai_compat import OpenAICompatBackend

_cli, _free_port = cli, free_port


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = _free_port()
    proc = subprocess.Popen(_cli("serve", "--model", str(tiny_model_dir), "--port", str(port), "--served-name", "tiny-cloud"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("serve did not come up within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _png(seed: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((30, 40, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(name)


@pytest.mark.slow
def test_models_and_health(server):
    assert httpx.get(server + "/health").json()["status"] == "ok"
    assert [m["id"] for m in httpx.get(server + "/v1/models").json()["data"]] == ["tiny-cloud"]


@pytest.mark.slow
def test_stock_openai_client(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused")
    url = "data:image/png;base64," + base64.b64encode(_png()).decode()
    msgs = [{"role": "user", "content": [{"type": "text", "text": "what is shown?"}, {"type": "image_url", "image_url": {"url": url}}]}]
    r = client.chat.completions.create(model="tiny-cloud", messages=msgs, logprobs=True, top_logprobs=3, max_tokens=4)
    lps = r.choices[0].logprobs.content
    assert len(lps) == 4 and all(x.logprob <= 0 for x in lps) and all(len(x.top_logprobs) == 3 for x in lps)
    assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens > 16 and r.usage.total_tokens == r.usage.prompt_tokens + 4
    stream = client.chat.completions.create(model="tiny-cloud", messages=msgs, logprobs=True, top_logprobs=1, max_tokens=4,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = [c.choices[0].logprobs.content[0].logprob for c in chunks if c.choices and c.choices[0].logprobs]
    assert streamed == pytest.approx([x.logprob for x in lps])
    assert chunks[-1].usage.completion_tokens == 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content


@pytest.mark.slow
def test_backend_text_image_stream_and_plain(server):
    async def run():
        b = OpenAICompatBackend(server, timeout_s=30)
        s = OpenAICompatBackend(server, model="tiny-cloud", stream=False, timeout_s=30)
        try:
            g1 = await b.generate(MMRequest("hello", max_new_tokens=5))
            g2 = await b.generate(MMRequest("what colour?", images=[_png(1)], max_new_tokens=5, top_logprobs=2))
            g3 = await s.generate(MMRequest("what colour?", images=[_png(1)], max_new_tokens=5))
        finally:
            await b.aclose()
            await s.aclose()
        return g1, g2, g3

    g1, g2, g3 = asyncio.run(run())
    assert g1.out_tokens == 5 and g1.confidence is not None and g1.extra["logprobs"] == "ok"
    assert g2.confidence == pytest.approx(confidence_from_logprobs(g2.token_logprobs))
    assert g2.in_tokens > g1.in_tokens  # the image's tokens are counted
    assert g3.token_logprobs == pytest.approx(g2.token_logprobs) and g3.text == g2.text
    assert g2.ttft_s is not None and g2.ttft_s <= g2.latency_s


@pytest.mark.slow
def test_cancelled_request_stops_on_the_server(server):
    before = _metric(server, "mllm_serve_cancelled_total")
    tokens_before = _metric(server, "mllm_serve_completion_tokens_total")

    async def run():
        b = OpenAICompatBackend(server, timeout_s=60)
        tok = CancelToken()
        first = asyncio.Event()
        task = asyncio.create_task(b.generate(MMRequest("go", max_new_tokens=4000), cancel=tok, on_token=lambda e: first.set()))
        await asyncio.wait_for(first.wait(), 20)
        t = time.perf_counter()
        tok.cancel()
        g = await task
        took = time.perf_counter() - t  # the client's close is not part of the cancel
        await b.aclose()
        return g, took

    g, took = asyncio.run(run())
    # immediate in practice; 2 s of slack for a loaded machine, against the many seconds 4000 tokens take
    assert g.cancelled and g.finish_reason == "cancelled" and took < 2.0
    deadline = time.time() + 10
    while _metric(server, "mllm_serve_cancelled_total") <= before and time.time() < deadline:
        time.sleep(0.1)
    assert _metric(server, "mllm_serve_cancelled_total") == before + 1
    assert _metric(server, "mllm_serve_completion_tokens_total") - tokens_before < 4000


@pytest.mark.slow
def test_server_rejects_bad_requests(server):
    def post(content):
        return httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})

    r = post([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])
    assert r.status_code == 400 and "unsupported modality" in r.json()["error"]["message"]
    r = post([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}])
    assert r.status_code == 400 and "data: URLs" in r.json()["error"]["message"]
    r = post([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}}])
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]["message"]
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400
    r = httpx.post(server + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "model": "other"})
    assert r.status_code == 404


def test_server_down_is_a_clear_error_within_the_timeout():
    b = OpenAICompatBackend(f"http://127.0.0.1:{_free_port()}", model="m", timeout_s=3, max_retries=2, backoff_s=0.05)
    t = time.perf_counter()
    with pytest.raises(BackendError, match="cannot reach"):
        asyncio.run(b.generate(MMRequest("x")))
    assert time.perf_counter() - t < 3.5


def _mock(handler) -> OpenAICompatBackend:
    return OpenAICompatBackend("http://mock", model="m", transport=httpx.MockTransport(handler), backoff_s=0.01, max_retries=2, timeout_s=5)


def _sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_retries_on_500_then_succeeds_and_429_is_reported():
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(500, json={"error": {"message": "boom"}})
        return httpx.Response(200, content=_sse({"choices": [{"index": 0, "delta": {"content": "ok"},
                                                             "logprobs": {"content": [{"token": "ok", "logprob": -0.1}]}}]}))

    g = asyncio.run(_mock(flaky).generate(MMRequest("x")))
    assert calls["n"] == 3 and g.text == "ok" and g.confidence == pytest.approx(np.exp(-0.1))

    limited = {"n": 0}

    def busy(request):
        limited["n"] += 1
        return httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"})

    with pytest.raises(BackendError, match="HTTP 429: slow down") as ei:
        asyncio.run(_mock(busy).generate(MMRequest("x")))
    assert limited["n"] == 3 and ei.value.status == 429


def test_malformed_json_and_missing_logprobs():
    bad_stream = _mock(lambda r: httpx.Response(200, content=b"data: {not json\n\n"))
    with pytest.raises(BackendError, match="malformed JSON"):
        asyncio.run(bad_stream.generate(MMRequest("x")))
    bad_plain = _mock(lambda r: httpx.Response(200, content=b"[1, 2"))
    bad_plain.stream = False
    with pytest.raises(BackendError, match="malformed JSON"):
        asyncio.run(bad_plain.generate(MMRequest("x")))
    plain = _mock(lambda r: httpx.Response(200, content=_sse({"choices": [{"index": 0, "delta": {"content": "hi"}}]},
                                                               {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})))
    g = asyncio.run(plain.generate(MMRequest("x")))
    assert g.text == "hi" and g.confidence is None and g.extra["logprobs"] == "unavailable" and g.in_tokens == 3

    seen = []

    def picky(request):
        body = json.loads(request.content)
        seen.append("logprobs" in body)
        if body.get("logprobs"):
            return httpx.Response(400, json={"error": {"message": "logprobs is not supported"}})
        return httpx.Response(200, content=_sse({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}))

    b = _mock(picky)
    g = asyncio.run(b.generate(MMRequest("x")))
    assert seen == [True, False] and g.text == "a" and b.logprobs is False


@pytest.mark.slow
def test_serve_refuses_public_bind_without_key(tiny_model_dir):
    r = subprocess.run(_cli("serve", "--model", str(tiny_model_dir), "--host", "0.0.0.0"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "without --api-key" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_serve_bad_model_dir_is_one_line(tmp_path):
    r = subprocess.run(_cli("serve", "--model", str(tmp_path / "missing"), "--port", "1"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no such model directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1
