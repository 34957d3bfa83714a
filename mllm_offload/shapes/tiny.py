"""Tiny random-weight vision-language models, built offline, saved like a real checkpoint.

:func:`build_tiny_vlm` writes a ``LlavaForConditionalGeneration`` (a CLIP vision tower, a
two-layer MLP projector and a Llama text model, all a few layers of width 32 by default) with a
byte-level tokenizer made on the spot (256 byte symbols plus ``<pad> <s> </s> <unk> <image>``,
optionally whole-word tokens), a PIL-backed CLIP image processor and a chat template. The folder
loads through ``AutoProcessor.from_pretrained`` + ``AutoModelForImageTextToText.from_pretrained``
exactly as a downloaded checkpoint does, so tests exercise the real loading path with no network.

Image tokens: ``(image_size / patch_size) ** 2``; the CLS token is dropped by the "default"
feature strategy, which is why the processor is told ``num_additional_image_tokens=1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._io import atomic_dir

__all__ = ["CHAT_TEMPLATE", "IMAGE_TOKEN", "build_tiny_vlm", "build_tokenizer"]

IMAGE_TOKEN = "<image>"

#: LLaVA-1.5 style: ``USER: <image>\n{text}\nASSISTANT:``
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def build_tokenizer(words: Sequence[str] = ()):
    """A byte-level BPE tokenizer with no merges (every UTF-8 byte is a token) plus ``words`` as whole tokens.

    Returns a ``PreTrainedTokenizerFast`` with ``<s>``, ``</s>``, ``<pad>``, ``<unk>`` and
    :data:`IMAGE_TOKEN` as special tokens. ``words`` (e.g. answer words of a task) are added as
    ordinary tokens so a small model can emit them in one step.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    hf.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if words:
        hf.add_tokens([w for w in dict.fromkeys(words) if w])
    return hf


def build_tiny_vlm(
    out_dir: str | Path,
    seed: int = 0,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 32,
    text_layers: int = 2,
    heads: int = 2,
    words: Sequence[str] = (),
    max_positions: int = 512,
):
    """Write a loadable random-weight LLaVA checkpoint to ``out_dir`` (atomically) and return the model.

    The weights depend only on ``seed`` and the sizes, so two calls with the same arguments
    produce identical checkpoints.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as ImageProcessor

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    tokenizer = build_tokenizer(words)
    image_processor = ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
            num_attention_heads=heads, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden,
        ),
        text_config=LlamaConfig(
            hidden_size=text_hidden, intermediate_size=2 * text_hidden, num_hidden_layers=text_layers,
            num_attention_heads=heads, num_key_value_heads=heads, vocab_size=len(tokenizer),
            max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return model
