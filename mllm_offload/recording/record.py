"""Record a request trace from real inference: both backends on every dataset item.

For each item of a dataset (:mod:`.datasets`) the recorder runs the edge and the cloud backend
on the same request, measures their latencies, time to first token and confidences, scores both
answers with the dataset's metric, computes MAS from the real media, and writes one trace record
(:mod:`.schema`). The header names the models, the dataset and the hardware.

* Arrival times: the dataset has none, so ``arrival_s`` is a Poisson process at ``rate_rps``
  drawn once from ``seed`` over the item order (the environment rescales arrival rates anyway).
* Latencies: the edge's are its own service times (the edge semaphore keeps one generation at a
  time by default); the cloud's are server-side (time after the response headers of a streamed
  call, see :meth:`Generation.server_times`), at the recorder's cloud concurrency.
* Resumable: records go to ``OUT.partial`` as items finish; a rerun skips the ids already in
  ``OUT`` or ``OUT.partial``. ``OUT`` is written (atomically, sorted by arrival) only at the end.
* A bad item (missing image, a backend error or timeout on it) is reported and skipped; the run
  stops only after ``max_consecutive_failures`` items failed in a row (a dead backend), keeping
  what it recorded for the next run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import json_text
from ..errors import UserInputError
from ..mas import compute_mas
from ..mllm_backends.base import AudioClip, Backend, CancelToken, Generation, MMRequest, load_image
from ..trace_format import RequestTrace, TraceRecord, hardware_info, load_trace
from ..traces.datasets import DatasetItem

__all__ = ["RecordSummary", "record_dataset"]


@dataclass
class RecordSummary:
    """What a recording run did (counts, seconds, mean scores of the new records)."""

    items: int = 0
    recorded: int = 0
    resumed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    edge_score: float = float("nan")
    cloud_score: float = float("nan")
    errors: list[str] = field(default_factory=list)


def _b64_len(n: int) -> int:
    return 4 * math.ceil(n / 3)


async def _timed(backend: Backend, req: MMRequest, timeout_s: float) -> Generation:
    cancel = CancelToken()
    task = asyncio.ensure_future(backend.generate(req, cancel=cancel))
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if task not in done:
        cancel.cancel()
        task.cancel()
        raise TimeoutError(f"no answer within {timeout_s:g} s")
    return task.result()


def _existing_ids(out: Path, partial: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Records already done (from ``out`` and ``partial``) and ``out``'s header meta."""
    done: list[dict[str, Any]] = []
    meta = None
    if out.exists():
        tr = load_trace(out)
        meta = {k: v for k, v in tr.meta.items() if k != "path"}
        done += [r.model_dump(exclude_none=True) for r in tr.records or []]
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                done.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: that item is redone
                continue
    return done, meta


