"""Shapes VLM pair: sizes, deterministic training, and loading through the real backend path."""

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from mllm_offload.errors import UserInputError
from mllm_offload.shapes.models import (
    PRESETS,
    answer_prior_accuracy,
    build_shapes_vlm,
    train_shapes_model,
)
from mllm_offload.shapes.vqa import QUESTION_TYPES, ShapesItem, make_items

pytestmark = pytest.mark.slow  # trains the shapes models


def test_cloud_has_10_to_30_times_the_edge_parameters_and_edge_is_under_1m():
    n = {k: sum(p.numel() for p in build_shapes_vlm(spec)[0].parameters()) for k, spec in PRESETS.items()}
    assert n["edge"] < 1_000_000
    assert 10 <= n["cloud"] / n["edge"] <= 30


def test_training_is_deterministic_and_the_checkpoint_loads_like_a_real_one(tmp_path):
    from safetensors.numpy import load_file

    from mllm_offload.mllm_backends.base import MMRequest
    from mllm_offload.mllm_backends.hf_local import HFLocalBackend

    ev = make_items(0, 6)
    a = train_shapes_model("edge", tmp_path / "a", seed=3, train_scenes=6, steps=3, vision_steps=2, eval_items=ev, progress=False)
    train_shapes_model("edge", tmp_path / "b", seed=3, train_scenes=6, steps=3, vision_steps=2, progress=False)
    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert set(a.accuracy) >= {"all"} and 0.0 <= a.accuracy["all"] <= 1.0
    assert set(a.accuracy_by_qtype) - {"all"} <= set(QUESTION_TYPES) and a.accuracy_by_qtype["all"] == a.accuracy["all"]
    assert set(a.prior) == set(a.accuracy) and set(a.prior_by_qtype) == set(a.accuracy_by_qtype)
    assert a.steps == 3 and a.vision_steps == 2 and a.parameters > 0

    be = HFLocalBackend(tmp_path / "a", unsupported="ignore")
    try:
        import io

        buf = io.BytesIO()
        ev[0].images[0].save(buf, format="PNG") if ev[0].images else ev[0].frames[0].save(buf, format="PNG")
        g = asyncio.run(be.generate(MMRequest(prompt=ev[0].question, images=[buf.getvalue()], max_new_tokens=3)))
    finally:
        be.close()
    assert g.out_tokens >= 1 and g.confidence is not None and 0.0 <= g.confidence <= 1.0
    assert all(np.isfinite(g.token_logprobs))


def test_answer_prior_is_the_majority_training_answer_per_question_text():
    def item(q, a, qtype="exists", difficulty="easy"):
        return ShapesItem(id=q + a, question=q, answer=a, qtype=qtype, difficulty=difficulty)

    q1, q2 = "is there a red square ?", "how many circles are there ?"
    train = [item(q1, "no"), item(q1, "no"), item(q1, "yes"), item(q2, "1", "count"), item("describe the shapes ?", "red circle", "caption")]
    held = [item(q1, "no"), item(q1, "yes", difficulty="hard"), item(q2, "1", "count", "hard"), item(q2, "2", "count"),
            item("what shape is the largest ?", "circle", "largest")]  # never seen in training: wrong
    assert answer_prior_accuracy(train, held) == {"all": 0.4, "easy": pytest.approx(1 / 3), "hard": 0.5}
    assert answer_prior_accuracy(train, held, by="qtype") == {"all": 0.4, "exists": 0.5, "count": 0.5, "largest": 0.0}


def test_vision_pretraining_moves_the_tower_which_then_stays_frozen(tmp_path):
    """The pretraining stage changes the tower; the model stage trains only projector and decoder."""
    from safetensors.numpy import load_file

    def weights(name, **kw):
        train_shapes_model("edge", tmp_path / name, seed=1, train_scenes=8, progress=False, **kw)
        return load_file(str(tmp_path / name / "model.safetensors"))

    build_shapes_vlm(PRESETS["edge"], seed=1)[0].save_pretrained(tmp_path / "fresh")
    fresh = load_file(str(tmp_path / "fresh" / "model.safetensors"))
    a = weights("a", steps=1, vision_steps=4)
    b = weights("b", steps=5, vision_steps=4)
    c = weights("c", steps=1, vision_steps=0)
    tower = [k for k in a if "vision_tower" in k and "post_layernorm" not in k]
    rest = [k for k in a if "vision_tower" not in k]
    assert tower and rest
    assert all(np.array_equal(a[k], b[k]) for k in tower)  # frozen while the model trains
    assert not all(np.array_equal(a[k], fresh[k]) for k in tower)  # but pretrained before
    assert not all(np.array_equal(a[k], b[k]) for k in rest)
    assert not all(np.array_equal(c[k], fresh[k]) for k in tower)  # without the stage, trained end to end


