"""Local transformers backend: any image-text-to-text model from a local directory.

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a folder (a hub id only when
``allow_download=True``), builds the prompt with the processor's chat template, and generates
in a worker thread so the event loop stays free:

* **Log-probabilities** are taken, per step, from the distribution the decoder picks from
  (``log_softmax`` of the logits after the model's configured penalties, before
  temperature/top-k/top-p warping), so they are finite and identical for streamed and
  non-streamed calls. :mod:`.confidence` turns them into a confidence in [0, 1].
* **TTFT** is measured when the first generated token reaches the streamer (preprocessing and
  prefill included), **latency** when generation returns; both in seconds.
* **Cancellation** (a :class:`~.base.CancelToken`, or cancelling the task) stops decoding at the
  next token through a stopping criterion.
* **Limits** (checked before any prefill or decoding): a prompt over ``max_prompt_tokens``
  (default: the model's context length, ``max_position_embeddings`` of its text config) raises
  :class:`~.base.ContextLengthError` (a prompt over 8 characters per allowed token without
  tokenizing it); images over ``max_image_pixels`` each or ``max_request_pixels`` together raise
  :class:`~.base.ImageTooLargeError` from their headers, undecoded. Larger images are decoded
  reduced (JPEG draft mode, then a thumbnail) to what the processor uses.
* A request whose :class:`~.base.CancelToken` is already set when the worker reaches it (its
  deadline passed, its client left) is skipped.
* ``vision_layer=k`` records the output of the vision encoder's k-th layer (0-based) for every
  image, returned as ``Generation.vision_hidden`` for the MAS module.

Video frames go to the model as extra images when its processor has no video processor (at
most ``max_video_frames``, evenly spaced); audio is refused unless ``unsupported="ignore"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

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
    check_image_pixels,
    load_image,
    now,
)
from .confidence import CONFIDENCE_METHODS, confidence_from_logprobs

__all__ = ["HFLocalBackend", "check_model_dir"]

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
#: A prompt longer than this many characters per allowed token is refused without tokenizing it.
CHARS_PER_TOKEN_BOUND = 8
_VISION_TOWERS = ("model.vision_tower", "vision_tower", "model.visual", "visual", "model.vision_model", "vision_model")


def check_model_dir(path: str | Path) -> Path:
    """Check that ``path`` is a saved image-text-to-text checkpoint; one clear line otherwise."""
    d = Path(path)
    if not d.exists():
        raise UserInputError(f"{d}: no such model directory")
    if not d.is_dir():
        raise UserInputError(f"{d}: not a directory (expected a saved model folder)")
    if not (d / "config.json").is_file():
        raise UserInputError(f"{d}: no config.json, not a saved transformers model")
    if not any((d / f).is_file() for f in _PROCESSOR_FILES):
        raise UserInputError(
            f"{d}: no processor found (expected {' or '.join(_PROCESSOR_FILES)}); save it with processor.save_pretrained(DIR)"
        )
    return d


def encode_request(processor: Any, request: MMRequest, rid: str, *, max_video_frames: int, max_image_pixels: int | None,
                   max_request_pixels: int | None, image_side: int | None) -> Any:
    """The processor's encoding of ``request`` (chat template, images then video frames as images,
    at most ``max_video_frames`` evenly spaced): pixel limits checked from the headers before any
    decode; a processor error is a :class:`UserInputError` naming ``rid``. Shared by
    :class:`HFLocalBackend` and the pipeline backend, so both see the same tokens."""
    frames = list(request.video or ())
    if len(frames) > max_video_frames:
        idx = np.linspace(0, len(frames) - 1, max_video_frames).round().astype(int)
        frames = [frames[i] for i in idx]
    check_image_pixels([*request.images, *frames], max_image_pixels, max_request_pixels, f"{rid}: image")
    opts: dict[str, Any] = {"max_pixels": max_image_pixels, "min_side": image_side}
    images = [load_image(im, f"{rid}: image {i}", **opts) for i, im in enumerate(request.images)]
    images += [load_image(f, f"{rid}: video frame {i}", **opts) for i, f in enumerate(frames)]
    content: list[dict[str, Any]] = [{"type": "image"} for _ in images] + [{"type": "text", "text": request.prompt}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    try:
        return processor(images=images or None, text=prompt, return_tensors="pt")
    except (ValueError, TypeError) as e:
        raise UserInputError(f"{rid}: the processor rejected the input ({str(e).splitlines()[0]})") from None


class HFLocalBackend:
    """A transformers model in this process (see the module docstring).

    Args:
        model: local folder (or hub id with ``allow_download=True``).
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        confidence: ``quantile`` (default), ``mean``, ``min`` or ``geomean``; see :mod:`.confidence`.
        confidence_q: quantile for ``quantile`` (default 0.1).
        vision_layer: return this vision-encoder layer's activations (``None``: do not).
        max_video_frames: frames passed as images when the processor has no video support.
        unsupported: ``error`` (default) or ``ignore`` for modalities the model cannot take.
        threads: torch intra-op threads (``None``: leave torch's default).
        slowdown: compute factor >= 1: after each forward pass (prefill and every decoding step)
            the backend waits ``(slowdown - 1)`` times that pass's duration, so a small model
            can stand in for a slower, distant one with the same timing shape (cancellation
            still stops it within a few milliseconds).
        name: label used in :attr:`Generation.backend` and logs (default: folder name).
        max_prompt_tokens: longest prompt in tokens, image tokens and chat template included
            (``None``: the model's context length; ``0``: no limit).
        max_image_pixels: largest image (width x height), from its header (``None``: no limit).
        max_request_pixels: all images and frames of one request together (``None``: no limit).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        confidence: str = "quantile",
        confidence_q: float = 0.1,
        vision_layer: int | None = None,
        max_video_frames: int = 4,
        unsupported: Literal["error", "ignore"] = "error",
        threads: int | None = None,
        allow_download: bool = False,
        name: str | None = None,
        slowdown: float = 1.0,
        max_prompt_tokens: int | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if confidence not in CONFIDENCE_METHODS:
            raise UserInputError(f"confidence: must be one of {', '.join(CONFIDENCE_METHODS)}, got {confidence!r}")
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise UserInputError(f"dtype: must be auto, float32, bfloat16 or float16, got {dtype!r}")
        if not (isinstance(slowdown, (int, float)) and slowdown >= 1.0):
            raise UserInputError(f"slowdown: must be a number >= 1, got {slowdown!r}")
        self.slowdown = float(slowdown)
        if unsupported not in ("error", "ignore"):
            raise UserInputError(f"unsupported: must be 'error' or 'ignore', got {unsupported!r}")
        local = Path(model).exists() or not allow_download
        if local:
            check_model_dir(model)
        self.model_id = str(model)
        self.name = name or Path(str(model)).name
        self.confidence_method = confidence
        self.confidence_q = confidence_q
        self.max_video_frames = max_video_frames
        self.unsupported = unsupported
        if threads:
            torch.set_num_threads(int(threads))
        try:
            self.processor = AutoProcessor.from_pretrained(str(model), local_files_only=local)
            self.model = AutoModelForImageTextToText.from_pretrained(
                str(model), local_files_only=local, dtype=(dtype if dtype == "auto" else getattr(torch, dtype))
            )
        except (OSError, ValueError, KeyError) as e:
            raise UserInputError(f"{model}: cannot load model/processor ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.model.to(device).eval()
        self.device = device
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if getattr(self.processor, "chat_template", None) is None and getattr(self.tokenizer, "chat_template", None) is None:
            raise UserInputError(f"{model}: the processor has no chat template")
        self._has_video = getattr(self.processor, "video_processor", None) is not None
        if max_prompt_tokens is not None and max_prompt_tokens < 0:
            raise UserInputError(f"max_prompt_tokens: must be >= 0, got {max_prompt_tokens}")
        self.context_length = self._context_length()
        self.max_prompt_tokens: int | None = (self.context_length if max_prompt_tokens is None else max_prompt_tokens) or None
        self.max_image_pixels = max_image_pixels
        self.max_request_pixels = max_request_pixels
        self.image_side = self._image_side()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hf-{self.name}")
        self._hidden: list[np.ndarray] = []
        self._hook = None
        self.vision_layer = vision_layer
        if vision_layer is not None:
            self._hook = self._vision_layer_module(vision_layer).register_forward_hook(self._record_hidden)

    # -- limits -------------------------------------------------------------------------------

    def _context_length(self) -> int | None:
        """``max_position_embeddings`` of the text config, else the tokenizer's sane ``model_max_length``."""
        cfg = self.model.config
        for c in (getattr(cfg, "text_config", None), cfg):
            n = getattr(c, "max_position_embeddings", None) if c is not None else None
            if isinstance(n, int) and n > 0:
                return n
        m = getattr(self.tokenizer, "model_max_length", None)
        return m if isinstance(m, int) and 0 < m < 10_000_000 else None  # transformers says 1e30 when it does not know

    def _image_side(self) -> int | None:
        """The shorter side large images are reduced to before the processor (never below 1024,
        nor below twice the largest size the processor names); ``None`` without an image processor."""
        ip = getattr(self.processor, "image_processor", None)
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

    def _too_long(self, n: int, unit: str, what: str) -> ContextLengthError:
        return ContextLengthError(f"{what}: the prompt has {n} {unit}, over this model's limit of {self.max_prompt_tokens} tokens "
                                  f"(context length {self.context_length}); shorten it")

    def check_prompt(self, prompt: str, what: str = "request") -> int:
        """The prompt's text tokens (without template or images); raises :class:`ContextLengthError`
        when they are over ``max_prompt_tokens``, without tokenizing a prompt of more than
        ``CHARS_PER_TOKEN_BOUND`` characters per allowed token."""
        limit = self.max_prompt_tokens
        if limit and len(prompt) > CHARS_PER_TOKEN_BOUND * limit:
            raise self._too_long(len(prompt), "characters", what)
        n = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if limit and n > limit:
            raise self._too_long(n, "tokens", what)
        return n

    # -- inputs -------------------------------------------------------------------------------

    def _vision_layer_module(self, k: int):
        import torch.nn as nn

        for name in _VISION_TOWERS:
            try:
                tower = self.model.get_submodule(name)
            except AttributeError:
                continue
            for _, mod in tower.named_modules():
                if isinstance(mod, nn.ModuleList) and len(mod) > 0:
                    if not -len(mod) <= k < len(mod):
                        raise UserInputError(f"vision_layer: {k} out of range, the vision encoder has {len(mod)} layers")
                    return mod[k]
        raise UserInputError(f"{self.model_id}: cannot find the vision encoder's layers to hook (vision_layer={k})")

    def _record_hidden(self, module: Any, args: Any, output: Any) -> None:
        h = output[0] if isinstance(output, (tuple, list)) else output
        h = h.detach().float().cpu().numpy()
        self._hidden.extend(h.reshape(-1, h.shape[-2], h.shape[-1]))

    def _inputs(self, request: MMRequest) -> dict[str, Any]:
        rid = f"request {request.id or '?'}"
        limit = self.max_prompt_tokens
        if limit and len(request.prompt) > CHARS_PER_TOKEN_BOUND * limit:
            raise self._too_long(len(request.prompt), "characters", rid)
        if request.video and self._has_video:
            raise UserInputError(f"{self.name}: native video input is not wired yet; pass frames as images")
        if request.audio is not None and self.unsupported == "error":
            raise UserInputError(f"request {request.id or '?'}: model {self.name} does not accept audio (use unsupported='ignore' to drop it)")
        enc = encode_request(self.processor, request, rid, max_video_frames=self.max_video_frames, max_image_pixels=self.max_image_pixels,
                             max_request_pixels=self.max_request_pixels, image_side=self.image_side)
        n_in = int(enc["input_ids"].shape[1])
        if limit and n_in > limit:  # before any prefill
            raise self._too_long(n_in, "tokens (images and chat template included)", rid)
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- generation ---------------------------------------------------------------------------

    def _run(self, request: MMRequest, cancel: CancelToken, emit: Any, t0: float) -> Generation:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        if cancel.cancelled:  # its deadline passed or its client left while it waited for the worker
            return Generation(text="", latency_s=now() - t0, finish_reason="cancelled", cancelled=True, backend=self.name)
        inputs = self._inputs(request)
        n_in = int(inputs["input_ids"].shape[1])
        k = request.top_logprobs
        tok = self.tokenizer
        lps: list[float] = []
        tops: list[list[tuple[str, float]]] = []
        ids: list[int] = []
        state = {"ttft": None, "prompt_seen": False, "text": "", "step0": time.perf_counter()}
        extra = self.slowdown - 1.0

        class Recorder(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                state["logsm"] = torch.log_softmax(scores[0].float(), dim=-1)
                if extra > 0.0:  # emulate a slower device: wait in proportion to this forward pass
                    t = time.perf_counter()
                    until = t + extra * (t - state["step0"])
                    while not cancel.cancelled and time.perf_counter() < until:
                        time.sleep(min(0.005, max(until - time.perf_counter(), 0.0)))
                    state["step0"] = time.perf_counter()
                return scores

        class Streamer(BaseStreamer):
            def put(self, value: Any) -> None:
                if not state["prompt_seen"]:
                    state["prompt_seen"] = True
                    return
                for t in value.reshape(-1).tolist():
                    if state["ttft"] is None:
                        state["ttft"] = now() - t0
                    logsm = state.get("logsm")
                    lp = float(logsm[t]) if logsm is not None else float("nan")
                    ids.append(int(t))
                    lps.append(lp)
                    top: list[tuple[str, float]] = []
                    if k and logsm is not None:
                        v, ix = torch.topk(logsm, k)
                        top = [(tok.decode([int(i)]), float(x)) for x, i in zip(v.tolist(), ix.tolist())]
                        tops.append(top)
                    text = tok.decode(ids, skip_special_tokens=True)
                    piece = text[len(state["text"]):]
                    if piece.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte
                        piece = ""
                    else:
                        state["text"] = text
                    if emit is not None:
                        emit(TokenEvent(piece, tok.decode([int(t)]), lp, tuple(top)))

            def end(self) -> None:
                rest = tok.decode(ids, skip_special_tokens=True)[len(state["text"]):]
                state["text"] += rest
                if rest and emit is not None:  # flush text held back for an incomplete character
                    emit(TokenEvent(rest, "", None, ()))

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.cancelled, dtype=torch.bool, device=input_ids.device)

        self._hidden = []
        gen_kwargs: dict[str, Any] = {"max_new_tokens": request.max_new_tokens, "do_sample": request.temperature > 0}
        if request.temperature > 0:
            gen_kwargs["temperature"] = request.temperature
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        try:
            with torch.inference_mode():
                self.model.generate(
                    **inputs, **gen_kwargs,
                    logits_processor=LogitsProcessorList([Recorder()]),
                    stopping_criteria=StoppingCriteriaList([Stop()]),
                    streamer=Streamer(),
                )
        except UserInputError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            raise BackendError(f"{self.name}: generation failed ({type(e).__name__}: {str(e).splitlines()[0]})") from e
        latency = now() - t0
        eos = set(np.atleast_1d(self.model.generation_config.eos_token_id or []).tolist())
        if cancel.cancelled:
            finish = "cancelled"
        elif ids and ids[-1] in eos:
            finish = "stop"
        else:
            finish = "length" if len(ids) >= request.max_new_tokens else "stop"
        return Generation(
            text=tok.decode(ids, skip_special_tokens=True),
            token_logprobs=lps,
            tokens=[tok.decode([i]) for i in ids],
            token_ids=list(ids),
            top_logprobs=tops,
            confidence=confidence_from_logprobs(lps, self.confidence_method, self.confidence_q),
            ttft_s=state["ttft"],
            latency_s=latency,
            in_tokens=n_in,
            out_tokens=len(ids),
            finish_reason=finish,
            cancelled=cancel.cancelled,
            backend=self.name,
            vision_hidden=list(self._hidden) if self.vision_layer is not None else None,
        )

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: TokenCallback | None = None) -> Generation:
        """Generate an answer; see the module docstring for what is measured and how to cancel."""
        loop = asyncio.get_running_loop()
        cancel = cancel or CancelToken()
        t0 = now()
        emit = None
        if on_token is not None:
            def emit(event: TokenEvent) -> None:
                loop.call_soon_threadsafe(on_token, event)
        fut = loop.run_in_executor(self._executor, self._run, request, cancel, emit, t0)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel.cancel()  # stop decoding in the worker thread at the next token
            raise

    def generate_sync(self, request: MMRequest, cancel: CancelToken | None = None) -> Generation:
        """Blocking :meth:`generate` for scripts (not from inside a running event loop)."""
        return self._run(request, cancel or CancelToken(), None, now())

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"HFLocalBackend({self.model_id!r}, device={self.device!r})"


