"""Text MAS: a cue of how demanding the prompt is.

=================  ======  =========================================================================
feature            range   definition
=================  ======  =========================================================================
``text_tokens``    >= 0    word-piece count (words, numbers and punctuation marks)
``question_cue``   [0, 1]  difficulty of the question type, the highest matching cue below
``text``           [0, 1]  density = 0.6 question_cue + 0.4 min(1, text_tokens / 64)
=================  ======  =========================================================================

Question cues (lower-cased, word boundaries): explanation/reasoning (``why``, ``explain``,
``describe``, ``compare``, ``reason``) 0.9; reading text (``read``, ``text``, ``written``,
``says``) 0.8; counting (``how many``, ``count``, ``number of``) 0.8; spatial relations (``left``,
``right``, ``above``, ``below``, ``behind``, ``between``, ``next to``, ``largest``, ``smallest``)
0.7; attribute (``what colo(u)r``, ``what shape``, ``what is``) 0.5; yes/no (prompt starts with
``is``, ``are``, ``does``, ``do``, ``can``, ``was``, ``is there``) 0.3; anything else 0.5.
"""

from __future__ import annotations

import re

__all__ = ["CUES", "text_features"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
CUES: tuple[tuple[float, re.Pattern[str]], ...] = (
    (0.9, re.compile(r"\b(why|explain|describe|compare|reason)\b")),
    (0.8, re.compile(r"\b(read|text|written|says?)\b")),
    (0.8, re.compile(r"\b(how many|count|number of)\b")),
    (0.7, re.compile(r"\b(left|right|above|below|behind|between|next to|largest|smallest|biggest)\b")),
    (0.5, re.compile(r"\b(what colou?r|what shape|what is)\b")),
    (0.3, re.compile(r"^\s*(is|are|does|do|can|was|were|has|have)\b")),
)


def text_features(prompt: str) -> dict[str, float]:
    """Text MAS features of a prompt (see the module table)."""
    p = prompt.lower()
    n = len(_TOKEN.findall(p))
    matched = [w for w, rx in CUES if rx.search(p)]
    cue = max(matched) if matched else 0.5
    return {"text_tokens": float(n), "question_cue": cue, "text": float(min(1.0, 0.6 * cue + 0.4 * min(1.0, n / 64.0)))}
