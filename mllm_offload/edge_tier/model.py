"""A vision-language model as an ordered list of blocks, read from its Hugging Face ``config.json``.

The JSON is read directly (no transformers import). Supported: LLaVA-class configs (a
``vision_config`` of a CLIP or SigLIP tower and a ``text_config`` of a Llama, Mistral or Qwen2
decoder: ``llava-hf/llava-1.5-7b-hf``, the local ``tiny-model`` and ``shapes`` checkpoints),
Qwen2-VL and Qwen2.5-VL. Fields a config leaves out take transformers' defaults for its
``model_type`` (LLaVA-1.5's ``text_config`` lists only a few: the rest are Llama-7B's).

Blocks, in pipeline order:

==================  =========================================  ==========  ================
block               holds                                      computes    passes on
                                                               over        (per token)
==================  =========================================  ==========  ================
``vision.K``        one vision transformer layer (layer 0 also  vision      vision width
                    the patch and position embeddings)          patches
``projector``       the multimodal projector (Qwen: the patch   image       text width
                    merger) and the text token embeddings       tokens
``decoder.K``       one decoder layer; keeps a KV cache         LM tokens   text width
``lm_head``         the final norm and the LM head              1 token     nothing
==================  =========================================  ==========  ================

Per block and request (:meth:`ModelSpec.costs`):

* **compute** (FLOP) = ``2 x (weights used in matrix products) x tokens`` plus attention:
  ``4 x heads x head_dim x n^2`` per image for a full-attention vision layer (``n`` patches),
  ``4 x ... x n x window`` for a windowed one (Qwen2.5-VL), and ``2 x heads x head_dim x T x
  (T + 1)`` for a causal decoder layer over ``T`` tokens. The LM head runs for the last position
  only (prefill logits of one token). Embedding lookups and norms count no FLOPs.
* **parameter bytes** = parameters x bytes per weight (the config's ``torch_dtype``/``dtype``,
  or ``weight_dtype``: ``int8`` 1, ``int4`` 0.5); tied input/output embeddings are stored once
  when both blocks sit on one device.
* **state bytes** = the KV cache of one request: ``2 x kv_heads x head_dim x T`` elements per
  decoder layer.
* **activation bytes passed on** = tokens x width x bytes per activation (the config's float
  dtype; float16 when the weights are quantized).

A request is one prefill: ``images`` images (LLaVA: at the tower's fixed resolution; Qwen:
``image_px``, resized as Qwen2-VL's ``smart_resize`` does, 28 x 28 pixels per token) and
``tokens`` language-model tokens, image tokens included. Decode steps, memory-bound on edge
devices, are not modelled.

Shipped configs (:func:`shipped_configs`, under ``edge_tier/configs/``, sources in its
README): ``qwen2-vl-2b``, ``qwen2.5-vl-3b``, ``llava-1.5-7b``.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UserInputError

__all__ = ["DTYPE_BYTES", "Block", "BlockCosts", "ModelSpec", "load_model_config", "model_from_config", "shipped_configs"]

DTYPE_BYTES: dict[str, float] = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "int8": 1, "int4": 0.5}
_CONFIGS = Path(__file__).resolve().parent / "configs"

Stream = Literal["vision", "image", "text", "last", "none"]

# transformers' defaults for fields a config.json may omit (LlamaConfig, MistralConfig, Qwen2Config,
# CLIPVisionConfig, SiglipVisionConfig)
_TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 32000},
    "mistral": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 8, "vocab_size": 32000},
    "qwen2": {"hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 151936},
}
_VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "image_size": 224, "patch_size": 32, "num_channels": 3},
    "siglip_vision_model": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                            "image_size": 224, "patch_size": 16, "num_channels": 3},
}


@dataclass(frozen=True)
class Block:
    """One pipeline block: what it stores, what it computes, what it passes on."""

    name: str
    kind: Literal["vision", "projector", "decoder", "head"]
    params: int  #: parameters stored
    matmul_params: int  #: weights used in matrix products per token (FLOPs = 2 x this x tokens)
    stream: Stream  #: which token count drives its compute
    out_stream: Stream  #: which token count its output has
    out_dim: int  #: elements per token passed on
    attn_dim: int = 0  #: heads x head_dim (0: no attention)
    attention: Literal["none", "full", "window", "causal"] = "none"
    window: int = 0  #: patches per attention window ("window")
    kv_dim: int = 0  #: KV-cache elements per token (2 x kv_heads x head_dim)


@dataclass(frozen=True)
class BlockCosts:
    """Per-block costs of one request (numpy arrays, one entry per block, in pipeline order)."""

    names: tuple[str, ...]
    flops: np.ndarray  #: FLOP per request
    param_bytes: np.ndarray  #: weight bytes
    state_bytes: np.ndarray  #: KV-cache bytes of one request
    out_bytes: np.ndarray  #: activation bytes per request sent to the next block
    tied: tuple[tuple[int, int, float], ...] = ()  #: (block a, block b, bytes b duplicates of a)
    tokens: int = 0
    images: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def range_param_bytes(self, i: int, j: int) -> float:
        """Weight bytes of blocks ``[i, j)``, tied weights counted once."""
        dup = sum(d for a, b, d in self.tied if i <= a < j and i <= b < j)
        return float(self.param_bytes[i:j].sum()) - dup

    def range_memory(self, i: int, j: int) -> float:
        """Weights plus one request's KV cache of blocks ``[i, j)``."""
        return self.range_param_bytes(i, j) + float(self.state_bytes[i:j].sum())

    def memory_matrix(self) -> np.ndarray:
        """``M[i, j]`` = :meth:`range_memory` ``(i, j)`` for all ``0 <= i < j <= n`` (``inf`` elsewhere)."""
        n = len(self)
        cum = np.concatenate([[0.0], np.cumsum(self.param_bytes + self.state_bytes)])
        m = cum[None, :] - cum[:, None]
        ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        for a, b, d in self.tied:
            lo, hi = min(a, b), max(a, b)
            m = m - d * ((ii <= lo) & (jj > hi))
        m[jj <= ii] = np.inf
        return m


