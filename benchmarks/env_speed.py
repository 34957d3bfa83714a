#!/usr/bin/env python
"""Steps per second of ``mllm_offload/Offload-v0`` against Gymnasium's ``CartPole-v1``.

Both run in this process through ``gym.make`` (same wrappers), with random actions drawn before
the timed loop (so the action sampler is not what is measured), alternating in rounds; the
ratio of medians is printed. Goal: ratio >= 0.5.

    python benchmarks/env_speed.py [--steps 20000] [--rounds 5] [--profile mobile-3g]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

import mllm_offload.envs  # noqa: F401  (registers Offload-v0)


def steps_per_s(env: gym.Env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return len(actions) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", default="mobile-3g")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    offload = gym.make("mllm_offload/Offload-v0", profile=args.profile)
    cart = gym.make("CartPole-v1")
    off_actions = rng.random((args.steps, 3)).astype(np.float32)
    cart_actions = rng.integers(0, 2, args.steps)
    steps_per_s(offload, off_actions[:2000])  # warm up caches
    steps_per_s(cart, cart_actions[:2000])
    off, cp = [], []
    for _ in range(args.rounds):
        off.append(steps_per_s(offload, off_actions))
        cp.append(steps_per_s(cart, cart_actions))
    mo, mc = statistics.median(off), statistics.median(cp)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}, {args.rounds} rounds x {args.steps} steps")
    print(f"Offload-v0 ({args.profile}): {mo:,.0f} steps/s (median; min {min(off):,.0f}, max {max(off):,.0f})")
    print(f"CartPole-v1:            {mc:,.0f} steps/s (median; min {min(cp):,.0f}, max {max(cp):,.0f})")
    print(f"ratio Offload/CartPole: {mo / mc:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
