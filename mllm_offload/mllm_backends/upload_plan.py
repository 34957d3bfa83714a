"""Apply an :class:`~mllm_offload.decision.UploadPlan` to real media: the one place that does it,
used by the router (before the cloud call) and by ``record --variants``. Needs numpy and Pillow.

=========================  =========================================================================
plan                       what :func:`apply_plan` sends
=========================  =========================================================================
image ``model_res``        each image resized (Pillow, bicubic, aspect kept) to the size the cloud
                           model's processor resizes it to (:meth:`CloudImageSpec.model_size`),
                           never upscaled; re-encoded (below). An image already at or below that
                           size is sent as it is
image ``reduced``          half that size per side (never upscaled)
video ``keyframes``        the frames whose temporal novelty (:func:`mllm_offload.mas.frame_novelty`:
                           against the frame before) is at least 0.6, i.e. that are not
                           near-duplicates of their predecessor; the first frame always; at least 2
                           (the most novel of the others is added), in their order
audio ``drop``             no audio
text                       always, unchanged
=========================  =========================================================================

**Encoding.** A resized image from a lossy source (JPEG, WebP) is sent as JPEG at quality 90. One
from a lossless source (PNG, GIF, BMP, TIFF, or a decoded PIL image / array) is encoded both as
PNG and as JPEG 90 and the smaller is sent: PNG wins on flat synthetic content (diagrams,
screenshots, the shapes demo), where JPEG's ringing is also the worse error, JPEG on photographs
saved as PNG. The result is never larger than the original: when re-encoding does not save bytes,
the original is sent (the cloud model resizes it to the same size). Alpha is dropped as the
processors' ``convert("RGB")`` drops it.

**Bounds.** Image sizes are read from the headers first and checked against the same limits as the
router (``max_image_pixels`` per image, ``max_request_pixels`` for all images;
:data:`~.base.DEFAULT_MAX_IMAGE_PIXELS`, :data:`~.base.DEFAULT_MAX_REQUEST_PIXELS`): nothing over
them is decoded. A JPEG is decoded at reduced scale (``draft``, 1/2 to 1/8) when the target is
at most half its size per side, so a 12 MP photo costs a fraction of a full decode.

**What the cloud model consumes** (:class:`CloudImageSpec`), by processor kind:

=====================  ===================================================================
kind                   the processor's resize (what ``model_size`` returns)
=====================  ===================================================================
``box`` (W, H)         CLIP/SigLIP towers: the shortest side to ``N`` then a centre crop of
                       ``N x N`` (``size.shortest_edge``, ``crop_size``), or a squash to
                       ``W x H`` (``size.height/width``); the image is scaled so that it
                       covers the box, ``max(W / w, H / h)``, aspect kept
``longest_edge`` L     Idefics3/SmolVLM: the longer side to ``L`` (then cut into sub-images)
``max_pixels`` P       Qwen2-VL class: ``smart_resize`` (qwen-vl-utils ``vision_process.py``):
                       sides rounded to multiples of ``factor`` (28 px: a 14 px patch, 2x2
                       merged, per token) with at most ``P`` pixels (at least ``min_pixels``);
                       also a bound for tilers (InternVL, Phi-3.5-vision) that pick a tile
                       grid from the aspect ratio, whose tiles never hold more pixels
=====================  ===================================================================

Defaults of known families (:data:`FAMILIES`, ``--cloud-image-family NAME``):

==================  ===========================================  =============================================
family              consumes                                     source
==================  ===========================================  =============================================
``llava-1.5``       336 px side (CLIP ViT-L/14-336, 576 tokens)  LLaVA-1.5, Liu et al., arXiv 2310.03744
``qwen2-vl``        <= 12,845,056 px (16,384 tokens of 28x28),  Qwen2-VL, arXiv 2409.12191; preprocessor_config
                    >= 3,136 px; also Qwen2.5-VL                 of Qwen/Qwen2-VL-7B-Instruct; qwen-vl-utils
                                                                 ``vision_process.py`` (MAX_PIXELS, MIN_PIXELS)
``qwen2-vl-1280``   <= 1,003,520 px (1,280 tokens), >= 200,704   QwenLM/Qwen2-VL README (suggested
                                                                 ``min_pixels``/``max_pixels`` 256-1280 x 28^2)
``internvl``        <= 12 tiles of 448 px = 2,408,448 px         InternVL 1.5, Chen et al., arXiv 2404.16821
                                                                 (dynamic resolution, 448 px tiles, max 12)
``phi-3.5-vision``  <= 4 crops of 336 px = 451,584 px            preprocessor_config of
                                                                 microsoft/Phi-3.5-vision-instruct
                                                                 (``num_crops`` 4, 144 tokens per crop)
``smolvlm``         longest edge 1536 px (384 px sub-images)     preprocessor_config of
                                                                 HuggingFaceTB/SmolVLM-Instruct
``smolvlm2``        longest edge 2048 px (512 px sub-images)     preprocessor_config of
                                                                 HuggingFaceTB/SmolVLM2-256M-Video-Instruct
``shapes-cloud``    64 px side                                   this package's shapes cloud model
                                                                 (``mllm_offload.shapes.models``)
==================  ===========================================  =============================================

A local model folder's own processor config (``preprocessor_config.json``, or the
``image_processor`` of ``processor_config.json``) is read by :meth:`CloudImageSpec.from_model_dir`.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from ..decision import UploadPlan
from ..errors import UserInputError
from .base import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    IMAGE_FORMATS,
    ImageLike,
    MMRequest,
    check_image_pixels,
    load_image,
)

__all__ = ["FAMILIES", "JPEG_QUALITY", "KEYFRAME_NOVELTY", "CloudImageSpec", "PlannedRequest", "apply_plan", "effective_plan", "keyframe_indices",
           "resize_image"]

#: JPEG quality of re-encoded images
JPEG_QUALITY = 90
#: per-frame novelty at or above which a frame is kept by ``keyframes`` (= ``mas.temporal.NOVEL``:
#: not a near-duplicate of its predecessor)
KEYFRAME_NOVELTY = 0.6
#: sources whose pixels are exact: a resized copy is sent as the smaller of PNG and JPEG
_LOSSLESS = frozenset({"PNG", "GIF", "BMP", "TIFF"})
#: largest side (px) and pixel budget a spec may name (a sanity bound on flags and configs)
_MAX_SIDE = 100_000
_MAX_BUDGET = 10**9

#: a frame-novelty argument: the values, or a function of the frames that computes them
FrameNovelty: TypeAlias = Sequence[float] | np.ndarray | Callable[[Sequence[ImageLike]], Sequence[float] | np.ndarray]


def _positive(name: str, v: Any, top: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= top:
        raise UserInputError(f"cloud image spec: {name} must be an integer in [1, {top}], got {v!r}")
    return int(v)


@dataclass(frozen=True)
class CloudImageSpec:
    """What the cloud model's image processor consumes (see the module tables). Exactly one of
    ``box``, ``longest_edge`` and ``max_pixels`` is set.

    Attributes:
        box: ``(width, height)`` px the image is scaled to cover (CLIP/SigLIP: ``(N, N)``).
        longest_edge: px of the longer side after the resize (Idefics3/SmolVLM).
        max_pixels: pixel budget of ``smart_resize`` (Qwen2-VL class).
        min_pixels: its floor, pixels (``max_pixels`` only).
        factor: sides are multiples of it, px (``max_pixels`` only; 28 for Qwen2-VL).
        source: where the figures came from (a family name, a flag, a config file), for logs.
    """

    box: tuple[int, int] | None = None
    longest_edge: int | None = None
    max_pixels: int | None = None
    min_pixels: int = 0
    factor: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        kinds = [k for k in ("box", "longest_edge", "max_pixels") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise UserInputError(f"cloud image spec: exactly one of box, longest_edge, max_pixels is needed, got {kinds or 'none'}")
        if self.box is not None:
            if len(self.box) != 2:
                raise UserInputError(f"cloud image spec: box must be (width, height), got {self.box!r}")
            object.__setattr__(self, "box", (_positive("box width", self.box[0], _MAX_SIDE), _positive("box height", self.box[1], _MAX_SIDE)))
        if self.longest_edge is not None:
            _positive("longest_edge", self.longest_edge, _MAX_SIDE)
        if self.max_pixels is not None:
            _positive("max_pixels", self.max_pixels, _MAX_BUDGET)
            _positive("factor", self.factor, 1024)
            if self.min_pixels and _positive("min_pixels", self.min_pixels, _MAX_BUDGET) > self.max_pixels:
                raise UserInputError(f"cloud image spec: min_pixels {self.min_pixels} is over max_pixels {self.max_pixels}")

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def side(cls, n: int, source: str = "") -> CloudImageSpec:
        """A fixed input side of ``n`` px (shortest side to ``n``, centre crop ``n x n``)."""
        return cls(box=(n, n), source=source or f"side {n}")

    @classmethod
    def pixels(cls, max_pixels: int, min_pixels: int = 0, factor: int = 28, source: str = "") -> CloudImageSpec:
        """A pixel budget: at most ``max_pixels`` (at least ``min_pixels``) px, sides multiples of ``factor`` px."""
        return cls(max_pixels=max_pixels, min_pixels=min_pixels, factor=factor, source=source or f"max_pixels {max_pixels}")

    @classmethod
    def family(cls, name: str) -> CloudImageSpec:
        """The default of a known family (:data:`FAMILIES`); an unknown name: one line with a suggestion."""
        spec = FAMILIES.get(name.strip().lower())
        if spec is None:
            close = difflib.get_close_matches(name.strip().lower(), FAMILIES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserInputError(f"cloud image family: unknown {name!r}{hint}; known: {', '.join(FAMILIES)}")
        return spec

    @classmethod
    def from_processor_config(cls, cfg: dict[str, Any], source: str = "processor config") -> CloudImageSpec:
        """From an image processor's config (``preprocessor_config.json`` keys): ``min_pixels``/
        ``max_pixels`` (top level or in ``size``, or ``size.shortest_edge``/``longest_edge`` of a
        Qwen2-VL processor, which are pixel counts there), ``size.longest_edge``,
        ``size.shortest_edge`` (with ``crop_size``), ``size.height``/``width`` or ``crop_size``
        alone. Anything else raises one-line :class:`UserInputError`."""
        raw_size, raw_crop = cfg.get("size"), cfg.get("crop_size")
        size: dict[str, Any] = dict(raw_size) if isinstance(raw_size, dict) else {}
        if isinstance(raw_size, (int, float)) and not isinstance(raw_size, bool):  # older configs: "size": 224
            size = {"shortest_edge": raw_size}
        crop: dict[str, Any] = dict(raw_crop) if isinstance(raw_crop, dict) else {}
        kind = str(cfg.get("image_processor_type", ""))
        mx = cfg.get("max_pixels", size.get("max_pixels"))
        mn = cfg.get("min_pixels", size.get("min_pixels"))
        if mx is None and ("Qwen2" in kind or "merge_size" in cfg) and "longest_edge" in size:
            mx, mn = size.get("longest_edge"), size.get("shortest_edge")  # transformers >= 4.5x: pixel counts
        try:
            if mx is not None:
                factor = int(cfg.get("patch_size", 14)) * int(cfg.get("merge_size", 2)) if "merge_size" in cfg or "Qwen2" in kind else 28
                return cls.pixels(int(mx), int(mn or 0), factor, source)
            if "longest_edge" in size and "shortest_edge" not in size:
                return cls(longest_edge=int(size["longest_edge"]), source=source)
            if "shortest_edge" in size:
                n = int(size["shortest_edge"])
                return cls(box=(n, n), source=source)
            if "height" in size and "width" in size:
                return cls(box=(int(size["width"]), int(size["height"])), source=source)
            if "height" in crop and "width" in crop:
                return cls(box=(int(crop["width"]), int(crop["height"])), source=source)
        except (TypeError, ValueError) as e:
            raise UserInputError(f"{source}: unreadable image size ({e})") from None
        raise UserInputError(f"{source}: cannot tell the model's image input size (no size, crop_size or max_pixels); "
                             "give it with --cloud-image-size, --cloud-image-pixels or --cloud-image-family")

    @classmethod
    def from_model_dir(cls, path: str | Path) -> CloudImageSpec:
        """From a saved model folder: ``preprocessor_config.json``, else the ``image_processor`` of
        ``processor_config.json`` (transformers 5 writes it there)."""
        d = Path(path)
        for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
            f = d / name
            if not f.is_file():
                continue
            if f.stat().st_size > 1_000_000:
                raise UserInputError(f"{f}: over 1 MB, not a processor config")
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise UserInputError(f"{f}: not readable JSON ({e})") from None
            cfg = doc.get(key) if key is not None and isinstance(doc, dict) else doc
            if isinstance(cfg, dict):
                return cls.from_processor_config(cfg, str(f))
        raise UserInputError(f"{d}: no preprocessor_config.json or processor_config.json with an image processor")

    # -- sizes -----------------------------------------------------------------------------------

    def model_size(self, w: int, h: int) -> tuple[int, int]:
        """``(width, height)`` px the cloud model's processor resizes a ``w x h`` image to (before
        a crop or a split into tiles; upscaling included)."""
        if self.box is not None:
            s = max(self.box[0] / w, self.box[1] / h)
            return max(self.box[0], round(w * s)), max(self.box[1], round(h * s))
        if self.longest_edge is not None:
            s = self.longest_edge / max(w, h)
            return max(1, round(w * s)), max(1, round(h * s))
        return _smart_resize(w, h, self.factor, self.min_pixels, int(self.max_pixels or 0))

    def target_size(self, w: int, h: int, image_plan: str) -> tuple[int, int] | None:
        """The size to send a ``w x h`` image at under ``image_plan`` (``model_res``: the model's
        size; ``reduced``: half of it per side), or ``None`` when that is not smaller than the
        image (nothing is upscaled: the image is sent as it is), and for ``model_res`` under a
        pixel budget when the image is within it (the model would only round its sides)."""
        if image_plan == "full":
            return None
        if image_plan == "model_res" and self.max_pixels is not None and w * h <= self.max_pixels:
            return None  # within the budget the model only rounds the sides to its grid: not worth a re-encode
        mw, mh = self.model_size(w, h)
        if image_plan == "reduced":
            f = self.factor if self.max_pixels is not None else 1
            mw, mh = max(f, round(mw / 2 / f) * f), max(f, round(mh / 2 / f) * f)
        elif image_plan != "model_res":
            raise ValueError(f"image plan must be full, model_res or reduced, got {image_plan!r}")
        tw, th = min(mw, w), min(mh, h)
        return None if tw * th >= w * h else (tw, th)

    def consumed_pixels(self, w: int, h: int) -> int:
        """Pixels the model's processor makes of a ``w x h`` image (its image tokens scale with it
        for a pixel budget; for a box or a longest edge it is the same for any image of that shape)."""
        mw, mh = self.model_size(w, h)
        return mw * mh

    def describe(self) -> str:
        """One line: ``side 336 (llava-1.5)``, ``<= 1003520 px, 28 px grid (...)``, ``longest edge 1536 (...)``."""
        if self.box is not None:
            what = f"side {self.box[0]}" if self.box[0] == self.box[1] else f"box {self.box[0]}x{self.box[1]}"
        elif self.longest_edge is not None:
            what = f"longest edge {self.longest_edge}"
        else:
            what = f"<= {self.max_pixels} px, {self.factor} px grid"
        return f"{what} ({self.source})" if self.source and self.source != what else what


def _smart_resize(w: int, h: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize`` (qwen-vl-utils ``vision_process.py``): sides rounded to
    multiples of ``factor`` px, the area brought within ``[min_pixels, max_pixels]``, aspect kept."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif min_pixels and hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return wb, hb


#: defaults of known model families (sources in the module docstring)
FAMILIES: dict[str, CloudImageSpec] = {
    "llava-1.5": CloudImageSpec.side(336, "llava-1.5"),
    "qwen2-vl": CloudImageSpec.pixels(16384 * 28 * 28, 4 * 28 * 28, 28, "qwen2-vl"),
    "qwen2-vl-1280": CloudImageSpec.pixels(1280 * 28 * 28, 256 * 28 * 28, 28, "qwen2-vl-1280"),
    "internvl": CloudImageSpec.pixels(12 * 448 * 448, 0, 28, "internvl"),
    "phi-3.5-vision": CloudImageSpec.pixels(4 * 336 * 336, 0, 28, "phi-3.5-vision"),
    "smolvlm": CloudImageSpec(longest_edge=1536, source="smolvlm"),
    "smolvlm2": CloudImageSpec(longest_edge=2048, source="smolvlm2"),
    "shapes-cloud": CloudImageSpec.side(64, "shapes-cloud"),
}


# -- images --------------------------------------------------------------------------------------


def _open_encoded(data: bytes, what: str) -> Any:
    """``PIL.Image.open`` on encoded bytes (header only; the usual web formats only)."""
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserInputError(f"{what}: not a readable image ({type(e).__name__}: {e})") from None


def _encoded(image: ImageLike, what: str) -> bytes | None:
    """The encoded bytes of an image given as bytes or a file (``None``: already decoded)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        try:
            return Path(image).read_bytes()
        except OSError as e:
            raise UserInputError(f"{what}: {image}: {e.strerror or e}") from None
    return None


