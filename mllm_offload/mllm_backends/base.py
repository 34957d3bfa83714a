"""The ``Backend`` protocol, its request and result types, media loading and cancellation.

A backend turns an :class:`MMRequest` (text prompt plus optional images, video frames and audio)
into a :class:`Generation`: the answer text, one log-probability per generated token, a
confidence in [0, 1] derived from them, and the measured time to first token and total latency
(seconds, wall clock, measured by the caller's side of the backend).

Cancellation: pass a :class:`CancelToken` to ``generate``. When it is set, the backend stops the
upstream work promptly (the local backend stops decoding at the next token; the HTTP backend
closes the stream, which makes vLLM/SGLang/TGI/``mllm-offload serve`` abort the request) and
returns a :class:`Generation` with ``cancelled=True`` holding what was spent so far. Cancelling
the asyncio task instead also stops the upstream work, but then raises ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np

from ..errors import UserInputError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "DEFAULT_MAX_PROMPT_CHARS",
    "DEFAULT_MAX_REQUEST_PIXELS",
    "AudioClip",
    "Backend",
    "BackendError",
    "CancelToken",
    "ContextLengthError",
    "Generation",
    "ImageLike",
    "ImageTooLargeError",
    "MMRequest",
    "TokenCallback",
    "TokenEvent",
    "check_image_pixels",
    "image_size",
    "load_image",
    "now",
]

try:  # Pillow is a dependency of the ``backends`` extra; keep this module importable without it
    from PIL import Image as _PILImage
except ImportError:  # pragma: no cover - exercised only without Pillow
    _PILImage = None

#: Anything :func:`load_image` accepts: a PIL image, an HxW or HxWxC uint8 array, encoded bytes, or a path.
ImageLike = Union["_PILImage.Image", np.ndarray, bytes, bytearray, str, Path]

#: Default limit on one image's pixels (width x height), checked on the header before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: Default limit on the pixels of all images (and video frames) of one request.
DEFAULT_MAX_REQUEST_PIXELS = 100_000_000
#: Default longest prompt a router forwards, characters (about 125 k tokens of English text).
DEFAULT_MAX_PROMPT_CHARS = 500_000


class ContextLengthError(UserInputError):
    """A prompt longer than the model takes (refused before any prefill). ``code`` and ``param``
    are the OpenAI error body's (``context_length_exceeded``, ``messages``)."""

    code = "context_length_exceeded"
    param = "messages"


class ImageTooLargeError(UserInputError):
    """An image (or a request's images together) over the pixel limit, found from the header
    without decoding."""



@dataclass(frozen=True)
class TokenEvent:
    """One generated token as it streams: ``text`` is the new printable text (may be empty while
    a multi-byte character is incomplete), ``token`` the token's own text, ``logprob`` its
    natural-log probability (``None`` when the server gives none), ``top`` the requested
    alternatives as ``(token, logprob)`` pairs, most likely first."""

    text: str
    token: str
    logprob: float | None = None
    top: tuple[tuple[str, float], ...] = ()


#: Called once per generated token with a :class:`TokenEvent` (on the event loop's thread).
TokenCallback = Callable[[TokenEvent], None]

now = time.perf_counter


class BackendError(RuntimeError):
    """A backend failed (server down, HTTP error after retries, malformed response, model error).

    ``str(error)`` is one line naming the backend and what went wrong. ``status`` is the HTTP
    status when there was one, ``retryable`` whether trying again later might help.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class AudioClip:
    """Mono audio: ``samples`` as float in [-1, 1] (any shape flattened) at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        x = np.asarray(self.samples, dtype=np.float32).reshape(-1)
        if self.sample_rate <= 0:
            raise UserInputError(f"audio: sample_rate must be > 0, got {self.sample_rate}")
        if not np.all(np.isfinite(x)):
            raise UserInputError("audio: samples must be finite")
        object.__setattr__(self, "samples", x)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass
class MMRequest:
    """One multimodal request.

    Attributes:
        prompt: the user's text.
        images: zero or more images (:data:`ImageLike`).
        video: optional frames of one clip, oldest first (:data:`ImageLike` each).
        audio: optional :class:`AudioClip`.
        max_new_tokens: generation budget in tokens.
        temperature: 0 means greedy decoding.
        top_logprobs: alternatives to report per token (0-20).
        id: caller's request id (kept in logs and traces).
    """

    prompt: str
    images: Sequence[ImageLike] = ()
    video: Sequence[ImageLike] | None = None
    audio: AudioClip | None = None
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_logprobs: int = 0
    id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise UserInputError(f"request {self.id or '?'}: prompt must be a string")
        if self.max_new_tokens < 1:
            raise UserInputError(f"request {self.id or '?'}: max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserInputError(f"request {self.id or '?'}: temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.top_logprobs <= 20:
            raise UserInputError(f"request {self.id or '?'}: top_logprobs must be in [0, 20], got {self.top_logprobs}")
        self.images = list(self.images)
        if self.video is not None:
            self.video = list(self.video)
        if self.audio is not None and not isinstance(self.audio, AudioClip):
            raise UserInputError(f"request {self.id or '?'}: audio must be an AudioClip(samples, sample_rate)")


@dataclass
class Generation:
    """What a backend returned (or spent before it was cancelled).

    Attributes:
        text: generated answer (partial when ``cancelled``).
        token_logprobs: natural-log probability of each generated token under the model.
        tokens: the generated tokens as text pieces (same length as ``token_logprobs`` when known).
        token_ids: the generated token ids (local backends only).
        top_logprobs: per token, the alternatives as ``(token, logprob)`` pairs (empty unless requested).
        confidence: in [0, 1] from ``token_logprobs`` (see :mod:`.confidence`); ``None`` when the
            backend gave no log-probabilities (some servers do not).
        ttft_s: seconds from the call to the first generated token (``None`` if none came).
        latency_s: seconds from the call to the last token (or to the cancellation).
        in_tokens: prompt tokens, image tokens included, as counted by the model/server.
        out_tokens: generated tokens.
        finish_reason: ``stop``, ``length`` or ``cancelled``.
        cancelled: the call was cancelled through its :class:`CancelToken`.
        backend: name of the backend that produced it.
        vision_hidden: early vision-encoder activations (local backend, when asked), one
            ``(tokens, hidden)`` array per image.
    """

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    top_logprobs: list[list[tuple[str, float]]] = field(default_factory=list)
    confidence: float | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    in_tokens: int = 0
    out_tokens: int = 0
    finish_reason: str = "stop"
    cancelled: bool = False
    backend: str = ""
    vision_hidden: list[np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def server_times(self) -> tuple[float, float]:
        """``(latency_s, ttft_s)`` without the network: the time until the response headers of a
        streamed HTTP call (upload + RTT, ``extra["net"]["headers_s"]``) is subtracted; a local
        backend's times are returned as they are. ``ttft_s`` is the latency when no token came."""
        net = self.extra.get("net") or {}
        off = float(net["headers_s"]) if net.get("streamed") and net.get("headers_s") is not None else 0.0
        lat = max(self.latency_s - off, 0.0)
        ttft = lat if self.ttft_s is None else min(max(self.ttft_s - off, 0.0), lat)
        return lat, ttft


class CancelToken:
    """A one-shot, thread-safe cancellation flag that asyncio code can also await."""

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def cancel(self) -> None:
        """Request cancellation (idempotent; callable from any thread)."""
        self._set = True
        for loop, ev in list(self._waiters):
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop closed
                pass

    @property
    def cancelled(self) -> bool:
        return self._set

    async def wait(self) -> None:
        """Return once :meth:`cancel` has been called."""
        if self._set:
            return
        ev = asyncio.Event()
        entry = (asyncio.get_running_loop(), ev)
        self._waiters.append(entry)
        try:
            if not self._set:
                await ev.wait()
        finally:
            self._waiters.remove(entry)


@runtime_checkable
class Backend(Protocol):
    """An MLLM behind an async ``generate``; see the module docstring for cancellation."""

    name: str

    async def generate(self, request: MMRequest, *, cancel: CancelToken | None = None, on_token: TokenCallback | None = None) -> Generation:
        ...

    async def aclose(self) -> None:
        ...


def _source(image: ImageLike, what: str) -> tuple[Any, str]:
    """An encoded image's source for ``PIL.Image.open`` and its label in messages."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(image)), f"{what} ({len(image)} bytes)"
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise UserInputError(f"{image}: no such image file")
        return Path(image), str(image)
    raise UserInputError(f"{what}: unsupported image type {type(image).__name__} (use PIL, numpy, bytes or a path)")


#: Image formats a request may carry.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def _open(src: Any, label: str) -> _PILImage.Image:
    """``Image.open``: reads the header only (the pixels are decoded on ``load``). Only the usual
    web image formats are accepted (no EPS/PDF, which Pillow would hand to Ghostscript)."""
    try:
        return _PILImage.open(src, formats=IMAGE_FORMATS)
    except _PILImage.DecompressionBombError as e:
        raise ImageTooLargeError(f"{label}: too many pixels ({e})") from None
    except (OSError, ValueError) as e:
        raise UserInputError(f"{label}: not a readable image ({type(e).__name__}: {e})") from None


def _check_pixels(w: int, h: int, max_pixels: int | None, label: str) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"{label}: {w}x{h} = {w * h / 1e6:.1f} MP is over the limit of {max_pixels / 1e6:g} MP per image")


def image_size(image: ImageLike, what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an :data:`ImageLike` without decoding it (encoded bytes and files:
    from the header only); an unreadable one raises one-line :class:`UserInputError`."""
    if _PILImage is None:  # pragma: no cover
        raise UserInputError("images need Pillow: pip install 'mllm-offload[backends]'")
    if isinstance(image, _PILImage.Image):
        return image.size
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise UserInputError(f"{what}: array of shape {image.shape} is not an HxW or HxWxC image")
        return int(image.shape[1]), int(image.shape[0])
    src, label = _source(image, what)
    with _open(src, label) as im:
        return im.size


def check_image_pixels(images: Sequence[ImageLike], max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
                       max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS, what: str = "image") -> list[tuple[int, int]]:
    """The ``(width, height)`` of each image, read from headers only; raises
    :class:`ImageTooLargeError` when one is over ``max_image_pixels`` or all together are over
    ``max_request_pixels`` (``None``: no limit), so that nothing over the limits is decoded."""
    sizes: list[tuple[int, int]] = []
    total = 0
    for i, im in enumerate(images):
        w, h = image_size(im, f"{what} {i}")
        _check_pixels(w, h, max_image_pixels, f"{what} {i}")
        total += w * h
        if max_request_pixels is not None and total > max_request_pixels:
            raise ImageTooLargeError(f"{what}s: {total / 1e6:.1f} MP in {i + 1} images is over the limit of "
                                     f"{max_request_pixels / 1e6:g} MP per request")
        sizes.append((w, h))
    return sizes


def _reduce(im: _PILImage.Image, min_side: int | None) -> _PILImage.Image:
    """Shrink ``im`` (opened, not yet decoded) so that its shorter side is about ``min_side``:
    JPEGs are decoded at a reduced scale (``draft``), others shrunk after decoding (``thumbnail``
    with a reducing gap). Images already that small are left alone."""
    w, h = im.size
    if not min_side or min(w, h) <= 2 * min_side:
        return im
    scale = min_side / min(w, h)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if im.format == "JPEG":
        im.draft("RGB", target)  # decodes at 1/2, 1/4 or 1/8 scale, never below target
    if im.mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGB")
    im.thumbnail(target, _PILImage.Resampling.BICUBIC, reducing_gap=2.0)
    return im


def load_image(image: ImageLike, what: str = "image", *, max_pixels: int | None = None, min_side: int | None = None) -> _PILImage.Image:
    """Decode an :data:`ImageLike` into an RGB PIL image; a bad one raises one-line :class:`UserInputError`.

    ``max_pixels``: refuse (:class:`ImageTooLargeError`) an image with more pixels, from its
    header, before decoding it. ``min_side``: decode a larger encoded image reduced so that its
    shorter side is about ``min_side`` (left alone up to twice that), for a model whose processor
    resizes it smaller anyway.
    """
    if _PILImage is None:  # pragma: no cover
        raise UserInputError("images need Pillow: pip install 'mllm-offload[backends]'")
    if isinstance(image, _PILImage.Image):
        _check_pixels(image.width, image.height, max_pixels, what)
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim in (2, 3):
            _check_pixels(int(arr.shape[1]), int(arr.shape[0]), max_pixels, what)
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmax(arr) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            return _PILImage.fromarray(arr, "L").convert("RGB")
        if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
            return _PILImage.fromarray(arr.squeeze(2) if arr.shape[2] == 1 else arr).convert("RGB")
        raise UserInputError(f"{what}: array of shape {arr.shape} is not an HxW or HxWxC image")
    src, label = _source(image, what)
    with _open(src, label) as im:
        _check_pixels(im.width, im.height, max_pixels, label)
        try:
            small = _reduce(im, min_side)
            small.load()
            return small.convert("RGB")
        except (OSError, ValueError, _PILImage.DecompressionBombError) as e:
            raise UserInputError(f"{label}: not a readable image ({type(e).__name__}: {e})") from None
