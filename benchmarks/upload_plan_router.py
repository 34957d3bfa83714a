#!/usr/bin/env python
"""An upload plan on a real router, on loopback: a 1920x1080 JPEG sent with ``model_res`` to a
cloud model that consumes 64 px (the router-side counterpart of ``upload_plans.py``, which
measures plans in the simulator).

    python benchmarks/upload_plan_router.py [--repeats 100] [--threads 1]

One run, all figures measured in it:

1. builds a tiny random LLaVA whose vision tower takes 64 px (``mllm_offload.shapes.tiny``, as
   ``mllm-offload tiny-model`` with ``image_size=64``), reads its image size back from its
   processor config and serves it with ``mllm-offload serve`` (the cloud);
2. starts two ``mllm-offload route`` servers in front of it (edge: the same tiny model, local):
   ``--policy cloud`` (no plan: the image is sent whole) and an exported ``msao-model-res``
   heuristic whose thresholds send every request to the cloud, with ``--cloud-image-size 64``;
3. sends the same JPEG (photo-like, 1920x1080) to both, greedy (temperature 0): bytes on the wire
   (the request body the router sent the cloud, from the trace log's ``route.cloud_bytes_sent``),
   the ``x-offload-upload-plan`` header, the router's time applying the plan
   (``route.upload_plan_s``);
4. asks the cloud node directly with the image pre-resized by hand (Pillow: full decode, bicubic
   to 114x64, JPEG 90), with the original, and with a control (that image turned and its colours
   reversed: does the answer depend on the image at all?), and compares the answers and their
   token log-probabilities (the model's weights are random, so the text is noise; the
   log-probabilities show how close its inputs were);
5. in process, the median of ``--repeats`` runs of ``apply_plan`` on the JPEG next to the median
   of ``compute_mas`` (the MAS features the router computes for every request) on the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _servers import free_port, start, stop

PROMPT = "What is in the picture?"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mllm_offload", *args]


def photo(w: int = 1920, h: int = 1080, seed: int = 0) -> bytes:
    """A photo-like 1920x1080 JPEG (gradients plus sensor-like noise, quality 92)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x / w * 255, y / h * 255, (x + y) % 256], -1) + rng.normal(0, 18, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def pre_resized(jpeg: bytes, size: tuple[int, int]) -> bytes:
    """What a careful client would send: full decode, bicubic resize, JPEG 90."""
    from PIL import Image

    im = Image.open(io.BytesIO(jpeg)).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def control(jpeg: bytes, size: tuple[int, int]) -> bytes:
    """A different image of the same size: the pre-resized one turned 180 degrees, colours reversed."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(pre_resized(jpeg, size))).convert("RGB"))[::-1, ::-1, ::-1]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def body(image: bytes) -> dict:
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}, {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 8, "temperature": 0, "logprobs": True}


def answer(doc: dict) -> tuple[str, list[float]]:
    """The answer text and its token log-probabilities."""
    choice = doc["choices"][0]
    return choice["message"]["content"], [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]


def max_diff(a: list[float], b: list[float]) -> float:
    """Largest absolute difference of two answers' token log-probabilities (over their common length)."""
    n = min(len(a), len(b))
    return max((abs(x - y) for x, y in zip(a[:n], b[:n])), default=float("nan"))


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up (imports, first decode)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def log_record(log_dir: Path) -> dict:
    lines = [x for f in sorted(log_dir.glob("route-*.jsonl")) for x in f.read_text().splitlines()[1:]]
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100, help="runs of apply_plan and of MAS for the medians [100]")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the served and the edge model [1]")
    args = ap.parse_args()

    from mllm_offload.artifact import HeuristicSpec, write_artifact
    from mllm_offload.decision import UploadPlan
    from mllm_offload.mas import compute_mas
    from mllm_offload.mllm_backends.base import MMRequest, image_size
    from mllm_offload.mllm_backends.upload_plan import CloudImageSpec, apply_plan
    from mllm_offload.shapes.tiny import build_tiny_vlm

    tmp = Path(tempfile.mkdtemp(prefix="bench-upload-plan-"))
    model = tmp / "tiny64"
    build_tiny_vlm(model, seed=0, image_size=64, patch_size=8)
    spec = CloudImageSpec.from_model_dir(model)
    policy = write_artifact(tmp / "msao-model-res-cloud", kind="heuristic", name="msao-model-res (always cloud)",
                            heuristic=HeuristicSpec(rule="msao-model-res", params={"slo_s": 2.0, "base_low": 0.0, "base_high": 0.0,
                                                                                     "k_net": 0.0, "k_load": 0.0}))
    jpeg = photo()
    w, h = image_size(jpeg)
    target = spec.target_size(w, h, "model_res")
    assert target is not None
    print(f"cloud model: tiny LLaVA, processor {spec.describe()}; image {w}x{h} JPEG, {len(jpeg):,} bytes; model_res -> {target[0]}x{target[1]}")

    cport, pport, wport = free_port(), free_port(), free_port()
    curl = f"http://127.0.0.1:{cport}"
    procs = []
    try:
        procs.append(start(_cli("serve", "--model", str(model), "--port", str(cport), "--threads", str(args.threads), "--served-name", "tiny64"),
                           curl))
        runs = {}
        for name, port, pol in (("whole (policy cloud)", wport, "cloud"), ("model_res (msao-model-res)", pport, str(policy))):
            logs = tmp / f"logs-{port}"
            procs.append(start(_cli("route", "--edge", str(model), "--cloud", curl, "--policy", pol, "--port", str(port), "--threads",
                                    str(args.threads), "--cloud-image-size", str(spec.box[0] if spec.box else 64), "--log-dir", str(logs)),
                               f"http://127.0.0.1:{port}"))
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body(jpeg), timeout=120)
            r.raise_for_status()
            time.sleep(0.5)  # the trace record is written once the side calls have settled
            rec = log_record(logs)
            runs[name] = (r, rec)
        direct = {what: answer(httpx.post(f"{curl}/v1/chat/completions", json=body(img), timeout=120).json())
                  for what, img in (("the pre-resized image", pre_resized(jpeg, target)), ("the original", jpeg),
                                    ("another image (control)", control(jpeg, target)))}
    finally:
        for p in reversed(procs):
            stop(p)

    print("\n| route | x-offload-upload-plan | mode | bytes on the wire to the cloud | payload bytes | plan applied, ms | answer |")
    print("|---|---|---|---|---|---|---|")
    for name, (r, rec) in runs.items():
        ro = rec["route"]
        plan_ms = f"{1e3 * ro['upload_plan_s']:.1f}" if ro.get("upload_plan_s") is not None else "-"
        print(f"| {name} | {r.headers.get('x-offload-upload-plan')} | {ro['mode']} | {ro['cloud_bytes_sent']:,} | {ro['bytes_sent']:,} | {plan_ms} "
              f"| {answer(r.json())[0]!a} |")
    whole, planned = (runs[k][1]["route"]["cloud_bytes_sent"] for k in runs)
    print(f"\nbytes on the wire: {whole:,} -> {planned:,} ({whole / planned:.0f}x fewer)")
    text, lps = answer(runs["model_res (msao-model-res)"][0].json())
    print(f"answer routed with model_res (greedy): {text!a}")
    for what, (t, lp) in direct.items():
        print(f"  cloud given {what} directly: {'identical' if t == text else 'different'} ({t!a}); "
              f"largest token log-prob difference {max_diff(lps, lp):.2e}")

    req = MMRequest(PROMPT, images=[jpeg])
    plan = UploadPlan(image="model_res")
    t_plan = median_s(lambda: apply_plan(req, plan, spec), args.repeats)
    t_mas = median_s(lambda: compute_mas(PROMPT, images=[jpeg]), args.repeats)
    print(f"in process, median of {args.repeats}: apply_plan(model_res) {1e3 * t_plan:.2f} ms, compute_mas {1e3 * t_mas:.2f} ms "
          f"(plan / MAS = {t_plan / t_mas:.2f})")
    shutil.rmtree(tmp, ignore_errors=True)  # the model and logs (kept when a step failed, for its logs)


if __name__ == "__main__":
    main()
