"""End to end on loopback: `mllm-offload serve` (a tiny model, slowed down) as the cloud node,
`mllm-offload route` with a tiny edge model in process and an exported policy in front, driven by
the stock OpenAI client."""

from __future__ import annotations

import base64
import json
import time

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from routing_helpers import cli, const_policy, free_port, metric, png, start, stop

pytestmark = pytest.mark.slow  # starts serve and route in subprocesses

SPECULATE_ACCEPT = (0.0, 1.0, 0.0)  # every request speculative, any edge answer accepted
SPECULATE_ESCALATE = (0.0, 1.0, 1.0)  # every request speculative, no edge answer confident enough


@pytest.fixture(scope="module")
def cloud_dir(tmp_path_factory):
    from mllm_offload.cli import main

    out = tmp_path_factory.mktemp("cloudmodel") / "tiny-cloud"
    assert main(["tiny-model", "--out", str(out), "--seed", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def cloud(cloud_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cli("serve", "--model", str(cloud_dir), "--port", str(port), "--served-name", "cloud", "--slowdown", "25"), url)
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("routelogs")


def _router(tmp_path_factory, tiny_model_dir, cloud, log_dir, action, name):
    pol = const_policy(tmp_path_factory.mktemp(name) / "policy", action, name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cli("route", "--edge", str(tiny_model_dir), "--cloud", cloud, "--policy", str(pol), "--port", str(port),
                     "--log-dir", str(log_dir)), url)
    return proc, url


@pytest.fixture(scope="module")
def route_accept(tmp_path_factory, tiny_model_dir, cloud, log_dir):
    proc, url = _router(tmp_path_factory, tiny_model_dir, cloud, log_dir, SPECULATE_ACCEPT, "accept")
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def route_escalate(tmp_path_factory, tiny_model_dir, cloud, log_dir):
    proc, url = _router(tmp_path_factory, tiny_model_dir, cloud, log_dir, SPECULATE_ESCALATE, "escalate")
    yield url
    stop(proc)


def _messages(seed: int, text: str = "What is in the picture?"):
    url = "data:image/png;base64," + base64.b64encode(png(seed)).decode()
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]


def _read_records(log_dir) -> list[dict]:
    return [json.loads(x) for f in sorted(log_dir.glob("route-*.jsonl")) for x in f.read_text().splitlines()[1:]]


def _wait_records(log_dir, ids, timeout_s: float = 20.0) -> list[dict]:
    """The log's records once every id in ``ids`` is there (the router writes a record after it
    has answered, in the background), or at the deadline."""
    deadline = time.time() + timeout_s
    while True:
        recs = _read_records(log_dir)
        if set(ids) <= {r["id"] for r in recs} or time.time() > deadline:
            return recs
        time.sleep(0.05)


def test_accepted_speculation_cancels_the_cloud_request_on_the_cloud_node(route_accept, cloud, log_dir):
    client = openai.OpenAI(base_url=route_accept + "/v1", api_key="unused")
    before = metric(cloud, "mllm_serve_cancelled_total")
    # the cloud node itself must see its generation stopped (not just the client giving up). On a
    # loaded machine the edge can answer before the cloud node has begun generating, and a
    # request cancelled before it starts is nothing to stop: up to three tries.
    attempt = 0
    while attempt < 3:
        attempt += 1
        raw = client.chat.completions.with_raw_response.create(model="router", messages=_messages(0), max_tokens=24)
        assert raw.headers["x-offload-mode"] == "speculative"
        assert raw.headers["x-offload-answered-by"] == "edge"
        done = raw.parse()
        assert done.choices[0].message.content is not None
        deadline = time.time() + 10
        while metric(cloud, "mllm_serve_cancelled_total") < before + 1 and time.time() < deadline:
            time.sleep(0.1)
        if metric(cloud, "mllm_serve_cancelled_total") >= before + 1:
            break
    assert metric(cloud, "mllm_serve_cancelled_total") >= before + 1
    assert metric(route_accept, "offload_cloud_cancelled_total") >= 1
    assert metric(route_accept, 'offload_requests_total{mode="speculative"}') >= 1
    rid = raw.headers["x-offload-request-id"]
    rec = next(r for r in _wait_records(log_dir, [rid]) if r["id"] == rid)
    assert rec["route"]["cloud_cancelled"] is True and rec["route"]["answered_by"] == "edge"
    assert rec["cloud"] is None and rec["edge"]["confidence"] >= 0.0  # the cancelled call left no cloud outcome


def test_low_edge_confidence_returns_the_cloud_answer(route_escalate, cloud):
    client = openai.OpenAI(base_url=route_escalate + "/v1", api_key="unused")
    raw = client.chat.completions.with_raw_response.create(model="router", messages=_messages(1), max_tokens=8)
    assert raw.headers["x-offload-mode"] == "speculative"
    assert raw.headers["x-offload-answered-by"] == "cloud"
    direct = openai.OpenAI(base_url=cloud + "/v1", api_key="unused").chat.completions.create(model="cloud", messages=_messages(1), max_tokens=8)
    assert raw.parse().choices[0].message.content == direct.choices[0].message.content


def test_streaming_through_the_router(route_escalate):
    body = {"model": "router", "messages": _messages(2), "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}, "logprobs": True}
    with httpx.stream("POST", route_escalate + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["x-offload-answered-by"] == "cloud" and r.headers["x-offload-mode"] == "speculative"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert any(c.get("offload", {}).get("answered_by") == "cloud" for c in chunks)
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_bad_requests_get_one_line_errors(route_accept):
    r = httpx.post(route_accept + "/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(route_accept + "/v1/chat/completions", json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})
    assert r.status_code == 400 and "data: URLs" in r.json()["error"]["message"]


def test_the_log_dir_is_a_trace_that_evaluate_accepts(route_accept, route_escalate, log_dir, tmp_path):
    from mllm_offload.cli import main
    from mllm_offload.trace_format import load_trace

    ids = []
    for i in range(3):  # a few more of each kind
        for url in (route_accept, route_escalate):
            r = httpx.post(url + "/v1/chat/completions", json={"messages": _messages(10 + i), "max_tokens": 6}, timeout=60)
            assert r.status_code == 200
            ids.append(r.headers["x-offload-request-id"])
    recs = _wait_records(log_dir, ids)
    assert set(ids) <= {r["id"] for r in recs} and len(recs) >= 9  # the tests above logged 3 or more
    # a record of an earlier test can still be landing: read both until they agree, every record loaded
    deadline = time.time() + 20
    tr, recs = load_trace(log_dir), _read_records(log_dir)
    while len(tr) != len(recs) and time.time() < deadline:
        time.sleep(0.05)
        tr, recs = load_trace(log_dir), _read_records(log_dir)
    assert len(tr) == len(recs) and tr.meta["source"] == "router"
    out = tmp_path / "m.json"
    rc = main(["evaluate", "--trace", str(log_dir), "--split", "all", "--requests", "8", "--episode-len", "4",
               "--policies", "edge,cloud,msao", "--no-throughput", "--quiet", "--json", str(out)])
    assert rc == 0 and out.exists()


def test_route_refuses_a_public_address_without_a_key(tiny_model_dir):
    import subprocess

    p = subprocess.run(cli("route", "--edge", str(tiny_model_dir), "--cloud", "http://127.0.0.1:9", "--policy", "msao", "--host", "0.0.0.0"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--api-key" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = subprocess.run(cli("route", "--edge", str(tiny_model_dir), "--cloud", "http://127.0.0.1:9", "--policy", "/nonexistent/policy"),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "/nonexistent/policy" in p.stderr and len(p.stderr.strip().splitlines()) == 1
