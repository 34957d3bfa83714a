"""Router fault handling: the cloud answering 500, hanging past its timeout, killed mid-speculation;
the edge failing; both down. Every request gets an answer or one clear error, and is logged."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from routing_helpers import cli, free_port, png, start, stop

from mllm_offload.decision import Thresholds
from mllm_offload.mllm_backends import BackendError, MMRequest
from mllm_offload.mllm_backends.openai_compat import OpenAICompatBackend
from mllm_offload.runtime.router import Router, RouterConfig, RouterError
from mllm_offload.runtime.tracelog import TraceLog
from mllm_offload.trace_format import TraceRecord

CLOUD_ONLY = Thresholds(0.0, 0.0, 1.0)
SPEC_ESCALATE = Thresholds(0.0, 1.0, 1.0)


class Fixed:
    def __init__(self, th: Thresholds) -> None:
        self.th, self.name = th, "fixed"

    def thresholds(self, obs):
        return self.th


class BrokenEdge:
    name = "broken-edge"

    async def generate(self, request, *, cancel=None, on_token=None):
        raise BackendError("edge: out of memory")

    async def aclose(self):
        pass


@pytest.fixture(scope="module")
def edge(tiny_model_dir):
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    return HFLocalBackend(tiny_model_dir)


def _req(i: int = 0) -> MMRequest:
    return MMRequest("What is it?", images=[png(i)], max_new_tokens=6)


def _records(d) -> list[dict]:
    recs = [json.loads(x) for f in d.glob("route-*.jsonl") for x in f.read_text().splitlines()[1:]]
    for r in recs:
        TraceRecord.model_validate(r)
    return recs


def _mock(handler) -> OpenAICompatBackend:
    return OpenAICompatBackend("http://cloud.test", model="m", max_retries=0, transport=httpx.MockTransport(handler), timeout_s=30)


def _run(router: Router, reqs):
    async def go():
        try:
            return await asyncio.gather(*(router.generate(r) for r in reqs), return_exceptions=True)
        finally:
            await router.drain()
            router.log.close()
    return asyncio.run(go())


def test_cloud_500_falls_back_to_the_edge(edge, tmp_path):
    cloud = _mock(lambda r: httpx.Response(500, json={"error": {"message": "boom"}}))
    router = Router(edge, cloud, Fixed(CLOUD_ONLY), RouterConfig(), TraceLog(tmp_path))
    (ans,) = _run(router, [_req()])
    assert ans.answered_by == "edge-degraded" and ans.fallback == "cloud_error" and ans.mode.label == "cloud"
    (rec,) = _records(tmp_path)
    assert rec["route"]["degraded"] and "500" in rec["route"]["cloud_error"] and rec["edge"] is not None


def test_cloud_hanging_past_the_timeout_falls_back_to_the_edge(edge, tmp_path):
    async def hang(request):
        await asyncio.sleep(30)
        return httpx.Response(200)

    router = Router(edge, _mock(hang), Fixed(SPEC_ESCALATE), RouterConfig(cloud_timeout_s=0.5), TraceLog(tmp_path))
    t = time.perf_counter()
    answers = _run(router, [_req(i) for i in range(3)])
    assert time.perf_counter() - t < 5
    assert all(a.answered_by == "edge-degraded" and a.fallback == "cloud_timeout" for a in answers)
    assert len(_records(tmp_path)) == 3


@pytest.mark.slow
def test_cloud_node_killed_mid_speculation(edge, tmp_path, tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(cli("serve", "--model", str(tiny_model_dir), "--port", str(port), "--slowdown", "200"), url)
    try:
        cloud = OpenAICompatBackend(url, max_retries=1, backoff_s=0.05, timeout_s=60)
        router = Router(edge, cloud, Fixed(SPEC_ESCALATE), RouterConfig(), TraceLog(tmp_path))

        async def go():
            tasks = [asyncio.create_task(router.generate(MMRequest("What is it?", images=[png(i)], max_new_tokens=64))) for i in range(2)]
            await asyncio.sleep(1.5)  # the cloud is generating (slowly) for both
            proc.kill()
            out = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            await router.drain()
            router.log.close()
            return out

        answers = asyncio.run(go())
    finally:
        stop(proc)
    assert all(not isinstance(a, BaseException) for a in answers), answers
    assert all(a.answered_by == "edge-degraded" for a in answers)
    assert len(_records(tmp_path)) == 2


def test_edge_down_the_cloud_answers(tmp_path, tiny_model_dir):
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    router = Router(BrokenEdge(), HFLocalBackend(tiny_model_dir), Fixed(Thresholds(1.0, 1.0, 0.0)), RouterConfig(), TraceLog(tmp_path))
    (ans,) = _run(router, [_req()])
    assert ans.answered_by == "cloud" and ans.fallback == "edge_error" and ans.mode.label == "edge_first"
    (rec,) = _records(tmp_path)
    assert rec["edge"] is None and rec["cloud"] is not None and "out of memory" in rec["route"]["edge_error"]


def test_both_down_is_one_clear_error_and_logged(tmp_path):
    cloud = _mock(lambda r: httpx.Response(503, json={"error": {"message": "overloaded"}}))
    router = Router(BrokenEdge(), cloud, Fixed(SPEC_ESCALATE), RouterConfig(), TraceLog(tmp_path))
    (err,) = _run(router, [_req()])
    assert isinstance(err, RouterError)
    assert "edge: out of memory" in str(err) and "503" in str(err) and "\n" not in str(err)
    lines = (tmp_path / "errors.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["id"] == err.request_id


def test_shadow_runs_the_missing_side_for_the_log(edge, tmp_path, tiny_model_dir):
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    router = Router(edge, HFLocalBackend(tiny_model_dir), Fixed(Thresholds(1.0, 1.0, 0.0)), RouterConfig(shadow_rate=1.0, seed=0), TraceLog(tmp_path))
    answers = _run(router, [_req(i) for i in range(2)])
    assert all(a.answered_by == "edge" for a in answers)
    recs = _records(tmp_path)
    assert len(recs) == 2 and all(r["cloud"] is not None and r["route"]["shadow"] for r in recs)
    assert all(r["cloud"]["score"] == 1.0 and r["edge"]["score"] == 1.0 for r in recs)  # same weights: the answers agree
