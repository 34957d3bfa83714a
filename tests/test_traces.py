import json

import numpy as np
import pytest
from conftest import auroc

from mllm_offload.errors import UserInputError
from mllm_offload.trace_format import load_trace
from mllm_offload.traces.synth import PROFILES, generate, get_profile, qwen2vl_image_tokens


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "t.jsonl"
    generate("mobile-3g", 30, seed=3, with_records=True).write_jsonl(path)
    return path


def test_round_trip_plain_and_gzip(tmp_path):
    tr = generate("mobile-3g", 200, seed=1, with_records=True)
    for name in ("a.jsonl", "a.jsonl.gz"):
        tr.write_jsonl(tmp_path / name)
        back = load_trace(tmp_path / name)
        assert back.ids == tr.ids
        for col in ("arrival_s", "payload_bytes", "input_tokens", "edge_latency_s", "edge_confidence", "cloud_score"):
            assert np.allclose(getattr(back, col), getattr(tr, col)), col
        assert np.allclose(back.mas_score, tr.mas_score, atol=1e-6)
        assert back.has_video.any() and back.has_audio.any()
    assert back.meta["source"] == "synthetic:mobile-3g"


def _rewrite(path, line_no, fn):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = fn(lines[line_no - 1])
    path.write_text("\n".join(lines) + "\n")


def _edit(field_fn):
    def f(line):
        d = json.loads(line)
        field_fn(d)
        return json.dumps(d)
    return f


@pytest.mark.parametrize("line_no, edit, msg", [
    (3, lambda line: line[:-5], ":3: invalid JSON"),
    (4, _edit(lambda d: d.pop("edge")), ":4: edge: Field required"),
    (5, _edit(lambda d: d["edge"].__setitem__("latency_s", -1.0)), ":5: edge.latency_s: Input should be greater than or equal to 0"),
    (2, _edit(lambda d: d["mas"].pop("score")), ":2: mas: Value error, the joint MAS 'score' is required"),
    (6, _edit(lambda d: d["cloud"].__setitem__("score", 1.5)), ":6: cloud.score"),
    (1, _edit(lambda d: d.__setitem__("version", 99)), ":1: header: version"),
    (7, _edit(lambda d: d.__setitem__("arrival_s", 0.0)), ":7: arrival_s: 0.0 is before"),
    (8, _edit(lambda d: d.__setitem__("surprise", 1)), ":8: surprise: Extra inputs are not permitted"),
    (9, _edit(lambda d: d.__setitem__("cloud_subsets", {"text+image": d["cloud"]})), ":9: cloud_subsets"),
])
def test_bad_lines_are_reported_with_file_line_field(trace_file, line_no, edit, msg):
    _rewrite(trace_file, line_no, edit)
    with pytest.raises(UserInputError) as e:
        load_trace(trace_file)
    assert msg in str(e.value) and str(trace_file) in str(e.value)
    assert "\n" not in str(e.value)


def test_optional_cloud_subsets_accepted(trace_file):
    _rewrite(trace_file, 2, _edit(lambda d: d.__setitem__("cloud_subsets", {"image+text": d["cloud"], "text": d["cloud"]})))
    assert len(load_trace(trace_file)) == 30


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserInputError, match="cannot read"):
        load_trace(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserInputError, match=":1: header: missing"):
        load_trace(tmp_path / "e.jsonl")


def test_qwen2vl_tokens():
    assert qwen2vl_image_tokens(640, 480) == 391  # 644x476 -> 23x17
    assert qwen2vl_image_tokens(28, 28) == 4  # raised to min_pixels = 3136
    assert qwen2vl_image_tokens(8000, 8000) <= 16384


@pytest.mark.parametrize("name", list(PROFILES))
def test_profile_calibration(name):
    p = get_profile(name)
    assert p.sources, "every profile cites its sources"
    tr = generate(p, 20_000, seed=0)
    assert tr.edge_score.mean() == pytest.approx(p.edge_accuracy, abs=0.015)
    assert tr.cloud_score.mean() == pytest.approx(p.cloud_accuracy, abs=0.015)
    assert auroc(tr.edge_confidence, tr.edge_score) == pytest.approx(p.confidence_auroc, abs=0.02)
    d = tr.extra["difficulty"]
    assert np.corrcoef(tr.mas_score, d)[0, 1] > 0.3  # MAS tracks difficulty
    assert np.corrcoef(tr.mas["spatial"][tr.payload_bytes > 0], tr.payload_bytes[tr.payload_bytes > 0])[0, 1] > 0.1
    assert len(tr) / tr.arrival_s[-1] == pytest.approx(p.arrival_rate_rps, rel=0.05)
    assert np.all(tr.edge_ttft_s <= tr.edge_latency_s)


def test_generation_is_deterministic_and_errors():
    a, b = generate("msao-paper", 50, seed=7), generate("msao-paper", 50, seed=7)
    assert np.array_equal(a.edge_latency_s, b.edge_latency_s)
    assert not np.array_equal(a.edge_latency_s, generate("msao-paper", 50, seed=8).edge_latency_s)
    with pytest.raises(UserInputError, match="unknown profile 'x'"):
        get_profile("x")
