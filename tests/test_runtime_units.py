"""Estimators (same measurements -> same observation as the simulator), trace log, datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mllm_offload.observation import RunningEstimates, build_observation
from mllm_offload.runtime.estimators import RuntimeEstimators
from mllm_offload.trace_format import load_trace
from mllm_offload.traces.datasets import extract_option, load_dataset, normalize_answer, score_answer, vqa_accuracy


class _Recording(RunningEstimates):
    """The simulator's estimates, also logging every measurement and queue count fed to them."""

    __slots__ = ("calls",)

    def __init__(self, *a):
        super().__init__(*a)
        self.calls = []

    def upload(self, mbps):
        self.calls.append(("upload", mbps))
        super().upload(mbps)

    def cloud_response(self, response_s, rtt_s=None):
        self.calls.append(("cloud", response_s, rtt_s))
        super().cloud_response(response_s, rtt_s)

    def edge_done(self, service_s):
        self.calls.append(("edge", service_s))
        super().edge_done(service_s)

    def state(self, uplink_queue_bytes, edge_queue_n, cloud_inflight_n):
        self.calls.append(("state", uplink_queue_bytes, edge_queue_n, cloud_inflight_n))
        return super().state(uplink_queue_bytes, edge_queue_n, cloud_inflight_n)


def test_runtime_estimators_build_the_simulators_observations():
    """The simulator's measurements, replayed through the runtime estimators' own API (uploads as
    bytes over the time to the response headers, RTTs as TCP handshakes, cloud and edge service
    times, queue counters), give the observation vectors the environment returned."""
    from mllm_offload.config import EpisodeConfig
    from mllm_offload.envs import OffloadEnv

    env = OffloadEnv(profile="mobile-3g", episode=EpisodeConfig(n_requests=300))
    env.reset(seed=3)
    cfg = env.system_cfg
    rec = _Recording(cfg.bw_window, cfg.bw_prior_mbps, cfg.rtt_s, cfg.latency_ema)
    env.sim.estimates = rec  # no measurement exists before the first request
    rt = RuntimeEstimators.from_config(cfg)
    rng = np.random.default_rng(0)
    kinds = set()
    for i in range(env.n_requests - 1):
        obs, *_ = env.step(rng.random(3).astype(np.float32))
        for call in rec.calls:
            kinds.add(call[0])
            if call[0] == "upload":  # 1 MB whose response headers came 1/rate s + one RTT later
                n = 1e6
                rt.cloud_enter(n)
                rt.cloud_exit(n, False, None, {"streamed": True, "bytes_sent": n, "headers_s": n * 8e-6 / call[1] + rt.est.rtt_s}, completed=False)
            elif call[0] == "cloud":
                rt.cloud_enter(0)
                rt.cloud_exit(0, True, call[1], {"connect_s": call[2]}, completed=True)
            elif call[0] == "edge":
                rt.edge_enter()
                rt.edge_exit(call[1])
            else:
                _, up, en, cn = call
                rt.uplink_queue_bytes, rt.edge_queue_n, rt.cloud_inflight_n = up, en, cn
        rec.calls.clear()
        np.testing.assert_allclose(build_observation(env._features[i + 1], rt.state(), env.episode_tradeoff), obs, rtol=1e-5, atol=1e-6)
    assert {"upload", "cloud", "edge", "state"} <= kinds


