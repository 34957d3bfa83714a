#!/usr/bin/env python
"""One trade-off-conditioned PPO policy against policies trained at one price, TunedStatic and
MSAO refitted at each price, and both oracles: side by side on the same test episodes.

Trains (in parallel subprocesses, ``--jobs``) one conditioned policy per seed in ``--seeds`` and
one fixed-price policy per price in ``--fixed-prices`` and seed in ``--fixed-seeds``; run folders
already holding an exported policy are reused. Then evaluates every conditioned policy's frontier
(``mllm_offload.evaluation.frontier``) and every fixed-price policy at its own price, and prints:

* per price: the conditioned policy's reward (mean and min-max over seeds), the fixed-price
  policy's, TunedStatic's and MSAO's refitted at that price, EdgeOnly, CloudOnly, the oracles;
* dominance: the conditioned policy's p95 at MSAO's score (MSAO with its default parameters, as
  the paper describes it, and refitted), and the largest lead of any baseline point over the
  policy's frontier, against the seed spread;
* the share of the MSAO -> oracle reward gap recovered, against the hindsight and the
  expected-outcome oracle (synthetic profiles only).

Example (mobile-3g on a folder of real traces, 3 seeds, about 20 minutes on 2 cores)::

    python benchmarks/conditioned_policy.py --bandwidth PENSIEVE_DIR --seeds 0,1,2 --out runs/bench-cond-m3g
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _runs import add_training_args, seed_list, train_command, train_run

import mllm_offload.agents  # noqa: F401  (registers tuned and the oracles)
from mllm_offload.agents import threshold_grid
from mllm_offload.evaluation import evaluate, frontier
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff, parse_prices


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(ap, "recorded request trace (e.g. shapes-real) instead of the profile's synthetic requests")
    ap.add_argument("--fixed-prices", default="0.05,0.2,1.0", help="latency prices of the policies trained at one price (empty: none) [0.05,0.2,1.0]")
    ap.add_argument("--fixed-seeds", type=seed_list, default="0", help="training seeds of the fixed-price policies [0]")
    ap.add_argument("--prices", default="0.02,0.05,0.1,0.2,0.5,1.0", help="latency prices of the frontier [0.02,0.05,0.1,0.2,0.5,1.0]")
    ap.add_argument("--upload-plans", choices=("auto", "on", "off"), default="auto",
                    help="upload plans in training and evaluation (off: every modality sent whole, as the baselines' refits do) [auto]")
    ap.add_argument("--hyperparams", type=Path, help="PPO hyperparameter YAML passed to every training [the shipped one]")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-conditioned"))
    a = ap.parse_args()

    base = [*train_command(a), "--upload-plans", a.upload_plans,
            *(["--hyperparams", str(a.hyperparams)] if a.hyperparams else [])]
    seeds, fseeds = a.seeds, a.fixed_seeds
    fixed_prices, prices = (parse_prices(a.fixed_prices) if a.fixed_prices.strip() else []), parse_prices(a.prices)
    jobs: list[tuple[list[str], Path]] = [([*base, "--seed", str(s)], a.out / f"cond-s{s}") for s in seeds]
    jobs += [([*base, "--seed", str(s), "--latency-price", f"{p:g}"], a.out / f"fixed-{p:g}-s{s}") for p in fixed_prices for s in fseeds]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as ex:
        for out, sec in ex.map(lambda j: train_run(*j), jobs):
            print(f"trained {out} in {sec:.0f} s" if sec else f"reused {out}", file=sys.stderr)
    train_s = time.perf_counter() - t0

    plans = {"auto": None, "on": True, "off": False}[a.upload_plans]
    scn = Scenario.build(profile=a.profile, trace=a.trace, bandwidth=a.bandwidth, upload_plans=plans)
    fams = "edge,cloud,msao,tuned,oracle" + (",oracle-expected" if scn.trace is None else "")
    frs = [frontier(scn, scn.policy(a.out / f"cond-s{s}" / "policy", "ppo"), fams, prices, a.requests, tuned_grid=threshold_grid())
           for s in seeds]
    fr0 = frs[0]
    ppo = np.array([[p["reward_mean"] for p in f.families["ppo"]] for f in frs])  # seeds x prices
    fixed: dict[float, list[float]] = {}
    for p in fixed_prices:
        s_p = scn.with_tradeoff(TradeOff(latency_price=p, cost_price=scn.trade.cost_price))
        for s in fseeds:
            res, _ = evaluate(s_p.make_env("test"), [s_p.policy(a.out / f"fixed-{p:g}-s{s}" / "policy", "fixed")], a.requests, throughput=False)
            fixed.setdefault(p, []).append(res["fixed"]["reward_mean"])

    def fam_at(name: str, i: int) -> dict[str, Any] | None:
        pts = fr0.families.get(name)
        return None if not pts else (pts[i] if len(pts) > 1 else pts[0])

    print(f"\n{scn.label('test')} | {a.requests} test requests per point | conditioned seeds {seeds} | training {train_s:.0f} s\n")
    print("| latency price | PPO conditioned (min-max) | PPO at this price only | tuned refit | msao refit | msao default | edge | cloud | oracle-expected | oracle | PPO - best baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary: dict[str, Any] = {"scenario": scn.label("test"), "seeds": seeds, "prices": prices, "rows": []}
    for i, p in enumerate(prices):
        row = {k: (fam_at(k, i) or {}).get("reward_mean") for k in ("tuned", "msao", "msao-default", "edge", "cloud", "oracle-expected", "oracle")}
        best = max(v for k, v in row.items() if v is not None and k not in ("oracle", "oracle-expected"))
        col = ppo[:, i]
        fx = fixed.get(p)
        cells = [f"{col.mean():.4f} ({col.min():.4f}-{col.max():.4f})", f"{np.mean(fx):.4f}" if fx else "-",
                 *(f"{row[k]:.4f}" if row[k] is not None else "-" for k in row), f"{col.mean() - best:+.4f}"]
        print(f"| {p:g} | " + " | ".join(cells) + " |")
        summary["rows"].append({"latency_price": p, "ppo_mean": col.mean(), "ppo_min": col.min(), "ppo_max": col.max(),
                                "fixed": fx, **row, "best_baseline": best})
    # dominance: PPO's p95 at MSAO's score; the largest lead of a baseline point over PPO's frontier
    print()
    spread = float(np.max(ppo.max(axis=0) - ppo.min(axis=0)))
    for s, f in zip(seeds, frs):
        dm = f.to_json()["dominance"]
        parts = []
        for b in ("msao-default", "msao", "tuned", "edge", "cloud"):
            if b not in dm:
                continue
            ratio = [v for v in dm[b]["ppo_p95_over_baseline_at_equal_score"] if v is not None]
            lead = [-v for v in dm[b]["ppo_score_minus_baseline_at_equal_p95"] if v is not None]
            parts.append(f"{b}: p95 ratio at equal score {'/'.join(f'{v:.2f}' for v in ratio) or 'n/a'}, "
                         f"largest score lead over PPO at equal p95 {100 * max(lead):+.1f} pts" if lead else
                         f"{b}: p95 ratio at equal score {'/'.join(f'{v:.2f}' for v in ratio) or 'n/a'}")
        print(f"seed {s}: " + "; ".join(parts))
    print(f"seed spread of the conditioned policy's reward (largest max-min over prices): {spread:.4f}")
    if "oracle-expected" in fr0.families:
        for i, p in enumerate(prices):
            m, oe, oh = (fam_at(k, i)["reward_mean"] for k in ("msao-default", "oracle-expected", "oracle"))  # type: ignore[index]
            rec_e = (ppo[:, i] - m) / (oe - m) if oe > m else np.full(len(seeds), np.nan)
            rec_h = (ppo[:, i] - m) / (oh - m) if oh > m else np.full(len(seeds), np.nan)
            print(f"gap recovered at {p:g} (from MSAO, default parameters): expected-outcome oracle {np.mean(rec_e):.3f} "
                  f"({np.min(rec_e):.3f}-{np.max(rec_e):.3f}), hindsight oracle {np.mean(rec_h):.3f}")
    a.out.mkdir(parents=True, exist_ok=True)
    summary["frontiers"] = {str(s): f.to_json() for s, f in zip(seeds, frs)}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"\nsummary: {a.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
