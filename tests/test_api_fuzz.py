"""Schemathesis fuzzing of the OpenAPI schemas of `mllm-offload serve` and `mllm-offload route`,
in process over ASGI (schemathesis's own client, no socket), bounded and marked slow.

serve runs the tiny random-weight model (each generation capped at 16 tokens so that an example
costs milliseconds, whatever ``max_tokens`` it asks); route runs that model as its edge and a
fake cloud, under a policy that cycles through the three modes. Per operation up to
``MAX_EXAMPLES`` examples, positive (schema-valid) and negative (schema-violating); every
response must not be a 5xx and must conform to the schema, and after each operation the server
still answers a normal request with nothing left in flight.

The schemas served at ``/openapi.json`` leave the chat body and the refusals undocumented (the
chat handler reads the raw body itself, to count it): :func:`documented` fills in what is
missing (the body from ``ChatRequest``, the 200 JSON and SSE answers, the 4xx error bodies,
``/metrics`` as text) and keeps whatever the served schema already says, so the fuzzing checks
the servers against the protocol models they answer with. ``test_served_schemas_are_complete``
is an expected failure until the served schemas say so themselves.

Checks: all of schemathesis's but ``positive_data_acceptance`` (a schema-valid body can still be
refused with 400: an image part whose URL is not a ``data:`` URL of a readable image, a modality
other than text and image_url, a prompt over the model's context; JSON Schema cannot say that)
and the Prometheus text of ``/metrics``, which is validated only as a string.
``negative_data_rejection`` tolerates one kind of schema-violating body answered 200: one that
the protocol model accepts as the servers parse it (pydantic's lax mode: ``0`` for a bool,
``false`` for a number) and refuses in strict mode. Those are counted and printed (a finding:
``parse_chat_request`` is not strict); any other accepted violation fails.

The example counts and statuses per operation are printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
import json
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings
from pydantic import BaseModel, ValidationError
from schemathesis.checks import CHECKS, negative_data_rejection
from schemathesis.core.failures import AcceptedNegativeData, FailureGroup
from schemathesis.python import asgi

from mllm_offload.decision import Thresholds
from mllm_offload.mllm_backends.base import CancelToken, Generation, MMRequest, TokenEvent
from mllm_offload.mllm_backends.openai_protocol import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatRequest,
    ErrorResponse,
    ModelList,
)
from mllm_offload.mllm_backends.serve import create_app
from mllm_offload.runtime.router import Router, RouterConfig
from mllm_offload.runtime.server import RouteChatCompletion, RouteChatCompletionChunk, create_route_app

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MAX_EXAMPLES = 50
#: Longest generation of the fuzzed tiny model, tokens (``max_tokens`` up to 4096 is valid; 4096 tokens take ~9 s here).
GEN_CAP = 16
CHAT = "/v1/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

#: The refusals both servers answer with an OpenAI error body (5xx are failures, not documented).
ERRORS = {
    "400": "invalid body, over a prompt or image limit, unreadable media",
    "404": "a model that is not served here (serve)",
    "413": "body over --max-body-mb",
    "429": "queue full (Retry-After)",
}

#: Examples run and statuses answered, per server and operation (printed at the end of the module).
SEEN: dict[str, Counter[int]] = defaultdict(Counter)
#: Schema-violating bodies accepted only through pydantic's lax coercion, per server and field path.
LAX: dict[str, Counter[str]] = defaultdict(Counter)
#: Checks that are not run (see the module docstring); ``negative_data_rejection`` runs apart, in :func:`_run`.
EXCLUDED = {"positive_data_acceptance", "negative_data_rejection"}


# ----------------------------------------------------------------------------- the documented schema


def documented(raw: dict[str, Any], answer: type[BaseModel], chunk: type[BaseModel]) -> dict[str, Any]:
    """``raw`` (a served ``/openapi.json``) with what it leaves out filled in from the protocol
    models: the chat request body, the 200 answer (JSON or SSE), the 4xx error bodies, the model
    list and ``/metrics`` as Prometheus text. What ``raw`` already documents is kept."""
    doc = copy.deepcopy(raw)
    components = doc.setdefault("components", {}).setdefault("schemas", {})

    def ref(model: type[BaseModel]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def json_content(model: type[BaseModel]) -> dict[str, Any]:
        return {"application/json": {"schema": ref(model)}}

    paths = doc["paths"]
    chat = paths[CHAT]["post"]
    chat.setdefault("requestBody", {"required": True, "content": json_content(ChatRequest)})
    ok = chat["responses"].setdefault("200", {"description": "the answer"}).setdefault("content", {})
    if not ok.get("application/json", {}).get("schema"):
        ok["application/json"] = {"schema": ref(answer)}
    # one event per chunk: its data is a chunk, an error body (a failure after the stream started) or [DONE]
    event_data = {"anyOf": [{"const": "[DONE]"},
                            {"contentMediaType": "application/json", "contentSchema": {"anyOf": [ref(chunk), ref(ErrorResponse)]}}]}
    ok.setdefault("text/event-stream", {"schema": {"type": "object", "required": ["data"], "properties": {"data": event_data}}})
    for status, why in ERRORS.items():
        chat["responses"].setdefault(status, {"description": why, "content": json_content(ErrorResponse)})
    models = paths["/v1/models"]["get"]["responses"]["200"].setdefault("content", {})
    if not models.get("application/json", {}).get("schema"):
        models["application/json"] = {"schema": ref(ModelList)}
    metrics = paths["/metrics"]["get"]["responses"]["200"]
    if "text/plain" not in metrics.get("content", {}):
        metrics["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return doc


def client(app: Any) -> Any:
    """A client of ``app`` on schemathesis's own event loop (the one the fuzzed requests run on)."""
    return asgi.get_client(app)


