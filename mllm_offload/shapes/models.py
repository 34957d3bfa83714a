"""A real edge/cloud VLM pair for shapes VQA, trained from scratch on CPU with transformers.

Both models are ``LlavaForConditionalGeneration`` checkpoints (a CLIP ViT vision tower, an MLP
projector and a Llama decoder) with a word-level tokenizer over the shapes vocabulary and a
PIL-backed CLIP image processor, saved with ``save_pretrained`` so every backend path
(:class:`~.hf_local.HFLocalBackend`, ``mllm-offload serve``, the router) loads them exactly like
a downloaded checkpoint. They differ the way a phone model and a datacenter model differ:

=======  ===========  =========  =============================  ==================  ==========
preset   input image  patches    vision tower                   decoder             parameters
=======  ===========  =========  =============================  ==================  ==========
edge     48 x 48      64 (6 px)  width 48, 2 layers             width 40, 2 layers  0.09 M
cloud    64 x 64      64 (8 px)  width 192, 2 layers            width 96, 2 layers  0.87 M
=======  ===========  =========  =============================  ==================  ==========

The edge model sees the 224 x 224 scene downscaled to 48 x 48, so small shapes in clutter blur
away, and its narrow tower tells shapes apart less well; the package README has the measured
accuracy table. Most of the cloud model's parameters sit in its vision tower: frozen after its
own stage and cached, the tower costs nothing per decoder step, so the narrow decoder gets
5400 steps in the 20-minute budget (a 160-wide decoder got 3200 and learned less).

Training (:func:`train_shapes_model`) has two stages, as LLaVA's does:

1. **Vision tower** (:func:`pretrain_vision_tower`), standing in for the pretrained CLIP encoder a
   real LLaVA starts from: a linear head on every patch token learns the colour and shape of the
   object under the patch (dense labels from the generator's ground truth,
   :func:`~mllm_offload.shapes.vqa.patch_labels`). The head is then dropped and the tower frozen.
   Measured: trained end to end from answer tokens only, a from-scratch tower learns colours but
   hardly shapes (a linear probe on its features names the one shape of an easy scene 0.55 of the
   time, chance 0.25), and unfreezing the pretrained tower in stage 2 loses what it learned.
2. **Projector and decoder**: teacher-forced next-token prediction of the answer and ``</s>``
   after the processor-built prompt (the chat template of :data:`SHAPES_CHAT_TEMPLATE`). Each
   training scene gives three questions plus one caption (``describe the shapes ?`` -> ``red
   circle blue square ...`` left to right, LLaVA stage-1 style), many supervised tokens per image.
   The loss is averaged within each question, then over the batch (:func:`_question_loss`), so
   a caption's twenty tokens weigh as much as a one-word answer. The frozen tower's output is
   computed once per training scene and cached (:func:`_tower_features`): the same numbers
   Llava's forward computes, without running the tower at every step.

Both stages use AdamW with warm-up and cosine decay, a fixed number of steps and a fixed seed:
the same command on the same machine writes the same weights. The checkpoint is an ordinary
``LlavaForConditionalGeneration``; the stage-1 head is not saved. Training scenes come from
their own stream (``seed + 1000``), disjoint from the evaluation/recording stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_dir
from ..errors import UserInputError

__all__ = [
    "PRESETS",
    "SHAPES_CHAT_TEMPLATE",
    "ShapesModelSpec",
    "TrainReport",
    "answer_prior_accuracy",
    "build_shapes_vlm",
    "build_word_tokenizer",
    "evaluate_shapes_model",
    "pretrain_vision_tower",
    "print_line",
    "train_presets",
    "train_shapes_model",
    "training_items",
]

IMAGE_TOKEN = "<image>"
ANSWER_PROMPT = "answer:"

#: the question first, then the images, then ``answer:`` (a dozen tokens plus image tokens); with the
#: question first, the decoder's image positions can attend to it, which makes training much faster
SHAPES_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image> ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' answer:' }}{% endif %}"
)


@dataclass(frozen=True)
class ShapesModelSpec:
    """Sizes and training schedule of one preset (pixels, widths, layers, steps, batch, lr).

    ``vision_steps`` / ``vision_lr``: the dense vision-tower pretraining stage that runs first
    (:func:`pretrain_vision_tower`; 0 steps skips it and trains the whole model end to end).
    """

    image_size: int
    patch_size: int
    vision_hidden: int
    vision_layers: int
    text_hidden: int
    text_layers: int
    heads: int
    steps: int
    batch_size: int
    lr: float
    vision_steps: int = 0
    vision_lr: float = 2e-3


PRESETS: dict[str, ShapesModelSpec] = {
    "edge": ShapesModelSpec(image_size=48, patch_size=6, vision_hidden=48, vision_layers=2, text_hidden=40, text_layers=2,
                            heads=4, steps=4000, batch_size=64, lr=1e-3, vision_steps=1200, vision_lr=2e-3),
    "cloud": ShapesModelSpec(image_size=64, patch_size=8, vision_hidden=192, vision_layers=2, text_hidden=96, text_layers=2,
                             heads=4, steps=5400, batch_size=32, lr=1e-3, vision_steps=800, vision_lr=2e-3),
}


def build_word_tokenizer(words: Sequence[str]):
    """A whitespace word-level tokenizer: ``<pad> <s> </s> <unk> <image> answer:`` plus ``words``.

    Unknown words become ``<unk>``; decoding joins tokens with spaces.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, ANSWER_PROMPT, *words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    hf.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return hf


