"""Answer normalisation and task metrics (a contract: imports nothing from the package).

==========  ==========================================================================
metric      score of a prediction in [0, 1]
==========  ==========================================================================
``vqa``     VQA accuracy ``min(#human answers equal to it / 3, 1)`` after the official
            VQA answer normalisation (:func:`normalize_answer`)
``exact``   1 if the normalised prediction equals one normalised reference answer
``option``  1 if the option letter extracted from it (:func:`extract_option`) is right
==========  ==========================================================================

The recorder (offline) and the deployed router (shadow scoring) use these same functions.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Metric", "extract_option", "normalize_answer", "score_answer", "vqa_accuracy"]

Metric = Literal["vqa", "exact", "option"]

# -- the official VQA answer normalisation (VQA evaluation code, vqaEval.py) ---------------------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(text: str) -> str:
    """The official VQA normalisation: punctuation, periods, lower case, number words -> digits,
    articles dropped, contractions restored (``"Two dogs."`` -> ``"2 dogs"``)."""
    t = text.replace("\n", " ").replace("\t", " ").strip()
    out = t
    for p in _PUNCT:
        if (p + " " in t or " " + p in t) or _COMMA_STRIP.search(t) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out)
    words = []
    for w in out.lower().split():
        w = _NUMBERS.get(w, w)
        if w not in _ARTICLES:
            words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy ``min(#human answers equal to the prediction / 3, 1)`` after normalisation."""
    p = normalize_answer(prediction)
    return min(sum(1 for a in answers if normalize_answer(a) == p) / 3.0, 1.0)


_LETTER_PATTERNS = [
    re.compile(r"^\s*\(?([A-J])\)?(?:[.:)\s]|$)"),  # "B", "B.", "(B) ...", "B: ..."
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\)?\b", re.IGNORECASE),
    re.compile(r"\(([A-J])\)"),
]


def extract_option(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter an answer picks: a leading letter (``B``, ``(B)``, ``B. text``), "the answer
    is B", or else the one option whose text the answer contains; ``None`` if none or ambiguous."""
    for pat in _LETTER_PATTERNS:
        m = pat.search(prediction)
        if m and m.group(1) in options:
            return m.group(1)
    norm = normalize_answer(prediction)
    hits = [k for k, v in options.items() if normalize_answer(v) and normalize_answer(v) in norm]
    return hits[0] if len(hits) == 1 else None



def score_answer(prediction: str, answers: list[str], metric: Metric, options: dict[str, str] | None = None) -> float:
    """Score ``prediction`` against ``answers`` with ``metric`` (``vqa``, ``exact``, ``option``)."""
    if metric == "vqa":
        return vqa_accuracy(prediction, answers)
    if metric == "option":
        return 1.0 if answers and extract_option(prediction, options or {}) == answers[0] else 0.0
    p = normalize_answer(prediction)
    return 1.0 if any(normalize_answer(a) == p for a in answers) else 0.0
