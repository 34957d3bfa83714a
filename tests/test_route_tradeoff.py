"""The runtime trade-off knob: a router's default latency price (``route --latency-price``), a
request's own (header ``x-offload-latency-price`` / body ``offload``), checked against the
policy's trained range, reported in the response headers and the trace log.

In process (TestClient over the ASGI app) with fake backends and a tiny conditioned MLP policy
whose ``tau_high`` rises with the latency price; the subprocess check is marked slow."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from mllm_offload.artifact import ArtifactPolicy, Network, write_artifact
from mllm_offload.cli import main
from mllm_offload.decision import Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.mllm_backends.base import CancelToken, Generation, MMRequest, TokenEvent
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.runtime.router import Router, RouterConfig, RouterError
from mllm_offload.runtime.server import COST_PRICE_HEADER, LATENCY_PRICE_HEADER, create_route_app
from mllm_offload.runtime.tracelog import TraceLog
from mllm_offload.trace_format import TraceRecord
from mllm_offload.tradeoff import PRESETS, TradeOff, TradeOffRange, parse_prices

CHAT = "/v1/chat/completions"
MSGS = [{"role": "user", "content": "What is in the picture?"}]
RANGE = TradeOffRange(latency_price=(0.05, 1.0), cost_price=(0.1, 0.1))
LP = OBSERVATION_SPEC.index("latency_price_log")


# ----------------------------------------------------------------------------- helpers


def conditioned_policy(path: Path, tradeoff_range: TradeOffRange | None = RANGE) -> Path:
    """A one-layer MLP artifact: ``a = (1, 1 + 0.5 ln(latency price), 0)``, clipped to [0, 1].

    So ``tau_low = tau_high = clip(1 + 0.5 ln lp)`` and ``tau_conf = 0``: at latency price 1 the
    thresholds are 1 (every request below them: edge first, any edge answer accepted), at 0.05
    (ln = -3) they are 0 (every request to the cloud)."""
    n = len(OBSERVATION_SPEC)
    w = np.zeros((3, n), np.float32)
    w[1, LP] = 0.5
    b = np.asarray([1.0, 1.0, 0.0], np.float32)
    return write_artifact(path, kind="mlp", name="conditioned", arrays={"w0": w, "b0": b}, network=Network(layers=[n, 3]),
                          tradeoff_range=tradeoff_range)


class Fake:
    """Answers ``text`` at once, token by token, with confidence 0.9 (``fail``: raises instead)."""

    def __init__(self, text: str, fail: bool = False) -> None:
        self.text, self.fail, self.name, self.calls = text, fail, f"fake-{text}", 0

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: Any = None) -> Generation:
        self.calls += 1
        if self.fail:
            from mllm_offload.mllm_backends.base import BackendError

            raise BackendError(f"{self.name}: down")
        toks = list(self.text)
        for t in toks:
            if on_token is not None:
                on_token(TokenEvent(t, t, -0.1))
            await asyncio.sleep(0)
        return Generation(text=self.text, tokens=toks, token_logprobs=[-0.1] * len(toks), in_tokens=3, out_tokens=len(toks),
                          finish_reason="stop", cancelled=False, backend=self.name, confidence=0.9)

    async def aclose(self) -> None:
        return None


class Fixed:
    """A duck-typed policy without a trade-off range (as the rules): always cloud."""

    name = "fixed"

    def thresholds(self, obs: Any) -> Thresholds:
        return Thresholds(0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    return conditioned_policy(tmp_path_factory.mktemp("conditioned") / "policy")


@pytest.fixture
def policy(policy_dir) -> ArtifactPolicy:
    return ArtifactPolicy.load(policy_dir)


def make_router(policy: Any, log_dir: Path | None = None, *, edge: Any = None, cloud: Any = None, **kw: Any) -> Router:
    log = TraceLog(log_dir, {"policy": getattr(policy, "name", "?")}) if log_dir is not None else None
    return Router(edge or Fake("edge"), cloud or Fake("cloud"), policy, RouterConfig(), log, **kw)


def records(log_dir: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for f in sorted(log_dir.glob("route-*.jsonl")) for x in f.read_text().splitlines()[1:]]
    for r in recs:
        TraceRecord.model_validate(r)
    return recs


def error_of(r: httpx.Response) -> dict[str, Any]:
    e: dict[str, Any] = r.json()["error"]
    assert "\n" not in e["message"] and e["type"] == "invalid_request_error"
    return e


# ----------------------------------------------------------------------------- the knob changes the decision


def test_two_latency_prices_give_two_decisions_in_headers_body_and_log(policy, tmp_path):
    with TestClient(create_route_app(make_router(policy, tmp_path))) as client:
        quality = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4}, headers={LATENCY_PRICE_HEADER: "0.05"})
        fast = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4}, headers={LATENCY_PRICE_HEADER: "1"})
    assert quality.status_code == 200 and fast.status_code == 200, (quality.text, fast.text)
    assert quality.headers["x-offload-mode"] == "cloud" and quality.headers["x-offload-answered-by"] == "cloud"
    assert fast.headers["x-offload-mode"] == "edge_first" and fast.headers["x-offload-answered-by"] == "edge"
    assert float(quality.headers[LATENCY_PRICE_HEADER]) == 0.05 and float(fast.headers[LATENCY_PRICE_HEADER]) == 1.0
    assert float(quality.headers[COST_PRICE_HEADER]) == 0.1 == float(fast.headers[COST_PRICE_HEADER])  # the range's only cost price
    q, f = quality.json()["offload"], fast.json()["offload"]
    assert q["tradeoff"] == {"latency_price": 0.05, "cost_price": 0.1} and f["tradeoff"] == {"latency_price": 1.0, "cost_price": 0.1}
    assert q["thresholds"]["tau_high"] == 0.0 and f["thresholds"]["tau_high"] == 1.0
    assert quality.json()["choices"][0]["message"]["content"] == "cloud" and fast.json()["choices"][0]["message"]["content"] == "edge"
    recs = {r["route"]["mode"]: r["route"] for r in records(tmp_path)}  # the app's shutdown drained and closed the log
    assert set(recs) == {"cloud", "edge_first"}
    assert recs["cloud"]["tradeoff"] == {"latency_price": 0.05, "cost_price": 0.1}
    assert recs["edge_first"]["tradeoff"] == {"latency_price": 1.0, "cost_price": 0.1}
    assert recs["cloud"]["observation"][LP] == pytest.approx(math.log(0.05), abs=1e-5)
    assert recs["edge_first"]["observation"][LP] == pytest.approx(0.0, abs=1e-6)


def test_a_stream_carries_the_price_and_the_default_is_the_ranges(policy):
    router = make_router(policy)
    assert router.tradeoff == RANGE.default() and router.tradeoff.latency_price == 0.2  # balanced lies inside the range
    with TestClient(create_route_app(router)) as client:
        r = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4, "stream": True}, headers={LATENCY_PRICE_HEADER: "latency-first"})
        plain = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4})
        health = client.get("/health").json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert float(r.headers[LATENCY_PRICE_HEADER]) == PRESETS["latency-first"] and r.headers["x-offload-mode"] == "edge_first"
    last = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: {")][-1]
    assert last["offload"]["tradeoff"]["latency_price"] == 1.0
    assert plain.status_code == 200 and float(plain.headers[LATENCY_PRICE_HEADER]) == 0.2  # no header: the router's default
    assert health["tradeoff"] == {"latency_price": 0.2, "cost_price": 0.1} and health["tradeoff_range"]["latency_price"] == [0.05, 1.0]


def test_the_body_offload_field_and_the_header_winning_over_it(policy):
    with TestClient(create_route_app(make_router(policy))) as client:
        body = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4, "offload": {"latency_price": 0.05}})
        both = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4, "offload": {"latency_price": 0.05, "cost_price": 0.1}},
                           headers={LATENCY_PRICE_HEADER: "1.0"})
        null = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4, "offload": None})
    assert body.status_code == 200 and body.headers["x-offload-mode"] == "cloud" and float(body.headers[LATENCY_PRICE_HEADER]) == 0.05
    assert both.status_code == 200 and both.headers["x-offload-mode"] == "edge_first" and float(both.headers[LATENCY_PRICE_HEADER]) == 1.0
    assert null.status_code == 200 and float(null.headers[LATENCY_PRICE_HEADER]) == 0.2


# ----------------------------------------------------------------------------- refused trade-offs


@pytest.mark.parametrize("value", ["5", "0.01", "0"])
def test_a_price_outside_the_trained_range_is_400_naming_the_header(policy, value):
    cloud = Fake("cloud")
    with TestClient(create_route_app(make_router(policy, cloud=cloud))) as client:
        r = client.post(CHAT, json={"messages": MSGS}, headers={LATENCY_PRICE_HEADER: value})
    e = error_of(r)
    assert r.status_code == 400 and e["param"] == LATENCY_PRICE_HEADER
    assert e["message"].startswith(f"{LATENCY_PRICE_HEADER}: latency price {float(value):g} / cost price 0.1 lies outside")
    assert "trained range (latency price [0.05, 1], cost price 0.1 only)" in e["message"]
    assert "policy.json" not in e["message"] and str(policy.path) not in e["message"]  # no server path in a client's error
    assert cloud.calls == 0 and "x-offload-mode" not in r.headers


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1", "1e5", "", "0x10", "1_0", "0.2,0.3", "balanced2"])
def test_a_malformed_latency_price_header_is_400(policy, value):
    with TestClient(create_route_app(make_router(policy))) as client:
        r = client.post(CHAT, json={"messages": MSGS}, headers={LATENCY_PRICE_HEADER: value})
    e = error_of(r)
    assert r.status_code == 400 and e["param"] == LATENCY_PRICE_HEADER
    assert e["message"].startswith(f"{LATENCY_PRICE_HEADER}: ") and "is not a number in [0, 100] or one of quality-first" in e["message"]


def test_preset_names_in_any_case(policy):
    with TestClient(create_route_app(make_router(policy))) as client:
        r = client.post(CHAT, json={"messages": MSGS, "max_tokens": 4}, headers={LATENCY_PRICE_HEADER: " Latency-First "})
    assert r.status_code == 200 and float(r.headers[LATENCY_PRICE_HEADER]) == 1.0
    from mllm_offload.cli._common import price

    assert price("BALANCED") == 0.2 and parse_prices("Quality-First, 1") == [0.05, 1.0]


def test_a_cost_price_header_outside_the_range_or_twice_is_400(policy):
    with TestClient(create_route_app(make_router(policy))) as client:
        cost = client.post(CHAT, json={"messages": MSGS}, headers={COST_PRICE_HEADER: "0.5"})
        bad = client.post(CHAT, json={"messages": MSGS}, headers={COST_PRICE_HEADER: "2e4"})
        twice = client.post(CHAT, json={"messages": MSGS}, headers=[(LATENCY_PRICE_HEADER, "0.2"), (LATENCY_PRICE_HEADER, "0.3")])
    assert cost.status_code == 400 and error_of(cost)["param"] == COST_PRICE_HEADER and "cost price 0.5" in error_of(cost)["message"]
    assert bad.status_code == 400 and error_of(bad)["message"] == f"{COST_PRICE_HEADER}: '2e4' is not a number in [0, 10000]"
    assert twice.status_code == 400 and "given 2 times" in error_of(twice)["message"]


@pytest.mark.parametrize(("offload", "field", "says"), [
    ({"latency_price": 5.0}, "offload.latency_price", "lies outside the policy's trained range"),
    ({"latency_price": "0.5"}, "offload.latency_price", "Input should be a valid number"),
    ({"latency_price": True}, "offload.latency_price", "Input should be a valid number"),
    ({"latency_price": 101}, "offload.latency_price", "less than or equal to 100"),
    ({"cost_price": -1}, "offload.cost_price", "greater than or equal to 0"),
    ({"latency": 0.5}, "offload.latency", "Extra inputs are not permitted"),
    ([0.5], "offload", "Input should be an object"),
])
def test_a_bad_offload_body_field_is_400_naming_the_field(policy, offload, field, says):
    with TestClient(create_route_app(make_router(policy))) as client:
        r = client.post(CHAT, json={"messages": MSGS, "offload": offload})
    e = error_of(r)
    assert r.status_code == 400 and e["message"].startswith(f"{field}: ") and says in e["message"], e


def test_non_finite_body_prices_are_refused(policy):
    with TestClient(create_route_app(make_router(policy))) as client:
        for lit in ("NaN", "Infinity", "1e400"):
            raw = '{"messages": [{"role": "user", "content": "hi"}], "offload": {"latency_price": ' + lit + "}}"
            r = client.post(CHAT, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400 and error_of(r)["message"] == "offload.latency_price: Input should be a finite number"


def test_a_policy_without_a_range_takes_any_price(tmp_path):
    router = make_router(Fixed())
    assert router.tradeoff == TradeOff()
    with pytest.raises(ValueError, match="tradeoff_range"):  # a policy that reads the prices must say which it serves
        conditioned_policy(tmp_path / "norange", tradeoff_range=None)
    with TestClient(create_route_app(router)) as client:
        r = client.post(CHAT, json={"messages": MSGS, "max_tokens": 2}, headers={LATENCY_PRICE_HEADER: "50", COST_PRICE_HEADER: "2000"})
        bad = client.post(CHAT, json={"messages": MSGS}, headers={LATENCY_PRICE_HEADER: "150"})  # still bounded by the format
    assert r.status_code == 200 and float(r.headers[LATENCY_PRICE_HEADER]) == 50.0 and float(r.headers[COST_PRICE_HEADER]) == 2000.0
    assert bad.status_code == 400 and error_of(bad)["param"] == LATENCY_PRICE_HEADER


def test_errors_after_the_trade_off_is_known_carry_it(policy):
    dead = make_router(policy, edge=Fake("edge", fail=True), cloud=Fake("cloud", fail=True))
    with TestClient(create_route_app(dead)) as client:
        r = client.post(CHAT, json={"messages": MSGS}, headers={LATENCY_PRICE_HEADER: "0.5"})
        media = client.post(CHAT, json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
                            headers={LATENCY_PRICE_HEADER: "0.5"})
    assert r.status_code == 503 and float(r.headers[LATENCY_PRICE_HEADER]) == 0.5 and COST_PRICE_HEADER in r.headers
    assert media.status_code == 400 and float(media.headers[LATENCY_PRICE_HEADER]) == 0.5
    with TestClient(create_route_app(make_router(policy), max_queue=0)) as client:  # every request over the queue
        busy = client.post(CHAT, json={"messages": MSGS}, headers={LATENCY_PRICE_HEADER: "0.05"})
    assert busy.status_code == 429 and float(busy.headers[LATENCY_PRICE_HEADER]) == 0.05


def test_serve_accepts_and_ignores_the_offload_field():
    from mllm_offload.mllm_backends.serve import create_app

    client = TestClient(create_app(Fake("ab"), "fake"))
    for offload in ({"latency_price": 0.5}, {"anything": "else"}, "not-an-object"):
        r = client.post(CHAT, json={"messages": MSGS, "max_tokens": 2, "offload": offload}, headers={LATENCY_PRICE_HEADER: "nonsense"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ab"


# ----------------------------------------------------------------------------- the Router API


def test_router_default_and_per_request_trade_off(policy, tmp_path):
    with pytest.raises(UserInputError, match=r"^router trade-off: latency price 5 / cost price 0.1 lies outside"):
        make_router(policy, tradeoff=TradeOff(latency_price=5.0))
    router = make_router(policy, tmp_path, tradeoff=TradeOff(latency_price=1.0))
    assert router.tradeoff_for() is router.tradeoff
    assert router.tradeoff_for(latency_price=0.05) == TradeOff(latency_price=0.05, cost_price=0.1)
    with pytest.raises(UserInputError, match=r"^my-source: latency price 2 "):
        router.tradeoff_for(latency_price=2.0, source="my-source")
    with pytest.raises(UserInputError, match=r"^x: latency_price: Input should be less than or equal to 100"):
        router.tradeoff_for(latency_price=1e9, source="x")

    async def go() -> list[Any]:
        try:
            return [await router.generate(MMRequest("hi", max_new_tokens=2)),
                    await router.generate(MMRequest("hi", max_new_tokens=2), TradeOff(latency_price=0.05))]
        finally:
            await router.aclose()

    default, quality = asyncio.run(go())
    assert default.tradeoff.latency_price == 1.0 and default.mode.label == "edge_first"
    assert quality.tradeoff.latency_price == 0.05 and quality.mode.label == "cloud"
    assert quality.observation[LP] == pytest.approx(math.log(0.05), abs=1e-5)
    with pytest.raises(UserInputError, match="lies outside"):
        asyncio.run(make_router(policy).generate(MMRequest("hi"), TradeOff(latency_price=3.0)))
    assert [r["route"]["tradeoff"]["latency_price"] for r in sorted(records(tmp_path), key=lambda r: r["arrival_s"])] == [1.0, 0.05]


def test_a_request_no_backend_answers_logs_its_trade_off(policy, tmp_path):
    router = make_router(policy, tmp_path, edge=Fake("e", fail=True), cloud=Fake("c", fail=True))

    async def go() -> None:
        try:
            with pytest.raises(RouterError):
                await router.generate(MMRequest("hi", max_new_tokens=2), TradeOff(latency_price=0.5))
        finally:
            await router.aclose()

    asyncio.run(go())
    (entry,) = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert entry["tradeoff"] == {"latency_price": 0.5, "cost_price": 0.1}


def test_trace_records_with_and_without_a_trade_off_load():
    base = {"id": "a", "arrival_s": 0.0, "modalities": {"text": {"tokens": 1}}, "payload_bytes": {"text": 3}, "mas": {"score": 0.1},
            "edge": None, "cloud": None}
    TraceRecord.model_validate({**base, "route": {"mode": "cloud"}})  # a log from before the trade-off
    TraceRecord.model_validate({**base, "route": {"mode": "cloud", "tradeoff": {"latency_price": 0.2, "cost_price": 0.1}}})
    for bad in ({"latency_price": -1, "cost_price": 0.1}, {"latency_price": 0.2}, {"latency_price": "0.2", "cost_price": 0.1}):
        with pytest.raises(ValueError, match="tradeoff"):
            TraceRecord.model_validate({**base, "route": {"tradeoff": bad}})


# ----------------------------------------------------------------------------- the CLI


def _route_argv(policy: Path | str, *extra: str) -> list[str]:
    return ["route", "--edge", "a", "--cloud", "http://127.0.0.1:9/v1", "--policy", str(policy), *extra]


def test_route_refuses_a_default_outside_the_range_at_startup(policy_dir, capsys):
    rc = main(_route_argv(policy_dir, "--latency-price", "5"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"mllm-offload route: error: --latency-price (policy {policy_dir}): latency price 5 / cost price 0.1 lies outside")
    rc = main(_route_argv(policy_dir, "--latency-price", "0.5", "--cost-price", "3"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0].startswith("mllm-offload route: error: --latency-price --cost-price (policy ")


@pytest.mark.parametrize(("flag", "value"), [("--latency-price", "fast"), ("--latency-price", "-1"), ("--cost-price", "nan"), ("--cost-price", "2e4")])
def test_route_refuses_a_malformed_price(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(_route_argv("msao", flag, value))
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"mllm-offload route: error: argument {flag}: " in err


def test_route_default_trade_off_from_flags_and_presets(policy):
    from mllm_offload.cli.route import default_tradeoff

    assert default_tradeoff(policy, None, None) == RANGE.default()
    assert default_tradeoff(policy, PRESETS["quality-first"], None) == TradeOff(latency_price=0.05, cost_price=0.1)
    assert default_tradeoff(Fixed(), 50.0, 2000.0) == TradeOff(latency_price=50.0, cost_price=2000.0)  # a rule takes any
    from mllm_offload.cli._common import price

    assert price("latency-first") == 1.0 and price("balanced") == 0.2


@pytest.mark.slow
def test_route_subprocess_uses_the_flag_and_the_header(policy_dir, tiny_model_dir, tmp_path):
    """``mllm-offload route --latency-price 1`` on loopback (tiny edge model, cloud: a second
    ``route`` is not needed, the cloud URL is dead and the policy answers on the edge at price 1):
    the flag sets the default, a header overrides it, both visible in headers and in the log."""
    from routing_helpers import cli, free_port, start, stop

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    proc = start(cli("route", "--edge", str(tiny_model_dir), "--cloud", "http://127.0.0.1:9/v1", "--policy", str(policy_dir),
                     "--port", str(port), "--log-dir", str(logs), "--latency-price", "latency-first", "--cloud-timeout", "2"), url)
    try:
        assert httpx.get(url + "/health").json()["tradeoff"]["latency_price"] == 1.0
        fast = httpx.post(url + CHAT, json={"messages": MSGS, "max_tokens": 3}, timeout=60)
        quality = httpx.post(url + CHAT, json={"messages": MSGS, "max_tokens": 3}, headers={LATENCY_PRICE_HEADER: "0.05"}, timeout=60)
        out = httpx.post(url + CHAT, json={"messages": MSGS, "max_tokens": 3}, headers={LATENCY_PRICE_HEADER: "2"}, timeout=60)
    finally:
        stop(proc)
    assert fast.status_code == 200 and fast.headers["x-offload-mode"] == "edge_first" and float(fast.headers[LATENCY_PRICE_HEADER]) == 1.0
    # the cloud is down: a cloud decision falls back to the edge answer, but the decision is the cloud's
    assert quality.status_code == 200 and quality.headers["x-offload-mode"] == "cloud" and quality.headers["x-offload-answered-by"] == "edge-degraded"
    assert float(quality.headers[LATENCY_PRICE_HEADER]) == 0.05
    assert out.status_code == 400 and out.json()["error"]["param"] == LATENCY_PRICE_HEADER
    recs = sorted(records(logs), key=lambda r: r["arrival_s"])
    assert [(r["route"]["mode"], r["route"]["tradeoff"]["latency_price"]) for r in recs] == [("edge_first", 1.0), ("cloud", 0.05)]
