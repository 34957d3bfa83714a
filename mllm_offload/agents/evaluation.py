"""Evaluate policies side by side on the same requests, bandwidth traces and seeds.

Every policy runs the same list of episodes (``env.reset(seed=s)`` for the same seeds, so the
same request windows, bandwidth traces, offsets and random draws). Metrics per policy:

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
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .._io import atomic_write, atomic_write_text
from ..decision import Mode
from .baselines import HindsightOracle, Policy

__all__ = ["EpisodeLog", "run_episodes", "summarize", "find_throughput", "evaluate", "markdown_table", "write_json", "write_csv", "write_plots"]


@dataclass
class EpisodeLog:
    """Per-request outcomes of one or more episodes (parallel lists)."""

    reward: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    cloud_called: list[bool] = field(default_factory=list)
    edge_answer: list[bool] = field(default_factory=list)
    cancelled: list[bool] = field(default_factory=list)
    bytes_sent: list[float] = field(default_factory=list)
    cost_usd: list[float] = field(default_factory=list)
    energy_j: list[float] = field(default_factory=list)
    mode: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.reward)


def _act(policy: Policy, env: Any, obs: np.ndarray):
    if isinstance(policy, HindsightOracle):
        return policy.choose(env.unwrapped)
    return policy.thresholds(obs)


def run_episodes(env: Any, policy: Policy, seeds: Sequence[int], options: Mapping[str, Any] | None = None) -> EpisodeLog:
    """Run ``policy`` for one episode per seed and log every request's outcome."""
    log = EpisodeLog()
    base = env.unwrapped
    for s in seeds:
        obs, _ = env.reset(seed=int(s), options=dict(options or {}))
        policy.reset(int(s))
        done = False
        while not done:
            th = _act(policy, env, obs)
            obs, r, done, trunc, info = base.step_thresholds(th)
            done = done or trunc
            o = info["outcome"]
            log.reward.append(r)
            log.latency_s.append(o.latency_s)
            log.score.append(o.score)
            log.cloud_called.append(o.cloud_called)
            log.edge_answer.append(o.answered_by == "edge")
            log.cancelled.append(o.cancelled)
            log.bytes_sent.append(o.bytes_sent)
            log.cost_usd.append(o.cloud_cost_usd)
            log.energy_j.append(o.energy_j)
            log.mode.append(int(o.mode))
    return log


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


def find_throughput(
    env: Any, policy: Policy, seeds: Sequence[int], base_rps: float, slo_s: float,
    target: float = 0.9, iters: int = 5, max_scale: float = 64.0,
) -> float:
    """Highest arrival rate (req/s) at which ``policy`` keeps SLO attainment >= ``target``.

    Arrival times are scaled by a factor searched by doubling/halving and then bisection in log
    space; 0.0 when even ``1/max_scale`` of the trace's rate misses the target.
    """

    def ok(scale: float) -> bool:
        log = run_episodes(env, policy, seeds, {"rate_scale": scale})
        return float(np.mean(np.asarray(log.latency_s) <= slo_s)) >= target

    x = 1.0
    if ok(x):
        lo = x
        while x < max_scale:
            x *= 2.0
            if not ok(x):
                break
            lo = x
        else:
            return lo * base_rps
        hi = x
    else:
        hi = x
        while x > 1.0 / max_scale:
            x /= 2.0
            if ok(x):
                break
            hi = x
        else:
            return 0.0
        lo = x
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo * base_rps


def episode_seeds(requests: int, episode_len: int, seed: int = 0) -> list[int]:
    """Seeds of the ``ceil(requests / episode_len)`` episodes that :func:`evaluate` runs."""
    return [seed * 100_003 + k for k in range(max(1, math.ceil(requests / episode_len)))]


def evaluate(
    env: Any,
    policies: Sequence[Policy],
    requests: int,
    seed: int = 0,
    throughput: bool = True,
    throughput_episodes: int = 6,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, EpisodeLog]]:
    """Evaluate ``policies`` on the same ``ceil(requests / episode length)`` episodes.

    Returns (metrics per policy name, logs per policy name).
    """
    base = env.unwrapped
    seeds = episode_seeds(requests, base.n_requests, seed)
    trace = base.trace
    span = float(trace.arrival_s[-1] - trace.arrival_s[0])
    base_rps = (len(trace) - 1) / span if span > 0 else float("nan")
    results: dict[str, dict[str, float]] = {}
    logs: dict[str, EpisodeLog] = {}
    it = progress(policies) if progress else policies
    for pol in it:
        log = run_episodes(env, pol, seeds)
        m = summarize(log, base.slo_s)
        if throughput:
            m["throughput_rps"] = find_throughput(env, pol, seeds[:throughput_episodes], base_rps, base.slo_s)
        results[pol.name] = m
        logs[pol.name] = log
    return results, logs


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


def write_json(path: str | Path, results: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """``{"meta": ..., "policies": {name: metrics}}``, written atomically."""
    atomic_write_text(path, json.dumps({"meta": dict(meta), "policies": dict(results)}, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, results: Mapping[str, Mapping[str, float]]) -> None:
    """One row per policy, one column per metric, written atomically."""
    keys = sorted({k for m in results.values() for k in m})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["policy", *keys])
    for name, m in results.items():
        w.writerow([name, *(m.get(k, "") for k in keys)])
    atomic_write_text(path, buf.getvalue())


def write_plots(out_dir: str | Path, results: Mapping[str, Mapping[str, float]], logs: Mapping[str, EpisodeLog], slo_s: float) -> list[Path]:
    """PNG plots: latency CDF per policy, and mean score against cloud-call share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, log in logs.items():
        lat = np.sort(np.asarray(log.latency_s))
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=name)
    ax.axvline(slo_s, color="grey", ls="--", lw=1, label=f"SLO {slo_s:g} s")
    ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_title("Latency CDF")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "latency_cdf.png"))
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for name, m in results.items():
        ax.scatter(m["cloud_share"], m["score_mean"])
        ax.annotate(name, (m["cloud_share"], m["score_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("cloud-call share")
    ax.set_ylabel("mean score")
    ax.set_title("Quality against cloud use")
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "score_vs_cloud_share.png"))
    plt.close("all")
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return path