def test_trace_log_rotates_and_the_folder_is_one_trace(tmp_path):
    from mllm_offload.runtime.tracelog import TraceLog

    log = TraceLog(tmp_path / "logs", {"policy": "msao"}, max_bytes=4096)
    for i in range(40):
        both = i % 4 == 0  # both sides ran: pseudo-labels (cloud = reference)
        log.write({
            "id": f"r{i}", "arrival_s": float(40 - i), "modalities": {"text": {"tokens": 5}}, "payload_bytes": {"text": 20},
            "mas": {"score": 0.5},
            "edge": {"latency_s": 0.2, "ttft_s": 0.1, "out_tokens": 3, "confidence": 0.9, "score": float(i % 8 == 0) if both else None} if i % 4 < 2 else None,
            "cloud": {"latency_s": 0.4, "ttft_s": 0.2, "out_tokens": 3, "score": 1.0 if both else None} if i % 4 != 1 else None,
            "route": {"mode": "cloud", "observation": list(range(17))},
        })
    log.close()
    assert len(log.files) > 1
    from mllm_offload.trace_format import TraceHeader, TraceRecord

    for f in log.files:  # every file: a header, then valid records
        lines = f.read_text().splitlines()
        assert TraceHeader.model_validate_json(lines[0]).meta["ordered"] is False
        assert all(TraceRecord.model_validate_json(x) for x in lines[1:]) and len(lines) > 1
    tr = load_trace(tmp_path / "logs")
    assert len(tr) == 40 and np.all(np.diff(tr.arrival_s) >= 0)  # sorted by arrival on load
    assert tr.meta["imputed"]["edge_confidence"] == 20 and tr.meta["imputed"]["edge_score"] == 30
    assert np.all(tr.edge_confidence == 0.9) and np.all(tr.cloud_score == 1.0)
    assert tr.edge_score[tr.ids.index("r0")] == 1.0 and tr.edge_score[tr.ids.index("r4")] == 0.0
    assert tr.edge_score[tr.ids.index("r1")] == pytest.approx(0.5)  # unknown: the mean of the observed
    with pytest.raises(ValueError, match="mas"):
        log2 = TraceLog(tmp_path / "l2")
        log2.write({"id": "x", "arrival_s": 0.0, "modalities": {"text": {"tokens": 1}}, "payload_bytes": {}, "mas": {}, "edge": None, "cloud": None})


def test_a_column_never_observed_is_an_error(tmp_path):
    from mllm_offload.errors import UserInputError
    from mllm_offload.runtime.tracelog import TraceLog

    log = TraceLog(tmp_path)
    log.write({"id": "a", "arrival_s": 0.0, "modalities": {"text": {"tokens": 1}}, "payload_bytes": {"text": 3}, "mas": {"score": 0.1},
               "edge": {"latency_s": 0.2, "ttft_s": 0.1, "out_tokens": 3, "confidence": 0.9, "score": None}, "cloud": None})
    log.close()
    with pytest.raises(UserInputError, match=r"cloud\.latency_s: no record observed it.*shadow-rate"):
        load_trace(tmp_path)


def test_vqa_normalisation_and_accuracy():
    assert normalize_answer("Two dogs.") == "2 dogs"
    assert normalize_answer("  The Cat ") == "cat"
    assert normalize_answer("dont") == "don't"
    assert normalize_answer("3.5") == "3.5"
    assert vqa_accuracy("two", ["2", "2", "two", "3"]) == 1.0
    assert vqa_accuracy("yes", ["yes", "yes"] + ["no"] * 8) == pytest.approx(2 / 3)
    assert vqa_accuracy("maybe", ["yes"] * 10) == 0.0


def test_option_extraction():
    opts = {"A": "a cat", "B": "a dog", "C": "a red bird"}
    assert extract_option("B", opts) == "B"
    assert extract_option("(C) a red bird", opts) == "C"
    assert extract_option("The answer is A.", opts) == "A"
    assert extract_option("I think it is a dog", opts) == "B"
    assert extract_option("no idea", opts) is None
    assert score_answer("B. dog", ["B"], "option", opts) == 1.0
    assert score_answer("A", ["B"], "option", opts) == 0.0


def test_dataset_loaders_fail_with_one_line(tmp_path):
    from mllm_offload.errors import UserInputError

    bad = tmp_path / "d.jsonl"
    bad.write_text(json.dumps({"question": "q?", "image": "x.png"}) + "\n")
    with pytest.raises(UserInputError, match=r"d.jsonl:1: answers"):
        load_dataset(f"jsonl:{bad}")
    with pytest.raises(UserInputError, match="expected vqav2"):
        load_dataset("coco:foo")
    with pytest.raises(UserInputError, match="vqav2 takes"):
        load_dataset("vqav2:a.json,b.json")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("index\tquestion\tA\tB\tanswer\timage\n1\tq\tx\ty\tC\tAAAA\n")
    with pytest.raises(UserInputError, match=r"m.tsv:2: answer"):
        load_dataset(f"mmbench:{tsv}")
