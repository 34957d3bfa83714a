"""Rotating JSON Lines deployment log in the trace format (deployment logs become training traces).

Each file starts with the trace header, so any single file, or the whole folder, is a trace that
``evaluate.py --trace`` and ``train.py --trace`` read. The header sets ``"ordered": false``:
records are written as requests finish, and the loader sorts them by arrival. ``arrival_s`` is
counted from the router's start (``meta.started_unix``), the same origin in every file.

Each record is one ``write`` of a whole line on a file opened for appending, so a reader never
sees half a record while the router runs. Requests that got no answer at all (both backends
down) are not trace records; they go to ``errors.jsonl`` in the same folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._io import json_text
from ..config import format_validation_error
from ..errors import UserInputError
from ..trace_format import TRACE_FORMAT, TRACE_VERSION, TraceRecord

__all__ = ["TraceLog"]


class TraceLog:
    """Appends trace records to ``directory/route-<UTC time>-<n>.jsonl``, rotating by size.

    Args:
        directory: the log folder (created if missing).
        meta: header ``meta`` (models, policy, hardware ...); ``source``, ``ordered`` and
            ``started_unix`` are set here.
        max_bytes: start a new file when the current one would exceed this size, bytes.
        keep: keep at most this many trace files (oldest deleted first); 0 keeps all.
    """

    def __init__(self, directory: str | Path, meta: Mapping[str, Any] | None = None, *, max_bytes: int = 64 * 1024 * 1024, keep: int = 0) -> None:
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"--log-dir {self.dir}: cannot create it: {e.strerror or e}") from None
        if max_bytes < 4096 or keep < 0:
            raise UserInputError("trace log: max_bytes must be >= 4096 and keep >= 0")
        self.started_unix = time.time()
        self.meta = {**dict(meta or {}), "source": "router", "ordered": False, "started_unix": self.started_unix}
        self.max_bytes, self.keep = int(max_bytes), int(keep)
        self._fd: int | None = None
        self._size = 0
        self._seq = 0
        self.files: list[Path] = []
        self.records = 0
        self.errors = 0

    def arrival_s(self, unix_time: float) -> float:
        """``unix_time`` in the log's clock (seconds since the router started, >= 0)."""
        return max(unix_time - self.started_unix, 0.0)

    def _open(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        header = json_text({"format": TRACE_FORMAT, "version": TRACE_VERSION, "meta": self.meta}) + "\n"
        while True:  # never append to another log's file (two routers, or a restart within a second)
            self._seq += 1
            path = self.dir / f"route-{stamp}-{self._seq:03d}.jsonl"
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        os.write(self._fd, header.encode())
        self._size = len(header)
        self.files.append(path)
        while self.keep and len(self.files) > self.keep:
            old = self.files.pop(0)
            try:
                old.unlink()
            except OSError:
                pass

    def write(self, record: Mapping[str, Any]) -> None:
        """Validate ``record`` against the trace schema and append it (rotating first if needed)."""
        try:
            TraceRecord.model_validate(record)
        except ValidationError as e:  # a bug, not user input: say which field
            raise ValueError(format_validation_error(f"trace record {record.get('id')}", e)) from None
        line = (json_text(record, separators=(",", ":")) + "\n").encode()
        if self._fd is None or (self._size + len(line) > self.max_bytes and self.records):
            self.close_file()
            self._open()
        assert self._fd is not None
        os.write(self._fd, line)
        self._size += len(line)
        self.records += 1

    def write_error(self, entry: Mapping[str, Any]) -> None:
        """Append a request that got no answer to ``errors.jsonl``."""
        with open(self.dir / "errors.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json_text(dict(entry), default=str) + "\n")
        self.errors += 1

    def close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Close the current file (the log stays a valid trace)."""
        self.close_file()