def test_cached_tower_features_give_the_full_forward_loss_and_gradients():
    """With the tower frozen, the model stage's cached features are exactly Llava's own forward."""
    import torch

    from mllm_offload.shapes.models import _batch, _encode, _question_loss, _tower_features, training_items

    model, proc = build_shapes_vlm(PRESETS["edge"], seed=4)
    model.model.vision_tower.requires_grad_(False)
    items = training_items(5, 40)
    rows = _encode(items, proc, with_answer=True)
    feats = _tower_features(model, rows)
    assert len(feats) == len(rows) and all(f.shape[0] == r["pixels"].shape[0] for f, r in zip(feats, rows))
    scene = [i for i, r in enumerate(rows) if r["item"].images is rows[0]["item"].images]
    assert len(scene) > 1 and all(feats[i] is feats[0] for i in scene)  # computed once per scene
    for n_pictures in {int(r["pixels"].shape[0]) for r in rows}:  # single images and video frames
        idx = [i for i, r in enumerate(rows) if r["pixels"].shape[0] == n_pictures][:5]
        batch = _batch([rows[i] for i in idx], proc.tokenizer.pad_token_id)
        grads = []
        for f in (None, torch.cat([feats[i] for i in idx])):
            model.zero_grad()
            loss = _question_loss(model, batch, f)
            loss.backward()
            grads.append((loss.item(), model.model.multi_modal_projector.linear_1.weight.grad.clone()))
        assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
        assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_question_loss_weighs_each_question_once_however_long_its_answer():
    import torch

    from mllm_offload.shapes.models import _batch, _encode, _question_loss, training_items

    model, proc = build_shapes_vlm(PRESETS["edge"], seed=4)
    rows = _encode(training_items(5, 4), proc, with_answer=True)
    short = next(r for r in rows if r["item"].qtype != "caption" and r["pixels"].shape[0] == 1)
    long = next(r for r in rows if r["item"].qtype == "caption" and r["pixels"].shape[0] == 1 and len(r["ids"]) - r["n_prompt"] > 3)
    with torch.no_grad():
        each = [_question_loss(model, _batch([r], proc.tokenizer.pad_token_id)).item() for r in (short, long)]
        both = _batch([short, long], proc.tokenizer.pad_token_id)
        ours = float(_question_loss(model, both))
        hf = float(model(**both).loss)  # averages over tokens: the caption weighs more
    assert ours == pytest.approx(sum(each) / 2, rel=1e-5)
    assert hf != pytest.approx(ours, rel=1e-3)


def test_vision_pretraining_needs_single_image_scenes(tmp_path):
    from mllm_offload.shapes.vqa import make_training_items

    videos = [it for it in make_training_items(2, 60, video_share=1.0)]
    with pytest.raises(UserInputError, match="no single-image scene"):
        train_shapes_model("edge", tmp_path / "v", train_items=videos, steps=1, vision_steps=1, progress=False)
    assert not (tmp_path / "v").exists()


def test_unknown_preset():
    with pytest.raises(UserInputError, match="preset"):
        train_shapes_model("server", "/nonexistent", steps=1)
    with pytest.raises(UserInputError, match="steps"):
        train_shapes_model("edge", "/nonexistent", steps=0)


@pytest.mark.parametrize("argv, message", [
    (["shapes", "generate", "--out", "{tmp}/d", "--n", "3", "--video-share", "1.5"], "--video-share: must be in [0, 1]"),
    (["shapes", "train", "--out", "{tmp}/m", "--which", "edge,server"], "--which: unknown preset 'server'"),
    (["shapes", "train", "--out", "{tmp}/m", "--which", "edge,edge"], "--which: a preset is named twice"),
    (["shapes", "train", "--out", "{tmp}/m", "--eval", "-1"], "--eval: must be >= 0"),
    (["report", "--trace", "{tmp}/missing.jsonl"], "missing.jsonl"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    from mllm_offload.cli import main

    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists()


def test_cli_negative_vision_steps_is_an_argparse_error(tmp_path, capsys):
    from mllm_offload.cli import main

    with pytest.raises(SystemExit) as e:
        main(["shapes", "train", "--out", str(tmp_path / "m"), "--cloud-vision-steps", "-3"])
    assert e.value.code == 2
    assert "--cloud-vision-steps: must be >= 0, got -3" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_cli_trains_both_presets_alone_or_side_by_side_with_the_same_weights(tmp_path, capsys):
    """``--jobs 2`` trains the presets in two worker processes; with the same threads the
    weights are the ones ``--jobs 1`` (one process, scenes rendered once) writes."""
    from safetensors.numpy import load_file

    from mllm_offload.cli import main

    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main(["shapes", "train", "--out", str(out), "--scenes", "4", "--edge-steps", "2", "--cloud-steps", "1",
                     "--edge-vision-steps", "2", "--cloud-vision-steps", "1", "--eval", "4", "--jobs", jobs, "--threads", "1", "--quiet"]) == 0
        text = capsys.readouterr().out
        assert "accuracy on 4 held-out items" in text and f"({jobs} job" in text
        assert (out / "edge" / "config.json").is_file() and (out / "cloud" / "config.json").is_file()
        report = json.loads((out / "train_report.json").read_text())
        assert report["jobs"] == int(jobs) and set(report["models"]) == {"edge", "cloud"}
        assert report["models"]["cloud"]["vision_steps"] == 1
        assert "prior (question-blind majority answer)" in text and "largest" in text
        assert set(report["prior"]) == {"accuracy", "accuracy_by_qtype"}
        assert report["prior"]["accuracy"]["all"] == pytest.approx(report["prior"]["accuracy_by_qtype"]["all"])
    for preset in ("edge", "cloud"):
        a, b = (load_file(str(tmp_path / j / preset / "model.safetensors")) for j in ("1", "2"))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