def build_shapes_vlm(spec: ShapesModelSpec, seed: int = 0):
    """A fresh (random-weight) model and its processor for ``spec``: ``(model, processor)``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from .vqa import VOCABULARY

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as ImageProcessor

    tokenizer = build_word_tokenizer(VOCABULARY)
    image_processor = ImageProcessor(size={"shortest_edge": spec.image_size},
                                     crop_size={"height": spec.image_size, "width": spec.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=spec.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=SHAPES_CHAT_TEMPLATE, image_token=IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden, num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.heads, image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.vision_hidden,
        ),
        text_config=LlamaConfig(
            hidden_size=spec.text_hidden, intermediate_size=2 * spec.text_hidden, num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.heads, num_key_value_heads=spec.heads, vocab_size=len(tokenizer),
            max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


# -- data ----------------------------------------------------------------------------------------


def _encode(items: Sequence[Any], processor: Any, with_answer: bool) -> list[dict[str, Any]]:
    """Processor-built prompts (exactly as at inference) plus, for training, answer ids and ``</s>``."""
    tok = processor.tokenizer
    eos = tok.eos_token_id
    out: list[dict[str, Any]] = []
    for it in items:
        media = it.media
        content = [{"type": "image"} for _ in media] + [{"type": "text", "text": it.question}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        enc = processor(images=media, text=prompt, return_tensors="pt")
        ids = enc["input_ids"][0].tolist()
        row = {"ids": ids, "pixels": enc["pixel_values"], "n_prompt": len(ids), "item": it}
        if with_answer:
            row["ids"] = ids + tok.convert_tokens_to_ids(it.answer.split()) + [eos]
        out.append(row)
    return out


def _batch(rows: Sequence[dict[str, Any]], pad_id: int, pixels: bool = True) -> dict[str, Any]:
    """Padded ids, attention mask and answer labels of ``rows`` and (``pixels``) their images."""
    import torch

    n = max(len(r["ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["ids"])
        ids[i, :k] = torch.tensor(r["ids"])
        mask[i, :k] = 1
        labels[i, r["n_prompt"]:k] = ids[i, r["n_prompt"]:k]
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if pixels:
        out["pixel_values"] = torch.cat([r["pixels"] for r in rows])
    return out


# -- training ------------------------------------------------------------------------------------

#: scenes per vision-pretraining step (both presets)
_VISION_BATCH = 64


def _update(loss: Any, opt: Any, sched: Any, params: Sequence[Any], ema: float) -> float:
    """One optimizer step on ``loss`` (gradients clipped to norm 1, then the schedule's step);
    returns the loss's exponential moving average (weight 0.05; ``ema`` NaN: none yet)."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    value = float(loss.detach())
    return value if math.isnan(ema) else 0.95 * ema + 0.05 * value


def _warmup_cosine(opt: Any, steps: int) -> Any:
    """Linear warm-up over the first 5 % of ``steps``, then cosine decay to 0 at ``steps``."""
    import torch

    warm = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))


def _scene_key(item: Any) -> tuple[int, ...]:
    """Identity of an item's pictures: the questions of one training scene share its image objects."""
    return tuple(id(m) for m in item.media)


