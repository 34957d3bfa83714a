"""Atomic file output: write to a temporary file in the target folder, then rename.

A crash or a validation error never leaves a half-written output file behind. JSON goes through
:func:`json_text`, which never writes ``NaN`` or ``Infinity`` (not JSON): a non-finite number
becomes ``null``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["append_jsonl", "atomic_dir", "atomic_write", "atomic_write_json", "atomic_write_text", "json_safe", "json_text", "read_jsonl"]


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (``nan``, ``inf``) replaced by ``None`` and numpy scalars
    and arrays turned into Python numbers and lists (containers are copied, never modified)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return json_safe(tolist())
    return obj


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always gives valid JSON: non-finite numbers become ``null``
    (:func:`json_safe`) and ``allow_nan=False`` guards the rest."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as valid JSON (:func:`json_text`, a trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json_text(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; it replaces ``path`` only if the block succeeds.

    Files get the usual permissions (umask applied). An existing ``path`` is swapped out and
    removed after the new folder is in place; on any error the temporary folder is deleted and
    ``path`` is left as it was.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        mode = 0o777 & ~_umask()
        os.chmod(tmp, mode)
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), mode)
            for f in files:
                os.chmod(os.path.join(root, f), mode & 0o666)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_object(path: str | Path, what: str = "") -> dict[str, Any]:
    """A JSON object from ``path``; anything else (missing, not UTF-8, bad JSON, not an object) is
    one :class:`~mllm_offload.errors.UserInputError` line naming the file (and ``what`` it holds)."""
    from .errors import UserInputError

    p = Path(path)
    label = f"unreadable {what}" if what else "unreadable"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise UserInputError(f"{p}: {label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{p}: {label}: expected a JSON object, got {type(data).__name__}")
    return data


def append_jsonl(path: str | Path, obj: Any) -> None:
    """Append ``obj`` as one line of JSON (:func:`json_text`) to ``path``. A last line left without
    its newline by an interrupted write is closed first, so it cannot swallow this record."""
    p = Path(path)
    with open(p, "ab") as f:
        if f.tell() > 0:
            with open(p, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        f.write((json_text(obj) + "\n").encode("utf-8"))


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSON-lines file, and how many lines were skipped (not an object:
    a line cut short by an interrupted write, say)."""
    out: list[dict[str, Any]] = []
    bad = 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad += 1
    return out, bad
