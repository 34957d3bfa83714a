"""MAS behaves as its name says, returns the trace schema's named features, and rejects bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mllm_offload.errors import UserInputError
from mllm_offload.mas import activation_features, audio_features, compute_mas, spatial_features, temporal_features, text_features
from mllm_offload.observation import MAS_FEATURES

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw


def _scene(n_shapes: int, noise: float, seed: int = 0, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, (235, 235, 235))
    d = ImageDraw.Draw(im)
    for _ in range(n_shapes):
        x, y = rng.integers(0, size[0] - 30), rng.integers(0, size[1] - 30)
        r = int(rng.integers(8, 30))
        d.ellipse((x, y, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    a = np.asarray(im, dtype=np.float32) + rng.normal(0, noise, (size[1], size[0], 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def test_flat_image_is_sparser_than_a_cluttered_one():
    flat = spatial_features(_scene(0, 0.0))
    few = spatial_features(_scene(2, 0.0))
    clutter = spatial_features(_scene(40, 12.0))
    assert flat["spatial"] < few["spatial"] < clutter["spatial"]
    assert flat["patch_active"] == 0.0 and clutter["patch_active"] > 0.8
    # same answer whichever form the image comes in
    buf = io.BytesIO()
    _scene(40, 12.0).save(buf, "PNG")
    assert spatial_features(buf.getvalue())["spatial"] == pytest.approx(clutter["spatial"], abs=0.02)
    assert spatial_features(np.asarray(_scene(40, 12.0)))["spatial"] == pytest.approx(clutter["spatial"], abs=0.05)


def test_repeated_frames_are_more_redundant_than_distinct_ones():
    still = [_scene(10, 2.0, seed=1)] * 8
    moving = [_scene(10, 2.0, seed=s) for s in range(8)]
    a, b = temporal_features(still), temporal_features(moving)
    assert a["dup_share"] == 1.0 and b["dup_share"] < 0.5
    assert a["temporal"] < b["temporal"]
    assert temporal_features(still[:1])["temporal"] == 0.0


def test_silence_is_sparser_than_speech_like_noise():
    sr = 16_000
    t = np.arange(3 * sr) / sr
    rng = np.random.default_rng(0)
    silence = rng.normal(0, 1e-4, t.size)  # -80 dBFS hiss
    speech = rng.normal(0, 0.2, t.size) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)) ** 2
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    s, v, tn = audio_features(silence, sr), audio_features(speech, sr), audio_features(tone, sr)
    assert s["audio"] == 0.0 and v["audio"] > 0.5
    assert tn["spectral_flatness"] < v["spectral_flatness"]


def test_text_cues_order_question_types():
    yes_no = text_features("Is there a red circle?")["text"]
    colour = text_features("What colour is the square?")["text"]
    count = text_features("How many triangles are in the picture?")["text"]
    why = text_features("Explain why the blue shape is left of the green one.")["text"]
    assert yes_no < colour < count < why


def test_activation_sparsity_separates_sparse_from_dense_activations():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(17, 64))
    sparse = np.zeros((17, 64))
    sparse[np.arange(17), rng.integers(0, 64, 17)] = 5.0
    sparse[:8] = 0.0  # half the patches like the mean one
    assert activation_features([sparse])["act_density"] < activation_features([dense])["act_density"]


def test_compute_mas_gives_the_schema_names_in_unit_range():
    sr = 8000
    m = compute_mas("How many circles are left of the square?", images=[_scene(5, 3.0)],
                    video=[_scene(5, 3.0, seed=s) for s in range(4)], audio=np.zeros(sr), sample_rate=sr)
    assert set(MAS_FEATURES) <= set(m)
    assert all(0.0 <= v <= 1.0 for v in m.values())
    text_only = compute_mas("hi")
    assert text_only["spatial"] == text_only["temporal"] == text_only["audio"] == 0.0
    assert text_only["score"] == pytest.approx(text_only["text"])
    # an easy request (flat image, yes/no) scores below a hard one (clutter, counting)
    easy = compute_mas("Is there a circle?", images=[_scene(1, 0.0)])
    hard = compute_mas("How many circles are left of the largest square?", images=[_scene(40, 12.0)])
    assert easy["score"] < hard["score"]
    from mllm_offload.trace_format import TraceRecord

    out = {"latency_s": 1.0, "ttft_s": 0.5, "out_tokens": 3, "score": 1.0}
    rec = TraceRecord(id="r1", arrival_s=0.0, modalities={"text": {"tokens": 9}, "image": {"tokens": 16}},
                      payload_bytes={"text": 40, "image": 5000}, mas=m, edge={**out, "confidence": 0.7}, cloud=out)
    assert rec.mas["score"] == m["score"]


def test_bad_inputs_raise_one_line():
    with pytest.raises(UserInputError, match="not a readable image"):
        compute_mas("q", images=[b"\x89PNG\r\n\x1a\n truncated"])
    with pytest.raises(UserInputError, match="no such image file"):
        compute_mas("q", images=["/nonexistent/x.jpg"])
    with pytest.raises(UserInputError, match="sample_rate"):
        audio_features(np.zeros(10), 0)
    with pytest.raises(UserInputError, match="finite"):
        audio_features(np.array([0.0, np.nan]), 8000)
