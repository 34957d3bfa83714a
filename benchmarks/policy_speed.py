#!/usr/bin/env python
"""Decisions per second of the deployable ``OffloadPolicy`` against SB3's ``model.predict``.

One process, batch 1, the same observations (collected from ``Offload-v0`` episodes) for all
three: SB3 (normalise with the ``VecNormalize`` statistics, ``model.predict(deterministic=True)``,
clip, ``Thresholds.from_action``: what the simulator evaluates), ``OffloadPolicy`` with the numpy
backend and with the onnxruntime backend (what the router runs). Rounds alternate between the
three; the medians, their ratios, and the largest absolute threshold difference among the three
are printed. Goals: >= 20x SB3's decision rate, differences <= 1e-5.

    python benchmarks/policy_speed.py [--run RUN_DIR] [--decisions 2000] [--rounds 5]

Without ``--run`` a freshly initialised PPO actor (default architecture) with made-up
normalisation statistics is exported to a temporary folder: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from mllm_offload.agents.export import export_model, export_run
from mllm_offload.agents.ppo import SB3Policy
from mllm_offload.runtime import OffloadPolicy
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff, TradeOffRange


def observations(n: int) -> np.ndarray:
    env = Scenario.build(profile="mobile-3g").make_env("test")
    rng = np.random.default_rng(0)
    out, (obs, _) = [], env.reset(seed=0)
    while len(out) < n:
        out.append(obs)
        obs, _, done, _, _ = env.step(rng.random(3))
        if done:
            obs, _ = env.reset()
    return np.asarray(out, np.float32)


def rate(fn, obs: np.ndarray) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [fn(o) for o in obs]
    return len(obs) / (time.perf_counter() - t0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a training run folder (default: an untrained actor)")
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="policy_speed."))
    obs = observations(args.decisions)
    if args.run:
        art = export_run(args.run, tmp / "policy")
        model = PPO.load(args.run / "best" / "model.zip", device="cpu")
        st = json.loads((args.run / "best" / "vecnormalize.json").read_text())
        mean, var, clip, eps = st["mean"], st["var"], st["clip_obs"], st["epsilon"]
    else:
        model = PPO("MlpPolicy", Scenario.build(profile="mobile-3g").make_env("train"), seed=0, device="cpu")
        mean, var, clip, eps = obs.mean(0), obs.var(0) + 1e-3, 10.0, 1e-8
        art = export_model(model, tmp / "policy", mean, var, clip, eps, tradeoff_range=TradeOffRange.single(TradeOff()))
    pols = {
        "sb3_predict": SB3Policy(model, mean, var, clip, eps).thresholds,
        "offload_numpy": OffloadPolicy.load(art).thresholds,
        "offload_onnx": OffloadPolicy.load(art, backend="onnx").thresholds,
    }
    rates: dict[str, list[float]] = {k: [] for k in pols}
    outs: dict[str, list] = {}
    for fn in pols.values():  # warm-up
        rate(fn, obs[:100])
    for _ in range(args.rounds):
        for name, fn in pols.items():
            r, outs[name] = rate(fn, obs)
            rates[name].append(r)
    med = {k: statistics.median(v) for k, v in rates.items()}
    arr = {k: np.array([[t.tau_low, t.tau_high, t.tau_conf] for t in v]) for k, v in outs.items()}
    names = list(arr)
    diff = max(float(np.max(np.abs(arr[a] - arr[b]))) for i, a in enumerate(names) for b in names[i + 1:])
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
          f"{args.decisions} decisions x {args.rounds} rounds, batch 1")
    for k in pols:
        print(f"{k:>14}: {med[k]:>10.0f} decisions/s (median; rounds {', '.join(f'{v:.0f}' for v in rates[k])})")
    print(f"numpy / sb3 = {med['offload_numpy'] / med['sb3_predict']:.1f}x   onnx / sb3 = {med['offload_onnx'] / med['sb3_predict']:.1f}x   (goal >= 20x)")
    print(f"largest |threshold difference| among the three = {diff:.2e}   (goal <= 1e-5)")


if __name__ == "__main__":
    main()
