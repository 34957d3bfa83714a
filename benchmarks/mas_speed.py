"""MAS feature time against the Hugging Face processors' own preprocessing, same images, same process.

    python benchmarks/mas_speed.py [--rounds 7] [--reps 10]

Images: synthetic scenes (shapes on textured, noisy backgrounds) at 448x448, 1024x768 and
1920x1080. Two input forms: a decoded PIL image (both sides skip decoding) and JPEG bytes (both
sides decode; MAS decodes in JPEG draft mode). The processor is a LLaVA-1.5 style
``CLIPImageProcessorPil`` (resize shortest edge to 336, centre crop 336, rescale, normalise),
built offline. Video: 8 frames at 640x360 through ``compute_mas`` against the processor on the
same 8 frames. Audio: 10 s at 16 kHz through ``audio_features`` against Whisper's feature
extractor (log-mel). Each figure is the median over rounds of the mean over reps; ratios are
MAS / processor (goal for images <= 0.5).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw

from mllm_offload.mas import audio_features, compute_mas


def scene(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(base).resize((w, h), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    for _ in range(25):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, max(11, w // 10)))
        d.rectangle((x, y, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    a = np.asarray(im, np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def timeit(fn, rounds: int, reps: int) -> float:
    fn()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        out.append((time.perf_counter() - t) / reps)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    try:
        from transformers import CLIPImageProcessorPil as CLIPProc
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as CLIPProc

    proc = CLIPProc(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    rows = []
    for w, h in ((448, 448), (1024, 768), (1920, 1080)):
        img = scene(w, h)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        jpeg = buf.getvalue()
        t_proc = timeit(lambda img=img: proc(images=img, return_tensors="np"), a.rounds, a.reps)
        t_mas = timeit(lambda img=img: compute_mas("what colour is the largest square?", images=[img]), a.rounds, a.reps)
        rows.append((f"{w}x{h} PIL", t_mas, t_proc))
        t_proc_j = timeit(lambda jpeg=jpeg: proc(images=Image.open(io.BytesIO(jpeg)).convert("RGB"), return_tensors="np"), a.rounds, a.reps)
        t_mas_j = timeit(lambda jpeg=jpeg: compute_mas("what colour is the largest square?", images=[jpeg]), a.rounds, a.reps)
        rows.append((f"{w}x{h} JPEG", t_mas_j, t_proc_j))
    frames = [scene(640, 360, seed=s // 2) for s in range(8)]  # pairs of identical frames
    t_proc_v = timeit(lambda: proc(images=frames, return_tensors="np"), a.rounds, max(1, a.reps // 3))
    t_mas_v = timeit(lambda: compute_mas("what happens?", video=frames), a.rounds, max(1, a.reps // 3))
    rows.append(("video 8x640x360", t_mas_v, t_proc_v))
    sr = 16_000
    rng = np.random.default_rng(0)
    clip = (rng.normal(0, 0.2, 10 * sr) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(10 * sr) / sr))).astype(np.float32)
    try:
        from transformers import WhisperFeatureExtractor

        fe = WhisperFeatureExtractor()
        t_proc_a = timeit(lambda: fe(clip, sampling_rate=sr, return_tensors="np"), a.rounds, max(1, a.reps // 3))
    except Exception:
        t_proc_a = float("nan")
    t_mas_a = timeit(lambda: audio_features(clip, sr), a.rounds, max(1, a.reps // 3))
    rows.append(("audio 10 s @16 kHz", t_mas_a, t_proc_a))

    print(f"{'input':<22} {'MAS ms':>9} {'processor ms':>13} {'MAS/processor':>14}")
    for name, m, p in rows:
        print(f"{name:<22} {m * 1e3:9.2f} {p * 1e3:13.2f} {m / p:14.2f}")


if __name__ == "__main__":
    main()