async def record_dataset(
    items: Sequence[DatasetItem],
    edge: Backend,
    cloud: Backend,
    out: str | Path,
    *,
    meta: dict[str, Any] | None = None,
    max_new_tokens: int = 16,
    edge_concurrency: int = 1,
    cloud_concurrency: int = 4,
    rate_rps: float = 1.0,
    seed: int = 0,
    timeout_s: float = 120.0,
    image_tokens: int = 576,
    max_consecutive_failures: int = 20,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> RecordSummary:
    """Run both backends on ``items`` and write the trace to ``out`` (see the module docstring).

    Args:
        items: dataset items (ids unique).
        edge, cloud: the two backends.
        out: output trace (``.jsonl`` or ``.jsonl.gz``).
        meta: extra header fields (dataset spec, model paths ...).
        max_new_tokens: generation budget per answer, tokens.
        edge_concurrency, cloud_concurrency: generations at once on each side.
        rate_rps: arrival rate of the synthetic Poisson arrivals, requests per second.
        seed: seed of the arrivals.
        timeout_s: per-generation deadline, seconds.
        image_tokens: image tokens assumed when the cloud reports no prompt token count.
        max_consecutive_failures: stop after this many failed items in a row.
        progress: show a progress bar (stderr).
        report: where one-line notes about skipped items go (default: stderr).
    """
    if rate_rps <= 0 or max_new_tokens < 1 or edge_concurrency < 1 or cloud_concurrency < 1:
        raise UserInputError("record: rate, max_new_tokens and concurrencies must be positive")
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    say = report or (lambda m: print(m, file=sys.stderr))
    t_start = time.perf_counter()
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise UserInputError("record: dataset item ids are not unique")
    rng = np.random.default_rng(seed)
    arrival = dict(zip(ids, np.cumsum(rng.exponential(1.0 / rate_rps, len(ids))).tolist()))
    done, old_meta = _existing_ids(out, partial)
    done_ids = {d.get("id") for d in done}
    todo = [it for it in items if it.id not in done_ids]
    summary = RecordSummary(items=len(items), resumed=len(done_ids & set(ids)))
    edge_sem, cloud_sem = asyncio.Semaphore(edge_concurrency), asyncio.Semaphore(cloud_concurrency)
    window = asyncio.Semaphore(2 * max(edge_concurrency, cloud_concurrency))
    new_scores: list[tuple[float, float]] = []
    state = {"fails": 0, "last": ""}
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="record", unit="item", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def one(item: DatasetItem) -> None:
        async with window:
            if state["fails"] >= max_consecutive_failures:
                return
            try:
                rec, scores = await _record_item(item, arrival[item.id], edge, cloud, edge_sem, cloud_sem, max_new_tokens, timeout_s, image_tokens)
            except Exception as e:
                msg = f"item {item.id}: skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                say(msg)
                summary.skipped += 1
                summary.errors.append(msg)
                state["fails"] += 1
                state["last"] = msg
            else:
                os.write(fd, (json_text(rec, separators=(",", ":")) + "\n").encode())
                summary.recorded += 1
                new_scores.append(scores)
                state["fails"] = 0
            finally:
                if bar is not None:
                    bar.update(1)

    try:
        await asyncio.gather(*(one(it) for it in todo))
    finally:
        os.close(fd)
        if bar is not None:
            bar.close()
    if state["fails"] >= max_consecutive_failures:
        raise UserInputError(f"record: stopped after {state['fails']} failed items in a row ({state['last']}); "
                             f"{summary.recorded} new records kept in {partial}, rerun to resume")
    done, _ = _existing_ids(out, partial) if out.exists() or partial.exists() else ([], None)
    if not done:
        raise UserInputError("record: no item could be recorded")
    records = sorted((TraceRecord.model_validate(d) for d in done), key=lambda r: r.arrival_s)
    header = {**(old_meta or {}), **dict(meta or {}), "source": "record", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "hardware": hardware_info(), "edge_model": getattr(edge, "name", "edge"), "cloud_model": getattr(cloud, "name", "cloud"),
              "max_new_tokens": max_new_tokens, "arrival_rate_rps": rate_rps, "arrival_seed": seed, "items": len(records),
              "cloud_concurrency": cloud_concurrency}
    RequestTrace.from_records(records, meta=header).write_jsonl(out)
    partial.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - t_start
    if new_scores:
        arr = np.array(new_scores)
        summary.edge_score, summary.cloud_score = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    return summary


async def _record_item(item: DatasetItem, arrival_s: float, edge: Backend, cloud: Backend, edge_sem: asyncio.Semaphore,
                       cloud_sem: asyncio.Semaphore, max_new_tokens: int, timeout_s: float, image_tokens: int) -> tuple[dict[str, Any], tuple[float, float]]:
    images, video, audio = item.load_media()
    sizes = [load_image(b, f"item {item.id}: image {i}").size for i, b in enumerate(images)]
    for i, fr in enumerate(video or ()):
        load_image(fr, f"item {item.id}: video frame {i}")
    clip = AudioClip(audio[0], audio[1]) if audio is not None else None
    req = MMRequest(prompt=item.question, images=images, video=video, audio=clip, max_new_tokens=max_new_tokens, id=item.id)

    async def side(backend: Backend, sem: asyncio.Semaphore, what: str) -> Generation:
        async with sem:
            try:
                return await _timed(backend, req, timeout_s)
            except Exception as e:
                raise RuntimeError(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    ge, gc = await asyncio.gather(side(edge, edge_sem, "edge"), side(cloud, cloud_sem, "cloud"))
    if ge.confidence is None:
        raise RuntimeError("edge: no token log-probabilities, so no confidence")
    mas = compute_mas(item.question, images=images, video=video, audio=audio[0] if audio else None,
                      sample_rate=audio[1] if audio else None, vision_hidden=ge.vision_hidden)
    text_tokens = max(1, len(item.question.encode()) // 4)
    n_media = len(images) + len(video or ())
    media_tokens = (gc.in_tokens - text_tokens) if gc.in_tokens > text_tokens else image_tokens * n_media
    modalities: dict[str, dict[str, Any]] = {"text": {"tokens": text_tokens}}
    payload = {"text": len(item.question.encode())}
    if images:
        share = len(images) / n_media
        modalities["image"] = {"tokens": round(media_tokens * share), "count": len(images),
                               "width": max(w for w, _ in sizes), "height": max(h for _, h in sizes)}
        payload["image"] = sum(_b64_len(len(b)) + 23 for b in images)
    if video:
        modalities["video"] = {"tokens": round(media_tokens * len(video) / n_media), "frames": len(video)}
        payload["video"] = sum(_b64_len(len(b)) + 23 for b in video)
    if clip is not None:
        modalities["audio"] = {"tokens": int(25 * clip.duration_s), "seconds": clip.duration_s}
        payload["audio"] = _b64_len(44 + 2 * len(clip.samples))
    se, sc = item.score(ge.text), item.score(gc.text)
    el, et = ge.server_times()
    cl, ct = gc.server_times()
    rec = {
        "id": item.id, "arrival_s": arrival_s, "modalities": modalities, "payload_bytes": payload,
        "mas": {k: float(v) for k, v in mas.items()},
        "edge": {"latency_s": el, "ttft_s": et, "out_tokens": ge.out_tokens, "confidence": min(max(ge.confidence, 0.0), 1.0), "score": se},
        "cloud": {"latency_s": cl, "ttft_s": ct, "out_tokens": gc.out_tokens, "score": sc},
    }
    if item.meta:
        rec["item"] = dict(item.meta)
    TraceRecord.model_validate(rec)  # a record that does not validate is this item's failure, not the file's
    return rec, (se, sc)
