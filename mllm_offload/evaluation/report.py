"""Tables and files of an evaluation: markdown, JSON and CSV (written atomically), and the
one-line verdict against MSAO and the oracle."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text

__all__ = ["comparison_text", "gap_summary", "markdown_table", "write_csv", "write_json"]


_TABLE_COLS = [
    ("reward_mean", "reward", "{:.4f}"),
    ("score_mean", "score", "{:.3f}"),
    ("latency_mean_s", "lat mean s", "{:.3f}"),
    ("latency_p50_s", "p50 s", "{:.3f}"),
    ("latency_p95_s", "p95 s", "{:.3f}"),
    ("latency_p99_s", "p99 s", "{:.3f}"),
    ("slo_attainment", "SLO att.", "{:.3f}"),
    ("cloud_share", "cloud share", "{:.3f}"),
    ("mb_uploaded_mean", "MB/req", "{:.3f}"),
    ("cloud_cost_usd_per_1k", "$/1k req", "{:.4f}"),
    ("energy_j_mean", "J/req", "{:.2f}"),
    ("throughput_rps", "thr. rps", "{:.2f}"),
]


def markdown_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table, one row per policy."""
    cols = [c for c in _TABLE_COLS if any(c[0] in m for m in results.values())]
    lines = ["| policy | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in results.items():
        cells = [fmt.format(m[k]) if k in m else "" for k, _, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, results: Mapping[str, Any], meta: Mapping[str, Any], verdict: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> None:
    """``{"meta": ..., "policies": {name: metrics}, "verdict": ...}`` and the keys of ``extra``
    (e.g. :meth:`Frontier.to_json <mllm_offload.evaluation.frontier.Frontier.to_json>`: ``frontier``,
    ``dominance``, ``frontier_meta``), written atomically; always valid JSON (a non-finite number,
    e.g. the reward under an infinite weight, is ``null``)."""
    doc: dict[str, Any] = {"meta": dict(meta), "policies": dict(results)}
    if verdict is not None:
        doc["verdict"] = dict(verdict)
    for k, v in (extra or {}).items():
        if k in doc:
            raise ValueError(f"write_json: extra key {k!r} is taken")
        doc[k] = v
    atomic_write_json(path, doc)


def write_csv(path: str | Path, results: Mapping[str, Mapping[str, float]]) -> None:
    """One row per policy, one column per metric, written atomically."""
    keys = sorted({k for m in results.values() for k in m})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["policy", *keys])
    for name, m in results.items():
        w.writerow([name, *(m.get(k, "") for k in keys)])
    atomic_write_text(path, buf.getvalue())


def gap_summary(results: Mapping[str, Mapping[str, float]]) -> str:
    """One line: share of the MSAO -> oracle reward gap that PPO recovers (against the hindsight
    oracle, and against the expected-outcome oracle when it was evaluated), and the side conditions."""
    if not {"ppo", "msao", "oracle"} <= results.keys():
        return ""
    r = {k: v["reward_mean"] for k, v in results.items()}
    gap = r["oracle"] - r["msao"]
    rec = (r["ppo"] - r["msao"]) / gap if gap > 0 else float("nan")
    p, m = results["ppo"], results["msao"]
    parts = [f"gap recovered (R_ppo - R_msao)/(R_oracle - R_msao) = {rec:.3f}"]
    if "oracle-expected" in r:
        gap_e = r["oracle-expected"] - r["msao"]
        parts[0] += f" (hindsight oracle), {(r['ppo'] - r['msao']) / gap_e if gap_e > 0 else float('nan'):.3f} (expected-outcome oracle)"
    parts += [f"p95 {p['latency_p95_s']:.2f} s vs MSAO {m['latency_p95_s']:.2f} s",
              f"score {p['score_mean']:.3f} vs MSAO {m['score_mean']:.3f} ({100 * (p['score_mean'] - m['score_mean']):+.1f} pts)"]
    if "tuned" in r:
        parts.append(f"reward {r['ppo']:.4f} vs tuned {r['tuned']:.4f}")
    return "; ".join(parts)


def comparison_text(results: Mapping[str, Mapping[str, float]], logs: Mapping[str, Any], episode_len: int) -> tuple[str, dict[str, Any]]:
    """What ``evaluate`` and ``train`` print after a comparison: the table, the MSAO -> oracle gap
    line (when PPO, MSAO and the oracle are there) and the verdict sentence; and the verdict (which
    never names a policy registered with ``needs="simulator"``, ``oracle`` or ``oracle-expected``)."""
    from ..policy import REGISTRY
    from .verdict import verdict

    hindsight = [n for n in results if (e := REGISTRY.get(n.partition(":")[0])) is not None and e.needs == "simulator"]
    v = verdict(results, logs, episode_len, hindsight=hindsight or ("oracle",))
    parts = [markdown_table(results), gap_summary(results), v["sentence"]]
    return "\n\n".join(p for p in parts if p), v
