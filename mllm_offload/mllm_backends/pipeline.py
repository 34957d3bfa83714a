"""One LLaVA-class model split over several worker processes, as a pipeline on loopback.

:class:`PipelineBackend` cuts a saved ``LlavaForConditionalGeneration`` checkpoint (a CLIP vision
tower and a Llama decoder: ``mllm-offload tiny-model``, the ``shapes`` models, LLaVA-1.5) into
contiguous ranges of **blocks**, named as :mod:`mllm_offload.edge_tier.model` names them::

    vision.0 .. vision.{V-1}   one CLIP encoder layer each (vision.0 also the patch/position
                               embeddings and the pre-layernorm); V = the layers the configured
                               ``vision_feature_layer`` needs
    projector                  the multimodal projector and the text token embeddings (image
                               features are scattered into the prompt's image-token positions)
    decoder.0 .. decoder.{L-1} one decoder layer each; each stage keeps a KV cache per request
    lm_head                    the final norm and the LM head (last position): the greedy token,
                               its log-probability and the requested alternatives

Worker ``k`` runs stage ``k`` (any contiguous range, cuts inside the vision tower included) and,
optionally, **backup** copies of other stages' weights (``backups={stage: worker}``). Each worker
is its own process (``python -m mllm_offload.mllm_backends.pipeline --worker SPEC``), with its
own torch thread count and a **slowdown** factor F >= 1 emulating a slower device exactly as
``HFLocalBackend(slowdown=F)`` does: after each forward pass of its stage it waits (F - 1) x that
pass's duration before passing the result on.

Data path (no pickle, no ``torch.load``): every message is one **frame** on a TCP loopback
connection::

    prefix  20 bytes   "!4sB3xIQ": magic b"MOPF", version 1, 3 pad bytes, header length (bytes,
                       at most MAX_HEADER_BYTES = 64 KiB), payload length (bytes, at most the
                       backend's max_frame_bytes, 64 MiB by default)
    header  JSON       an object: "kind" (run, out, token, error, drop, hello, ping, pong), request id
                       "rid", "attempt", "step", "stage", start position "pos", ... and
                       "tensors": [{"name", "dtype", "shape"}] (dtype in float32, float16,
                       bfloat16, int64, int32; at most 8 tensors of at most 8 dimensions)
    payload raw bytes  the tensors' C-contiguous little-endian bytes, in header order; their
                       sizes must add up to the payload length exactly

A malformed prefix or header, an unknown dtype or an oversized frame raises :class:`WireError`
before any payload byte is interpreted; tensors are rebuilt with ``torch.frombuffer``.

Flow: the coordinator (this process) preprocesses a request (chat template, tokenizer, image
processor, the same steps as ``HFLocalBackend``), sends ``input_ids`` and ``pixel_values`` to
stage 0 and relays each stage's output frame to the worker that currently serves the next stage
(a star on loopback: the relay forwards the payload bytes untouched; it is what lets a stage be
re-routed at once). The last stage answers with a ``token`` frame; the coordinator then sends
the next decode step (one token id) to stage 0. Many requests are in flight at once, so stage k
works on request A's step while stage k-1 works on request B's: with enough requests in flight
every worker is busy (the pipeline is full).

Failure handling. A worker that dies (``kill -9``) closes its socket: the coordinator sees EOF at
once (a watchdog also polls the processes); a worker that stops answering the coordinator's
pings (every 0.1 s, answered by a reader thread even while a pass computes) for
``heartbeat_timeout_s`` (2 s by default: a stopped or hung process) is killed. Every stage it
served is then re-routed: to a live worker holding that stage's backup (a **switch**), or,
without one, to a freshly started worker process for the stage (a **redeployment**, with the
lost worker's slowdown and threads; frames for the stage wait meanwhile; the new worker loads
the lost stages only, not the backups the lost one held; if it cannot start, every request
fails with :class:`~.base.BackendError` from then on). The KV caches held by the lost worker are gone, so
every in-flight request is **resumed**: its caches on the other workers are dropped and it is
prefilled again from its prompt plus the tokens it has already generated (nothing is emitted
twice, no request is lost; the tokens after the resume come from a prefill instead of
incremental decoding, equal up to float rounding). :attr:`PipelineBackend.failures` records,
per loss, when it was detected, when the stage had a worker again and when the first answer
token after it came (``recovery_s``).

Limits: LLaVA-class checkpoints with a CLIP tower and a Llama decoder, one integer
``vision_feature_layer``, greedy decoding only (``temperature`` is ignored, as the pipeline is
greedy by construction); a prompt over ``max_prompt_tokens`` (default: the context length)
raises :class:`~.base.ContextLengthError`; ``max_new_tokens`` is capped by the backend's
``max_new_tokens`` (512 by default) and by the context length. Each worker loads the whole
checkpoint and then frees the modules of the blocks it does not hold (peak memory = the whole
model, once per worker, at start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import math
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import UserInputError
from .base import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    BackendError,
    CancelToken,
    ContextLengthError,
    Generation,
    MMRequest,
    TokenCallback,
    TokenEvent,
    now,
)
from .confidence import confidence_from_logprobs
from .hf_local import CHARS_PER_TOKEN_BOUND, check_model_dir, encode_request

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_HEADER_BYTES",
    "FailureEvent",
    "Frame",
    "PipelineBackend",
    "StageRunner",
    "WireError",
    "decode_tensors",
    "encode_frame",
    "llava_block_names",
    "measure_block_seconds",
    "parse_header",
    "parse_prefix",
    "recv_frame",
]

# ---------------------------------------------------------------------------------------------- wire

MAGIC = b"MOPF"
VERSION = 1
_PREFIX = struct.Struct("!4sB3xIQ")
#: Prefix bytes before every frame's header.
PREFIX_BYTES = _PREFIX.size
#: Largest JSON header, bytes.
MAX_HEADER_BYTES = 64 * 1024
#: Default largest payload of one frame, bytes (hidden states of thousands of tokens fit).
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
_MAX_TENSORS = 8
_MAX_DIMS = 8
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                                   "int64": torch.int64, "int32": torch.int32}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_KINDS = ("run", "out", "token", "error", "drop", "hello", "ping", "pong")


class WireError(BackendError):
    """A frame that breaks the format (bad magic or version, oversized, malformed header)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: the JSON header and the raw payload bytes (tensors not yet rebuilt)."""

    header: dict[str, Any]
    payload: bytes | bytearray


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's C-contiguous raw bytes (any dtype, bfloat16 included)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def encode_frame(header: Mapping[str, Any], tensors: Sequence[tuple[str, torch.Tensor]] = (), *,
                 payload: bytes | bytearray | None = None, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """A frame's bytes: prefix, JSON header (``header`` plus the tensors' specs) and payload.

    ``payload``: already-encoded tensor bytes matching ``header["tensors"]`` (a relay forwards a
    frame's payload untouched); otherwise the bytes of ``tensors`` are concatenated.
    """
    doc = dict(header)
    if payload is None:
        if len(tensors) > _MAX_TENSORS:
            raise WireError(f"frame: {len(tensors)} tensors, at most {_MAX_TENSORS}")
        specs, parts = [], []
        for name, t in tensors:
            if t.dtype not in _DTYPE_NAMES:
                raise WireError(f"frame: tensor {name!r} has unsupported dtype {t.dtype}")
            specs.append({"name": name, "dtype": _DTYPE_NAMES[t.dtype], "shape": list(t.shape)})
            parts.append(_tensor_bytes(t))
        doc["tensors"] = specs
        payload = b"".join(parts)
    else:
        doc.setdefault("tensors", [])
    raw = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"frame: header of {len(raw)} bytes, at most {MAX_HEADER_BYTES}")
    if len(payload) > max_frame_bytes:
        raise WireError(f"frame: payload of {len(payload)} bytes, over the limit of {max_frame_bytes}")
    return _PREFIX.pack(MAGIC, VERSION, len(raw), len(payload)) + raw + bytes(payload)


def parse_prefix(prefix: bytes | bytearray, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> tuple[int, int]:
    """``(header bytes, payload bytes)`` of a frame prefix; :class:`WireError` when it is not one
    or announces more than the limits."""
    if len(prefix) != PREFIX_BYTES:
        raise WireError(f"frame: prefix of {len(prefix)} bytes, expected {PREFIX_BYTES}")
    magic, version, n_header, n_payload = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError(f"frame: bad magic {magic!r} (not a pipeline frame)")
    if version != VERSION:
        raise WireError(f"frame: version {version}, this side speaks {VERSION}")
    if not 2 <= n_header <= MAX_HEADER_BYTES:
        raise WireError(f"frame: header of {n_header} bytes, expected 2..{MAX_HEADER_BYTES}")
    if n_payload > max_frame_bytes:
        raise WireError(f"frame: payload of {n_payload} bytes, over the limit of {max_frame_bytes}")
    return n_header, n_payload


def _spec_bytes(spec: Any, k: int) -> int:
    """The byte size of one validated tensor spec of a header."""
    if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape"}:
        raise WireError(f"frame: tensors.{k}: expected {{name, dtype, shape}}")
    if not isinstance(spec["name"], str) or not 0 < len(spec["name"]) <= 64:
        raise WireError(f"frame: tensors.{k}.name: expected a short string")
    if spec["dtype"] not in _DTYPES:
        raise WireError(f"frame: tensors.{k}.dtype: {spec['dtype']!r} is not one of {', '.join(_DTYPES)}")
    shape = spec["shape"]
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)):
        raise WireError(f"frame: tensors.{k}.shape: expected at most {_MAX_DIMS} sizes >= 0, got {shape!r}")
    itemsize = torch.empty((), dtype=_DTYPES[spec["dtype"]]).element_size()
    return math.prod(shape) * itemsize


def parse_header(raw: bytes | bytearray, n_payload: int) -> dict[str, Any]:
    """The JSON header of a frame, checked: an object with a known ``kind`` and tensor specs
    whose sizes add up to ``n_payload`` bytes."""
    try:
        doc = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"frame: header is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise WireError(f"frame: header must be a JSON object, got {type(doc).__name__}")
    if doc.get("kind") not in _KINDS:
        raise WireError(f"frame: kind {doc.get('kind')!r} is not one of {', '.join(_KINDS)}")
    specs = doc.get("tensors", [])
    if not isinstance(specs, list) or len(specs) > _MAX_TENSORS:
        raise WireError(f"frame: tensors: expected a list of at most {_MAX_TENSORS} specs")
    total = sum(_spec_bytes(s, k) for k, s in enumerate(specs))
    if total != n_payload:
        raise WireError(f"frame: the tensors need {total} bytes, the payload has {n_payload}")
    doc["tensors"] = specs
    return doc


def decode_tensors(frame: Frame) -> dict[str, torch.Tensor]:
    """The tensors of a (validated) frame, rebuilt from its raw bytes with ``torch.frombuffer``."""
    out: dict[str, torch.Tensor] = {}
    buf = bytearray(frame.payload) if isinstance(frame.payload, bytes) else frame.payload
    offset = 0
    for spec in frame.header["tensors"]:
        dtype = _DTYPES[spec["dtype"]]
        n = math.prod(spec["shape"])
        size = n * torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(buf, dtype=dtype, count=n, offset=offset) if n else torch.empty(0, dtype=dtype)
        out[spec["name"]] = flat.reshape(spec["shape"])
        offset += size
    return out


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    """``n`` bytes from a blocking socket; ``None`` on EOF before the first byte; ConnectionError mid-way."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if got == 0:
                return None
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return buf


def recv_frame(sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame | None:
    """One frame from a blocking socket (``None``: the peer closed the connection between frames)."""
    prefix = _recv_exact(sock, PREFIX_BYTES)
    if prefix is None:
        return None
    n_header, n_payload = parse_prefix(prefix, max_frame_bytes)
    raw = _recv_exact(sock, n_header)
    payload = _recv_exact(sock, n_payload) if n_payload else bytearray()
    if raw is None or payload is None:
        raise ConnectionError("connection closed inside a frame")
    return Frame(parse_header(raw, n_payload), payload)


async def read_frame(reader: asyncio.StreamReader, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame | None:
    """One frame from an asyncio stream (``None``: EOF between frames; IncompleteReadError inside one)."""
    try:
        prefix = await reader.readexactly(PREFIX_BYTES)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    n_header, n_payload = parse_prefix(prefix, max_frame_bytes)
    raw = await reader.readexactly(n_header)
    payload = await reader.readexactly(n_payload) if n_payload else b""
    return Frame(parse_header(raw, n_payload), payload)


# ---------------------------------------------------------------------------------------------- blocks


def llava_block_names(config: Any) -> list[str]:
    """The block names of a LLaVA-class transformers config, in pipeline order (the naming of
    ``edge_tier.model``); :class:`UserInputError` for what the pipeline cannot run."""
    if getattr(config, "model_type", None) != "llava":
        raise UserInputError(f"model_type {getattr(config, 'model_type', None)!r}: the pipeline runs LLaVA-class checkpoints only")
    vc, tc = config.vision_config, config.text_config
    if vc.model_type != "clip_vision_model":
        raise UserInputError(f"vision_config.model_type {vc.model_type!r}: the pipeline runs CLIP vision towers only")
    if tc.model_type != "llama":
        raise UserInputError(f"text_config.model_type {tc.model_type!r}: the pipeline runs Llama decoders only")
    fl = config.vision_feature_layer
    lv = int(vc.num_hidden_layers)
    if not isinstance(fl, int) or not -lv - 1 <= fl <= lv:
        raise UserInputError(f"vision_feature_layer {fl!r}: the pipeline needs one layer index in [{-lv - 1}, {lv}]")
    needed = fl if fl >= 0 else lv + 1 + fl
    return ([f"vision.{k}" for k in range(needed)] + ["projector"]
            + [f"decoder.{k}" for k in range(int(tc.num_hidden_layers))] + ["lm_head"])


def _check_ranges(stages: Sequence[tuple[int, int]], n_blocks: int) -> list[tuple[int, int]]:
    """Contiguous ranges ``[start, stop)`` covering blocks ``0..n_blocks`` in order, each non-empty."""
    out = [(int(a), int(b)) for a, b in stages]
    if not out:
        raise UserInputError("stages: at least one stage")
    if out[0][0] != 0 or out[-1][1] != n_blocks or any(a >= b for a, b in out) or any(p[1] != q[0] for p, q in itertools.pairwise(out)):
        raise UserInputError(f"stages {out}: expected non-empty contiguous ranges covering blocks 0..{n_blocks}")
    return out


def _layer_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


class StageRunner:
    """The blocks of one or more stages of a checkpoint, run in this process (a worker's core).

    ``stages``: ``{stage index: (start, stop)}`` block ranges this runner holds; the modules of
    the other blocks are freed after loading. :meth:`run` runs one stage on one request's step
    and keeps that stage's KV cache per request (dropped by :meth:`drop`).
    """

    def __init__(self, model_dir: str | Path, stages: Mapping[int, tuple[int, int]], threads: int | None = None) -> None:
        from transformers import AutoModelForImageTextToText
        from transformers.cache_utils import DynamicCache
        from transformers.masking_utils import create_causal_mask

        if threads:
            torch.set_num_threads(int(threads))
        self._dynamic_cache, self._causal_mask = DynamicCache, create_causal_mask
        model = AutoModelForImageTextToText.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.config = model.config
        self.names = llava_block_names(model.config)
        self.stages = {int(k): (int(a), int(b)) for k, (a, b) in stages.items()}
        for k, (a, b) in self.stages.items():
            if not 0 <= a < b <= len(self.names):
                raise UserInputError(f"stage {k}: block range [{a}, {b}) outside 0..{len(self.names)}")
        lm = model.model.language_model
        tower = model.model.vision_tower
        self.tower = getattr(tower, "vision_model", tower)  # transformers 4.x nests it
        self.projector = model.model.multi_modal_projector
        self.embed, self.layers, self.norm, self.rotary = lm.embed_tokens, lm.layers, lm.norm, lm.rotary_emb
        self.lm_head = model.lm_head
        self.text_config = model.config.text_config
        self.image_token_id = int(model.config.image_token_id)
        self.default_strategy = model.config.vision_feature_select_strategy == "default"
        self.n_vision = sum(n.startswith("vision.") for n in self.names)
        self._prune()
        self._caches: dict[tuple[int, int], tuple[int, Any]] = {}

    def _held(self) -> set[str]:
        return {self.names[i] for a, b in self.stages.values() for i in range(a, b)}

    def _prune(self) -> None:
        """Free the modules of blocks no stage here holds (the checkpoint was loaded whole)."""
        held = self._held()
        enc = self.tower.encoder.layers
        for k in range(len(enc)):
            if f"vision.{k}" not in held:
                enc[k] = torch.nn.Identity()
        for k in range(len(self.layers)):
            if f"decoder.{k}" not in held:
                self.layers[k] = torch.nn.Identity()
        needs_embeddings = "vision.0" in held or (self.n_vision == 0 and "projector" in held)
        if not needs_embeddings:
            self.tower.embeddings = torch.nn.Identity()
        if "projector" not in held:
            self.projector, self.embed = None, None
        if "lm_head" not in held:
            self.lm_head, self.norm = None, None
        self.tower.post_layernorm = torch.nn.Identity()  # never used: LLaVA takes hidden states, not the pooled output

    def drop(self, rid: int) -> None:
        """Forget request ``rid``'s KV caches on every stage held here."""
        for key in [k for k in self._caches if k[1] == rid]:
            del self._caches[key]

    def _cache(self, stage: int, rid: int, attempt: int, prefill: bool) -> Any | None:
        """The stage's cache for the request (a new one on prefill); ``None`` when stale."""
        key = (stage, rid)
        if prefill:
            cache = self._dynamic_cache(config=self.text_config)
            self._caches[key] = (attempt, cache)
            return cache
        held = self._caches.get(key)
        if held is None or held[0] != attempt:
            return None
        return held[1]

    def _vision_in(self, state: dict[str, torch.Tensor]) -> torch.Tensor | None:
        pv = state.pop("pixel_values", None)
        if pv is not None:
            return self.tower.pre_layrnorm(self.tower.embeddings(pv.to(self.tower.pre_layrnorm.weight.dtype)))
        return state.pop("vision", None)

    def _projector(self, state: dict[str, torch.Tensor]) -> None:
        ids = state.pop("input_ids")
        emb = self.embed(ids)
        vis = self._vision_in(state)
        if vis is not None:
            feats = self.projector(vis[:, 1:] if self.default_strategy else vis)
            feats = feats.reshape(-1, feats.shape[-1]).to(emb.dtype)
            mask = (ids == self.image_token_id).unsqueeze(-1).expand_as(emb)
            if int(mask.sum()) != feats.numel():
                raise UserInputError(f"image features and image tokens do not match: {int(mask[..., 0].sum())} tokens, "
                                     f"{feats.shape[0]} features")
            emb = emb.masked_scatter(mask, feats)
        state["hidden"] = emb

    def _decoders(self, state: dict[str, torch.Tensor], first: int, last: int, cache: Any, pos: int) -> None:
        """Decoder layers ``first..last`` (inclusive) as LlamaModel runs them: one causal mask and
        one rotary embedding for the stage's layers, the stage's own cache."""
        h = state["hidden"]
        t = h.shape[1]
        pos_ids = torch.arange(pos, pos + t, dtype=torch.long).unsqueeze(0)
        mask = self._causal_mask(config=self.text_config, inputs_embeds=h, attention_mask=torch.ones(1, pos + t, dtype=torch.long),
                                 cache=cache, position_ids=pos_ids, layer_idx=first)
        pe = self.rotary(h, position_ids=pos_ids)
        for k in range(first, last + 1):
            h = _layer_out(self.layers[k](h, attention_mask=mask, position_ids=pos_ids, cache=cache, use_cache=True, position_embeddings=pe))
        state["hidden"] = h

    def _head(self, state: dict[str, torch.Tensor], top: int) -> dict[str, Any]:
        h = self.norm(state["hidden"][:, -1:, :])
        logits = self.lm_head(h)[0, -1].float()
        logsm = torch.log_softmax(logits, dim=-1)
        token = int(torch.argmax(logits))
        out: dict[str, Any] = {"token": token, "logprob": float(logsm[token])}
        if top:
            v, ix = torch.topk(logsm, min(int(top), logsm.numel()))
            out["top_ids"], out["top_lps"] = [int(i) for i in ix.tolist()], [float(x) for x in v.tolist()]
        return out

    def run(self, stage: int, state: dict[str, torch.Tensor], *, rid: int, attempt: int, pos: int, prefill: bool,
            top: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """Run stage ``stage`` on one step of request ``rid``: returns the tensors passed on and,
        for the stage holding ``lm_head``, the token fields (``token``, ``logprob``, ``top_ids``,
        ``top_lps``). :class:`KeyError` for a stage not held here; ``(state, None)`` unchanged
        for a decode step of a stale attempt (its cache was dropped)."""
        a, b = self.stages[stage]
        state = dict(state)
        cache = None
        dec = [i for i in range(a, b) if self.names[i].startswith("decoder.")]
        if dec:
            cache = self._cache(stage, rid, attempt, prefill)
            if cache is None:
                return state, {"stale": True}
        result: dict[str, Any] | None = None
        with torch.inference_mode():
            i = a
            while i < b:
                name = self.names[i]
                if name.startswith("vision."):
                    vis = self._vision_in(state)
                    if vis is not None:  # a request without images skips the tower
                        state["vision"] = _layer_out(self.tower.encoder.layers[int(name.split(".")[1])](vis, None))
                elif name == "projector":
                    self._projector(state)
                elif name.startswith("decoder."):
                    last = max(j for j in dec if j >= i)
                    self._decoders(state, int(name.split(".")[1]), int(self.names[last].split(".")[1]), cache, pos)
                    i = last
                else:
                    result = self._head(state, top)
                    state = {}
                i += 1
        return state, result


def measure_block_seconds(model_dir: str | Path, *, prompt_tokens: int = 48, new_tokens: int = 8, images: int = 1,
                          repeats: int = 5, threads: int | None = 1) -> list[float]:
    """Seconds one request spends in each block on this host (median of ``repeats``), in
    pipeline order: one prefill of ``prompt_tokens`` text tokens plus ``images`` images, then
    ``new_tokens - 1`` decode steps. What a planner should see when the blocks' real times, not
    their FLOPs, decide (small models on a CPU, where per-layer overhead dominates and the
    decoder runs at every decode step but the vision tower once)."""
    from transformers import AutoConfig

    n_blocks = len(llava_block_names(AutoConfig.from_pretrained(str(model_dir), local_files_only=True)))
    model_runner = StageRunner(model_dir, {k: (k, k + 1) for k in range(n_blocks)}, threads=threads)  # a stage per block
    cfg = model_runner.config
    side = int(cfg.vision_config.image_size)
    n_img = (side // int(cfg.vision_config.patch_size)) ** 2 + (0 if model_runner.default_strategy else 1)
    ids = torch.randint(0, int(cfg.text_config.vocab_size) - 8, (1, prompt_tokens + images * n_img))
    ids[ids == model_runner.image_token_id] = 0
    ids[0, 1:1 + images * n_img] = model_runner.image_token_id
    pixels = torch.randn(images, 3, side, side) if images else None
    times = np.zeros((repeats, len(model_runner.names)))
    for r in range(repeats):
        for step in range(new_tokens):
            state: dict[str, torch.Tensor] = {"input_ids": ids if step == 0 else ids[:, -1:]}
            if step == 0 and pixels is not None:
                state["pixel_values"] = pixels
            pos = 0 if step == 0 else ids.shape[1] + step - 1
            for k in range(len(model_runner.names)):
                t0 = time.perf_counter()
                state, _ = model_runner.run(k, state, rid=r, attempt=0, pos=pos, prefill=step == 0)
                times[r, k] += time.perf_counter() - t0
        model_runner.drop(r)
    return [float(x) for x in np.median(times, axis=0)]


# ---------------------------------------------------------------------------------------------- worker


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (no orphan workers)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not glibc
        pass


class _Sender:
    """One connection's sends, serialised (the compute loop and the heartbeat reader share it)."""

    def __init__(self, conn: socket.socket, max_frame_bytes: int) -> None:
        self.conn, self.max_frame_bytes = conn, max_frame_bytes
        self._lock = threading.Lock()

    def send(self, header: Mapping[str, Any], tensors: Sequence[tuple[str, torch.Tensor]] = ()) -> None:
        data = encode_frame(header, tensors, max_frame_bytes=self.max_frame_bytes)
        with self._lock:
            self.conn.sendall(data)


def _read_into(conn: socket.socket, sender: _Sender, inbox: queue.Queue[Frame | BaseException | None]) -> None:
    """Reader thread: answer pings at once (the heartbeat works while a pass computes), queue the rest."""
    try:
        while True:
            frame = recv_frame(conn, sender.max_frame_bytes)
            if frame is not None and frame.header["kind"] == "ping":
                sender.send({"kind": "pong", "t": frame.header.get("t")})
                continue
            inbox.put(frame)
            if frame is None:
                return
    except (OSError, WireError) as e:
        inbox.put(e)


def _serve_conn(conn: socket.socket, runner: StageRunner, slowdown: float, max_frame_bytes: int) -> None:
    """Run the coordinator's frames, one at a time in arrival order, until it closes the connection."""
    extra = max(float(slowdown) - 1.0, 0.0)
    sender = _Sender(conn, max_frame_bytes)
    inbox: queue.Queue[Frame | BaseException | None] = queue.Queue()
    threading.Thread(target=_read_into, args=(conn, sender, inbox), name="reader", daemon=True).start()
    while True:
        frame = inbox.get()
        if frame is None:
            return
        if isinstance(frame, BaseException):
            raise frame
        h = frame.header
        if h["kind"] == "drop":
            runner.drop(int(h["rid"]))
            continue
        if h["kind"] != "run":
            raise WireError(f"worker: unexpected frame kind {h['kind']!r}")
        try:
            t0 = time.perf_counter()
            state, result = runner.run(int(h["stage"]), decode_tensors(frame), rid=int(h["rid"]), attempt=int(h["attempt"]),
                                       pos=int(h["pos"]), prefill=bool(h["prefill"]), top=int(h.get("top", 0)))
            spent = time.perf_counter() - t0
        except (UserInputError, RuntimeError, ValueError, KeyError, IndexError, TypeError) as e:
            sender.send({"kind": "error", "rid": h.get("rid"), "attempt": h.get("attempt"),
                         "message": " ".join(f"stage {h.get('stage')}: {type(e).__name__}: {e}".split())[:2000]})
            continue
        if result is not None and result.get("stale"):
            continue  # a step of a request the coordinator has resumed: nobody waits for it
        if extra > 0.0:  # emulate a slower device: wait in proportion to this forward pass
            time.sleep(extra * spent)
        base: dict[str, Any] = {k: h[k] for k in ("rid", "attempt", "step", "stage", "pos", "prefill", "top") if k in h}
        if result is not None:
            sender.send({**base, "kind": "token", **result, "compute_s": spent})
        else:
            sender.send({**base, "kind": "out"}, list(state.items()))


def worker_main(spec: Mapping[str, Any]) -> int:
    """A worker process: load the stages, listen on a loopback port, print ``READY port`` on
    stdout, serve the coordinator's one connection until it closes, exit."""
    _die_with_parent()
    stages = {int(k): (int(v[0]), int(v[1])) for k, v in spec["stages"].items()}
    runner = StageRunner(spec["model"], stages, threads=spec.get("threads"))
    max_frame_bytes = int(spec.get("max_frame_bytes", DEFAULT_MAX_FRAME_BYTES))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(float(spec.get("accept_timeout_s", 120.0)))
        print(f"READY {srv.getsockname()[1]}", flush=True)
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            print("worker: no coordinator connected; exiting", file=sys.stderr)
            return 1
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(encode_frame({"kind": "hello", "name": spec.get("name", ""), "pid": os.getpid(), "stages": sorted(stages)}))
        try:
            _serve_conn(conn, runner, float(spec.get("slowdown", 1.0)), max_frame_bytes)
        except (OSError, WireError) as e:
            print(f"worker {spec.get('name', '')}: {e}", file=sys.stderr)
            return 1
    return 0


# ---------------------------------------------------------------------------------------------- coordinator


@dataclass
class FailureEvent:
    """One lost worker: what replaced it and how long answers stopped (``time.perf_counter`` s)."""

    worker: str
    stages: tuple[int, ...]
    action: Literal["switch", "redeploy"]
    detected_at: float
    resumed: int = 0  #: in-flight requests resumed
    ready_at: float | None = None  #: every lost stage had a live worker again
    recovered_at: float | None = None  #: first answer token after the loss
    to: tuple[str, ...] = ()

    @property
    def recovery_s(self) -> float | None:
        """Seconds from detection to the first answer token after it."""
        return None if self.recovered_at is None else self.recovered_at - self.detected_at


@dataclass
class _Worker:
    name: str
    stages: dict[int, tuple[int, int]]
    slowdown: float
    threads: int
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    port: int = 0
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    alive: bool = False
    last_seen: float = 0.0  #: perf_counter of its last frame (any kind, pongs included)


@dataclass
class _Req:
    rid: int
    prompt_ids: list[int]
    pixels: torch.Tensor | None
    max_new: int
    top: int
    cancel: CancelToken
    emit: Any
    t0: float
    done: asyncio.Future[None]
    attempt: int = 0
    ids: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    tops: list[list[tuple[str, float]]] = field(default_factory=list)
    text: str = ""
    ttft: float | None = None
    error: BaseException | None = None
    resumed: int = 0  #: times it was resumed after a worker loss
    prefill: bool = True  #: the next step is a prefill (the first step, or a resume)


class PipelineBackend:
    """A LLaVA-class checkpoint split over worker processes (see the module docstring).

    Args:
        model: the saved model folder (with its processor).
        stages: block ranges ``[(start, stop), ...]``, contiguous, covering every block (see
            :func:`llava_block_names`); worker ``k`` runs stage ``k``.
        slowdowns: per worker, a compute factor >= 1 (default 1 each).
        threads: per worker, torch intra-op threads (default 1 each).
        backups: ``{stage: worker}``: that worker also loads the stage's weights and takes it
            over when the stage's worker dies.
        name: label of the backend in :attr:`Generation.backend`.
        max_new_tokens: cap on a request's ``max_new_tokens``.
        max_prompt_tokens: longest prompt (images and template included; ``None``: the context
            length; ``0``: no limit).
        max_frame_bytes: largest frame payload, bytes (both directions).
        startup_timeout_s: seconds a worker may take to load and listen.
        heartbeat_s: seconds between pings to each worker (and process checks).
        heartbeat_timeout_s: seconds of silence after which a worker (stopped, hung) is killed
            and treated as lost; a dead one is noticed at once from its socket's EOF.
        on_event: called with one line per worker loss and recovery (from the pipeline's thread).
    """

    def __init__(self, model: str | Path, stages: Sequence[tuple[int, int]], *, slowdowns: Sequence[float] | None = None,
                 threads: Sequence[int] | None = None, backups: Mapping[int, int] | None = None, name: str | None = None,
                 max_new_tokens: int = 512, max_prompt_tokens: int | None = None, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                 max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 startup_timeout_s: float = 180.0, heartbeat_s: float = 0.1, heartbeat_timeout_s: float = 2.0,
                 confidence: str = "quantile", confidence_q: float = 0.1, on_event: Any = None) -> None:
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        self.model_dir = check_model_dir(model)
        self.name = name or f"pipeline:{self.model_dir.name}"
        self.unsupported = "error"
        try:
            self.config = AutoConfig.from_pretrained(str(model), local_files_only=True)
            self.processor = AutoProcessor.from_pretrained(str(model), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise UserInputError(f"{model}: cannot load config/processor ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.block_names = llava_block_names(self.config)
        self.stages = _check_ranges(stages, len(self.block_names))
        m = len(self.stages)
        self.slowdowns = [float(x) for x in (slowdowns or [1.0] * m)]
        self.threads = [int(x) for x in (threads or [1] * m)]
        if len(self.slowdowns) != m or len(self.threads) != m:
            raise UserInputError(f"slowdowns and threads: one per stage ({m}), got {len(self.slowdowns)} and {len(self.threads)}")
        if not all(math.isfinite(f) and 1.0 <= f <= 1000.0 for f in self.slowdowns):
            raise UserInputError(f"slowdowns: each must be in [1, 1000], got {self.slowdowns}")
        if not all(1 <= t <= 256 for t in self.threads):
            raise UserInputError(f"threads: each must be in 1..256, got {self.threads}")
        self.backups = {int(s): int(w) for s, w in (backups or {}).items()}
        for s, w in self.backups.items():
            if not (0 <= s < m and 0 <= w < m and s != w):
                raise UserInputError(f"backups: stage {s} on worker {w}: expected a stage and another worker in 0..{m - 1}")
        if not 1 <= max_new_tokens <= 100_000:
            raise UserInputError(f"max_new_tokens: must be in 1..100000, got {max_new_tokens}")
        if max_frame_bytes < 1024:
            raise UserInputError(f"max_frame_bytes: must be >= 1024, got {max_frame_bytes}")
        self.max_new_tokens, self.max_frame_bytes, self.startup_timeout_s = max_new_tokens, max_frame_bytes, startup_timeout_s
        if not (0 < heartbeat_s <= 10 and heartbeat_s < heartbeat_timeout_s <= 3600):
            raise UserInputError(f"heartbeat: expected 0 < heartbeat_s ({heartbeat_s}) <= 10 and heartbeat_s < heartbeat_timeout_s "
                                 f"({heartbeat_timeout_s}) <= 3600, seconds")
        self.heartbeat_s, self.heartbeat_timeout_s = heartbeat_s, heartbeat_timeout_s
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.context_length = int(getattr(self.config.text_config, "max_position_embeddings", 0)) or None
        self.max_prompt_tokens = (self.context_length if max_prompt_tokens is None else max_prompt_tokens) or None
        self.max_image_pixels, self.max_request_pixels = max_image_pixels, max_request_pixels
        self.confidence_method, self.confidence_q = confidence, confidence_q
        self.max_video_frames = 4
        self.image_side = _image_side(self.processor)
        gen = GenerationConfig.from_pretrained(str(model), local_files_only=True) if (self.model_dir / "generation_config.json").is_file() else None
        eos = (gen.eos_token_id if gen is not None else None) or self.config.text_config.eos_token_id
        self.eos = set(np.atleast_1d(eos if eos is not None else []).tolist())
        self.on_event = on_event
        self.failures: list[FailureEvent] = []
        self._prep = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline-prep")
        self._workers = [_Worker(f"w{k}", {k: self.stages[k]}, self.slowdowns[k], self.threads[k]) for k in range(m)]
        for s, w in self.backups.items():
            self._workers[w].stages[s] = self.stages[s]
        self._route: list[_Worker | None] = list(self._workers)
        self._pending: dict[int, list[bytes]] = {k: [] for k in range(m)}
        self._reqs: dict[int, _Req] = {}
        self._rids = itertools.count(1)
        self._broken: str | None = None  #: why the pipeline cannot answer any more (a failed redeployment)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pipeline", daemon=True)
        self._thread.start()
        try:
            for worker in self._workers:
                self._spawn(worker)
            for worker in self._workers:
                self._wait_ready(worker)
            asyncio.run_coroutine_threadsafe(self._connect_all(), self._loop).result(timeout=30)
        except BaseException:
            self.close()
            raise

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        """Start ``w``'s process (it loads its stages, then prints ``READY port``)."""
        spec = {"model": str(self.model_dir), "name": w.name, "stages": {str(k): list(v) for k, v in w.stages.items()},
                "slowdown": w.slowdown, "threads": w.threads, "max_frame_bytes": self.max_frame_bytes}
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
               "OMP_NUM_THREADS": str(w.threads), "PYTHONUNBUFFERED": "1"}
        w.log = tempfile.TemporaryFile()
        w.proc = subprocess.Popen([sys.executable, "-m", "mllm_offload.mllm_backends.pipeline", "--worker", json.dumps(spec)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=w.log, env=env)

    def _log_tail(self, w: _Worker) -> str:
        if w.log is None:
            return ""
        w.log.seek(0)
        lines = w.log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def _wait_ready(self, w: _Worker) -> None:
        """Block until ``w`` prints ``READY port`` (BackendError if it exits or takes too long)."""
        assert w.proc is not None and w.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                w.proc.kill()
                raise BackendError(f"{self.name}: worker {w.name} did not start within {self.startup_timeout_s:g} s")
            ready, _, _ = select.select([w.proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(w.proc.stdout.fileno(), 256)
                if not chunk:
                    w.proc.wait(timeout=5)
                    raise BackendError(f"{self.name}: worker {w.name} exited with status {w.proc.returncode} while starting: "
                                       f"{self._log_tail(w) or 'no output'}")
                line += chunk
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY "):
            raise BackendError(f"{self.name}: worker {w.name} said {text!r} instead of READY")
        w.port = int(text.split()[1])

    async def _connect(self, w: _Worker) -> None:
        w.reader, w.writer = await asyncio.open_connection("127.0.0.1", w.port, limit=2**20)
        sock = w.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = await read_frame(w.reader, self.max_frame_bytes)
        if hello is None or hello.header["kind"] != "hello":
            raise BackendError(f"{self.name}: worker {w.name} did not greet")
        w.alive, w.last_seen = True, now()
        self._loop.create_task(self._read_loop(w))

    async def _connect_all(self) -> None:
        for w in self._workers:
            await self._connect(w)
        self._loop.create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """Every ``heartbeat_s`` seconds: a worker process that has exited is lost (even before its
        socket reports EOF); each live worker is pinged, and one silent for ``heartbeat_timeout_s``
        (stopped, hung) is killed and treated as lost. A tick that comes late (this loop was busy)
        checks no silence, so pongs still unread are not mistaken for missing ones."""
        ping = encode_frame({"kind": "ping"})
        last_tick = now()
        while not self._closed:
            await asyncio.sleep(self.heartbeat_s)
            t = now()
            late = t - last_tick > self.heartbeat_s + self.heartbeat_timeout_s / 2
            last_tick = t
            self._poll_processes()
            for w in list(self._workers):
                if not w.alive or w.writer is None:
                    continue
                if late:
                    w.last_seen = t
                elif t - w.last_seen > self.heartbeat_timeout_s:
                    self._say(f"worker {w.name}: no heartbeat for {t - w.last_seen:.1f} s; killing it")
                    if w.proc is not None:
                        w.proc.kill()
                    self._lost(w)
                    continue
                w.writer.write(ping)

    def _say(self, line: str) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event(line)

    async def _read_loop(self, w: _Worker) -> None:
        """Frames from ``w`` until its connection ends; then the worker is treated as lost."""
        assert w.reader is not None
        try:
            while True:
                frame = await read_frame(w.reader, self.max_frame_bytes)
                if frame is None:
                    break
                w.last_seen = now()
                self._on_frame(w, frame)
        except (ConnectionError, asyncio.IncompleteReadError, WireError) as e:
            self._say(f"worker {w.name}: connection broken ({type(e).__name__}: {e})")
        if not self._closed:
            self._lost(w)

    # -- routing -------------------------------------------------------------------------------

    def _send_stage(self, stage: int, data: bytes) -> None:
        """Send a frame to whichever worker serves ``stage`` now (queued while none does)."""
        w = self._route[stage]
        if w is None or not w.alive or w.writer is None:
            self._pending[stage].append(data)
            return
        w.writer.write(data)

    def _issue(self, req: _Req) -> None:
        """Send request ``req``'s next step to stage 0: a prefill (first step or a resume) or one token."""
        first = req.prefill
        ids = req.prompt_ids + req.ids if first else req.ids[-1:]
        tensors: list[tuple[str, torch.Tensor]] = [("input_ids", torch.tensor([ids], dtype=torch.long))]
        if first and req.pixels is not None:
            tensors.append(("pixel_values", req.pixels))
        pos = 0 if first else len(req.prompt_ids) + len(req.ids) - 1
        header = {"kind": "run", "rid": req.rid, "attempt": req.attempt, "step": len(req.ids), "stage": 0, "pos": pos,
                  "prefill": first, "top": req.top}
        req.prefill = False
        self._send_stage(0, encode_frame(header, tensors, max_frame_bytes=self.max_frame_bytes))

    def _drop_everywhere(self, rid: int) -> None:
        data = encode_frame({"kind": "drop", "rid": rid})
        for w in self._workers:
            if w.alive and w.writer is not None:
                w.writer.write(data)

    def _on_frame(self, w: _Worker, frame: Frame) -> None:
        h = frame.header
        req = self._reqs.get(int(h.get("rid", -1)))
        if req is None or h.get("attempt") != req.attempt or req.done.done():
            return  # a request already finished, cancelled or resumed
        kind = h["kind"]
        if kind == "out":
            nxt = int(h["stage"]) + 1
            if nxt >= len(self.stages):
                self._fail(req, BackendError(f"{self.name}: stage {h['stage']} passed on past the last stage"))
                return
            self._send_stage(nxt, encode_frame({**h, "kind": "run", "stage": nxt}, payload=frame.payload, max_frame_bytes=self.max_frame_bytes))
        elif kind == "token":
            self._on_token(req, h)
        elif kind == "error":
            self._fail(req, BackendError(f"{self.name}: worker {w.name}: {h.get('message', 'error')}"))

    def _on_token(self, req: _Req, h: Mapping[str, Any]) -> None:
        t = now()
        for ev in self.failures:
            if ev.recovered_at is None:
                ev.recovered_at = t
        tok = int(h["token"])
        if req.ttft is None:
            req.ttft = t - req.t0
        req.ids.append(tok)
        req.lps.append(float(h["logprob"]))
        top = [(self.tokenizer.decode([int(i)]), float(x)) for i, x in zip(h.get("top_ids", []), h.get("top_lps", []))]
        if req.top:
            req.tops.append(top)
        text = self.tokenizer.decode(req.ids, skip_special_tokens=True)
        piece = text[len(req.text):]
        if piece.endswith("\ufffd"):
            piece = ""
        else:
            req.text = text
        if req.emit is not None:
            req.emit(TokenEvent(piece, self.tokenizer.decode([tok]), float(h["logprob"]), tuple(top)))
        limit = self.context_length or 0
        if tok in self.eos or len(req.ids) >= req.max_new or req.cancel.cancelled or (limit and len(req.prompt_ids) + len(req.ids) >= limit):
            self._finish(req)
        else:
            self._issue(req)

    def _finish(self, req: _Req) -> None:
        self._reqs.pop(req.rid, None)
        self._drop_everywhere(req.rid)
        if not req.done.done():
            req.done.set_result(None)

    def _fail(self, req: _Req, error: BaseException) -> None:
        req.error = error
        self._finish(req)

    def _lost(self, w: _Worker) -> None:
        """``w`` died: re-route its stages (backup or redeployment) and resume every in-flight request."""
        if not w.alive or self._closed:
            return
        w.alive = False
        t = now()
        lost = [s for s, r in enumerate(self._route) if r is w]
        if not lost:
            self._say(f"worker {w.name} lost (it served no stage)")
            return
        targets: list[str] = []
        orphans: list[int] = []
        for s in lost:
            b = next((x for x in self._workers if x is not w and x.alive and s in x.stages), None)
            self._route[s] = b
            if b is None:
                orphans.append(s)
            else:
                targets.append(b.name)
        ev = FailureEvent(w.name, tuple(lost), "redeploy" if orphans else "switch", t, to=tuple(targets))
        self.failures.append(ev)
        if not orphans:
            ev.ready_at = t
            self._say(f"worker {w.name} lost: stage(s) {lost} switched to {', '.join(targets)}")
        else:
            self._say(f"worker {w.name} lost: no backup for stage(s) {orphans}; starting a new worker")
            self._loop.create_task(self._redeploy(w, orphans, ev))
        for req in list(self._reqs.values()):
            req.attempt += 1
            req.resumed += 1
            ev.resumed += 1
            self._drop_everywhere(req.rid)
            req.prefill = True
            self._issue(req)

    async def _redeploy(self, old: _Worker, stages: list[int], ev: FailureEvent) -> None:
        """A new worker process for ``stages`` (the lost worker's slowdown and threads); pending frames flushed."""
        w = _Worker(f"{old.name}'", {s: self.stages[s] for s in stages}, old.slowdown, old.threads)
        try:
            await self._loop.run_in_executor(None, self._spawn, w)
            await self._loop.run_in_executor(None, self._wait_ready, w)
            await self._connect(w)
        except (BackendError, OSError) as e:
            self._say(f"redeployment of stage(s) {stages} failed: {e}")
            self._broken = f"stage(s) {stages} lost and could not be redeployed: {e}"
            for req in list(self._reqs.values()):
                self._fail(req, BackendError(f"{self.name}: stage(s) {stages} lost and could not be redeployed: {e}"))
            return
        self._workers.append(w)
        for s in stages:
            self._route[s] = w
        ev.ready_at = now()
        ev.to = (*ev.to, w.name)
        self._say(f"stage(s) {stages} redeployed on {w.name} in {ev.ready_at - ev.detected_at:.2f} s")
        for s in stages:
            queued, self._pending[s] = self._pending[s], []
            for data in queued:
                self._send_stage(s, data)

    def _poll_processes(self) -> None:
        """A worker process that exited is lost even if its socket has not reported EOF yet."""
        for w in list(self._workers):
            if w.alive and w.proc is not None and w.proc.poll() is not None:
                self._lost(w)

    # -- requests -----------------------------------------------------------------------------

    def check_prompt(self, prompt: str, what: str = "request") -> int:
        """The prompt's text tokens; :class:`ContextLengthError` over ``max_prompt_tokens``."""
        limit = self.max_prompt_tokens
        if limit and len(prompt) > CHARS_PER_TOKEN_BOUND * limit:
            raise self._too_long(len(prompt), "characters", what)
        n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if limit and n > limit:
            raise self._too_long(n, "tokens", what)
        return n

    def _too_long(self, n: int, unit: str, what: str) -> ContextLengthError:
        return ContextLengthError(f"{what}: the prompt has {n} {unit}, over this model's limit of {self.max_prompt_tokens} tokens "
                                  f"(context length {self.context_length}); shorten it")

    def _inputs(self, request: MMRequest) -> tuple[list[int], torch.Tensor | None]:
        """Prompt token ids and pixel values, as ``HFLocalBackend`` builds them (chat template,
        processor); limits checked before anything is decoded."""
        rid = f"request {request.id or '?'}"
        self.check_prompt(request.prompt, rid)
        if request.audio is not None:
            raise UserInputError(f"{rid}: model {self.name} does not accept audio")
        enc = encode_request(self.processor, request, rid, max_video_frames=self.max_video_frames, max_image_pixels=self.max_image_pixels,
                             max_request_pixels=self.max_request_pixels, image_side=self.image_side)
        ids = [int(x) for x in enc["input_ids"][0].tolist()]
        if self.max_prompt_tokens and len(ids) > self.max_prompt_tokens:
            raise self._too_long(len(ids), "tokens (images and chat template included)", rid)
        pixels = enc.get("pixel_values")
        return ids, (pixels.contiguous() if pixels is not None else None)

    async def _start(self, req: _Req) -> None:
        self._reqs[req.rid] = req
        self._issue(req)

        async def watch_cancel() -> None:
            await req.cancel.wait()
            if not req.done.done():
                self._finish(req)

        watcher = self._loop.create_task(watch_cancel())
        try:
            await req.done
        finally:
            watcher.cancel()

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: TokenCallback | None = None) -> Generation:
        """Generate greedily through the pipeline (see the module docstring)."""
        if self._closed:
            raise BackendError(f"{self.name}: closed")
        if self._broken:
            raise BackendError(f"{self.name}: {self._broken}")
        caller = asyncio.get_running_loop()
        cancel = cancel or CancelToken()
        t0 = now()
        ids, pixels = await caller.run_in_executor(self._prep, self._inputs, request)
        emit = None
        if on_token is not None:
            def emit(event: TokenEvent) -> None:
                caller.call_soon_threadsafe(on_token, event)
        rid = next(self._rids)
        limit = self.context_length or 0
        max_new = min(request.max_new_tokens, self.max_new_tokens, max(limit - len(ids), 1) if limit else request.max_new_tokens)
        fut: concurrent.futures.Future[_Req] = concurrent.futures.Future()

        def create() -> None:
            req = _Req(rid, ids, pixels, max_new, request.top_logprobs, cancel, emit, t0, self._loop.create_future())
            fut.set_result(req)
            self._loop.create_task(self._start(req))

        if cancel.cancelled:
            return Generation(text="", latency_s=now() - t0, finish_reason="cancelled", cancelled=True, backend=self.name)
        self._loop.call_soon_threadsafe(create)
        req = await asyncio.wrap_future(fut)
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._wait(req), self._loop))
        except asyncio.CancelledError:
            cancel.cancel()
            raise
        return self._generation(req, len(ids))

    async def _wait(self, req: _Req) -> None:
        await asyncio.shield(req.done)

    def _generation(self, req: _Req, n_in: int) -> Generation:
        if req.error is not None:
            raise req.error
        if req.cancel.cancelled and not (req.ids and (req.ids[-1] in self.eos or len(req.ids) >= req.max_new)):
            finish = "cancelled"
        elif req.ids and req.ids[-1] in self.eos:
            finish = "stop"
        else:
            finish = "length" if len(req.ids) >= req.max_new else "stop"
        text = self.tokenizer.decode(req.ids, skip_special_tokens=True)
        if req.emit is not None and len(text) > len(req.text):  # flush text held back for an incomplete character
            req.emit(TokenEvent(text[len(req.text):], "", None, ()))
        return Generation(
            text=text, token_logprobs=list(req.lps), tokens=[self.tokenizer.decode([i]) for i in req.ids], token_ids=list(req.ids),
            top_logprobs=req.tops, confidence=confidence_from_logprobs(req.lps, self.confidence_method, self.confidence_q),
            ttft_s=req.ttft, latency_s=now() - req.t0, in_tokens=n_in, out_tokens=len(req.ids), finish_reason=finish,
            cancelled=finish == "cancelled", backend=self.name, extra={"pipeline": {"resumed": req.resumed}})

    # -- state and shutdown --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Which worker serves each stage, which workers are alive, the losses so far."""
        return {"stages": [{"blocks": [self.block_names[a], self.block_names[b - 1]], "worker": None if r is None else r.name}
                           for (a, b), r in zip(self.stages, self._route)],
                "workers": [{"name": w.name, "alive": w.alive, "pid": None if w.proc is None else w.proc.pid,
                             "stages": sorted(w.stages), "slowdown": w.slowdown, "threads": w.threads} for w in self._workers],
                "failures": [{"worker": e.worker, "action": e.action, "recovery_s": e.recovery_s} for e in self.failures]}

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers, in start order."""
        return [w.proc.pid for w in self._workers if w.alive and w.proc is not None]

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        """Fail what is in flight, close the connections, stop every worker process (SIGTERM, then SIGKILL)."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            for req in list(self._reqs.values()):
                self._fail(req, BackendError(f"{self.name}: closed"))
            for w in self._workers:
                if w.writer is not None:
                    w.writer.close()

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_call(shut), self._loop).result(timeout=5)
        for w in self._workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.terminate()
        for w in self._workers:
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait(timeout=3)
                if w.proc.stdout is not None:
                    w.proc.stdout.close()
            if w.log is not None:
                w.log.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        self._prep.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> PipelineBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PipelineBackend({str(self.model_dir)!r}, stages={self.stages})"


def _image_side(processor: Any) -> int | None:
    """The shorter side large images are reduced to before the processor: ``HFLocalBackend``'s
    rule (never below 1024, nor below twice the largest size the processor names)."""
    ip = getattr(processor, "image_processor", None)
    if ip is None:
        return None
    sizes: list[float] = []
    for attr in ("size", "crop_size"):
        v = getattr(ip, attr, None)
        vals = v.values() if isinstance(v, dict) else [v]
        sizes += [float(x) for x in vals if isinstance(x, (int, float)) and not isinstance(x, bool)]
    mp = getattr(ip, "max_pixels", None)
    if isinstance(mp, (int, float)) and mp > 0:
        sizes.append(math.sqrt(mp))
    return max(1024, 2 * int(max(sizes, default=0)))


async def _call(fn: Any) -> None:
    fn()


def _main(argv: Sequence[str]) -> int:
    """``python -m mllm_offload.mllm_backends.pipeline --worker SPEC_JSON``: one worker process."""
    if len(argv) != 2 or argv[0] != "--worker":
        print("usage: python -m mllm_offload.mllm_backends.pipeline --worker SPEC_JSON (started by PipelineBackend)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return worker_main(json.loads(argv[1]))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