@dataclass(frozen=True)
class ModelSpec:
    """A model as blocks, plus what a request's token counts depend on."""

    name: str
    family: str
    blocks: tuple[Block, ...]
    weight_dtype: str
    act_dtype: str
    vision_tokens: int  #: patches the vision tower processes per image
    image_tokens: int  #: tokens one image becomes in the language model
    tied: tuple[tuple[int, int, int], ...] = ()  #: (block a, block b, parameters b duplicates of a)
    image_px: tuple[int, int] | None = None  #: (width, height) after resizing, Qwen-class only
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def n_params(self) -> int:
        return sum(b.params for b in self.blocks) - sum(p for _, _, p in self.tied)

    @property
    def weight_bytes(self) -> float:
        return self.n_params * DTYPE_BYTES[self.weight_dtype]

    def default_tokens(self, images: int = 1) -> int:
        """Image tokens plus 64 text tokens (a short VQA prompt)."""
        return images * self.image_tokens + 64

    def costs(self, tokens: int | None = None, images: int = 1) -> BlockCosts:
        """Per-block FLOPs, bytes and activations of one request (see the module docstring)."""
        if tokens is None:
            tokens = self.default_tokens(images)
        if images < 0:
            raise UserInputError(f"images: must be >= 0, got {images}")
        if tokens <= images * self.image_tokens:
            raise UserInputError(f"tokens: {tokens} must exceed the {images * self.image_tokens} image tokens of {images} image(s) "
                                 f"({self.image_tokens} each)")
        count = {"vision": images * self.vision_tokens, "image": images * self.image_tokens, "text": tokens, "last": 1, "none": 0}
        wb, ab = DTYPE_BYTES[self.weight_dtype], DTYPE_BYTES[self.act_dtype]
        flops, pbytes, sbytes, obytes = [], [], [], []
        for b in self.blocks:
            n = count[b.stream]
            f = 2.0 * b.matmul_params * n
            if b.attention == "full":
                f += 4.0 * b.attn_dim * images * self.vision_tokens ** 2
            elif b.attention == "window":
                f += 4.0 * b.attn_dim * n * min(b.window, self.vision_tokens)
            elif b.attention == "causal":
                f += 2.0 * b.attn_dim * n * (n + 1)
            flops.append(f)
            pbytes.append(b.params * wb)
            sbytes.append(b.kv_dim * n * ab)
            obytes.append(b.out_dim * count[b.out_stream] * ab)
        return BlockCosts(
            names=tuple(b.name for b in self.blocks), flops=np.asarray(flops, dtype=float), param_bytes=np.asarray(pbytes, dtype=float),
            state_bytes=np.asarray(sbytes, dtype=float), out_bytes=np.asarray(obytes, dtype=float),
            tied=tuple((a, b, p * wb) for a, b, p in self.tied), tokens=tokens, images=images)


