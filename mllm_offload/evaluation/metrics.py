"""Metrics of a rollout log, per policy:

==========================  =======================================================
key                         meaning
==========================  =======================================================
``reward_mean``             mean per-request reward
``score_mean``              mean task score in [0, 1]
``latency_mean_s`` ...      mean, p50, p95, p99 latency, seconds
``slo_attainment``          share of requests with latency <= SLO
``cloud_share``             share of requests that made a cloud call
``edge_answer_share``       share answered by the edge
``cancelled_share``         share whose speculative cloud call was cancelled
``mb_uploaded_mean``        MB uploaded per request (cancelled uploads count what was sent)
``cloud_cost_usd_per_1k``   cloud cost per 1000 requests, USD
``energy_j_mean``           edge compute + radio energy per request, joules
``throughput_rps``          highest arrival rate whose SLO attainment stays >= 90 %
                            (search over arrival-rate scales), requests per second
==========================  =======================================================

:func:`plan_shares` adds, per modality, how the offloads that carried it sent it.
"""


from __future__ import annotations

import numpy as np

from ..decision import Mode
from .rollout import EpisodeLog

__all__ = ["plan_shares", "summarize"]


def summarize(log: EpisodeLog, slo_s: float) -> dict[str, float]:
    """Metrics of the module table (all but ``throughput_rps``)."""
    lat = np.asarray(log.latency_s)
    modes = np.asarray(log.mode)
    out = {
        "requests": float(len(log)),
        "reward_mean": float(np.mean(log.reward)),
        "score_mean": float(np.mean(log.score)),
        "latency_mean_s": float(lat.mean()),
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "latency_p99_s": float(np.percentile(lat, 99)),
        "slo_attainment": float(np.mean(lat <= slo_s)),
        "cloud_share": float(np.mean(log.cloud_called)),
        "edge_answer_share": float(np.mean(log.edge_answer)),
        "cancelled_share": float(np.mean(log.cancelled)),
        "mb_uploaded_mean": float(np.mean(log.bytes_sent) / 1e6),
        "cloud_cost_usd_per_1k": float(np.mean(log.cost_usd) * 1000.0),
        "energy_j_mean": float(np.mean(log.energy_j)),
    }
    for m in Mode:
        out[f"share_{m.label}"] = float(np.mean(modes == int(m)))
    return out


def plan_shares(log: EpisodeLog) -> dict[str, object]:
    """How the offloads sent each modality: ``{"offloads": n, "image": {"full": share, ...}, ...}``
    over the offloads whose request had that modality (``"whole": 1.0`` when plans were off)."""
    labels = [p for p in log.upload_plan if p]
    out: dict[str, object] = {"offloads": len(labels)}
    if labels and all(p == "all" for p in labels):
        out["whole"] = 1.0
        return out
    counts: dict[str, dict[str, int]] = {}
    for lab in labels:
        for part in lab.split(","):
            mod, _, choice = part.partition("=")
            if choice:
                counts.setdefault(mod, {}).setdefault(choice, 0)
                counts[mod][choice] += 1
    for mod in ("image", "video", "audio"):
        if mod in counts:
            n = sum(counts[mod].values())
            out[mod] = {k: v / n for k, v in sorted(counts[mod].items())}
    return out
