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
* ``vision_layer=k`` records the output of the vision encoder's k-th layer (0-based) for every
  image, returned as ``Generation.vision_hidden`` for the MAS module.

Video frames go to the model as extra images when its processor has no video processor (at
most ``max_video_frames``, evenly spaced); audio is refused unless ``unsupported="ignore"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UserInputError
from .base import BackendError, CancelToken, Generation, MMRequest, TokenCallback, TokenEvent, load_image, now
from .confidence import CONFIDENCE_METHODS, confidence_from_logprobs

__all__ = ["HFLocalBackend", "check_model_dir"]

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
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
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hf-{self.name}")
        self._hidden: list[np.ndarray] = []
        self._hook = None
        self.vision_layer = vision_layer
        if vision_layer is not None:
            self._hook = self._vision_layer_module(vision_layer).register_forward_hook(self._record_hidden)

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
        images = [load_image(im, f"request {request.id or '?'}: image {i}") for i, im in enumerate(request.images)]
        if request.video:
            frames = list(request.video)
            if self._has_video:
                raise UserInputError(f"{self.name}: native video input is not wired yet; pass frames as images")
            if len(frames) > self.max_video_frames:
                idx = np.linspace(0, len(frames) - 1, self.max_video_frames).round().astype(int)
                frames = [frames[i] for i in idx]
            images += [load_image(f, f"request {request.id or '?'}: video frame {i}") for i, f in enumerate(frames)]
        if request.audio is not None and self.unsupported == "error":
            raise UserInputError(f"request {request.id or '?'}: model {self.name} does not accept audio (use unsupported='ignore' to drop it)")
        content: list[dict[str, Any]] = [{"type": "image"} for _ in images] + [{"type": "text", "text": request.prompt}]
        messages = [{"role": "user", "content": content}]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        try:
            enc = self.processor(images=images or None, text=prompt, return_tensors="pt")
        except (ValueError, TypeError) as e:
            raise UserInputError(f"request {request.id or '?'}: the processor rejected the input ({str(e).splitlines()[0]})") from None
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- generation ---------------------------------------------------------------------------

    def _run(self, request: MMRequest, cancel: CancelToken, emit: Any, t0: float) -> Generation:
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

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


