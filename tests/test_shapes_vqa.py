"""Shapes VQA generator: determinism, answers that match the drawn scene, difficulty, files."""

import json

import numpy as np
import pytest

from mllm_offload.errors import UserInputError
from mllm_offload.shapes.vqa import (
    COLORS,
    SHAPES,
    VOCABULARY,
    Obj,
    make_item,
    make_items,
    make_training_items,
    patch_labels,
    write_dataset,
)
from mllm_offload.traces.datasets import load_dataset


def test_same_seed_same_item_and_different_seed_differs():
    a, b = make_item(3, 17), make_item(3, 17)
    assert (a.question, a.answer, a.meta) == (b.question, b.answer, b.meta)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    c = make_item(4, 17)
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(c.images[0]))


def test_difficulty_changes_the_scene():
    items = make_items(0, 240)
    by = {d: [it for it in items if it.difficulty == d] for d in ("easy", "medium", "hard")}
    assert all(len(v) > 40 for v in by.values())
    objs = {d: np.mean([it.meta["objects"] for it in v]) for d, v in by.items()}
    noise = {d: np.mean([it.meta["noise"] for it in v]) for d, v in by.items()}
    assert objs["easy"] < objs["medium"] < objs["hard"]
    assert noise["easy"] == 0.0 < noise["medium"] < noise["hard"]
    # busier scenes are less compressible: hard PNGs are far larger than easy ones
    import io

    def size(it):
        buf = io.BytesIO()
        it.images[0].save(buf, format="PNG")
        return len(buf.getvalue())

    assert np.median([size(i) for i in by["hard"]]) > 10 * np.median([size(i) for i in by["easy"]])


def test_rare_scene_requests_still_find_a_scene():
    """Item 1369 of stream 0 needed more than 50 scene draws for a clearly largest shape."""
    it = make_item(0, 1369)
    assert it.qtype == "largest" and it.difficulty == "hard"
    assert it.answer in ("circle", "square", "triangle", "diamond")


def test_color_answer_is_the_colour_drawn():
    """An easy colour question on a plain background: the answer's RGB is in the image."""
    for i in range(40):
        it = make_item(1, i, difficulty="easy", qtype="color")
        px = np.asarray(it.images[0]).reshape(-1, 3).astype(int)
        target = np.array(COLORS[it.answer])
        assert (np.abs(px - target).sum(1) < 6).sum() > 50, (it.question, it.answer)


def test_questions_use_the_vocabulary_and_answers_fit_the_type():
    for it in make_items(2, 150) + make_training_items(5, 30):
        if it.qtype == "caption":  # training only: every object, left to right
            assert all(w in VOCABULARY for w in it.question.split()), it.question
            words = it.answer.split()
            assert len(words) == 2 * it.meta["objects"] and all(w in VOCABULARY for w in words)
            continue
        assert all(w in VOCABULARY for w in it.question.split()), it.question
        assert it.answer in VOCABULARY
        if it.qtype in ("exists", "left"):
            assert it.answer in ("yes", "no")
        if it.qtype == "count":
            assert it.answer.isdigit()


def test_bad_arguments():
    with pytest.raises(UserInputError, match="difficulty"):
        make_item(0, 0, difficulty="extreme")
    with pytest.raises(UserInputError, match="qtype"):
        make_item(0, 0, qtype="why")


def test_write_dataset_loads_as_jsonl_with_video_and_audio(tmp_path):
    path = write_dataset(tmp_path / "ds", 30, seed=9, video_share=0.3, audio_share=0.3)
    items = load_dataset(f"jsonl:{path}")
    assert len(items) == 30
    assert any(it.video for it in items) and any(it.audio for it in items)
    for it in items:
        images, video, audio = it.load_media()
        assert images or video
        assert it.score(it.answers[0]) == 1.0
        if audio is not None:
            assert audio[1] == 16000 and 0.4 < audio[0].size / 16000 < 1.6
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert {x["meta"]["difficulty"] for x in lines} <= {"easy", "medium", "hard"}
    assert not list((tmp_path / "ds").glob(".*.tmp"))


def test_serve_request_parsing_drops_audio_only_when_the_model_ignores_it():
    pytest.importorskip("fastapi")
    from mllm_offload.mllm_backends.openai_protocol import ChatRequest, to_mm_request

    body = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, {"type": "text", "text": "is there a red square ?"}]}]})
    with pytest.raises(UserInputError, match="unsupported modality"):
        to_mm_request(body, 8)
    req = to_mm_request(body, 8, drop_unsupported=True)
    assert req.prompt == "is there a red square ?" and req.audio is None


def test_patch_labels_name_the_object_under_each_patch():
    big = Obj("square", "blue", 112.0, 112.0, 60.0)  # covers x, y in [61, 163]
    over = Obj("circle", "red", 112.0, 112.0, 20.0)  # drawn later, on top of the square's centre
    colour, shape = patch_labels([big, over], grid=7)  # 32-pixel patches
    grid = colour.reshape(7, 7)
    assert grid[0, 0] == 0 and shape.reshape(7, 7)[6, 6] == 0  # corners: background
    assert grid[3, 3] == list(COLORS).index("red") + 1 and shape.reshape(7, 7)[3, 3] == SHAPES.index("circle") + 1
    assert grid[2, 3] == list(COLORS).index("blue") + 1 and shape.reshape(7, 7)[2, 3] == SHAPES.index("square") + 1
    # and on real scenes: a patch fully inside an object shows that object's colour in the picture
    checked = 0
    for i in range(30):
        it = make_item(6, i, difficulty="easy")
        if not it.images:
            continue
        colour, _ = patch_labels(it.objects, grid=14, sub=8)
        px = np.asarray(it.images[0]).astype(int)
        for k in np.flatnonzero(colour):
            r, c = divmod(int(k), 14)
            block = px[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].reshape(-1, 3)
            want = np.array(COLORS[list(COLORS)[colour[k] - 1]])
            if (np.abs(block - want).sum(1) < 6).all():
                checked += 1
            else:  # a partly covered patch shows the colour in part of it
                assert (np.abs(block - want).sum(1) < 6).any(), (i, k)
    assert checked > 20
