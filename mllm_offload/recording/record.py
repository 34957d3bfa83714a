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
* Upload-plan variants (``variants=["model_res", "reduced", "keyframes", "no_audio"]``, or
  ``+``-joined combinations such as ``model_res+no_audio``): besides the base call, the cloud is run
  on each variant that applies to the item's modalities (an image for ``model_res``/``reduced``, a
  video for ``keyframes``, audio for ``no_audio``), the request made by the same
  :func:`~mllm_offload.mllm_backends.upload_plan.apply_plan` the router uses, and the record's
  ``variants`` holds, per variant, the changed modalities' ``payload_bytes`` (base64 data-URL
  bytes, as ``payload_bytes``; 0 for dropped audio) and ``tokens`` (from the cloud's prompt token
  count against the base call's; estimated from the pixels the model consumes, the frames kept,
  when the cloud reports none) and the ``cloud`` outcome scored against the same label. A variant
  that changes nothing (``model_res`` on images already at or below the model's size, keyframes
  that keep every frame) reuses the base outcome instead of calling again. A variant whose call
  fails is left out of that record with a note (the simulator then refuses that plan there rather
  than guessing). Items resumed from an earlier run keep what they had.
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
from ..decision import UploadPlan
from ..errors import UserInputError
from ..mas import compute_mas, frame_novelty
from ..mllm_backends.base import AudioClip, Backend, CancelToken, Generation, MMRequest, image_size, load_image
from ..mllm_backends.upload_plan import CloudImageSpec, PlannedRequest, apply_plan
from ..trace_format import RequestTrace, TraceRecord, hardware_info, load_trace
from ..traces.datasets import DatasetItem

__all__ = ["VARIANT_CHOICES", "RecordSummary", "parse_variants", "record_dataset"]