def resize_image(image: ImageLike, size: tuple[int, int], what: str = "image") -> bytes:
    """``image`` resized to ``size`` = ``(width, height)`` px (bicubic) and encoded (JPEG 90, or
    for a lossless source the smaller of PNG and JPEG 90; see the module docstring), never more
    bytes than an encoded original. The caller has checked the pixel limits (:func:`apply_plan` does)."""
    from PIL import Image

    tw, th = size
    data = _encoded(image, what)
    if data is not None:
        with _open_encoded(data, what) as im:
            fmt = im.format or ""
            if fmt == "JPEG" and 2 * tw <= im.width and 2 * th <= im.height:
                im.draft("RGB", (2 * tw, 2 * th))  # decode at 1/2..1/8 scale, still at least twice the target
            try:
                rgb = im.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise UserInputError(f"{what}: not a readable image ({type(e).__name__}: {e})") from None
    else:
        fmt, rgb = "", load_image(image, what)
    out = rgb.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=3.0) if rgb.size != (tw, th) else rgb
    best = _save(out, "JPEG")
    if fmt in _LOSSLESS or data is None:
        png = _save(out, "PNG")
        best = png if len(png) < len(best) else best
    return data if data is not None and len(data) <= len(best) else best


def _save(im: Any, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


# -- video ---------------------------------------------------------------------------------------


def keyframe_indices(novelty: Sequence[float] | np.ndarray, threshold: float = KEYFRAME_NOVELTY, min_frames: int = 2) -> list[int]:
    """Indices of the frames ``keyframes`` keeps, in order: the first frame, every frame whose
    novelty is ``>= threshold``, and, while fewer than ``min_frames``, the most novel of the others
    (the later one on a tie)."""
    v = np.asarray(novelty, dtype=np.float64).reshape(-1)
    n = len(v)
    if n == 0:
        return []
    if not np.all(np.isfinite(v)):
        raise ValueError("frame novelty must be finite")
    keep = {0} | {i for i in range(1, n) if v[i] >= threshold}
    rest = sorted(set(range(n)) - keep, key=lambda i: (v[i], i), reverse=True)
    while len(keep) < min(min_frames, n) and rest:
        keep.add(rest.pop(0))
    return sorted(keep)


# -- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRequest:
    """What :func:`apply_plan` made of a request.

    Attributes:
        request: the request to send (the original object when nothing changed).
        plan: the plan applied, restricted to the modalities present (:meth:`UploadPlan.effective`);
            its image choice is ``full`` when the cloud's input size is unknown.
        label: the plan over the modalities present, e.g. ``image=model_res,audio=drop`` (``text``:
            no media): the ``x-offload-upload-plan`` header.
        changed: whether any medium differs from the request as given (an image resized, a frame
            left out, the audio dropped); ``False`` e.g. for ``model_res`` on images already at or
            below the model's size.
        image_sizes: ``(width, height)`` px of each image sent.
        frames: indices of the video frames sent (``None``: no video).
        seconds: wall time applying the plan took, seconds.
    """

    request: MMRequest
    plan: UploadPlan
    label: str
    changed: bool = False
    image_sizes: tuple[tuple[int, int], ...] = ()
    frames: tuple[int, ...] | None = None
    seconds: float = 0.0


def effective_plan(request: MMRequest, plan: UploadPlan, cloud: CloudImageSpec | None) -> UploadPlan:
    """The plan :func:`apply_plan` applies to ``request``: ``plan`` over the modalities it has, with
    images sent whole when the cloud's input size is unknown (``cloud`` ``None``). Reads nothing."""
    eff = plan.effective(bool(request.images), bool(request.video), request.audio is not None)
    return dataclasses.replace(eff, image="full") if eff.image != "full" and cloud is None else eff


def apply_plan(request: MMRequest, plan: UploadPlan, cloud: CloudImageSpec | None, frame_novelty: FrameNovelty | None = None, *,
               max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
               max_request_pixels: int | None = DEFAULT_MAX_REQUEST_PIXELS) -> PlannedRequest:
    """``request`` as ``plan`` sends it to a cloud model that consumes ``cloud`` (see the module
    docstring). ``cloud`` ``None``: the cloud's input size is unknown, so images are sent whole.
    ``frame_novelty``: per frame novelty in [0, 1] (or a function of the frames computing it,
    :func:`mllm_offload.mas.frame_novelty`), needed when ``plan`` keeps keyframes of a video.
    Images over the pixel limits raise :class:`~.base.ImageTooLargeError` before any decoding;
    unreadable ones one-line :class:`UserInputError`."""
    t0 = time.perf_counter()
    frames = list(request.video or ())
    present = (bool(request.images), bool(frames), request.audio is not None)
    eff = effective_plan(request, plan, cloud)
    images = list(request.images)
    rid = request.id or "?"
    sizes = check_image_pixels(images, max_image_pixels, max_request_pixels, f"request {rid}: image") if images else []
    changed = False
    if eff.image != "full" and cloud is not None:
        for i, (w, h) in enumerate(sizes):
            target = cloud.target_size(w, h, eff.image)
            if target is not None:
                images[i] = resize_image(images[i], target, f"request {rid}: image {i}")
                sizes[i] = target
                changed = True
    kept: tuple[int, ...] | None = tuple(range(len(frames))) if frames else None
    if eff.video == "keyframes":
        kept = tuple(keyframe_indices(_novelty(frame_novelty, frames, rid)))
        changed = changed or len(kept) < len(frames)
        frames = [frames[i] for i in kept]
    changed = changed or eff.audio == "drop"
    out = dataclasses.replace(request, images=images, video=frames or None, audio=None if eff.audio == "drop" else request.audio) \
        if changed else request
    return PlannedRequest(out, eff, eff.label(*present), changed, tuple(sizes), kept, time.perf_counter() - t0)


def _novelty(frame_novelty: FrameNovelty | None, frames: list[Any], rid: str) -> np.ndarray:
    if frame_novelty is None:
        raise ValueError(f"request {rid}: keyframes needs the frames' temporal novelty (frame_novelty=mllm_offload.mas.frame_novelty)")
    values = frame_novelty(frames) if callable(frame_novelty) else frame_novelty
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(v) != len(frames):
        raise ValueError(f"request {rid}: {len(v)} frame novelty values for {len(frames)} frames")
    return v