def schema_for(app: Any, answer: type[BaseModel], chunk: type[BaseModel]) -> Any:
    raw = client(app).get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(documented(raw, answer, chunk))
    schema.app = app
    schema.config.output.sanitization.update(enabled=False)  # reproductions with the real values (it hides any key named *token*)
    return schema


# ----------------------------------------------------------------------------- backends


class Capped:
    """A backend whose generations stop after ``GEN_CAP`` tokens (everything else is the wrapped backend's)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def generate(self, request: MMRequest, **kw: Any) -> Generation:
        return await self.inner.generate(dataclasses.replace(request, max_new_tokens=min(request.max_new_tokens, GEN_CAP)), **kw)


class FakeCloud:
    """A cloud node answering at once with a few tokens."""

    name = "fake-cloud"

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: Any = None) -> Generation:
        n = min(request.max_new_tokens, 4)
        for _ in range(n):
            if on_token is not None:
                on_token(TokenEvent("b", "b", -0.2))
            await asyncio.sleep(0)
        return Generation(text="b" * n, tokens=["b"] * n, token_logprobs=[-0.2] * n, in_tokens=len(request.prompt) // 4 + 1,
                          out_tokens=n, finish_reason="length", cancelled=False, backend=self.name, confidence=0.8)

    async def aclose(self) -> None:
        return None


class Cycle:
    """A policy cycling through edge-first (confident edge accepted), speculative and cloud."""

    name = "cycle"

    def __init__(self) -> None:
        self._next = itertools.cycle([Thresholds(1.0, 1.0, 0.0), Thresholds(0.0, 1.0, 0.5), Thresholds(0.0, 0.0, 1.0)])

    def thresholds(self, obs: Any) -> Thresholds:
        return next(self._next)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    backend = HFLocalBackend(tiny_model_dir)
    yield Capped(backend)
    backend.close()


@pytest.fixture(scope="module")
def serve_app(tiny):
    return create_app(tiny, "tiny", max_queue=8, max_body_bytes=1 << 20, request_timeout_s=60)


@pytest.fixture(scope="module")
def route_app(tiny):
    router = Router(tiny, FakeCloud(), Cycle(), RouterConfig(edge_timeout_s=60, cloud_timeout_s=60))
    return create_route_app(router, max_queue=8, max_body_bytes=1 << 20)


@pytest.fixture(scope="module")
def serve_schema(serve_app):
    return schema_for(serve_app, ChatCompletionResponse, ChatCompletionStreamResponse)


@pytest.fixture(scope="module")
def route_schema(route_app):
    return schema_for(route_app, RouteChatCompletion, RouteChatCompletionChunk)


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    """Print the example counts at the end of the module (output capture lifted for it)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not SEEN:
        return
    lines = [f"api fuzz: {label}: {sum(statuses.values())} examples, statuses {dict(sorted(statuses.items()))}"
             for label, statuses in sorted(SEEN.items())]
    lines += [f"api fuzz: {server}: schema-violating bodies accepted by lax parsing: {dict(fields)}" for server, fields in sorted(LAX.items())]
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


