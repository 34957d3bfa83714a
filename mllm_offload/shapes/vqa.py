"""Procedural visual question answering on drawn shapes ("shapes VQA"), deterministic by seed.

Every item is a scene of coloured shapes drawn with PIL on a plain, textured or noisy background,
and one question with an exact one-word answer. Difficulty is real, not a label: it sets how many
objects there are, how small they can be, how busy the background is and how much pixel noise is
added, so a low-resolution or small model fails more often on harder items.

==============  ===============================================  ==================================
question type   example                                          answer
==============  ===============================================  ==================================
``color``       what color is the triangle ?                     a colour (the shape is unique)
``count``       how many circles are there ?                     ``0`` .. ``9``
``exists``      is there a red square ?                          ``yes`` / ``no``
``left``        is the blue circle left of the red square ?      ``yes`` / ``no``
``largest``     what shape is the largest ?                      a shape name
==============  ===============================================  ==================================

==========  =========  ==================  =============================  =================
difficulty  objects    object radius, px   background                     pixel noise sigma
==========  =========  ==================  =============================  =================
easy        1 - 2      30 - 48             plain                          0
medium      3 - 5      16 - 36             plain or textured              0 - 12
hard        6 - 9      9 - 26              textured or noisy              8 - 40
==========  =========  ==================  =============================  =================

Radii are for the default 224 x 224 canvas and scale with it. Optional media: a share of items
comes as a short **video** (3-4 frames: the shapes drift a few pixels per frame, or a static scene
repeated, so temporal redundancy varies) whose questions are about the scene (colours, counts,
existence; positions are those of the last frame), and a share carries a short **audio** clip
(tone beeps, 16 kHz mono WAV) that the question does not depend on. Both only exercise the MAS
temporal and audio features; the models answer from the frames.

:func:`make_item` returns one :class:`ShapesItem` from ``(seed, index)`` alone, so any subset can
be regenerated; :func:`write_dataset` writes the generic JSONL format of :mod:`.datasets`
(``jsonl:OUT/shapes.jsonl``) with PNG images, PNG frames and WAV files next to it.
"""

from __future__ import annotations

import io
import json
import math
import os
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError

