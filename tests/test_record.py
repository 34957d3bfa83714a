"""`mllm-offload record` on VQAv2- and MMBench-format fixtures: valid traces that train and evaluate accept."""

from __future__ import annotations

import base64
import json

import pytest

pytest.importorskip("transformers")

from routing_helpers import png

from mllm_offload.cli import main
from mllm_offload.trace_format import load_trace


@pytest.fixture(scope="module")
def vqav2(tmp_path_factory):
    d = tmp_path_factory.mktemp("vqa")
    (d / "images").mkdir()
    questions, annotations = [], []
    for i in range(14):
        iid = 1000 + i
        if i != 5:  # image 1005 is missing: that item must be skipped, not fatal
            (d / "images" / f"COCO_val2014_{iid:012d}.jpg").write_bytes(png(i, (24 + i, 32)))
        questions.append({"question_id": i, "image_id": iid, "question": "What color is it?"})
        annotations.append({"question_id": i, "image_id": iid, "answers": [{"answer": a} for a in ["red"] * 6 + ["blue"] * 4]})
    (d / "q.json").write_text(json.dumps({"questions": questions}))
    (d / "a.json").write_text(json.dumps({"annotations": annotations}))
    return f"vqav2:{d / 'q.json'},{d / 'a.json'},{d / 'images'}"


@pytest.fixture(scope="module")
def mmbench(tmp_path_factory):
    d = tmp_path_factory.mktemp("mmb")
    rows = ["index\tquestion\thint\tA\tB\tC\tD\tanswer\timage\tcategory"]
    for i in range(6):
        img = base64.b64encode(png(50 + i)).decode() if i != 2 else "not-base64!!"
        rows.append(f"{i}\tWhich shape is shown?\tnan\tcircle\tsquare\ttriangle\tnan\t{'ABC'[i % 3]}\t{img}\tshapes")
    (d / "mmb.tsv").write_text("\n".join(rows) + "\n")
    return f"mmbench:{d / 'mmb.tsv'}"


def _record(tiny_model_dir, dataset, out, capsys):
    rc = main(["record", "--edge", str(tiny_model_dir), "--cloud", str(tiny_model_dir), "--dataset", dataset, "--out", str(out),
               "--max-new-tokens", "4", "--quiet", "--rate", "2"])
    return rc, capsys.readouterr()


@pytest.mark.slow
def test_record_vqav2_skips_bad_items_resumes_and_trains(tiny_model_dir, vqav2, tmp_path, capsys):
    out = tmp_path / "vqa.jsonl.gz"
    rc, cap = _record(tiny_model_dir, vqav2, out, capsys)
    assert rc == 0, cap.err
    assert "item 5: skipped" in cap.err and "13 new records" in cap.out
    tr = load_trace(out)
    assert len(tr) == 13 and "imputed" not in tr.meta
    assert tr.meta["source"] == "record" and tr.meta["dataset"] == vqav2 and tr.meta["hardware"]["cpus"] >= 1
    assert tr.meta["edge_model"] == tiny_model_dir.name
    assert set(tr.edge_score.tolist()) <= {0.0, 1.0}  # red: 6/3 -> 1, blue: 4/3 -> 1, anything else 0
    assert (tr.edge_confidence > 0).all() and (tr.cloud_latency_s > 0).all() and (tr.mas_score > 0).all()
    assert tr.records[0].modalities["image"].width >= 24
    # resumable: nothing left to do but the broken item
    rc, cap = _record(tiny_model_dir, vqav2, out, capsys)
    assert rc == 0 and "0 new records, 13 resumed, 1 skipped" in cap.out
    assert len(load_trace(out)) == 13
    # the recorded trace trains and evaluates
    assert main(["evaluate", "--trace", str(out), "--split", "all", "--requests", "10", "--episode-len", "5", "--policies", "edge,cloud,msao",
                 "--no-throughput", "--quiet"]) == 0
    assert main(["train", "--trace", str(out), "--timesteps", "128", "--n-envs", "1", "--episode-len", "4", "--no-eval", "--quiet",
                 "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "policy" / "policy.json").exists()


def test_record_mmbench(tiny_model_dir, mmbench, tmp_path, capsys):
    out = tmp_path / "mmb.jsonl"
    rc, cap = _record(tiny_model_dir, mmbench, out, capsys)
    assert rc == 0, cap.err
    assert "item 2: skipped" in cap.err
    tr = load_trace(out)
    assert len(tr) == 5 and set(tr.edge_score) <= {0.0, 1.0}
    assert not (tmp_path / "mmb.jsonl.partial").exists()


def test_record_bad_dataset_is_one_line(tiny_model_dir, tmp_path, capsys):
    rc = main(["record", "--edge", str(tiny_model_dir), "--cloud", str(tiny_model_dir), "--dataset", f"jsonl:{tmp_path / 'none.jsonl'}",
               "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "none.jsonl: cannot read" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()
