"""How much reward is left above TunedStatic for a policy that adapts its thresholds?

Grid-searches the fixed thresholds of ``TunedStatic`` (the same grid) *in hindsight* on the
evaluation episodes themselves, which no deployable policy can do, and prints:

- EdgeOnly's mean reward per request;
- the best single threshold setting for all episodes (what any static rule can reach at most);
- the mean over episodes of each episode's own best setting: every episode replays one bandwidth
  trace, so this bounds a policy that only adapts to the link it is on.

The episodes are the ones ``evaluate.py`` and ``train.py``'s final comparison use (seeds
``Scenario.evaluation_seeds``), so the figures sit next to their table. Example (about 15 s here)::

    python examples/static_headroom.py --trace shapes-real --bandwidth pensieve-sample   # or a folder of traces
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from tqdm import tqdm

from mllm_offload.agents import StaticThresholds, threshold_grid
from mllm_offload.errors import UserInputError
from mllm_offload.evaluation import run_episodes
from mllm_offload.scenario import Scenario


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="mobile-3g", help="synthetic profile: system defaults [mobile-3g]")
    ap.add_argument("--trace", help="recorded request trace or embedded name (e.g. shapes-real) [the profile's synthetic requests]")
    ap.add_argument("--bandwidth", help="folder of bandwidth traces, 'constant:MBPS' or 'markov:NAME' [the profile's]")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate on [test]")
    ap.add_argument("--requests", type=int, default=2000, help="requests in all, as evaluate.py [2000]")
    ap.add_argument("--episode-len", type=int, default=100, help="requests per episode [100]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the episodes, as evaluate.py [0]")
    args = ap.parse_args(argv)
    try:
        if args.requests < 1 or args.episode_len < 1:
            raise UserInputError("--requests and --episode-len must be >= 1")
        scn = Scenario.build(profile=args.profile, trace=args.trace, bandwidth=args.bandwidth, episode_len=args.episode_len,
                             requests=args.requests)
        env = scn.make_env(args.split)
        edge_only = scn.policy("edge")
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ep_len = scn.episode.n_requests
    seeds = scn.evaluation_seeds(args.requests, args.seed)
    cands = threshold_grid()
    # reward per request of each candidate (rows) on each episode (columns)
    per_ep = np.array([[np.mean(run_episodes(env, StaticThresholds(th), [s]).reward) for s in seeds]
                       for th in tqdm(cands, desc="thresholds in hindsight", unit="setting")])
    edge = float(np.mean(run_episodes(env, edge_only, seeds).reward))
    best = int(per_ep.mean(1).argmax())
    th = cands[best]
    print(f"{args.split} split, {len(seeds)} episodes of {ep_len} requests, {len(cands)} threshold settings")
    print(f"EdgeOnly                                   reward {edge:.4f}")
    print(f"best static setting in hindsight           reward {per_ep[best].mean():.4f} "
          f"(tau_low {th.tau_low}, tau_high {th.tau_high}, tau_conf {th.tau_conf})")
    print(f"best setting per episode (one link each)   reward {per_ep.max(0).mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