__all__ = [
    "ANSWER_WORDS",
    "CAPTION_QUESTION",
    "COLORS",
    "DIFFICULTIES",
    "QUESTION_TYPES",
    "SHAPES",
    "VOCABULARY",
    "ShapesItem",
    "make_item",
    "make_items",
    "make_training_items",
    "patch_labels",
    "render_scene",
    "write_dataset",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (240, 210, 20),
    "purple": (150, 40, 190),
    "orange": (245, 130, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PLURALS = {s: s + "s" for s in SHAPES}
QUESTION_TYPES = ("color", "count", "exists", "left", "largest")
DIFFICULTIES = ("easy", "medium", "hard")
#: every word an answer can be
ANSWER_WORDS = tuple(COLORS) + SHAPES + tuple(str(i) for i in range(10)) + ("yes", "no")
#: every word a question can contain (plus the answers): the shapes models' word vocabulary
VOCABULARY = ANSWER_WORDS + tuple(PLURALS.values()) + (
    "what", "color", "is", "the", "how", "many", "are", "there", "a", "of", "left", "shape", "largest", "?", "describe", "shapes",
)
#: the training-only captioning prompt (LLaVA stage-1 style alignment): its answer lists every
#: object as ``colour shape`` from left to right
CAPTION_QUESTION = "describe the shapes ?"

_LEVELS: dict[str, dict[str, Any]] = {
    "easy": {"n": (1, 2), "r": (30, 48), "bg": ("plain",), "noise": (0.0, 0.0)},
    "medium": {"n": (3, 5), "r": (16, 36), "bg": ("plain", "textured"), "noise": (0.0, 12.0)},
    "hard": {"n": (6, 9), "r": (9, 26), "bg": ("textured", "noisy"), "noise": (8.0, 40.0)},
}


#: scenes drawn before giving up on a question type; a hard scene has a clearly largest shape
#: (1.25x the runner-up) only one time in ~9, and 50 draws failed for ~0.4 % of such items
_MAX_SCENE_DRAWS = 1000


@dataclass
class Obj:
    """One drawn shape: kind, colour name, centre (x, y) and radius in pixels."""

    shape: str
    color: str
    x: float
    y: float
    r: float


@dataclass
class ShapesItem:
    """One generated question: the scene (images or frames), question, answer and metadata.

    ``images`` holds one PIL image (or none for a video item), ``frames`` the video frames,
    ``audio`` ``(samples in [-1, 1], sample_rate)``. ``meta`` records the difficulty, question
    type, object count, background and noise level. ``objects`` are the drawn shapes (of the last
    frame, for a video): the ground truth that :func:`patch_labels` turns into dense labels.
    """

    id: str
    question: str
    answer: str
    qtype: str
    difficulty: str
    images: list[Any] = field(default_factory=list)
    frames: list[Any] | None = None
    audio: tuple[np.ndarray, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    objects: list[Obj] = field(default_factory=list)

    @property
    def media(self) -> list[Any]:
        """The pictures a model sees: the image, or the video frames."""
        return list(self.images) + list(self.frames or [])


# -- scenes -------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    if kind == "plain":
        base = rng.integers(200, 256, 3)
        return np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    if kind == "textured":
        a, b = rng.integers(120, 250, 3), rng.integers(120, 250, 3)
        period = int(rng.integers(max(4, size // 28), max(6, size // 8)))
        yy, xx = np.mgrid[0:size, 0:size]
        pattern = rng.integers(0, 3)
        if pattern == 0:
            m = (xx // period) % 2
        elif pattern == 1:
            m = ((xx // period) + (yy // period)) % 2
        else:
            m = ((xx + yy) // period) % 2
        return np.where(m[..., None] == 1, a, b).astype(np.float32)
    # noisy: coloured blobs of low-frequency noise
    coarse = rng.integers(60, 256, (max(2, size // 16), max(2, size // 16), 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), dtype=np.float32)


def _polygon(o: Obj) -> list[tuple[float, float]]:
    if o.shape == "square":
        s = o.r * 0.85
        return [(o.x - s, o.y - s), (o.x + s, o.y - s), (o.x + s, o.y + s), (o.x - s, o.y + s)]
    if o.shape == "triangle":
        return [(o.x + o.r * math.cos(a), o.y + o.r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    return [(o.x, o.y - o.r), (o.x + o.r, o.y), (o.x, o.y + o.r), (o.x - o.r, o.y)]  # diamond


def render_scene(objs: Iterable[Obj], background: np.ndarray, noise: float, rng: np.random.Generator):
    """Draw ``objs`` over ``background`` (H x W x 3 floats), add Gaussian pixel noise of
    standard deviation ``noise`` (0-255 scale) and return an RGB PIL image."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for o in objs:
        fill = COLORS[o.color]
        if o.shape == "circle":
            d.ellipse([o.x - o.r, o.y - o.r, o.x + o.r, o.y + o.r], fill=fill)
        else:
            d.polygon(_polygon(o), fill=fill)
    if noise > 0:
        arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, noise, (img.height, img.width, 3))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


def _inside(o: Obj, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Which points ``(px, py)`` (pixels, arrays of one shape) lie inside ``o`` as drawn."""
    dx, dy = px - o.x, py - o.y
    if o.shape == "circle":
        return dx * dx + dy * dy <= o.r * o.r
    if o.shape == "square":
        s = o.r * 0.85
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if o.shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= o.r
    (x1, y1), (x2, y2), (x3, y3) = _polygon(o)
    d1 = (px - x2) * (y1 - y2) - (x1 - x2) * (py - y2)
    d2 = (px - x3) * (y2 - y3) - (x2 - x3) * (py - y3)
    d3 = (px - x1) * (y3 - y1) - (x3 - x1) * (py - y1)
    return ~(((d1 < 0) | (d2 < 0) | (d3 < 0)) & ((d1 > 0) | (d2 > 0) | (d3 > 0)))


def patch_labels(objects: Iterable[Obj], grid: int, size: int = 224, sub: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Dense ground truth of a scene for a ``grid`` x ``grid`` patch tokenisation.

    Each patch (row-major, as a ViT orders its patch tokens) is labelled with the object that
    covers the most of its ``sub`` x ``sub`` sample points (later objects drawn over earlier
    ones), or background if no object covers any. Returns ``(colour, shape)`` int64 arrays of length ``grid**2``:
    0 is background, ``k >= 1`` the ``k``-th entry of :data:`COLORS` / :data:`SHAPES`.

    Args:
        objects: the drawn shapes (:attr:`ShapesItem.objects`), in drawing order.
        grid: patches per side (image side / patch side).
        size: canvas side the objects' coordinates refer to, pixels.
        sub: sample points per patch side.
    """
    objs = list(objects)
    cell = size / grid
    xs = ((np.arange(grid)[:, None] + (np.arange(sub) + 0.5)[None] / sub) * cell).reshape(-1)
    px, py = np.meshgrid(xs, xs)  # rows are y
    owner = np.full(px.shape, -1)
    for k, o in enumerate(objs):
        owner[_inside(o, px, py)] = k
    owner = owner.reshape(grid, sub, grid, sub).transpose(0, 2, 1, 3).reshape(grid * grid, sub * sub)
    colour = np.zeros(grid * grid, dtype=np.int64)
    shape = np.zeros(grid * grid, dtype=np.int64)
    colour_ids = {c: i + 1 for i, c in enumerate(COLORS)}
    for i, row in enumerate(owner):
        hit = row[row >= 0]
        if hit.size:
            o = objs[int(np.bincount(hit).argmax())]
            colour[i], shape[i] = colour_ids[o.color], SHAPES.index(o.shape) + 1
    return colour, shape


def _place(rng: np.random.Generator, n: int, rlo: float, rhi: float, size: int) -> list[tuple[float, float, float]]:
    """Centres and radii with little overlap (rejection sampling; gives up gracefully)."""
    out: list[tuple[float, float, float]] = []
    tries = 0
    while len(out) < n and tries < 2000:
        tries += 1
        r = float(rng.uniform(rlo, rhi))
        x, y = float(rng.uniform(r + 1, size - r - 1)), float(rng.uniform(r + 1, size - r - 1))
        if all(math.hypot(x - a, y - b) > 0.9 * (r + c) for a, b, c in out):
            out.append((x, y, r))
    return out


def _scene_objects(rng: np.random.Generator, level: dict[str, Any], size: int) -> list[Obj]:
    scale = size / 224.0
    n = int(rng.integers(level["n"][0], level["n"][1] + 1))
    spots = _place(rng, n, level["r"][0] * scale, level["r"][1] * scale, size)
    return [Obj(str(rng.choice(SHAPES)), str(rng.choice(list(COLORS))), x, y, r) for x, y, r in spots]


def _unique(objs: list[Obj], key: Callable[[Obj], Any]) -> list[Obj]:
    counts: dict[Any, int] = {}
    for o in objs:
        counts[key(o)] = counts.get(key(o), 0) + 1
    return [o for o in objs if counts[key(o)] == 1]


def _question(rng: np.random.Generator, qtype: str, objs: list[Obj]) -> tuple[str, str] | None:
    """A question of ``qtype`` about ``objs`` with its answer, or ``None`` if none fits."""
    if qtype == "color":
        cands = _unique(objs, lambda o: o.shape)
        if not cands:
            return None
        o = cands[int(rng.integers(len(cands)))]
        return f"what color is the {o.shape} ?", o.color
    if qtype == "count":
        s = str(rng.choice(SHAPES))
        if rng.random() < 0.7 and objs:  # mostly ask about a shape that is there
            s = objs[int(rng.integers(len(objs)))].shape
        return f"how many {PLURALS[s]} are there ?", str(sum(o.shape == s for o in objs))
    if qtype == "exists":
        if rng.random() < 0.5 and objs:
            o = objs[int(rng.integers(len(objs)))]
            c, s = o.color, o.shape
        else:
            c, s = str(rng.choice(list(COLORS))), str(rng.choice(SHAPES))
        ans = "yes" if any(o.color == c and o.shape == s for o in objs) else "no"
        return f"is there a {c} {s} ?", ans
    if qtype == "left":
        cands = _unique(objs, lambda o: (o.color, o.shape))
        if len(cands) < 2:
            return None
        i, j = rng.choice(len(cands), 2, replace=False)
        a, b = cands[int(i)], cands[int(j)]
        if abs(a.x - b.x) < 0.5 * (a.r + b.r) * 0.5:
            return None
        ans = "yes" if a.x < b.x else "no"
        return f"is the {a.color} {a.shape} left of the {b.color} {b.shape} ?", ans
    # largest: only when one shape is clearly the largest
    if not objs:
        return None
    rs = sorted(objs, key=lambda o: -o.r)
    if len(rs) > 1 and rs[0].r < 1.25 * rs[1].r:
        return None
    return "what shape is the largest ?", rs[0].shape


def _tone(rng: np.random.Generator, rate: int = 16_000) -> tuple[np.ndarray, int]:
    """0.5-1.5 s of beeps (one to four tones with silent gaps) plus faint noise, in [-1, 1]."""
    dur = float(rng.uniform(0.5, 1.5))
    t = np.arange(int(dur * rate)) / rate
    x = np.zeros_like(t)
    for _ in range(int(rng.integers(1, 5))):
        f, t0, ln = rng.uniform(300, 2000), rng.uniform(0, dur * 0.8), rng.uniform(0.05, 0.3)
        m = (t >= t0) & (t < t0 + ln)
        x[m] += 0.4 * np.sin(2 * np.pi * f * t[m])
    x += rng.normal(0, 0.01, t.size)
    return np.clip(x, -1, 1).astype(np.float32), rate


def _draw(item: ShapesItem, rng: np.random.Generator, objs: list[Obj], bg: np.ndarray, noise: float, size: int, is_video: bool) -> None:
    """Render ``objs`` into ``item``: one image, or 3-4 video frames that end on the scene."""
    if not is_video:
        item.images = [render_scene(objs, bg, noise, rng)]
        return
    n_frames = int(rng.integers(3, 5))
    moving = bool(rng.random() < 0.5)
    vel = [(float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))) for _ in objs]
    step = 0.04 * size if moving else 0.0
    frames: list[Any] = []
    for k in range(n_frames):
        back = n_frames - 1 - k  # the last frame is the scene the question describes
        fo = [Obj(o.shape, o.color, min(max(o.x - back * step * vx, o.r), size - o.r),
                  min(max(o.y - back * step * vy, o.r), size - o.r), o.r) for o, (vx, vy) in zip(objs, vel)]
        frames.append(render_scene(fo, bg, noise, rng) if (moving or k == 0) else frames[0].copy())
    item.frames = frames
    item.meta.update(video_frames=n_frames, moving=moving)


def make_item(
    seed: int,
    index: int,
    *,
    size: int = 224,
    video_share: float = 0.0,
    audio_share: float = 0.0,
    difficulty: str | None = None,
    qtype: str | None = None,
) -> ShapesItem:
    """Item ``index`` of the stream ``seed`` (a pure function of its arguments).

    Args:
        seed, index: which item; the random stream is ``numpy.random.default_rng([seed, index])``.
        size: canvas side, pixels.
        video_share: probability that the item is a 3-4 frame video instead of one image.
        audio_share: probability that the item carries an audio clip.
        difficulty, qtype: force the level / question type (default: uniform draws).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    level_name = difficulty or str(rng.choice(DIFFICULTIES))
    if level_name not in _LEVELS:
        raise UserInputError(f"difficulty: must be one of {', '.join(DIFFICULTIES)}, got {level_name!r}")
    level = _LEVELS[level_name]
    is_video = rng.random() < video_share
    has_audio = rng.random() < audio_share
    types = [t for t in QUESTION_TYPES if t != "largest"] if is_video else list(QUESTION_TYPES)
    want = qtype or str(rng.choice(types))
    if want not in QUESTION_TYPES:
        raise UserInputError(f"qtype: must be one of {', '.join(QUESTION_TYPES)}, got {want!r}")
    for _ in range(_MAX_SCENE_DRAWS):
        objs = _scene_objects(rng, level, size)
        qa = _question(rng, want, objs)
        if qa is not None:
            break
    else:  # pragma: no cover - P(fail) < 1e-20 for the rarest case (hard "largest": ~9 draws on average)
        raise RuntimeError(f"no {want} question fits after {_MAX_SCENE_DRAWS} scenes (seed {seed}, index {index})")
    bg_kind = str(rng.choice(level["bg"]))
    bg = _background(rng, bg_kind, size)
    noise = float(rng.uniform(*level["noise"]))
    meta: dict[str, Any] = {"difficulty": level_name, "qtype": want, "objects": len(objs), "background": bg_kind,
                            "noise": round(noise, 2), "min_radius": round(min(o.r for o in objs), 1)}
    item = ShapesItem(id=f"s{seed}-{index}", question=qa[0], answer=qa[1], qtype=want, difficulty=level_name, meta=meta,
                      objects=objs)
    _draw(item, rng, objs, bg, noise, size, is_video)
    if has_audio:
        item.audio = _tone(rng)
        meta["audio_s"] = round(item.audio[0].size / item.audio[1], 3)
    return item


def make_items(seed: int, n: int, start: int = 0, **kw: Any) -> list[ShapesItem]:
    """Items ``start .. start+n-1`` of stream ``seed`` (see :func:`make_item`)."""
    return [make_item(seed, i, **kw) for i in range(start, start + n)]


def make_training_items(seed: int, n_scenes: int, questions_per_scene: int = 3, *, start: int = 0, size: int = 224,
                        video_share: float = 0.0, caption: bool = True) -> list[ShapesItem]:
    """Training data: ``n_scenes`` scenes of stream ``seed`` with up to ``questions_per_scene``
    questions each (distinct types, drawn at random), sharing the scene's pictures.

    Use another ``seed`` than the evaluation/recording stream's, so scenes are disjoint. Rendering
    dominates the cost (a few ms per 224 x 224 scene), hence several questions per scene.
    ``caption`` adds one :data:`CAPTION_QUESTION` item per scene whose answer names every object
    left to right: many supervised tokens per image, which is what lets a vision tower trained
    from scratch learn colours, shapes and positions within a CPU budget.
    """
    out: list[ShapesItem] = []
    for index in range(start, start + n_scenes):
        rng = np.random.default_rng([int(seed), int(index), 7])
        level_name = str(rng.choice(DIFFICULTIES))
        level = _LEVELS[level_name]
        is_video = bool(rng.random() < video_share)
        objs = _scene_objects(rng, level, size)
        bg_kind = str(rng.choice(level["bg"]))
        noise = float(rng.uniform(*level["noise"]))
        base = ShapesItem(id="", question="", answer="", qtype="", difficulty=level_name,
                          meta={"difficulty": level_name, "objects": len(objs), "background": bg_kind, "noise": round(noise, 2)},
                          objects=objs)
        _draw(base, rng, objs, _background(rng, bg_kind, size), noise, size, is_video)
        if caption:
            cap = " ".join(f"{o.color} {o.shape}" for o in sorted(objs, key=lambda o: o.x))
            out.append(ShapesItem(id=f"t{seed}-{index}-caption", question=CAPTION_QUESTION, answer=cap, qtype="caption",
                                  difficulty=level_name, images=base.images, frames=base.frames, meta={**base.meta, "qtype": "caption"},
                                  objects=objs))
        types = [t for t in QUESTION_TYPES if not (is_video and t == "largest")]
        for q in rng.permutation(types)[:questions_per_scene]:
            qa = _question(rng, str(q), objs)
            if qa is not None:
                out.append(ShapesItem(id=f"t{seed}-{index}-{q}", question=qa[0], answer=qa[1], qtype=str(q), difficulty=level_name,
                                      images=base.images, frames=base.frames, meta={**base.meta, "qtype": str(q)},
                                      objects=objs))
    return out


# -- files --------------------------------------------------------------------------------------


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def write_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    size: int = 224,
    video_share: float = 0.05,
    audio_share: float = 0.05,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> Path:
    """Write ``n`` items to ``out_dir`` as ``shapes.jsonl`` + ``media/`` and return the JSONL path.

    Files are written under a temporary name and renamed, so an interrupted run leaves no
    ``shapes.jsonl`` that points at missing media. Load it with ``load_dataset("jsonl:PATH")``.
    """
    if n < 1:
        raise UserInputError(f"n: must be >= 1, got {n}")
    out = Path(out_dir)
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    lines = []
    it: Iterable[int] = range(n)
    if progress is not None:
        it = progress(it)
    for i in it:
        item = make_item(seed, i, size=size, video_share=video_share, audio_share=audio_share)
        d: dict[str, Any] = {"id": item.id, "question": item.question, "answers": [item.answer], "metric": "exact", "meta": item.meta}
        if item.frames:
            names = []
            for k, fr in enumerate(item.frames):
                (media / f"{item.id}-f{k}.png").write_bytes(_png(fr))
                names.append(f"media/{item.id}-f{k}.png")
            d["video"] = names
        else:
            (media / f"{item.id}.png").write_bytes(_png(item.images[0]))
            d["image"] = f"media/{item.id}.png"
        if item.audio is not None:
            (media / f"{item.id}.wav").write_bytes(_wav(*item.audio))
            d["audio"] = f"media/{item.id}.wav"
        lines.append(json.dumps(d, separators=(",", ":")))
    path = out / "shapes.jsonl"
    tmp = out / ".shapes.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path

