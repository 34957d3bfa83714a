#!/usr/bin/env python
"""Upload plans against the same policy families without them, at equal score, on the test split.

Families (with plans / without):

* **PPO**: one trade-off-conditioned policy per seed trained with upload plans (``--upload-plans
  on``) and one without (``off``); both evaluated over the latency prices ``--prices`` (a
  frontier each). At every point of the policy without plans, the policy with plans' mean upload
  bytes and p95 latency are interpolated along its own frontier at that score (linear in score;
  none where the score lies outside its frontier): the ratios the issue asks for "at equal score".
* **MSAO + model_res** (``msao-model-res``) against MSAO, and **moaoff** against its own routing
  without plans (MSAO): one point each at the balanced price, with the score difference (the
  comparison holds "at equal score" only when it is within 0.5 points).

* **PPO under an upload budget** (``--upload-budget-ratio R``): the conditioned policies price
  latency and cloud tokens, not bytes on the uplink, so the one with plans spends the latency
  plans save on more cloud answers. A user who pays for the uplink says so with ``train
  --upload-budget MB`` (a Lagrange multiplier; one latency price). Per seed this trains, with
  plans, at the balanced price under a budget of ``R`` times the MB per request of that seed's
  policy without plans there, and compares it with the frontier without plans at its own score.

Run folders already holding an exported policy are reused. Example (mobile-3g on a folder of real
bandwidth traces, 3 seeds, about 20 minutes on 2 cores)::

    python benchmarks/upload_plans.py --bandwidth PENSIEVE_DIR --seeds 0,1,2 --out runs/bench-plans-m3g
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _runs import add_training_args, train_command, train_run

import mllm_offload.agents  # noqa: F401  (registers tuned and the oracles)
from mllm_offload.evaluation import evaluate
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import PRESETS, TradeOff, parse_prices


def _point(scn: Scenario, policy: Any, price: float, requests: int) -> dict[str, float]:
    env = scn.with_tradeoff(TradeOff(latency_price=price, cost_price=scn.trade.cost_price)).make_env("test")
    res, _ = evaluate(env, [policy], requests, throughput=False)
    m = res[policy.name]
    return {"price": price, "reward": m["reward_mean"], "score": m["score_mean"], "mb": m["mb_uploaded_mean"],
            "p95_s": m["latency_p95_s"]}


def _fmt(v: float | None) -> str:
    return "  -   " if v is None else f"{v:6.2f}"


def _at_score(points: list[dict[str, float]], score: float, key: str) -> float | None:
    """``key`` interpolated linearly in score along ``points`` (None outside their score range)."""
    pts = sorted(points, key=lambda p: p["score"])
    s = np.array([p["score"] for p in pts])
    if not s[0] - 1e-9 <= score <= s[-1] + 1e-9:
        return None
    return float(np.interp(score, s, [p[key] for p in pts]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(ap, "recorded request trace with variants (record --variants) instead of the profile's requests")
    ap.add_argument("--prices", default="0.02,0.05,0.1,0.2,0.5,1.0", help="latency prices of the frontiers")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-plans"))
    ap.add_argument("--json", type=Path, help="write every point and ratio as JSON")
    ap.add_argument("--upload-budget-ratio", type=float, metavar="R",
                    help="also train, per seed, a policy with plans at the balanced price under an upload budget of R x the MB "
                    "per request of the policy without plans there [off]")
    args = ap.parse_args()
    if args.upload_budget_ratio is not None and not args.upload_budget_ratio > 0:
        ap.error(f"--upload-budget-ratio: must be > 0, got {args.upload_budget_ratio:g}")
    seeds = args.seeds
    prices = parse_prices(args.prices, "--prices")
    scn = Scenario.build(profile=args.profile, trace=args.trace, bandwidth=args.bandwidth)
    if (scn.trace.plans if scn.trace is not None else True) is None:
        raise SystemExit(f"{args.trace}: no variant outcomes (record it with --variants)")
    base = train_command(args)
    jobs = [([*base, "--seed", str(s), "--upload-plans", mode], args.out / f"{mode}-s{s}") for s in seeds for mode in ("on", "off")]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as ex:
        trained = list(ex.map(lambda j: train_run(*j), jobs))
    print(f"trained {sum(1 for _, t in trained if t > 0)} runs in {time.perf_counter() - t0:.0f} s ({len(trained)} in all)\n")
    with_plans, without = dataclasses.replace(scn, upload_plans=True), dataclasses.replace(scn, upload_plans=False)
    doc: dict[str, Any] = {"profile": args.profile, "trace": args.trace, "bandwidth": scn.bandwidth, "requests": args.requests,
                           "ppo": {}, "rules": {}}
    rows = []
    for s in seeds:
        on = [_point(with_plans, with_plans.policy(args.out / f"on-s{s}" / "policy", "ppo-plans"), p, args.requests) for p in prices]
        off = [_point(without, without.policy(args.out / f"off-s{s}" / "policy", "ppo"), p, args.requests) for p in prices]
        ratios = []
        for q in off:
            mb, p95 = _at_score(on, q["score"], "mb"), _at_score(on, q["score"], "p95_s")
            ratios.append({"price": q["price"], "score": q["score"], "mb_ratio": None if mb is None else mb / q["mb"] if q["mb"] > 0 else None,
                           "p95_ratio": None if p95 is None else p95 / q["p95_s"]})
        doc["ppo"][f"seed{s}"] = {"with_plans": on, "without": off, "at_equal_score": ratios}
        rows.append((s, on, off, ratios))
    print("PPO (conditioned) with upload plans against without, test split; per latency price of the policy without plans:")
    print(f"  {'seed':>4} {'price':>6} | {'score':>6} {'MB':>7} {'p95 s':>7} | with plans: {'score':>6} {'MB':>7} {'p95 s':>7} "
          f"| at equal score: {'MB x':>6} {'p95 x':>6}")
    for s, on, off, ratios in rows:
        for q, o, r in zip(off, on, ratios):
            print(f"  {s:>4} {q['price']:>6g} | {q['score']:6.3f} {q['mb']:7.3f} {q['p95_s']:7.2f} | {'':12}{o['score']:6.3f} "
                  f"{o['mb']:7.3f} {o['p95_s']:7.2f} | {'':16}{_fmt(r['mb_ratio'])} {_fmt(r['p95_ratio'])}")
    mb_all = [r["mb_ratio"] for *_, rs in rows for r in rs if r["mb_ratio"] is not None]
    p95_all = [r["p95_ratio"] for *_, rs in rows for r in rs if r["p95_ratio"] is not None]
    if mb_all:
        print(f"  at equal score, over {len(mb_all)} points: bytes x{np.median(mb_all):.2f} (median; {min(mb_all):.2f}-{max(mb_all):.2f}), "
              f"p95 x{np.median(p95_all):.2f} ({min(p95_all):.2f}-{max(p95_all):.2f}); goal: bytes <= 0.6x, p95 <= 0.75x")
    balanced = PRESETS["balanced"]
    msao = _point(without, without.policy("msao"), balanced, args.requests)
    print(f"\nRules at the balanced price ({balanced:g}), against MSAO sending everything (score {msao['score']:.3f}, "
          f"{msao['mb']:.3f} MB, p95 {msao['p95_s']:.2f} s):")
    for name in ("msao-model-res", "moaoff"):
        q = _point(with_plans, with_plans.policy(name), balanced, args.requests)
        d = 100 * (q["score"] - msao["score"])
        doc["rules"][name] = {"point": q, "msao": msao, "score_diff_points": d, "mb_ratio": q["mb"] / msao["mb"],
                              "p95_ratio": q["p95_s"] / msao["p95_s"]}
        print(f"  {name:15s} score {q['score']:.3f} ({d:+.1f} pts{', within 0.5' if abs(d) <= 0.5 else ', NOT within 0.5'}), "
              f"{q['mb']:.3f} MB (x{q['mb'] / msao['mb']:.2f}), p95 {q['p95_s']:.2f} s (x{q['p95_s'] / msao['p95_s']:.2f})")
    if args.upload_budget_ratio is not None:
        doc["budget"] = _budgeted(args, base, with_plans, without, rows)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


def _budgeted(args: argparse.Namespace, base: list[str], with_plans: Scenario, without: Scenario,
              rows: list[tuple[int, list[dict[str, float]], list[dict[str, float]], Any]]) -> dict[str, Any]:
    """Per seed: a policy trained at the balanced price under an upload budget of ``R`` x the MB
    of the policy without plans there, with plans and without (the same budget: part of what a
    budget saves needs no plan, e.g. fewer speculative uploads that are discarded); each against
    the frontier without plans (unbudgeted) at its own score, and the two side by side."""
    balanced, r = PRESETS["balanced"], args.upload_budget_ratio
    ref = {s: next((q for q in off if q["price"] == balanced), None) or
           _point(without, without.policy(args.out / f"off-s{s}" / "policy", "ppo"), balanced, args.requests)
           for s, _, off, _ in rows}
    keys = [(s, mode) for s in ref for mode in ("on", "off")]
    jobs = [([*base, "--seed", str(s), "--upload-plans", mode, "--latency-price", f"{balanced:g}",
              "--upload-budget", f"{r * ref[s]['mb']:.6g}"], args.out / f"budget{r:g}{'' if mode == 'on' else '-off'}-s{s}")
            for s, mode in keys]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as ex:
        trained = list(ex.map(lambda j: train_run(*j), jobs))
    print(f"\ntrained {sum(1 for _, t in trained if t > 0)} budgeted runs in {time.perf_counter() - t0:.0f} s")
    print(f"PPO at the balanced price ({balanced:g}) under an upload budget of {r:g} x the MB per request of the conditioned policy "
          "without plans there; 'at equal score': against that policy's frontier at the same score:")
    print(f"  {'seed':>4} {'budget MB':>9} | with plans: {'score':>6} {'MB':>7} {'p95 s':>7} {'MB x':>6} {'p95 x':>6} "
          f"| without plans: {'score':>6} {'MB':>7} {'p95 s':>7} {'MB x':>6} {'p95 x':>6}")
    out: dict[str, Any] = {"ratio": r, "price": balanced, "seeds": {}}
    folders = {key: folder for key, (folder, _) in zip(keys, trained)}
    for s, _, off, _ in rows:
        rec: dict[str, Any] = {"budget_mb": r * ref[s]["mb"], "without_at_balanced": ref[s]}
        cells = []
        for mode, scn, name in (("on", with_plans, "ppo-budget"), ("off", without, "ppo-budget-off")):
            q = _point(scn, scn.policy(folders[(s, mode)] / "policy", name), balanced, args.requests)
            mb, p95 = _at_score(off, q["score"], "mb"), _at_score(off, q["score"], "p95_s")
            mb_x = None if mb is None or mb <= 0 else q["mb"] / mb
            p95_x = None if p95 is None else q["p95_s"] / p95
            rec["with_plans" if mode == "on" else "without_plans"] = {"point": q, "mb_ratio": mb_x, "p95_ratio": p95_x}
            cells.append(f"{q['score']:6.3f} {q['mb']:7.4f} {q['p95_s']:7.2f} {_fmt(mb_x)} {_fmt(p95_x)}")
        out["seeds"][f"seed{s}"] = rec
        print(f"  {s:>4} {r * ref[s]['mb']:9.4f} | {'':12}{cells[0]} | {'':15}{cells[1]}")
    return out


if __name__ == "__main__":
    sys.exit(main())
