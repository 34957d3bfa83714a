"""Errors raised on bad user input.

A :class:`UserInputError` carries one line that names the offending file (and line) or field.
Command-line entry points catch it, print that line to stderr and exit with status 2, without a
traceback and without leaving a partial output file behind.
"""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """A user-supplied input (trace file, config, name, policy artifact) is invalid.

    ``str(error)`` is a single line such as ``trace.jsonl:12: edge.latency_s: must be >= 0``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