def _still_up(app: Any) -> None:
    """The server answers a normal request, and no generation is left in flight."""
    c = client(app)
    deadline = time.time() + 10
    while c.get("/health").json()["in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    health = c.get("/health")
    assert health.status_code == 200 and health.json()["in_flight"] == 0, health.text
    r = c.post(CHAT, json=HELLO)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length"), r.text


def _lax_only(body: Any) -> list[str]:
    """The fields for which the protocol model accepts ``body`` only as the servers parse it
    (pydantic's lax mode: ``0`` for a bool, ``false`` for a number) and refuses it in strict
    mode; empty when lax parsing refuses ``body`` too, or strict parsing accepts it."""
    raw = json.dumps(body)
    try:
        ChatRequest.model_validate_json(raw)
    except ValidationError:
        return []
    try:
        ChatRequest.model_validate_json(raw, strict=True)
    except ValidationError as e:
        return [".".join(str(x) for x in err["loc"]) for err in e.errors()]
    return []


def _run(case: Any, server: str) -> None:
    checks = [c for c in CHECKS.get_all() if c.__name__ not in EXCLUDED]
    response = case.call()
    SEEN[f"{server} {case.operation.label}"][response.status_code] += 1
    case.validate_response(response, checks=checks)
    try:
        case.validate_response(response, checks=[negative_data_rejection])
    except FailureGroup as group:
        # finding: the servers parse bodies leniently (openai_protocol.parse_chat_request); tolerated,
        # counted and reported, but only where strict parsing alone would have refused the body
        lax = _lax_only(case.body) if case.operation.path == CHAT else []
        if not lax or not all(isinstance(e, AcceptedNegativeData) for e in group.exceptions):
            raise
        LAX[server].update(lax)


# ----------------------------------------------------------------------------- tests

serve_fuzz = schemathesis.pytest.from_fixture("serve_schema")
route_fuzz = schemathesis.pytest.from_fixture("route_schema")
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)


@pytest.fixture
def serve_stays_up(serve_app):
    yield
    _still_up(serve_app)


@pytest.fixture
def route_stays_up(route_app):
    yield
    _still_up(route_app)


@serve_fuzz.parametrize()
@FUZZ
def test_serve_api_fuzz(case, serve_stays_up):
    _run(case, "serve")


@route_fuzz.parametrize()
@FUZZ
def test_route_api_fuzz(case, route_stays_up):
    _run(case, "route")


@pytest.mark.xfail(reason="finding: the served /openapi.json has no chat request body, no 4xx answers, and /metrics as JSON", strict=False)
@pytest.mark.parametrize("server", ["serve", "route"])
def test_served_schemas_are_complete(server, serve_app, route_app):
    app = serve_app if server == "serve" else route_app
    raw = client(app).get("/openapi.json").json()
    chat = raw["paths"][CHAT]["post"]
    assert "requestBody" in chat, "POST /v1/chat/completions documents no request body"
    assert {"400", "413", "429"} <= set(chat["responses"]), f"documented statuses: {sorted(chat['responses'])}"
    assert "text/event-stream" in chat["responses"]["200"].get("content", {}), "the streamed answer is not documented"
    assert "text/plain" in raw["paths"]["/metrics"]["get"]["responses"]["200"].get("content", {}), "/metrics is documented as JSON"