def _tower_features(model: Any, rows: Sequence[dict[str, Any]], chunk: int = 256) -> list[Any]:
    """Per row, the frozen vision tower's output that Llava projects: ``(pictures, patches, width)``
    (last layer, CLS dropped: ``vision_feature_layer=-1``, strategy ``default``).

    Computed once per scene (its questions share the tensor), so the model stage runs the tower
    over the training set once instead of at every step; valid only while the tower is frozen.
    Memory: 4 bytes x pictures x patches x tower width (the cloud preset's 5000 scenes: about 0.3 GB).
    """
    import torch

    first: dict[tuple[int, ...], int] = {}
    for i, r in enumerate(rows):
        first.setdefault(_scene_key(r["item"]), i)
    order = list(first.values())
    counts = [int(rows[i]["pixels"].shape[0]) for i in order]
    pixels = torch.cat([rows[i]["pixels"] for i in order])
    tower = model.model.vision_tower
    out = []
    with torch.inference_mode():
        for lo in range(0, len(pixels), chunk):
            out.append(tower(pixel_values=pixels[lo:lo + chunk], output_hidden_states=True).hidden_states[-1][:, 1:].clone())
    per_scene = torch.cat(out).split(counts)
    by_key = {k: f for k, f in zip(first, per_scene)}
    return [by_key[_scene_key(r["item"])] for r in rows]


def _question_loss(model: Any, batch: dict[str, Any], features: Any = None) -> Any:
    """Next-token cross-entropy of the answer tokens, averaged within each question, then over
    the batch: a caption's twenty tokens weigh as much as a one-word answer, not twenty times more.

    ``features``: the batch's cached tower output (:func:`_tower_features`, concatenated in row
    order); the image tokens' embeddings are then the projector's output on it, exactly what
    Llava's forward computes from ``pixel_values`` with a frozen tower. ``None``: the full forward.
    """
    import torch

    ids, labels = batch["input_ids"], batch["labels"]
    if features is None:
        logits = model(input_ids=ids, pixel_values=batch["pixel_values"], attention_mask=batch["attention_mask"]).logits
    else:
        emb = model.get_input_embeddings()(ids)
        img = model.model.multi_modal_projector(features).reshape(-1, emb.shape[-1]).to(emb.dtype)
        mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(emb)
        logits = model(inputs_embeds=emb.masked_scatter(mask, img), attention_mask=batch["attention_mask"]).logits
    target = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100,
                                           reduction="none").view(target.shape)
    m = (target != -100).float()
    return ((ce * m).sum(1) / m.sum(1).clamp(min=1.0)).mean()


def pretrain_vision_tower(
    model: Any,
    rows: Sequence[dict[str, Any]],
    spec: ShapesModelSpec,
    *,
    steps: int,
    seed: int = 0,
    bar: Any = None,
) -> float:
    """Dense pretraining of ``model``'s vision tower; returns the smoothed final loss.

    Stands in for the pretrained CLIP encoder a real LLaVA starts from: a linear head on every
    patch token of the tower's last layer (the features Llava projects) predicts the colour and
    the shape of the object under that patch (:func:`~mllm_offload.shapes.vqa.patch_labels`,
    background included), on the distinct single-image scenes of the encoded training ``rows``.
    The head is thrown away afterwards. Measured on this task: answer-token gradients alone teach
    a from-scratch tower colours but hardly shapes (a linear probe on its features names the one
    shape of an easy scene 0.55 of the time, chance 0.25); this stage teaches them in one to three minutes of CPU.
    """
    import numpy as np
    import torch

    from .vqa import COLORS, SHAPES, patch_labels

    grid = spec.image_size // spec.patch_size
    seen: set[tuple[int, ...]] = set()
    pixels, colours, shapes = [], [], []
    for r in rows:
        it = r["item"]
        if len(it.images) != 1 or it.frames or not it.objects or _scene_key(it) in seen:
            continue
        seen.add(_scene_key(it))
        c, sh = patch_labels(it.objects, grid)
        pixels.append(r["pixels"])
        colours.append(c)
        shapes.append(sh)
    if not pixels:
        raise UserInputError("training items: no single-image scene with objects to pretrain the vision tower on")
    x = torch.cat(pixels)
    yc, ys = torch.tensor(np.stack(colours)), torch.tensor(np.stack(shapes))
    nc = len(COLORS) + 1
    tower = model.model.vision_tower
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        head = torch.nn.Linear(spec.vision_hidden, nc + len(SHAPES) + 1)
        gen = torch.Generator().manual_seed(seed)
        params = list(tower.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=spec.vision_lr, weight_decay=0.01)
        sched = _warmup_cosine(opt, steps)
        tower.train()
        ema = float("nan")
        for _ in range(steps):
            idx = torch.randint(0, len(x), (_VISION_BATCH,), generator=gen)
            z = head(tower(pixel_values=x[idx], output_hidden_states=True).hidden_states[-1][:, 1:])
            loss = (torch.nn.functional.cross_entropy(z[..., :nc].reshape(-1, nc), yc[idx].reshape(-1))
                    + torch.nn.functional.cross_entropy(z[..., nc:].reshape(-1, z.shape[-1] - nc), ys[idx].reshape(-1)))
            ema = _update(loss, opt, sched, params, ema)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(vision_loss=f"{ema:.3f}")
    return ema


