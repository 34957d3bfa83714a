"""Trace figures: AUROC and Spearman against hand-computed cases, and a report on a recorded-style trace."""

import math

import numpy as np

from mllm_offload.trace_format import RequestTrace, TraceRecord
from mllm_offload.traces.analysis import auroc, format_report, spearman, trace_report


def test_auroc_known_cases():
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5  # a tie counts one half
    # 1 of the 4 (pos, neg) pairs is inverted
    assert auroc(np.array([0.1, 0.6, 0.5, 0.9]), np.array([0, 0, 1, 1])) == 0.75
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_spearman_is_rank_based():
    x = np.arange(20.0)
    assert spearman(x, x ** 3) == 1.0
    assert abs(spearman(x, -np.exp(x)) + 1.0) < 1e-12
    assert math.isnan(spearman(x, np.ones(20)))


def _rec(i, level, conf, es, cs, mas):
    return TraceRecord.model_validate({
        "id": str(i), "arrival_s": float(i), "modalities": {"text": {"tokens": 5}}, "payload_bytes": {"text": 20},
        "mas": {"score": mas}, "edge": {"latency_s": 0.01, "ttft_s": 0.005, "out_tokens": 2, "confidence": conf, "score": es},
        "cloud": {"latency_s": 0.05, "ttft_s": 0.02, "out_tokens": 2, "score": cs}, "item": {"difficulty": level, "objects": 1 + 3 * ["easy", "medium", "hard"].index(level)},
    })


def test_report_by_difficulty():
    recs = [_rec(0, "easy", 0.9, 1.0, 1.0, 0.1), _rec(1, "easy", 0.8, 1.0, 1.0, 0.2), _rec(2, "medium", 0.6, 0.0, 1.0, 0.5),
            _rec(3, "hard", 0.3, 0.0, 1.0, 0.8), _rec(4, "hard", 0.7, 1.0, 0.0, 0.9)]
    rep = trace_report(RequestTrace.from_records(recs, meta={}))
    assert rep["records"] == 5
    assert rep["accuracy"]["easy"] == {"edge": 1.0, "cloud": 1.0, "n": 2}
    assert rep["accuracy"]["hard"]["edge"] == 0.5
    # correct edge answers have confidences 0.9, 0.8, 0.7; wrong ones 0.6, 0.3: perfectly separated
    assert rep["confidence_auroc"] == 1.0
    assert rep["mas_difficulty_rho"] > 0.9 and rep["mas_objects_rho"] > 0.9
    assert "AUROC" in format_report(rep)
