"""PNG plots of an evaluation (matplotlib, Agg backend, written atomically): the latency CDF, score
against cloud share, PPO's validation curve, and the frontiers of :mod:`.frontier`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_write
from .rollout import EpisodeLog

if TYPE_CHECKING:
    from .frontier import Frontier

__all__ = ["write_frontier_plot", "write_plots", "write_validation_curve"]


def write_plots(out_dir: str | Path, results: Mapping[str, Mapping[str, float]], logs: Mapping[str, EpisodeLog], slo_s: float,
                scenario: str = "") -> list[Path]:
    """PNG plots: latency CDF per policy, and mean score against cloud-call share; ``scenario``
    (profile, bandwidth, split) goes into every title."""
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
    ax.set_title(_title("Latency CDF", scenario), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "latency_cdf.png"))
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    for name, m in results.items():
        ax.scatter(m["cloud_share"], m["score_mean"])
        ax.annotate(name, (m["cloud_share"], m["score_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("cloud-call share")
    ax.set_ylabel("mean score")
    ax.set_title(_title("Quality against cloud use", scenario), fontsize=9)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out / "score_vs_cloud_share.png"))
    plt.close("all")
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    return path


def _title(what: str, scenario: str) -> str:
    return f"{what}\n{scenario}" if scenario else what


def write_validation_curve(path: str | Path, history: Sequence[Mapping[str, float]], msao: Mapping[str, float], scenario: str = "") -> Path:
    """PNG of PPO's validation reward and score against environment steps, next to MSAO's on the
    same validation episodes (horizontal lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["timesteps"] for h in history]
    fig, (ax_r, ax_s) = plt.subplots(1, 2, figsize=(9.0, 3.6))
    for ax, key, label in ((ax_r, "reward_mean", "reward per request"), (ax_s, "score_mean", "mean score")):
        ax.plot(steps, [h[key] for h in history], marker="o", ms=3, label="PPO")
        ax.axhline(msao[key], color="tab:red", ls="--", lw=1, label="MSAO")
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title("Validation during training", scenario), fontsize=9)
    p = _save(fig, Path(path))
    plt.close(fig)
    return p


def write_frontier_plot(path: str | Path, fr: Frontier, title: str = "") -> Path:
    """``frontier.png``: mean score against p95 latency (log scale) and against cloud cost per 1k
    requests; one line per family through its points in price order, a marker per point (the
    latency price next to it), hindsight families dotted; ``title`` (default: the frontier's
    scenario label) under the heading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_c) = plt.subplots(1, 2, figsize=(10.0, 4.4))
    for k, (name, pts) in enumerate(fr.families.items()):
        color = f"C{k % 10}"
        ls = ":" if name in fr.hindsight else "-"
        fixed = fr.kinds.get(name) == "fixed"
        shown = pts[:1] if fixed else pts  # a fixed family's points differ only in reward
        for ax, key in ((ax_l, "latency_p95_s"), (ax_c, "cloud_cost_usd_per_1k")):
            xy = [(float(p[key]), float(p["score_mean"]), p) for p in shown if p.get(key) is not None and p.get("score_mean") is not None]
            if not xy:
                continue
            ax.plot([x for x, _, _ in xy], [y for _, y, _ in xy], ls=ls, marker="s" if fixed else "o", ms=4, color=color, label=name)
            if not fixed:  # one label per distinct point: the prices that landed there
                labels: dict[tuple[float, float], list[str]] = {}
                for x, y, p in xy:
                    labels.setdefault((x, y), []).append(f"{p['latency_price']:g}")
                for (x, y), txt in labels.items():
                    ax.annotate(",".join(txt), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=color)
    ax_l.set_xlabel("p95 latency (s)")
    ax_l.set_xscale("log")
    ax_c.set_xlabel("cloud cost, USD per 1k requests")
    for ax in (ax_l, ax_c):
        ax.set_ylabel("mean score")
        ax.grid(alpha=0.3)
    ax_l.legend(fontsize=7)
    prices = ", ".join(f"{p:g}" for p in fr.prices)
    fig.suptitle(_title(f"Frontiers over latency prices {prices} (labels: price per SLO)", title or fr.label), fontsize=9)
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
