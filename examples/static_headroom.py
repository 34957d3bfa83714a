"""How much reward is left above TunedStatic for a policy that adapts its thresholds?

Grid-searches the fixed thresholds of ``TunedStatic`` (the same grid) *in hindsight* on the
evaluation episodes themselves, which no deployable policy can do, and prints:

- EdgeOnly's mean reward per request;
- the best single threshold setting for all episodes (what any static rule can reach at most);
- the mean over episodes of each episode's own best setting: every episode replays one bandwidth
  trace, so this bounds a policy that only adapts to the link it is on.

With ``--latency-prices LIST`` it does the same at each latency price (one rollout per setting;
rewards recomputed per price), with the score and p95 latency of each point: the static
*frontier in hindsight*, to read a learned policy's frontier against (``evaluate --frontier``).

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
from mllm_offload.evaluation import reward_at, run_episodes
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff, parse_prices


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="mobile-3g", help="synthetic profile: system defaults [mobile-3g]")
    ap.add_argument("--trace", help="recorded request trace or embedded name (e.g. shapes-real) [the profile's synthetic requests]")
    ap.add_argument("--bandwidth", help="folder of bandwidth traces, 'constant:MBPS' or 'markov:NAME' [the profile's]")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate on [test]")
    ap.add_argument("--requests", type=int, default=2000, help="requests in all, as evaluate.py [2000]")
    ap.add_argument("--episode-len", type=int, default=100, help="requests per episode [100]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the episodes, as evaluate.py [0]")
    ap.add_argument("--latency-prices", help="comma-separated latency prices (score per SLO): a frontier in hindsight [the scenario's 0.2 only]")
    args = ap.parse_args(argv)
    try:
        if args.requests < 1 or args.episode_len < 1:
            raise UserInputError("--requests and --episode-len must be >= 1")
        scn = Scenario.build(profile=args.profile, trace=args.trace, bandwidth=args.bandwidth, episode_len=args.episode_len,
                             requests=args.requests)
        env = scn.make_env(args.split)
        edge_only = scn.policy("edge")
        prices = parse_prices(args.latency_prices) if args.latency_prices else [scn.trade.latency_price]
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ep_len = scn.episode.n_requests
    seeds = scn.evaluation_seeds(args.requests, args.seed)
    cands = threshold_grid()
    # one rollout per candidate and episode; rewards are recomputed at every price
    logs = [[run_episodes(env, StaticThresholds(th), [s]) for s in seeds] for th in tqdm(cands, desc="thresholds in hindsight", unit="setting")]
    edge_log = run_episodes(env, edge_only, seeds)
    print(f"{args.split} split, {len(seeds)} episodes of {ep_len} requests, {len(cands)} threshold settings")
    for p in prices:
        w = TradeOff(latency_price=p, cost_price=scn.trade.cost_price).weights(scn.reward)
        per_ep = np.array([[np.mean(reward_at(lg, w, scn.slo_s)) for lg in row] for row in logs])  # candidates x episodes
        edge = float(np.mean(reward_at(edge_log, w, scn.slo_s)))
        best = int(per_ep.mean(1).argmax())
        th = cands[best]
        score = np.mean([np.mean(lg.score) for lg in logs[best]])
        p95 = np.percentile(np.concatenate([lg.latency_s for lg in logs[best]]), 95)
        own = per_ep.argmax(0)  # each episode's own best setting
        own_score = np.mean([np.mean(logs[k][e].score) for e, k in enumerate(own)])
        own_p95 = np.percentile(np.concatenate([logs[k][e].latency_s for e, k in enumerate(own)]), 95)
        print(f"\nlatency price {p:g}")
        print(f"EdgeOnly                                   reward {edge:.4f}")
        print(f"best static setting in hindsight           reward {per_ep[best].mean():.4f} score {score:.3f} p95 {p95:.2f} s "
              f"(tau_low {th.tau_low}, tau_high {th.tau_high}, tau_conf {th.tau_conf})")
        print(f"best setting per episode (one link each)   reward {per_ep.max(0).mean():.4f} score {own_score:.3f} p95 {own_p95:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