#: the single variants ``record`` knows, with the plan choice each makes (``+`` joins them)
VARIANT_CHOICES: dict[str, tuple[str, str]] = {"model_res": ("image", "model_res"), "reduced": ("image", "reduced"),
                                               "keyframes": ("video", "keyframes"), "no_audio": ("audio", "drop")}


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """Variant names from ``model_res,reduced,keyframes,no_audio`` (or a list), each a single
    variant or several joined by ``+`` in the order image, video, audio; one-line
    :class:`UserInputError` naming the first bad one."""
    import difflib

    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    out: list[str] = []
    for name in names:
        if not name:
            raise UserInputError("variants: empty name in the list (expected e.g. model_res,reduced,keyframes,no_audio)")
        fields: dict[str, str] = {}
        for part in name.split("+"):
            if part not in VARIANT_CHOICES:
                close = difflib.get_close_matches(part, VARIANT_CHOICES, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UserInputError(f"variants: unknown variant {part!r}{hint}; known: {', '.join(VARIANT_CHOICES)}")
            modality, choice = VARIANT_CHOICES[part]
            if modality in fields:
                raise UserInputError(f"variants: {name!r} changes the {modality} twice")
            fields[modality] = choice
        canonical = UploadPlan(**fields).variant()
        if canonical != name:
            raise UserInputError(f"variants: write {name!r} as {canonical!r} (the order image, video, audio)")
        if name not in out:
            out.append(name)
    return out


def _variant_plan(name: str) -> UploadPlan:
    return UploadPlan(**dict(VARIANT_CHOICES[p] for p in name.split("+")))


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
    variants: Sequence[str] = (),
    cloud_image: CloudImageSpec | None = None,
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
        variants: upload-plan variants to run the cloud on too (see the module docstring;
            :func:`parse_variants` checks the names).
        cloud_image: what the cloud model's image processor consumes; needed by the image
            variants (``model_res``, ``reduced``).
    """
    if rate_rps <= 0 or max_new_tokens < 1 or edge_concurrency < 1 or cloud_concurrency < 1:
        raise UserInputError("record: rate, max_new_tokens and concurrencies must be positive")
    variants = parse_variants(list(variants)) if variants else []
    if cloud_image is None and any(_variant_plan(v).image != "full" for v in variants):
        raise UserInputError("record: the image variants need the cloud model's image input size (cloud_image; "
                             "--cloud-image-size, --cloud-image-pixels or --cloud-image-family for a URL)")
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
                rec, scores, req, gc = await _record_item(item, arrival[item.id], edge, cloud, edge_sem, cloud_sem, max_new_tokens, timeout_s,
                                                          image_tokens)
                if variants:
                    rec["variants"] = await _record_variants(item, rec, req, gc, cloud, cloud_sem, timeout_s, variants, cloud_image, say)
                    if not rec["variants"]:
                        del rec["variants"]
                    TraceRecord.model_validate(rec)
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
    if variants:
        header["variants"] = list(variants)
        header["cloud_image"] = cloud_image.describe() if cloud_image is not None else None
    RequestTrace.from_records(records, meta=header).write_jsonl(out)
    partial.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - t_start
    if new_scores:
        arr = np.array(new_scores)
        summary.edge_score, summary.cloud_score = float(arr[:, 0].mean()), float(arr[:, 1].mean())
    return summary


async def _record_item(item: DatasetItem, arrival_s: float, edge: Backend, cloud: Backend, edge_sem: asyncio.Semaphore,
                       cloud_sem: asyncio.Semaphore, max_new_tokens: int, timeout_s: float,
                       image_tokens: int) -> tuple[dict[str, Any], tuple[float, float], MMRequest, Generation]:
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
    return rec, (se, sc), req, gc


async def _record_variants(item: DatasetItem, rec: dict[str, Any], req: MMRequest, gc: Generation, cloud: Backend, cloud_sem: asyncio.Semaphore,
                           timeout_s: float, variants: Sequence[str], cloud_image: CloudImageSpec | None,
                           say: Callable[[str], None]) -> dict[str, Any]:
    """The ``variants`` of one record: the cloud on each variant of ``req`` that applies to its
    modalities (see the module docstring); a variant that fails is reported and left out."""
    present = (bool(req.images), bool(req.video), req.audio is not None)
    todo = [v for v in variants if _variant_plan(v).effective(*present).variant() == v]

    async def one(name: str) -> tuple[str, dict[str, Any] | None]:
        try:
            planned = await asyncio.to_thread(apply_plan, req, _variant_plan(name), cloud_image, frame_novelty)
            if planned.changed:
                async with cloud_sem:
                    gv = await _timed(cloud, planned.request, timeout_s)
            else:
                gv = gc
            lat, ttft = gv.server_times()
            outcome = {"latency_s": lat, "ttft_s": ttft, "out_tokens": gv.out_tokens, "score": item.score(gv.text)}
            return name, {"payload_bytes": _variant_bytes(planned), "tokens": _variant_tokens(rec, req, planned, gc, gv, cloud_image),
                          "cloud": outcome}
        except Exception as e:
            say(f"item {item.id}: variant {name}: skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return name, None

    done = await asyncio.gather(*(one(v) for v in todo))
    return {name: v for name, v in done if v is not None}


def _variant_bytes(planned: PlannedRequest) -> dict[str, int]:
    """Payload bytes of the modalities a variant changes (base64 data URLs, as ``payload_bytes``)."""
    r, plan = planned.request, planned.plan
    out: dict[str, int] = {}
    if plan.image != "full":
        out["image"] = sum(_b64_len(len(b)) + 23 for b in r.images)  # encoded bytes: the dataset's or apply_plan's
    if plan.video != "all":
        out["video"] = sum(_b64_len(len(b)) + 23 for b in r.video or ())
    if plan.audio == "drop":
        out["audio"] = 0
    return out


def _variant_tokens(rec: dict[str, Any], req: MMRequest, planned: PlannedRequest, gc: Generation, gv: Generation,
                    cloud_image: CloudImageSpec | None) -> dict[str, int]:
    """Input tokens of the modalities a variant changes. Estimates first: an image's tokens scale
    with the pixels the model consumes of it (the same for a fixed input side), a video's with the
    frames kept, dropped audio has none; then, when the cloud counted the prompt tokens of both
    calls, the changed modalities together take the base's tokens plus the measured difference
    (shared in proportion to the estimates)."""
    mods = rec["modalities"]
    plan = planned.plan
    est: dict[str, float] = {}
    if plan.image != "full":
        base = float(mods["image"]["tokens"])
        if cloud_image is not None:
            old = sum(cloud_image.consumed_pixels(*image_size(b)) for b in req.images)
            new = sum(cloud_image.consumed_pixels(w, h) for w, h in planned.image_sizes)
            base = base * new / old if old else base
        est["image"] = base
    if plan.video != "all":
        total = len(req.video or ())
        est["video"] = float(mods["video"]["tokens"]) * len(planned.frames or ()) / total if total else 0.0
    if plan.audio == "drop":
        est["audio"] = 0.0
    if gc.in_tokens > 0 and gv.in_tokens > 0:
        measured = max(0.0, sum(float(mods[m]["tokens"]) for m in est) + (gv.in_tokens - gc.in_tokens))
        total_est = sum(est.values())
        if total_est > 0:
            est = {m: measured * v / total_est for m, v in est.items()}
        else:
            est = {m: (measured / max(1, len(est)) if m != "audio" else 0.0) for m in est}
    return {m: round(v) for m, v in est.items()}
