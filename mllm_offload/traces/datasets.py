"""Evaluation datasets the recorder runs: VQAv2, MMBench and a generic JSON Lines format.

=================  ====================================================  ========================
spec               files                                                 score of an answer
=================  ====================================================  ========================
``vqav2:Q,A,DIR``  questions JSON (``{"questions": [{question_id,        ``min(#human answers
                   image_id, question}]}``), annotations JSON            equal to it / 3, 1)``
                   (``{"annotations": [{question_id, answers:            after the official
                   [{answer}]}]}``), image folder (COCO names            answer normalisation
                   ``..._000000123456.jpg`` or ``123456.jpg``)
``mmbench:F.tsv``  TSV with ``index, question, hint, A..E, answer,       1 if the option letter
                   image`` (base64), as distributed by OpenCompass       extracted from the
                                                                         answer is right, else 0
``jsonl:F``        one item per line: ``question``, ``image`` or         ``metric``: ``vqa`` (as
                   ``images`` (paths relative to the file), optional     VQAv2), ``exact`` (the
                   ``video`` (frame paths), ``audio`` (WAV path),        normalised answer equals
                   ``answers`` (list) or ``answer``, ``options``         one of ``answers``) or
                   (letter -> text), ``metric``, ``id``, ``meta``        ``option``; default
                                                                         ``vqa`` with 3+ answers,
                                                                         else ``exact``
=================  ====================================================  ========================

Loading checks the files and fields and fails with one line (``file:line: field: problem``);
media are read only when an item is used (:meth:`DatasetItem.load_media`), so one bad image
costs one item, not the run.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import sys
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserInputError
from ..scoring import Metric, extract_option, normalize_answer, score_answer, vqa_accuracy

__all__ = [
    "DATASET_KINDS",
    "DatasetItem",
    "extract_option",
    "load_dataset",
    "load_jsonl_dataset",
    "load_mmbench",
    "load_vqav2",
    "normalize_answer",
    "score_answer",
    "vqa_accuracy",
]

DATASET_KINDS = ("vqav2", "mmbench", "jsonl")

@dataclass
class DatasetItem:
    """One question of a dataset.

    Attributes:
        id: unique id within the dataset (string).
        question: the prompt sent to the models (options included for multiple choice).
        images: image sources (paths or encoded bytes).
        answers: reference answers (VQA: the 10 human answers; option: the right letter).
        metric: how an answer is scored (``vqa``, ``exact`` or ``option``).
        options: option letter -> text (multiple choice).
        video: frame paths of one clip, if any.
        audio: path of a WAV file, if any.
        meta: anything else the dataset carries (category, difficulty ...).
    """

    id: str
    question: str
    images: list[Path | bytes] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    metric: Metric = "exact"
    options: dict[str, str] = field(default_factory=dict)
    video: list[Path] | None = None
    audio: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, prediction: str) -> float:
        """The task score in [0, 1] of ``prediction`` (see the module table)."""
        return score_answer(prediction, self.answers, self.metric, self.options)

    def load_media(self) -> tuple[list[bytes], list[bytes] | None, tuple[np.ndarray, int] | None]:
        """Encoded image bytes, video frame bytes and ``(samples in [-1, 1], sample_rate)``; raises
        ``UserInputError`` naming the item and file when one is missing or unreadable."""
        def read(p: Path | bytes, what: str) -> bytes:
            if isinstance(p, bytes):
                return p
            try:
                return Path(p).read_bytes()
            except OSError as e:
                raise UserInputError(f"item {self.id}: {what} {p}: {e.strerror or e}") from None

        images = [read(p, "image") for p in self.images]
        video = [read(p, "video frame") for p in self.video] if self.video else None
        audio = _read_wav(self.audio, self.id) if self.audio is not None else None
        return images, video, audio


def _read_wav(path: Path, item: str) -> tuple[np.ndarray, int]:
    try:
        with wave.open(str(path), "rb") as w:
            width, rate, ch = w.getsampwidth(), w.getframerate(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as e:
        raise UserInputError(f"item {item}: audio {path}: {getattr(e, 'strerror', None) or e}") from None
    if width != 2:
        raise UserInputError(f"item {item}: audio {path}: only 16-bit PCM WAV is read (got {8 * width}-bit)")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    return x, rate


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserInputError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: the {what} is not valid JSON ({e})") from None


def load_vqav2(questions: str | Path, annotations: str | Path, image_dir: str | Path, limit: int | None = None) -> list[DatasetItem]:
    """VQAv2 questions + annotations + image folder (see the module table)."""
    qp, ap, idir = Path(questions), Path(annotations), Path(image_dir)
    if not idir.is_dir():
        raise UserInputError(f"{idir}: image folder not found")
    qdoc, adoc = _read_json(qp, "questions file"), _read_json(ap, "annotations file")
    if not isinstance(qdoc, dict) or not isinstance(qdoc.get("questions"), list):
        raise UserInputError(f"{qp}: questions: expected {{\"questions\": [...]}}")
    if not isinstance(adoc, dict) or not isinstance(adoc.get("annotations"), list):
        raise UserInputError(f"{ap}: annotations: expected {{\"annotations\": [...]}}")
    answers: dict[int, list[str]] = {}
    for n, a in enumerate(adoc["annotations"]):
        try:
            answers[int(a["question_id"])] = [str(x["answer"]) for x in a["answers"]]
        except (KeyError, TypeError, ValueError):
            raise UserInputError(f"{ap}: annotations[{n}]: needs question_id and answers[].answer") from None
    images: dict[int, Path] = {}
    for f in idir.iterdir():
        m = re.search(r"(\d+)$", f.stem)
        if m and f.suffix.lower() in (".jpg", ".jpeg", ".png"):
            images[int(m.group(1))] = f
    items = []
    for n, q in enumerate(qdoc["questions"]):
        try:
            qid, iid, text = int(q["question_id"]), int(q["image_id"]), str(q["question"])
        except (KeyError, TypeError, ValueError):
            raise UserInputError(f"{qp}: questions[{n}]: needs question_id, image_id and question") from None
        if qid not in answers:
            raise UserInputError(f"{ap}: no annotation for question_id {qid}")
        img = images.get(iid, idir / f"{iid:012d}.jpg")  # a missing image costs that item only
        items.append(DatasetItem(id=str(qid), question=text, images=[img], answers=answers[qid], metric="vqa",
                                 meta={"image_id": iid}))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise UserInputError(f"{qp}: holds no questions")
    return items


_MMBENCH_PROMPT = "Answer with the option's letter from the given choices directly."


def load_mmbench(path: str | Path, limit: int | None = None) -> list[DatasetItem]:
    """MMBench TSV (OpenCompass layout: ``index, question, hint, A..E, answer, image``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{p}: not UTF-8 text") from None
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are long fields
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    if not rows:
        raise UserInputError(f"{p}: holds no rows")
    need = {"index", "question", "A", "B", "image"}
    missing = need - set(rows[0])
    if missing:
        raise UserInputError(f"{p}:1: header: missing column(s) {', '.join(sorted(missing))}")
    items = []
    for n, row in enumerate(rows, start=2):
        options = {k: row[k].strip() for k in "ABCDEFGHIJ" if (row.get(k) or "").strip() and row[k].strip().lower() != "nan"}
        hint = (row.get("hint") or "").strip()
        lines = ([f"Hint: {hint}"] if hint and hint.lower() != "nan" else []) + [row["question"].strip()]
        lines += [f"{k}. {v}" for k, v in options.items()] + [_MMBENCH_PROMPT]
        answer = (row.get("answer") or "").strip()
        if answer and answer not in options:
            raise UserInputError(f"{p}:{n}: answer: {answer!r} is not one of the options {', '.join(options)}")
        try:
            image = base64.b64decode(row["image"], validate=True)
        except (binascii.Error, ValueError):
            image = b""  # the item fails when used (bad base64), not the load
        items.append(DatasetItem(id=str(row["index"]), question="\n".join(lines), images=[image] if row["image"] else [],
                                 answers=[answer] if answer else [], metric="option", options=options,
                                 meta={k: row[k] for k in ("category", "l2-category", "split") if row.get(k)}))
        if limit is not None and len(items) >= limit:
            break
    return items


def load_jsonl_dataset(path: str | Path, limit: int | None = None) -> list[DatasetItem]:
    """The generic JSON Lines format (see the module table); paths are relative to the file."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserInputError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{p}: not UTF-8 text") from None
    base = p.parent
    items: list[DatasetItem] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{p}:{n}: invalid JSON: {e.msg}") from None
        if not isinstance(d, dict):
            raise UserInputError(f"{p}:{n}: expected a JSON object")
        q = d.get("question")
        if not isinstance(q, str) or not q:
            raise UserInputError(f"{p}:{n}: question: required, a non-empty string")
        imgs = d.get("images", [d["image"]] if "image" in d else [])
        if not isinstance(imgs, list) or not all(isinstance(x, str) for x in imgs):
            raise UserInputError(f"{p}:{n}: images: expected a list of paths")
        answers = d.get("answers", [d["answer"]] if "answer" in d else [])
        if not isinstance(answers, list) or not answers or not all(isinstance(x, str) for x in answers):
            raise UserInputError(f"{p}:{n}: answers: required, a non-empty list of strings (or answer: string)")
        options = d.get("options") or {}
        if not isinstance(options, dict):
            raise UserInputError(f"{p}:{n}: options: expected an object letter -> text")
        metric = d.get("metric") or ("option" if options else "vqa" if len(answers) >= 3 else "exact")
        if metric not in ("vqa", "exact", "option"):
            raise UserInputError(f"{p}:{n}: metric: must be vqa, exact or option, got {metric!r}")
        video = d.get("video")
        if video is not None and (not isinstance(video, list) or not all(isinstance(x, str) for x in video)):
            raise UserInputError(f"{p}:{n}: video: expected a list of frame paths")
        audio = d.get("audio")
        if audio is not None and not isinstance(audio, str):
            raise UserInputError(f"{p}:{n}: audio: expected a WAV path")
        iid = str(d.get("id", n))
        if iid in seen:
            raise UserInputError(f"{p}:{n}: id: duplicate id {iid!r}")
        seen.add(iid)
        items.append(DatasetItem(
            id=iid, question=q, images=[base / x for x in imgs], answers=[str(a) for a in answers], metric=metric,
            options={str(k): str(v) for k, v in options.items()}, video=[base / x for x in video] if video else None,
            audio=base / audio if audio else None, meta=d.get("meta") if isinstance(d.get("meta"), dict) else {},
        ))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise UserInputError(f"{p}: holds no items")
    return items


def load_dataset(spec: str, limit: int | None = None) -> list[DatasetItem]:
    """Load ``vqav2:QUESTIONS.json,ANNOTATIONS.json,IMAGE_DIR``, ``mmbench:FILE.tsv`` or ``jsonl:FILE``."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in DATASET_KINDS or not rest:
        raise UserInputError(f"--dataset {spec!r}: expected vqav2:Q.json,A.json,IMAGE_DIR | mmbench:FILE.tsv | jsonl:FILE")
    if kind == "vqav2":
        parts = rest.split(",")
        if len(parts) != 3:
            raise UserInputError(f"--dataset {spec!r}: vqav2 takes QUESTIONS.json,ANNOTATIONS.json,IMAGE_DIR")
        return load_vqav2(*parts, limit=limit)
    if kind == "mmbench":
        return load_mmbench(rest, limit=limit)
    return load_jsonl_dataset(rest, limit=limit)
