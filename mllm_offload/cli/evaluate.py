"""``mllm-offload evaluate``: policies side by side on the same episodes of a scenario."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..policy import describe_policies
from ._common import add_scenario_args, progress, scenario
from ._parser import positive_int

DEFAULT_POLICIES = "edge,cloud,msao,tuned,oracle"


def add_parser(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="evaluate policies side by side",
                        description="Evaluate policies on the same requests, bandwidth traces and seeds; print a markdown table.")
    add_scenario_args(ev)
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="part of the requests and bandwidth folder to evaluate on [test]")
    ev.add_argument("--requests", type=positive_int, default=2000, help="requests per policy [2000]")
    ev.add_argument("--policies", default=DEFAULT_POLICIES,
                    help=f"comma-separated names or exported policy folders ({describe_policies()}) [{DEFAULT_POLICIES}]")
    ev.add_argument("--policy", type=Path, action="append", default=[], metavar="DIR", help="an exported policy folder, evaluated as 'ppo' (repeatable)")
    ev.add_argument("--json", type=Path, help="write metrics as JSON")
    ev.add_argument("--csv", type=Path, help="write metrics as CSV")
    ev.add_argument("--plots", type=Path, help="folder for PNG plots (latency CDF, score vs cloud share; frontier.png with --frontier)")
    ev.add_argument("--frontier", action="store_true",
                    help="also evaluate every policy family over its knob at each --latency-prices value (the --policy one per price "
                    "inside its trained range, tuned and msao refitted per price, oracles per price, the rest once) and PPO's dominance")
    ev.add_argument("--latency-prices", metavar="LIST",
                    help="comma-separated latency prices (score per SLO) or preset names for --frontier [quality-first,balanced,latency-first: 0.05,0.2,1]")
    ev.add_argument("--no-throughput", action="store_true", help="skip the throughput search")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .. import agents  # noqa: F401  (registers tuned and oracle)
    from ..evaluation import evaluate, write_csv, write_json, write_plots
    from ..evaluation.report import comparison_text

    prices = _prices(args)
    scn = scenario(args)
    env = scn.make_env(args.split)
    exported = [scn.policy(d, "ppo" if k == 0 else f"ppo:{d}") for k, d in enumerate(_folders(args.policy))]
    if prices is None:  # (a frontier skips the prices outside a policy's range itself)
        for pol in exported:
            check = getattr(pol, "check_tradeoff", None)
            if check is not None:
                check(scn.trade, "--latency-price")
    policies = scn.policies(args.policies, seed=args.seed, progress=progress("tuning static thresholds", args.quiet)) + exported
    t0 = time.perf_counter()
    results, logs = evaluate(env, policies, args.requests, seed=args.seed, throughput=not args.no_throughput,
                             progress=progress("evaluating", args.quiet))
    meta = {
        "profile": scn.profile, "trace": str(args.trace) if args.trace else None,
        "bandwidth": scn.bandwidth, "bandwidth_traces": len(env.bandwidths), "split": args.split,
        "requests": int(next(iter(results.values()))["requests"]), "episode_len": env.n_requests,
        "seed": args.seed, "slo_s": env.slo_s, "seconds": round(time.perf_counter() - t0, 2),
        "system": env.system_cfg.model_dump(), "reward": env.weights.model_dump(),
        "thresholds": {p.name: [p.th.tau_low, p.th.tau_high, p.th.tau_conf] for p in policies if hasattr(p, "th")},
        "upload_plans": {p.name: p.plan.variant() or "whole" for p in policies if getattr(p, "plan", None) is not None},
    }
    print(f"{meta['profile'] if not args.trace else args.trace} | bandwidth {meta['bandwidth']} ({meta['bandwidth_traces']} traces, split {args.split}) | "
          f"{meta['requests']} requests per policy | SLO {env.slo_s:g} s\n")
    text, v = comparison_text(results, logs, env.n_requests)
    print(text)
    fr = None
    if prices is not None:
        from ..agents import threshold_grid
        from ..evaluation import frontier, frontier_text

        fr = frontier(scn, exported[0] if exported else None, args.policies, prices, args.requests, seed=args.seed,
                      progress=progress("frontier", args.quiet), split=args.split, tuned_grid=threshold_grid(), others=exported[1:])
        print(f"\n## Frontier over latency prices {', '.join(f'{p:g}' for p in fr.prices)} (cost price {fr.cost_price:g}; "
              f"{fr.requests} requests per point, {fr.seconds:.0f} s)\n")
        print(frontier_text(fr))
    if args.json:
        from ..evaluation.metrics import plan_shares

        per_policy = {n: {**m, "plan_shares": plan_shares(logs[n])} for n, m in results.items()}
        write_json(args.json, per_policy, meta, v, extra=fr.to_json() if fr is not None else None)
    if args.csv:
        write_csv(args.csv, results)
    if args.plots:
        write_plots(args.plots, results, logs, env.slo_s, scn.label(args.split))
        if fr is not None:
            from ..evaluation import write_frontier_plot

            write_frontier_plot(args.plots / "frontier.png", fr, scn.label(args.split))
    return 0


def _prices(args: argparse.Namespace) -> list[float] | None:
    """The prices of ``--frontier`` (``--latency-prices``, default the presets), checked before any work."""
    from ..errors import UserInputError
    from ..tradeoff import PRESETS, parse_prices

    if args.latency_prices is not None and not args.frontier:
        raise UserInputError("--latency-prices: only with --frontier")
    if not args.frontier:
        return None
    return parse_prices(args.latency_prices if args.latency_prices is not None else ",".join(PRESETS))


def _folders(dirs: list[Path]) -> list[Path]:
    """``--policy`` takes exported folders only (never a registered name)."""
    from ..errors import UserInputError

    for d in dirs:
        if not (d / "policy.json").is_file():
            raise UserInputError(f"--policy {d}: not a policy directory (no policy.json; export one with `mllm-offload export RUN_DIR`)")
    return dirs
