"""Local transformers backend on a tiny model built offline and loaded through the Auto* path."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from mllm_offload.errors import UserInputError
from mllm_offload.mas import compute_mas
from mllm_offload.mllm_backends import AudioClip, CancelToken, MMRequest, confidence_from_logprobs
from mllm_offload.mllm_backends.hf_local import HFLocalBackend


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = HFLocalBackend(tiny_model_dir, vision_layer=0)
    yield b
    b.close()


def _img(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((40, 56, 3)) * 255).astype(np.uint8)


def test_tiny_model_loads_through_auto_classes(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}],
                                    add_generation_prompt=True).endswith("ASSISTANT:")
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_confidence_comes_from_the_generation_scores(backend):
    import torch

    req = MMRequest("what colour is the circle?", images=[_img()], max_new_tokens=6)
    g1 = asyncio.run(backend.generate(req))
    g2 = asyncio.run(backend.generate(req))
    g3 = asyncio.run(backend.generate(MMRequest("how many squares are there?", images=[_img()], max_new_tokens=6)))
    assert g1.out_tokens == 6 and len(g1.token_logprobs) == 6 and g1.finish_reason == "length"
    assert g1.confidence == g2.confidence and g1.text == g2.text
    assert g3.confidence != g1.confidence
    assert g1.confidence == pytest.approx(confidence_from_logprobs(g1.token_logprobs, "quantile", 0.1))
    assert 0.0 <= g1.confidence <= 1.0 and 0 < g1.ttft_s <= g1.latency_s
    # the log-probabilities are the model's own: re-score prompt + answer with one forward pass
    inputs = backend._inputs(req)
    flat = g1.token_ids
    ids = torch.cat([inputs["input_ids"], torch.tensor([flat])], dim=1)
    with torch.inference_mode():
        logits = backend.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=inputs["pixel_values"]).logits[0]
    n = inputs["input_ids"].shape[1]
    lsm = torch.log_softmax(logits[n - 1: n - 1 + len(flat)].float(), dim=-1)
    np.testing.assert_allclose(g1.token_logprobs, [float(lsm[i, t]) for i, t in enumerate(flat)], atol=1e-4)
    assert g1.in_tokens == inputs["input_ids"].shape[1]


def test_streaming_tokens_and_cancellation(backend):
    events = []

    async def run():
        g = await backend.generate(MMRequest("hello", max_new_tokens=5, top_logprobs=2), on_token=events.append)
        tok = CancelToken()
        first = asyncio.Event()  # cancel once it is generating (a fixed sleep could cancel before it starts)
        task = asyncio.create_task(backend.generate(MMRequest("go on", max_new_tokens=4000), cancel=tok,
                                                    on_token=lambda _e: first.set()))
        await asyncio.wait_for(first.wait(), 20)
        tok.cancel()
        return g, await asyncio.wait_for(task, 10)

    g, c = asyncio.run(run())
    assert [e.logprob for e in events if e.token] == g.token_logprobs
    assert "".join(e.text for e in events) == g.text
    assert all(len(t) == 2 for t in g.top_logprobs)
    assert c.cancelled and c.finish_reason == "cancelled" and 0 < c.out_tokens < 4000


def test_vision_hidden_states_feed_mas(backend):
    g = asyncio.run(backend.generate(MMRequest("q", images=[_img(1), _img(2)], max_new_tokens=2)))
    assert len(g.vision_hidden) == 2 and g.vision_hidden[0].shape == (17, 32)
    m = compute_mas("q", images=[_img(1), _img(2)], vision_hidden=g.vision_hidden)
    assert 0.0 <= m["act_density"] <= 1.0 and "act_hoyer" in m


def test_bad_inputs_are_one_clear_line(backend, tiny_model_dir, tmp_path):
    with pytest.raises(UserInputError, match="not a readable image"):
        asyncio.run(backend.generate(MMRequest("q", images=[b"\xff\xd8\xff garbage"])))
    with pytest.raises(UserInputError, match="does not accept audio"):
        asyncio.run(backend.generate(MMRequest("q", audio=AudioClip(np.zeros(1600), 16000))))
    broken = tmp_path / "noproc"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(UserInputError, match="no processor found"):
        HFLocalBackend(broken)
    with pytest.raises(UserInputError, match="no such model directory"):
        HFLocalBackend(tmp_path / "missing")
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_img()).save(buf, "PNG")
    g = asyncio.run(backend.generate(MMRequest("q", images=[buf.getvalue()], max_new_tokens=1)))
    assert g.out_tokens == 1
