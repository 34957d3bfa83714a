"""What a request trace says about its models: accuracy by difficulty, confidence AUROC, MAS.

=======================  =====================================================================
figure                   definition
=======================  =====================================================================
``accuracy``             mean task score of the edge and the cloud, overall and per
                         ``item.difficulty`` bucket (when the records carry item metadata)
``confidence_auroc``     AUROC of the edge confidence for edge correctness (score >= 0.5): the
                         probability that a correct answer has a higher confidence than a
                         wrong one (ties count one half); 0.5 is chance
``mas_difficulty_rho``   Spearman rank correlation of the MAS score with the difficulty level
                         (easy 0, medium 1, hard 2), and with ``item.objects``
``mas_edge_error_rho``   Spearman correlation of the MAS score with edge error (1 - score)
``variants``             per upload-plan variant the trace holds (``record --variants``), over
                         the records that have it: the cloud's mean score sent that way and sent
                         whole, mean bytes uploaded both ways (the whole request, bytes) and
                         the score by ``item.qtype``
=======================  =====================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..trace_format import RequestTrace

__all__ = ["auroc", "format_report", "spearman", "trace_report"]

_LEVEL = {"easy": 0, "medium": 1, "hard": 2}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return r


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (NaN if one class is absent)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def trace_report(trace: RequestTrace) -> dict[str, Any]:
    """The figures of the module table for a trace whose records have both outcomes."""
    recs = [r for r in trace.records or [] if r.edge is not None and r.cloud is not None
            and r.edge.score is not None and r.cloud.score is not None]
    if not recs:
        return {"records": 0}
    es = np.array([r.edge.score for r in recs])
    cs = np.array([r.cloud.score for r in recs])
    conf = np.array([r.edge.confidence for r in recs])
    mas = np.array([r.mas["score"] for r in recs])
    out: dict[str, Any] = {"records": len(recs), "accuracy": {"all": {"edge": float(es.mean()), "cloud": float(cs.mean()), "n": len(recs)}}}
    levels = [(r.item or {}).get("difficulty") for r in recs]
    for name in _LEVEL:
        m = np.array([lv == name for lv in levels])
        if m.any():
            out["accuracy"][name] = {"edge": float(es[m].mean()), "cloud": float(cs[m].mean()), "n": int(m.sum())}
    out["confidence_auroc"] = auroc(conf, es >= 0.5)
    out["mas_edge_error_rho"] = spearman(mas, 1.0 - es)
    known = np.array([lv in _LEVEL for lv in levels])
    if known.sum() > 2:
        out["mas_difficulty_rho"] = spearman(mas[known], np.array([_LEVEL[lv] for lv in levels if lv in _LEVEL]))
    objs = [(r.item or {}).get("objects") for r in recs]
    has = np.array([isinstance(o, (int, float)) for o in objs])
    if has.sum() > 2:
        out["mas_objects_rho"] = spearman(mas[has], np.array([o for o in objs if isinstance(o, (int, float))], float))
    qtypes = [(r.item or {}).get("qtype") for r in recs]
    by_q: dict[str, dict[str, float]] = {}
    for q in sorted({q for q in qtypes if q}):
        m = np.array([x == q for x in qtypes])
        by_q[q] = {"edge": float(es[m].mean()), "cloud": float(cs[m].mean()), "n": int(m.sum())}
    if by_q:
        out["accuracy_by_qtype"] = by_q
    variants = _variant_figures(recs, qtypes)
    if variants:
        out["variants"] = variants
    return out


def _variant_figures(recs: list[Any], qtypes: list[Any]) -> dict[str, Any]:
    """Per variant name: n, cloud score sent that way and whole, bytes both ways, score by question type."""
    names = sorted({k for r in recs for k in (r.variants or {})})
    out: dict[str, Any] = {}
    for name in names:
        rows = [(r, q) for r, q in zip(recs, qtypes) if name in (r.variants or {}) and r.variants[name].cloud.score is not None]
        if not rows:
            continue
        whole = np.array([r.cloud.score for r, _ in rows])
        sent = np.array([r.variants[name].cloud.score for r, _ in rows])
        b_whole = np.array([sum(r.payload_bytes.values()) for r, _ in rows], float)
        b_sent = np.array([sum(r.payload_bytes.values()) - sum(r.payload_bytes.get(m, 0) for m in r.variants[name].payload_bytes)
                           + sum(r.variants[name].payload_bytes.values()) for r, _ in rows], float)
        fig: dict[str, Any] = {"n": len(rows), "cloud_score": float(sent.mean()), "cloud_score_whole": float(whole.mean()),
                               "bytes_mean": float(b_sent.mean()), "bytes_whole_mean": float(b_whole.mean())}
        by_q = {}
        for q in sorted({q for _, q in rows if q}):
            m = np.array([x == q for _, x in rows])
            by_q[q] = {"cloud_score": float(sent[m].mean()), "cloud_score_whole": float(whole[m].mean()), "n": int(m.sum())}
        if by_q:
            fig["by_qtype"] = by_q
        out[name] = fig
    return out


def format_report(rep: dict[str, Any]) -> str:
    """A few aligned lines for the terminal."""
    if not rep.get("records"):
        return "no record has both an edge and a cloud outcome with a score"
    lines = [f"{'bucket':<10} {'n':>6} {'edge':>7} {'cloud':>7}"]
    for k, v in {**rep["accuracy"], **rep.get("accuracy_by_qtype", {})}.items():
        lines.append(f"{k:<10} {v['n']:>6} {v['edge']:>7.3f} {v['cloud']:>7.3f}")
    lines.append(f"edge confidence AUROC for edge correctness: {rep['confidence_auroc']:.3f}")
    for k, label in (("mas_difficulty_rho", "MAS score vs difficulty level"), ("mas_objects_rho", "MAS score vs object count"),
                     ("mas_edge_error_rho", "MAS score vs edge error")):
        if k in rep:
            lines.append(f"Spearman rho, {label}: {rep[k]:.3f}")
    for name, v in rep.get("variants", {}).items():
        q = ", ".join(f"{k} {x['cloud_score']:.3f} ({x['cloud_score_whole']:.3f})" for k, x in v.get("by_qtype", {}).items())
        lines.append(f"variant {name} ({v['n']} records): cloud score {v['cloud_score']:.3f} (whole {v['cloud_score_whole']:.3f}), "
                     f"{v['bytes_mean'] / 1e3:.1f} KB (whole {v['bytes_whole_mean'] / 1e3:.1f} KB)" + (f"; by question type: {q}" if q else ""))
    return "\n".join(lines)
