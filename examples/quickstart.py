#!/usr/bin/env python
"""Quick start in Python: a scenario, a short PPO run, an evaluation, the exported policy deployed.

Runs in about half a minute on 2 CPU cores (a smoke-sized training: 4096 steps; the main job,
``python train.py``, trains 100k). Every step uses the same objects as the command line::

    python examples/quickstart.py [--out runs/quickstart] [--timesteps 4096]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mllm_offload.agents  # noqa: F401  (registers the simulation-only policies tuned and oracle)
from mllm_offload.agents.export import export_run
from mllm_offload.agents.ppo import train
from mllm_offload.config import PPOHyperparams
from mllm_offload.evaluation import evaluate, markdown_table, verdict
from mllm_offload.observation import RequestFeatures, SystemState, build_observation
from mllm_offload.runtime import OffloadPolicy
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run folder (replaced) [runs/quickstart]")
    ap.add_argument("--timesteps", type=int, default=4096, help="PPO environment steps [4096]")
    args = ap.parse_args(argv)

    # 1. One scenario: the synthetic mobile-3g profile on the package's Markov 3G bandwidth model.
    scn = Scenario.build(profile="mobile-3g")

    # 2. PPO on its training split (validated against MSAO on the validation split).
    hp = PPOHyperparams(n_timesteps=args.timesteps, n_steps=512, eval_freq=2048, eval_episodes=4)
    if args.out.exists() and any(args.out.iterdir()):
        if not (args.out / "run.json").is_file() and not (args.out / "checkpoint").is_dir():
            print(f"error: --out {args.out}: holds files but no training run; pick an empty or new folder", file=sys.stderr)
            return 2
        import shutil

        shutil.rmtree(args.out)  # a previous quickstart run
    result = train(scn.make_env, hp, args.out, seed=0, progress_bar=False, log=lambda s: None)
    policy_dir = export_run(args.out, args.out / "policy")  # policy.json + policy.npz + policy.onnx
    print(f"trained {result.timesteps} steps in {result.seconds:.0f} s; exported to {policy_dir}")

    # 3. The exported policy next to the baselines on the test split (the same episodes for all).
    env = scn.make_env("test")
    policies = [*scn.policies("edge,msao,tuned"), scn.policy(policy_dir, "ppo")]
    results, logs = evaluate(env, policies, requests=1000, throughput=False)
    print(markdown_table(results))
    print(verdict(results, logs, env.n_requests)["sentence"])
    print("(a smoke-sized run: train longer, e.g. `python train.py`, for a policy worth deploying)")

    # 4. Deploy: numpy only (no torch, SB3 or gymnasium); the router builds the same observation.
    policy = OffloadPolicy.load(policy_dir)
    request = RequestFeatures(mas={"score": 0.6, "spatial": 0.5}, payload_bytes=180_000, input_tokens=900)
    state = SystemState(bw_est_mbps=1.5, rtt_s=0.08, edge_queue_n=1, edge_queue_s=0.4, cloud_latency_recent_s=1.2)
    # the user's trade-off is an input too: what `route` uses unless a request names its own
    trained = getattr(policy, "tradeoff_range", None)
    tradeoff = trained.default() if trained is not None else TradeOff()
    print("thresholds for one request:", policy.thresholds(build_observation(request, state, tradeoff)), f"({tradeoff.label()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