# ---------------------------------------------------------------------------------------------- reading


#: Bounds on a config's sizes: far above any real model, small enough to plan in seconds.
_MAX_LAYERS = 1024
_MAX_SIZE = 10_000_000


class _Section:
    """Typed reads from one mapping of a config, errors naming ``source: section.field``."""

    def __init__(self, data: Any, source: str, where: str, defaults: dict[str, Any] | None = None) -> None:
        if not isinstance(data, dict):
            raise UserInputError(f"{source}: {where or '(root)'}: expected a mapping, got {type(data).__name__}")
        self.data, self.source, self.where, self.defaults = data, source, where, defaults or {}

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, self.defaults.get(key, default))

    def integer(self, *keys: str, default: int | None = None, minimum: int = 1) -> int:
        """The first of ``keys`` present (else a transformers default, else ``default``); bounded
        (layers at most 1024, any other size at most 10^7) so an absurd config cannot cost hours."""
        for key in keys:
            v = self.data.get(key, self.defaults.get(key))
            if v is not None:
                top = _MAX_LAYERS if "layers" in key else _MAX_SIZE
                if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= top:
                    raise UserInputError(f"{self.source}: {self._path(key)}: expected an integer in [{minimum}, {top}], got {v!r}")
                return v
        if default is None:
            raise UserInputError(f"{self.source}: {self._path(keys[0])}: required field missing")
        return default


def _dtype(cfg: dict[str, Any], text: _Section, source: str) -> str:
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or text.get("torch_dtype") or text.get("dtype") or "float32"
    name = str(raw).replace("torch.", "")
    if name not in DTYPE_BYTES:
        raise UserInputError(f"{source}: torch_dtype: unsupported dtype {raw!r}; known: {', '.join(DTYPE_BYTES)}")
    return name


def _decoder_blocks(text: _Section, ab_name: str) -> tuple[list[Block], int, int, int, bool]:
    """Decoder layers of a Llama/Mistral/Qwen2 text config -> (blocks, width, vocab, params of embeddings, tied)."""
    d = text.integer("hidden_size")
    inter = text.integer("intermediate_size")
    layers = text.integer("num_hidden_layers")
    heads = text.integer("num_attention_heads")
    kvh = text.integer("num_key_value_heads", default=heads)
    hd = text.integer("head_dim", default=d // heads)
    vocab = text.integer("vocab_size")
    qkv_bias = bool(text.get("attention_bias", ab_name == "qwen2"))
    mlp_bias = bool(text.get("mlp_bias", False))
    attn = d * heads * hd + 2 * d * kvh * hd + heads * hd * d
    mlp = 3 * d * inter
    params = attn + mlp + 2 * d + (heads * hd + 2 * kvh * hd if qkv_bias else 0) + (2 * inter + d if mlp_bias else 0)
    blocks = [Block(f"decoder.{k}", "decoder", params, attn + mlp, "text", "text", d, attn_dim=heads * hd, attention="causal",
                    kv_dim=2 * kvh * hd) for k in range(layers)]
    return blocks, d, vocab, vocab * d, False


def _finish(name: str, family: str, vision: list[Block], projector_params: int, projector_matmul: int, text: _Section,
            text_type: str, cfg: dict[str, Any], source: str, weight_dtype: str | None, vision_tokens: int, image_tokens: int,
            image_px: tuple[int, int] | None = None, notes: tuple[str, ...] = ()) -> ModelSpec:
    decoders, d, vocab, embed, _ = _decoder_blocks(text, text_type)
    tie = bool(text.data.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False)))
    dtype = _dtype(cfg, text, source)
    act = dtype if dtype in ("float32", "float16", "bfloat16") else "float16"
    if weight_dtype is not None:
        if weight_dtype not in DTYPE_BYTES:
            raise UserInputError(f"weight dtype {weight_dtype!r}: unknown; known: {', '.join(DTYPE_BYTES)}")
        dtype = weight_dtype
    proj = Block("projector", "projector", projector_params + embed, projector_matmul, "image", "text", d)
    head = Block("lm_head", "head", vocab * d + d, vocab * d, "last", "none", 0)
    blocks = (*vision, proj, *decoders, head)
    tied = ((len(vision), len(blocks) - 1, vocab * d),) if tie else ()
    return ModelSpec(name=name, family=family, blocks=blocks, weight_dtype=dtype, act_dtype=act, vision_tokens=vision_tokens,
                     image_tokens=image_tokens, tied=tied, image_px=image_px, source=source, notes=notes)


