"""PNG plots of an evaluation (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write
from .rollout import EpisodeLog

__all__ = ["write_plots", "write_validation_curve"]


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
