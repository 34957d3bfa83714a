"""The shared OpenAI protocol module: response models, SSE framing, error body, guard, metrics,
and the serve app's wire format in process (a fake backend, no model, no subprocess)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("prometheus_client")

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST

from mllm_offload.errors import UserInputError
from mllm_offload.mllm_backends import openai_protocol as op
from mllm_offload.mllm_backends.base import CancelToken, Generation, MMRequest, TokenCallback, TokenEvent

SERVE_METRICS = ["mllm_serve_requests_total", "mllm_serve_completed_total", "mllm_serve_cancelled_total", "mllm_serve_errors_total",
                 "mllm_serve_rejected_total", "mllm_serve_prompt_tokens_total", "mllm_serve_completion_tokens_total", "mllm_serve_in_flight"]


def _gen(**kw: object) -> Generation:
    base: dict = {"text": "ab", "tokens": ["a", "b"], "token_logprobs": [-0.1, -0.2], "top_logprobs": [[("a", -0.1), ("x", -2.0)], [("b", -0.2)]],
                  "in_tokens": 7, "out_tokens": 2, "finish_reason": "length"}
    base.update(kw)
    return Generation(**base)


def test_chat_completion_round_trips_and_keeps_its_nulls():
    gen = _gen()
    r = op.ChatCompletionResponse(model="m", choices=[op.ChatCompletionResponseChoice.from_generation(gen, logprobs=True)],
                                  usage=op.UsageInfo.from_generation(gen))
    d = r.model_dump(mode="json")
    assert d["object"] == "chat.completion" and d["id"].startswith("chatcmpl-") and isinstance(d["created"], int)
    assert d["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    choice = d["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"] == {"role": "assistant", "content": "ab"}
    first = choice["logprobs"]["content"][0]
    assert first == {"token": "a", "logprob": -0.1, "bytes": [97],
                     "top_logprobs": [{"token": "a", "logprob": -0.1, "bytes": [97]}, {"token": "x", "logprob": -2.0, "bytes": [120]}]}
    assert op.ChatCompletionResponse.model_validate_json(r.model_dump_json()) == r
    plain = op.ChatCompletionResponseChoice.from_generation(_gen(finish_reason="cancelled")).model_dump(mode="json")
    assert plain["logprobs"] is None and "logprobs" in plain and plain["finish_reason"] == "stop"
    openai = pytest.importorskip("openai")
    parsed = openai.types.chat.ChatCompletion.model_validate(d)
    assert parsed.choices[0].logprobs.content[0].top_logprobs[1].token == "x" and parsed.usage.total_tokens == 9


def test_lp_entry_unknown_and_infinite_logprobs_are_finite():
    assert op.lp_entry("é", None).model_dump() == {"token": "é", "logprob": -9999.0, "bytes": [195, 169], "top_logprobs": []}
    assert op.lp_entry("a", float("-inf"), [("b", float("nan"))]).model_dump_json() == (
        '{"token":"a","logprob":-9999.0,"bytes":[97],"top_logprobs":[{"token":"b","logprob":-9999.0,"bytes":[98]}]}')


def test_chunks_leave_out_unset_delta_fields_and_usage():
    c = op.ChatCompletionStreamResponse(id="c1", created=5, model="m", choices=[op.ChatCompletionResponseStreamChoice(delta=op.DeltaMessage())])
    assert c.model_dump(mode="json") == {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "m",
                                         "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}]}
    first = op.ChatCompletionResponseStreamChoice(delta=op.DeltaMessage(role="assistant", content=""))
    assert first.model_dump(mode="json")["delta"] == {"role": "assistant", "content": ""}
    usage = op.ChatCompletionStreamResponse(id="c1", created=5, model="m", usage=op.UsageInfo(prompt_tokens=1, completion_tokens=2, total_tokens=3))
    assert usage.model_dump(mode="json")["choices"] == [] and usage.model_dump(mode="json")["usage"]["total_tokens"] == 3
    assert op.ChatCompletionStreamResponse.model_validate_json(usage.model_dump_json()) == usage
    openai = pytest.importorskip("openai")
    assert openai.types.chat.ChatCompletionChunk.model_validate(c.model_dump(mode="json")).choices[0].delta.content is None


def test_sse_helpers():
    choice = op.ChatCompletionResponseStreamChoice(delta=op.DeltaMessage(content="hi"))
    c = op.ChatCompletionStreamResponse(id="c1", created=5, model="m", choices=[choice])
    line = op.sse_event(c)
    assert line.startswith("data: ") and line.endswith("\n\n") and "\n" not in line[:-2]
    assert op.ChatCompletionStreamResponse.model_validate_json(line[len("data: "):]) == c
    assert op.sse_done() == "data: [DONE]\n\n"
    assert json.loads(op.sse_event(op.error_body(500, "boom", "server_error"))[6:]) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": 500}}


def test_error_response_body_shape():
    r = op.error_response(429, "busy", "rate_limit_error", {"retry-after": "1"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert json.loads(r.body) == {"error": {"message": "busy", "type": "rate_limit_error", "param": None, "code": 429}}
    assert op.ErrorResponse.model_validate_json(r.body).error.code == 429
    assert op.ModelList(data=[op.ModelCard(id="m", created=3)]).model_dump(mode="json") == {
        "object": "list", "data": [{"id": "m", "object": "model", "created": 3, "owned_by": "mllm-offload"}]}


def test_parse_chat_request_and_to_mm_request():
    with pytest.raises(UserInputError, match=r"^messages: "):
        op.parse_chat_request(b'{"messages": []}')
    with pytest.raises(UserInputError, match=r"^body: Invalid JSON"):
        op.parse_chat_request(b"{not json")
    body = op.parse_chat_request(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                                          {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "input_audio"}]}],
                                             "max_tokens": 9, "logprobs": True, "top_logprobs": 2, "stream": True,
                                             "stream_options": {"include_usage": True}, "unknown": 1}))
    assert body.include_usage
    with pytest.raises(UserInputError, match="unsupported modality"):
        op.to_mm_request(body, 64)
    req = op.to_mm_request(body, 64, drop_unsupported=True)
    assert req.prompt == "system: be brief\nhi" and req.max_new_tokens == 9 and req.top_logprobs == 2
    assert op.is_loopback("127.0.0.5") and op.is_loopback("::1") and not op.is_loopback("0.0.0.0")


def _guarded(api_key: str | None) -> TestClient:
    app = FastAPI()
    op.install_guard(app, api_key, max_body_bytes=100)

    @app.post("/v1/echo")
    async def echo() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


def test_guard_compares_the_key_in_constant_time_and_limits_the_body(monkeypatch):
    calls: list[tuple[bytes, bytes]] = []
    real = op.secrets.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(op.secrets, "compare_digest", spy)
    client = _guarded("s3cret")
    r = client.post("/v1/echo", headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["code"] == 401
    assert calls == [(b"Bearer wrong", b"Bearer s3cret")]
    assert client.post("/v1/echo").status_code == 401
    assert client.post("/v1/echo", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # only /v1/* needs the key
    r = client.post("/v1/echo", headers={"authorization": "Bearer s3cret"}, content=b"x" * 101)
    assert r.status_code == 413 and r.json()["error"]["code"] == 413
    assert _guarded(None).post("/v1/echo", content=b"x" * 100).status_code == 200


def test_serve_metrics_come_from_prometheus_client():
    from mllm_offload.mllm_backends.serve import ServeStats

    stats = ServeStats("tiny")
    stats.cancelled.inc()
    stats.completion_tokens.inc(5)
    stats.in_flight = 2
    r = op.metrics_response(stats.registry)
    assert r.media_type == CONTENT_TYPE_LATEST
    text = r.body.decode()
    for name in SERVE_METRICS:
        assert f"# TYPE {name} " in text and f'{name}{{model="tiny"}} ' in text
    assert 'mllm_serve_cancelled_total{model="tiny"} 1.0' in text and 'mllm_serve_completion_tokens_total{model="tiny"} 5.0' in text
    assert 'mllm_serve_in_flight{model="tiny"} 2.0' in text
    again = ServeStats("tiny")  # a registry per app: a second one neither collides nor shares counts
    assert 'mllm_serve_cancelled_total{model="tiny"} 0.0' in op.metrics_response(again.registry).body.decode()


class _FakeBackend:
    """Answers "ab" token by token with log-probabilities."""

    name = "fake"

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: TokenCallback | None = None) -> Generation:
        gen = _gen(finish_reason="stop" if request.max_new_tokens > 2 else "length")
        for tok, lp, top in zip(gen.tokens, gen.token_logprobs, gen.top_logprobs, strict=True):
            if on_token is not None:
                on_token(TokenEvent(text=tok, token=tok, logprob=lp, top=tuple(top[: request.top_logprobs])))
        return gen

    async def aclose(self) -> None:
        return None


def _metric(text: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_serve_app_wire_format_in_process():
    from mllm_offload.mllm_backends.serve import create_app

    client = TestClient(create_app(_FakeBackend(), "fake-model"))
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    msgs = [{"role": "user", "content": "hi"}]
    r = client.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 2, "logprobs": True, "top_logprobs": 1})
    d = r.json()
    assert r.status_code == 200 and set(d) == {"id", "object", "created", "model", "choices", "usage"}
    assert d["choices"][0]["finish_reason"] == "length" and d["choices"][0]["message"]["content"] == "ab"
    assert [e["token"] for e in d["choices"][0]["logprobs"]["content"]] == ["a", "b"]
    r = client.post("/v1/chat/completions", json={"messages": msgs, "stream": True, "logprobs": True, "stream_options": {"include_usage": True}})
    events = [line[6:] for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert r.headers["content-type"].startswith("text/event-stream") and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "ab"
    assert [c["choices"][0]["logprobs"]["content"][0]["logprob"] for c in chunks[1:3]] == [-0.1, -0.2]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 9
    assert all("usage" not in c for c in chunks[:-1])
    r = client.post("/v1/chat/completions", json={"messages": msgs, "model": "other"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and r.json()["error"]["param"] is None
    text = client.get("/metrics").text
    assert _metric(text, "mllm_serve_requests_total") == 2 and _metric(text, "mllm_serve_completed_total") == 2
    assert _metric(text, "mllm_serve_completion_tokens_total") == 4 and _metric(text, "mllm_serve_in_flight") == 0


def test_is_loopback_parses_addresses_not_prefixes():
    from mllm_offload.mllm_backends.openai_protocol import is_loopback

    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("127.evil.example", "0.0.0.0", "10.0.0.1", "::", "example.com"):
        assert not is_loopback(host), host


def test_request_structure_is_bounded_and_booleans_are_strict():
    import json

    import pytest

    from mllm_offload.errors import UserInputError
    from mllm_offload.mllm_backends.openai_protocol import MAX_IMAGES, MAX_MESSAGES, parse_chat_request

    img = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ok = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *[img] * MAX_IMAGES]}]}
    assert len(parse_chat_request(json.dumps(ok)).messages[0].content) == MAX_IMAGES + 1
    cases = [
        ({"messages": [{"role": "user", "content": [img] * (MAX_IMAGES + 1)}]}, "images per request"),
        ({"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "stream": 0}, "stream"),
        ({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 0}}, "include_usage"),
    ]
    for body, word in cases:
        with pytest.raises(UserInputError) as e:
            parse_chat_request(json.dumps(body))
        assert word in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_only_web_image_formats_are_opened(tmp_path):
    import io

    import pytest
    from PIL import Image

    from mllm_offload.errors import UserInputError
    from mllm_offload.mllm_backends.base import load_image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert load_image(buf.getvalue()).size == (8, 8)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    with pytest.raises(UserInputError, match="not a readable image"):
        load_image(eps)