def _llava(cfg: dict[str, Any], name: str, source: str, weight_dtype: str | None) -> ModelSpec:
    vraw, traw = cfg.get("vision_config"), cfg.get("text_config")
    vtype = str((vraw or {}).get("model_type", "clip_vision_model")) if isinstance(vraw, dict) else ""
    ttype = str((traw or {}).get("model_type", "llama")) if isinstance(traw, dict) else ""
    if vtype not in _VISION_DEFAULTS:
        raise UserInputError(f"{source}: vision_config.model_type: {vtype!r} is not supported; known: {', '.join(_VISION_DEFAULTS)}")
    if ttype not in _TEXT_DEFAULTS:
        raise UserInputError(f"{source}: text_config.model_type: {ttype!r} is not supported; known: {', '.join(_TEXT_DEFAULTS)}")
    v = _Section(vraw, source, "vision_config", _VISION_DEFAULTS[vtype])
    t = _Section(traw, source, "text_config", _TEXT_DEFAULTS[ttype])
    dv, iv, lv = v.integer("hidden_size"), v.integer("intermediate_size"), v.integer("num_hidden_layers")
    img, patch, ch = v.integer("image_size"), v.integer("patch_size"), v.integer("num_channels")
    if img % patch:
        raise UserInputError(f"{source}: vision_config.image_size: {img} is not a multiple of patch_size {patch}")
    clip = vtype == "clip_vision_model"
    patches = (img // patch) ** 2
    vtok = patches + (1 if clip else 0)
    strategy = cfg.get("vision_feature_select_strategy", "default")
    itok = vtok - 1 if strategy == "default" else vtok
    fl = cfg.get("vision_feature_layer", -2)
    layers_fl = fl if isinstance(fl, list) else [fl]
    if not layers_fl or not all(isinstance(x, int) and -lv - 1 <= x <= lv for x in layers_fl):
        raise UserInputError(f"{source}: vision_feature_layer: expected layer indices in [{-lv - 1}, {lv}], got {fl!r}")
    needed = max(x if x >= 0 else lv + 1 + x for x in layers_fl)  # hidden_states[k] is the output of layer k
    layer_params = 4 * dv * dv + 4 * dv + 2 * dv * iv + iv + dv + 4 * dv
    embed_params = ch * patch * patch * dv + (0 if clip else dv) + vtok * dv + (dv + 2 * dv if clip else 0)
    vision = [Block(f"vision.{k}", "vision", layer_params + (embed_params if k == 0 else 0),
                    4 * dv * dv + 2 * dv * iv + (ch * patch * patch * dv if k == 0 else 0), "vision", "vision", dv,
                    attn_dim=dv, attention="full") for k in range(needed)]
    dt = t.integer("hidden_size")
    bias = cfg.get("multimodal_projector_bias", True)
    din = dv * len(layers_fl)
    pm = din * dt + dt * dt
    notes: tuple[str, ...] = ()
    if needed < lv:
        notes += (f"vision tower: {needed} of {lv} layers (vision_feature_layer {fl}; later layers are not needed)",)
    if cfg.get("model_type") not in ("llava", None):
        notes += (f"{cfg.get('model_type')}: modelled as LLaVA with one {img} px view per image (any extra tiles are not counted)",)
    return _finish(name, "llava", vision, pm + (2 * dt if bias else 0), pm, t, ttype, cfg, source, weight_dtype, vtok, itok, notes=notes)


def _smart_resize(w: int, h: int, factor: int = 28, min_px: int = 56 * 56, max_px: int = 14 * 14 * 4 * 16384) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: both sides a multiple of ``factor``, pixels within [min_px, max_px]."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_px:
        beta = math.sqrt(h * w / max_px)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_px:
        beta = math.sqrt(min_px / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return wb, hb


def _qwen(cfg: dict[str, Any], name: str, source: str, weight_dtype: str | None, image_px: tuple[int, int]) -> ModelSpec:
    family = str(cfg.get("model_type"))
    v = _Section(cfg.get("vision_config"), source, "vision_config")
    t = _Section(cfg.get("text_config", cfg), source, "text_config" if "text_config" in cfg else "", _TEXT_DEFAULTS["qwen2"])
    v25 = family == "qwen2_5_vl"
    dv = v.integer("hidden_size") if v25 else v.integer("embed_dim")
    out = v.integer("out_hidden_size") if v25 else v.integer("hidden_size")
    depth = v.integer("depth")
    patch, tp, merge = v.integer("patch_size", "spatial_patch_size"), v.integer("temporal_patch_size", default=2), v.integer("spatial_merge_size")
    ch = v.integer("in_chans", "in_channels", default=3)
    if v25:
        iv = v.integer("intermediate_size")
        mlp, mlp_extra, norms = 3 * dv * iv, 2 * iv + dv, 2 * dv
        win = (v.integer("window_size", default=112) // patch) ** 2
        full = set(v.get("fullatt_block_indexes") or [])
    else:
        iv = dv * v.integer("mlp_ratio", default=4)
        mlp, mlp_extra, norms = 2 * dv * iv, iv + dv, 4 * dv
        win, full = 0, set(range(depth))
    wpx, hpx = _smart_resize(*image_px, factor=patch * merge)
    vtok = (wpx // patch) * (hpx // patch)
    itok = vtok // (merge * merge)
    attn = 4 * dv * dv
    layer = attn + 4 * dv + mlp + mlp_extra + norms
    embed = ch * tp * patch * patch * dv
    vision = [Block(f"vision.{k}", "vision", layer + (embed if k == 0 else 0), attn + mlp + (embed if k == 0 else 0), "vision",
                    "vision", dv, attn_dim=dv, attention="full" if k in full else "window", window=win) for k in range(depth)]
    hm = dv * merge * merge
    merger = (dv if v25 else 2 * dv) + hm * hm + hm + hm * out + out
    return _finish(name, family, vision, merger, hm * hm + hm * out, t, "qwen2", cfg, source, weight_dtype, vtok, itok,
                   image_px=(wpx, hpx))


def model_from_config(cfg: dict[str, Any], name: str = "model", source: str = "config.json", weight_dtype: str | None = None,
                      image_px: tuple[int, int] = (640, 480)) -> ModelSpec:
    """A :class:`ModelSpec` from a parsed ``config.json`` (LLaVA-class, Qwen2-VL, Qwen2.5-VL).

    ``weight_dtype`` overrides the config's dtype for the weights (e.g. ``"int4"``); ``image_px``
    is the (width, height) of a request's image for Qwen-class models (LLaVA-class towers have a
    fixed resolution).
    """
    if not isinstance(cfg, dict):
        raise UserInputError(f"{source}: (root): expected a JSON object, got {type(cfg).__name__}")
    mtype = cfg.get("model_type")
    if mtype in ("qwen2_vl", "qwen2_5_vl"):
        return _qwen(cfg, name, source, weight_dtype, image_px)
    if "vision_config" in cfg and "text_config" in cfg:
        return _llava(cfg, name, source, weight_dtype)
    raise UserInputError(f"{source}: model_type: {mtype!r} is not supported: expected a LLaVA-class config (vision_config and "
                         "text_config), qwen2_vl or qwen2_5_vl")


def shipped_configs() -> dict[str, Path]:
    """Shipped example configs by name (``qwen2-vl-2b`` -> its ``config.json`` file)."""
    return {p.stem: p for p in sorted(_CONFIGS.glob("*.json"))}


def load_model_config(spec: str | Path, weight_dtype: str | None = None, image_px: tuple[int, int] = (640, 480)) -> ModelSpec:
    """A model folder (holding ``config.json``), a ``config.json`` path, or a shipped config name."""
    p = Path(spec)
    shipped = shipped_configs()
    if p.is_dir():
        name, p = p.resolve().name, p / "config.json"
    elif p.is_file():
        name = p.resolve().parent.name if p.name == "config.json" else p.stem
    elif str(spec) in shipped:
        name, p = str(spec), shipped[str(spec)]
    else:
        close = difflib.get_close_matches(str(spec), list(shipped), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserInputError(f"model config {str(spec)!r}: no such folder or file, and no shipped config of that name{hint}; "
                             f"shipped: {', '.join(shipped)}")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserInputError(f"{p}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UserInputError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
    return model_from_config(cfg, name=name, source=str(p), weight_dtype=weight_dtype, image_px=image_px)