def training_items(seed: int, scenes: int) -> list[Any]:
    """The training set of ``seed``: ``scenes`` scenes of stream ``seed + 1000`` (disjoint from the
    recording stream), three questions and one caption each, 5 % of them videos."""
    from .vqa import make_training_items

    return make_training_items(seed + 1000, scenes, 3, video_share=0.05)


@dataclass
class TrainReport:
    """What :func:`train_shapes_model` did: parameters, seconds, steps (model and vision-tower
    pretraining), final loss, held-out accuracy.

    ``accuracy`` is by difficulty, ``accuracy_by_qtype`` by question type (both with ``all``);
    ``prior`` and ``prior_by_qtype`` are the question-blind baseline's accuracy on the same items
    (:func:`answer_prior_accuracy` over this run's training questions).
    """

    preset: str
    parameters: int
    seconds: float
    steps: int
    final_loss: float
    vision_steps: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    accuracy_by_qtype: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    prior_by_qtype: dict[str, float] = field(default_factory=dict)


def train_shapes_model(
    preset: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    train_scenes: int = 5000,
    steps: int | None = None,
    vision_steps: int | None = None,
    eval_items: Sequence[Any] = (),
    train_items: Sequence[Any] | None = None,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 0,
    progress: bool = True,
    bar_position: int = 0,
) -> TrainReport:
    """Train preset ``edge`` or ``cloud`` and save it (model + processor) atomically to ``out_dir``.

    Args:
        preset: a key of :data:`PRESETS`.
        out_dir: checkpoint folder (replaced as a whole when training succeeds).
        seed: seeds the weights, the batch order and (``seed + 1000``) the training scenes.
        train_scenes: scenes rendered for training (3 questions and a caption each).
        train_items: already rendered training items (:func:`training_items`), so that training
            both presets renders the scenes once; default: render ``train_scenes`` scenes here.
        steps: optimizer steps of the model (default: the preset's).
        vision_steps: optimizer steps of the vision-tower pretraining before them (default: the
            preset's; 0: none, the whole model trains end to end).
        eval_items: held-out shapes items to report accuracy on (by difficulty).
        threads: torch intra-op threads (default: torch's).
        log, log_every: a line sink, and every how many steps to send it the smoothed loss (0: never).
    """
    import numpy as np
    import torch

    if preset not in PRESETS:
        raise UserInputError(f"preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
    spec = PRESETS[preset]
    n_steps = int(steps if steps is not None else spec.steps)
    n_vision = int(vision_steps if vision_steps is not None else spec.vision_steps)
    if n_steps < 1 or n_vision < 0:
        raise UserInputError(f"steps: need >= 1 model steps and >= 0 vision steps, got {n_steps} and {n_vision}")
    say = log or (lambda m: None)
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    model, processor = build_shapes_vlm(spec, seed)
    n_params = sum(p.numel() for p in model.parameters())
    items = list(train_items) if train_items is not None else training_items(seed, train_scenes)
    rows = _encode(items, processor, with_answer=True)
    say(f"{preset}: {n_params:,} parameters, {len(rows)} training questions from {train_scenes} scenes "
        f"({time.perf_counter() - t0:.0f} s to render and encode)")
    # batches hold rows with the same number of pictures (a video's frames are several images)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(int(r["pixels"].shape[0]), []).append(i)
    weights = np.array([len(v) for v in groups.values()], dtype=float)
    keys = list(groups)
    rng = np.random.default_rng(seed)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_vision + n_steps, desc=f"train {preset}", unit="step", leave=False, position=bar_position)
    if n_vision:
        vloss = pretrain_vision_tower(model, rows, spec, steps=n_vision, seed=seed, bar=bar)
        model.model.vision_tower.requires_grad_(False)  # frozen from here on, as LLaVA freezes its CLIP encoder
        say(f"{preset}: vision tower pretrained, {n_vision} steps, loss {vloss:.3f} ({time.perf_counter() - t0:.0f} s)")
    feats = _tower_features(model, rows) if n_vision else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=0.01)
    sched = _warmup_cosine(opt, n_steps)
    pad = processor.tokenizer.pad_token_id
    model.train()
    ema = float("nan")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for step in range(n_steps):
            g = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
            idx = rng.choice(groups[g], size=min(spec.batch_size, len(groups[g])), replace=False)
            batch = _batch([rows[int(i)] for i in idx], pad, pixels=feats is None)  # cached features replace the images
            loss = _question_loss(model, batch, None if feats is None else torch.cat([feats[int(i)] for i in idx]))
            ema = _update(loss, opt, sched, trainable, ema)
            if log_every and (step + 1) % log_every == 0:
                say(f"{preset}: step {step + 1}/{n_steps} loss {ema:.3f} ({time.perf_counter() - t0:.0f} s)")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    hits = _answer_hits(model, processor, eval_items) if eval_items else []
    acc, acc_q = _group(hits, "difficulty"), _group(hits, "qtype")
    prior_hits = _prior_hits(items, eval_items)
    prior, prior_q = _group(prior_hits, "difficulty"), _group(prior_hits, "qtype")
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    rep = TrainReport(preset=preset, parameters=n_params, seconds=time.perf_counter() - t0, steps=n_steps, vision_steps=n_vision, final_loss=ema, accuracy=acc,
                      accuracy_by_qtype=acc_q, prior=prior, prior_by_qtype=prior_q)
    say(f"{preset}: trained in {rep.seconds:.0f} s, loss {ema:.3f}" + (
        ", accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()) if acc else ""))
    return rep


def print_line(message: str) -> None:
    """A picklable ``log`` sink for :func:`train_presets`' worker processes: print and flush."""
    print(message, flush=True)


def _train_job(kw: dict[str, Any]) -> TrainReport:
    from .vqa import make_items

    n_eval = kw.pop("n_eval")
    return train_shapes_model(eval_items=make_items(0, n_eval) if n_eval else (), **kw)


def train_presets(
    presets: Sequence[str],
    out_root: str | Path,
    *,
    seed: int = 0,
    train_scenes: int = 5000,
    steps: dict[str, int | None] | None = None,
    vision_steps: dict[str, int | None] | None = None,
    n_eval: int = 600,
    jobs: int = 1,
    threads: int | None = None,
    log: Callable[[str], None] = print_line,
    log_every: int = 0,
    progress: bool = True,
) -> dict[str, TrainReport]:
    """Train several presets into ``out_root/<preset>``; ``jobs > 1`` trains them side by side.

    The edge model is too small to keep two cores busy (its steps are dominated by per-operator
    overhead), so on a 2-core machine training both presets at once, one torch thread each, ends
    sooner than training them one after the other. Each worker process (``spawn``, so no OpenMP
    state is forked) renders the same deterministic training scenes itself, which costs the same
    wall time as rendering them once in a single process; with ``jobs == 1`` they are rendered
    once and shared. Held-out accuracy is measured on the first ``n_eval`` items of stream 0.

    Args:
        steps, vision_steps: optimizer steps of the model and of its vision-tower pretraining, per
            preset (missing or ``None``: the preset's).
        jobs: worker processes (1: train in this process, one preset after the other).
        threads: torch threads per preset (default: this machine's cores divided by ``jobs``).
    """
    import os

    steps = steps or {}
    vision_steps = vision_steps or {}
    for p in presets:
        if p not in PRESETS:
            raise UserInputError(f"preset: must be one of {', '.join(PRESETS)}, got {p!r}")
    jobs = max(1, min(int(jobs), len(presets)))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    base = {"seed": seed, "train_scenes": train_scenes, "threads": threads, "log": log, "log_every": log_every, "progress": progress}
    if jobs == 1:
        from .vqa import make_items

        ev = make_items(0, n_eval) if n_eval else []
        train = training_items(seed, train_scenes)
        return {p: train_shapes_model(p, Path(out_root) / p, steps=steps.get(p), vision_steps=vision_steps.get(p), eval_items=ev, train_items=train, **base)
                for p in presets}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futs = {p: pool.submit(_train_job, {"preset": p, "out_dir": Path(out_root) / p, "steps": steps.get(p),
                                            "vision_steps": vision_steps.get(p), "n_eval": n_eval,
                                            "bar_position": i, **base}) for i, p in enumerate(presets)}
        return {p: f.result() for p, f in futs.items()}


def _answer_hits(model: Any, processor: Any, items: Sequence[Any], batch_size: int = 128) -> list[tuple[Any, float]]:
    """``(item, 1.0 if the argmax next token after the prompt is the answer else 0.0)`` per item."""
    import torch

    rows = _encode(items, processor, with_answer=False)
    tok = processor.tokenizer
    pad = tok.pad_token_id
    out: list[tuple[Any, float]] = []
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(int(r["pixels"].shape[0]), []).append(r)
    with torch.inference_mode():
        for grp in groups.values():
            for lo in range(0, len(grp), batch_size):
                part = grp[lo:lo + batch_size]
                b = _batch(part, pad)
                b.pop("labels")
                logits = model(**b).logits
                last = b["attention_mask"].sum(1) - 1
                pred = logits[torch.arange(len(part)), last].argmax(-1).tolist()
                out.extend((r["item"], float(tok.convert_ids_to_tokens(int(p)) == r["item"].answer)) for r, p in zip(part, pred))
    return out


def _group(hits: Iterable[tuple[Any, float]], by: str) -> dict[str, float]:
    """Mean of the hits overall (``all``) and per value of the items' attribute ``by``, in the
    order of :data:`~mllm_offload.shapes.vqa.DIFFICULTIES` / ``QUESTION_TYPES`` (empty groups left out)."""
    from .vqa import DIFFICULTIES, QUESTION_TYPES

    acc: dict[str, list[float]] = {}
    for it, ok in hits:
        acc.setdefault("all", []).append(ok)
        acc.setdefault(str(getattr(it, by)), []).append(ok)
    order = ("all", *(DIFFICULTIES if by == "difficulty" else QUESTION_TYPES if by == "qtype" else sorted(set(acc) - {"all"})))
    return {k: sum(acc[k]) / len(acc[k]) for k in order if k in acc}


def evaluate_shapes_model(model: Any, processor: Any, items: Sequence[Any], batch_size: int = 128,
                          by: str = "difficulty") -> dict[str, float]:
    """Greedy one-word accuracy of ``model`` on shapes ``items``: overall and per ``by``.

    The answer is the argmax next token after the prompt (what greedy decoding emits first);
    keys ``all`` plus ``easy``, ``medium``, ``hard`` (``by="difficulty"``) or the question types
    (``by="qtype"``); groups with no items are left out.
    """
    return _group(_answer_hits(model, processor, items, batch_size), by)


def _prior_hits(train_items: Sequence[Any], items: Sequence[Any]) -> list[tuple[Any, float]]:
    """``(item, hit)`` of the question-blind baseline (see :func:`answer_prior_accuracy`)."""
    from collections import Counter

    seen: dict[str, Counter[str]] = {}
    for it in train_items:
        if it.qtype != "caption":
            seen.setdefault(it.question, Counter())[it.answer] += 1
    guess = {q: c.most_common(1)[0][0] for q, c in seen.items()}
    return [(it, float(guess.get(it.question) == it.answer)) for it in items]


def answer_prior_accuracy(train_items: Sequence[Any], items: Sequence[Any], by: str = "difficulty") -> dict[str, float]:
    """Accuracy of the question-blind baseline on ``items``: for each question text, the answer it
    most often has in ``train_items`` (ties: the first seen), without looking at the picture.

    The yardstick for the models' accuracy: a model that learned nothing from the pixels still
    scores this much, because answers are unevenly distributed (``no`` to "is there a red square"
    is right about two thirds of the time). Questions unseen in training count as wrong.
    """
    return _group(_prior_hits(train_items, items), by)
