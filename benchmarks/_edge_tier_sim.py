"""The simulated half of ``benchmarks/edge_tier.py``: an edge tier inside the offload simulator.

Every request runs on the edge (EdgeOnly: the tier's own latency, no cloud), on the same
episodes (same requests, bandwidth and device outages per seed) for each split, so the figures
are paired. The arrival rate is scaled so that the uniform split's pipeline is loaded (the
shipped profiles' rates leave a tier nearly idle).

Printed per setting: p50 / p95 request latency (seconds), requests per second the tier
completed while busy, and, over the episodes' dropouts, the seconds the tier could not take
work (stalls: detection + switch to backups, or detection + loading weights when re-planning).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from mllm_offload.config import EdgeTierConfig
from mllm_offload.decision import Thresholds
from mllm_offload.envs import OffloadEnv
from mllm_offload.traces.synth import get_profile

EDGE_ONLY = Thresholds(1.0, 1.0, 0.0)


@dataclass
class SimFigures:
    label: str
    p50_s: float
    p95_s: float
    mean_s: float
    dropouts: int
    stall_s_median: float  #: median seconds without progress after losing a device in use (nan: none)
    stall_s_mean: float  #: their mean (a second loss before the first is repaired can mean re-planning)
    capacity_mean: float


def run_setting(label: str, tier: EdgeTierConfig, *, profile: str = "mobile-3g", rate_scale: float = 11.0,
                episodes: int = 20, n_requests: int = 200, seed: int = 0) -> SimFigures:
    """EdgeOnly through the tier on ``episodes`` paired episodes."""
    system = get_profile(profile).system.model_copy(update={"edge_tier": tier})
    env = OffloadEnv(profile, bandwidth=f"markov:{profile}", split="test", system=system,
                     episode={"n_requests": n_requests, "rate_scale": (rate_scale, rate_scale)})
    lat: list[float] = []
    drops, stalls, caps = 0, [], []
    for ep in range(episodes):
        _, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            _, _, done, _, step = env.step_thresholds(EDGE_ONLY)
            lat.append(step["outcome"].latency_s)
        drops += info["edge_dropouts"]
        caps.append(info["edge_capacity_mean"])
        assert env.sim is not None and env.sim.tier is not None
        segs = env.sim.tier.segments
        horizon = env.sim.req.arrival[-1]
        for a, b in itertools.pairwise(segs):  # a stall starts where a segment ended by a dropout
            if a.ends_by_dropout and a.end <= horizon:
                nxt = next((s for s in segs if s.start >= b.start and s.mode is not None), None)
                if nxt is not None:
                    stalls.append(nxt.start - a.end)
    arr = np.array(lat)
    return SimFigures(label, float(np.percentile(arr, 50)), float(np.percentile(arr, 95)), float(arr.mean()), drops,
                      float(np.median(stalls)) if stalls else float("nan"), float(np.mean(stalls)) if stalls else float("nan"),
                      float(np.mean(caps)))


def simulated(devices: str = "home-4", model: str = "qwen2-vl-2b", rate_scale: float = 11.0, episodes: int = 200) -> list[SimFigures]:
    """Planner against uniform, always up and with dropouts; backups against redeployment."""
    base = {"devices": devices, "model": model}
    up = {"mean_down_s": 0.0}
    return [
        run_setting("planner, always up", EdgeTierConfig(**base, **up), rate_scale=rate_scale, episodes=episodes),
        run_setting("uniform, always up", EdgeTierConfig(**base, split="uniform", **up), rate_scale=rate_scale, episodes=episodes),
        run_setting("planner, dropouts, backups", EdgeTierConfig(**base), rate_scale=rate_scale, episodes=episodes),
        run_setting("uniform, dropouts, backups", EdgeTierConfig(**base, split="uniform"), rate_scale=rate_scale, episodes=episodes),
        run_setting("planner, dropouts, no backups", EdgeTierConfig(**base, backups=False), rate_scale=rate_scale, episodes=episodes),
        run_setting("uniform, dropouts, no backups", EdgeTierConfig(**base, split="uniform", backups=False), rate_scale=rate_scale,
                    episodes=episodes),
    ]


def format_simulated(rows: list[SimFigures], rate_scale: float) -> str:
    out = [f"simulated edge tier (EdgeOnly, mobile-3g requests at {rate_scale:g}x their rate, paired episodes; "
           "dropouts: 10 min up / 1 min down per device on average)",
           f"  {'setting':32s} {'p50 s':>7s} {'p95 s':>7s} {'mean s':>7s} {'dropouts':>8s} {'stall s p50':>11s} {'stall s mean':>12s} {'capacity':>8s}"]
    for r in rows:
        out.append(f"  {r.label:32s} {r.p50_s:7.3f} {r.p95_s:7.3f} {r.mean_s:7.3f} {r.dropouts:8d} {r.stall_s_median:11.2f} {r.stall_s_mean:12.2f} "
                   f"{r.capacity_mean:8.3f}")
    by = {r.label: r for r in rows}
    p, u = by["planner, always up"], by["uniform, always up"]
    out.append(f"  planner / uniform, always up: p50 {p.p50_s / u.p50_s:.2f}x, p95 {p.p95_s / u.p95_s:.2f}x")
    b, n = by["planner, dropouts, backups"], by["planner, dropouts, no backups"]
    out.append(f"  planner with dropouts, backups / no backups: median stall per dropout {b.stall_s_median:.2f} s / "
               f"{n.stall_s_median:.2f} s, p95 latency {b.p95_s:.3f} s / {n.p95_s:.3f} s")
    return "\n".join(out)


if __name__ == "__main__":
    print(format_simulated(simulated(), 11.0))
