#!/usr/bin/env python
"""Checkpoint selection of a trade-off-conditioned policy, replayed: what the shipped rule keeps,
what other rules would keep, and what the best kept model reaches, at each latency price.

Trains (in parallel subprocesses, ``--jobs``; folders already trained by the same command are
reused) one conditioned policy per seed with ``train --keep-evaluations``: every validated model
stays in ``RUN/evals/STEPS/`` and every evaluation's metrics in ``RUN/validation.jsonl``. Training
does not depend on which model is selected, so replaying a rule on ``validation.jsonl`` picks
exactly what a run with that rule would keep. Rules (each over all evaluations of a run):

==================  ========================================================================
rule                the model kept
==================  ========================================================================
shipped             the last one ``train`` selected (``selected`` in ``validation.jsonl``):
                    the highest mean over validation episodes of reward / (1 + 5 x price),
                    the reward with expected scores on a synthetic profile (the others rank
                    the realised reward)
plain mean          the highest mean validation reward, every episode weighted alike
low third           the highest mean validation reward over the third of episodes with the
                    lowest latency prices
top third           the same over the third with the highest prices
==================  ========================================================================

Each picked model, and every ``--ceiling-every``-th kept model, is exported
(``export RUN --step STEPS``) and evaluated on the test split at each of ``--prices`` (the same
episodes for every model). "best kept" is the highest test reward at each price over the models
evaluated, a ceiling no rule that sees only validation can be sure to reach.

Example (shapes-real on a folder of real traces, 3 seeds; about 25 minutes on 2 cores)::

    python benchmarks/selection_replay.py --trace shapes-real --bandwidth PENSIEVE_DIR --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _runs import add_training_args, train_command, train_run

from mllm_offload._io import read_jsonl
from mllm_offload.agents.export import export_run
from mllm_offload.evaluation import evaluate
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff, parse_prices


def _third(m: dict[str, Any], which: int) -> float:
    """Mean validation reward over a third of the episodes by price (0: lowest, 2: highest)."""
    rows = m["reward_by_price"]  # by increasing price
    part = np.array_split(np.array([r["reward_mean"] for r in rows]), 3)[which]
    return float(part.mean())


RULES: dict[str, Callable[[dict[str, Any]], float]] = {
    "plain mean": lambda m: float(m["reward_mean"]),
    "low third": lambda m: _third(m, 0),
    "top third": lambda m: _third(m, 2),
}


def picks(history: list[dict[str, Any]]) -> dict[str, int]:
    """The step each rule keeps: ``shipped`` from the run's own record, the others replayed."""
    feasible = [m for m in history if m.get("feasible", True)] or history
    out = {"shipped": int([m for m in history if m["selected"]][-1]["timesteps"])}
    for name, f in RULES.items():
        out[name] = int(max(feasible, key=f)["timesteps"])  # the first of equals, as train keeps it
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_training_args(ap, "recorded request trace (e.g. shapes-real) instead of the profile's synthetic requests")
    ap.add_argument("--prices", default="0.05,0.2,1.0", help="latency prices of the test evaluation [0.05,0.2,1.0]")
    ap.add_argument("--ceiling-every", type=int, default=3, help="evaluate every K-th kept model for the 'best kept' ceiling (0: none) [3]")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-selection"))
    a = ap.parse_args()
    if a.ceiling_every < 0 or a.requests < 1:
        ap.error("--ceiling-every must be >= 0 and --requests >= 1")

    base = [*train_command(a), "--keep-evaluations"]
    seeds = a.seeds
    prices = parse_prices(a.prices)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as ex:
        for out, sec in ex.map(lambda s: train_run([*base, "--seed", str(s)], a.out / f"cond-s{s}"), seeds):
            print(f"trained {out} in {sec:.0f} s" if sec else f"reused {out}", file=sys.stderr)
    train_s = time.perf_counter() - t0

    scn = Scenario.build(profile=a.profile, trace=a.trace, bandwidth=a.bandwidth)
    at = [scn.with_tradeoff(TradeOff(latency_price=p, cost_price=scn.trade.cost_price)) for p in prices]
    cache: dict[tuple[Path, int], list[float]] = {}

    def test_rewards(run: Path, step: int) -> list[float]:
        if (run, step) not in cache:
            pol_dir = run / "replay" / str(step)
            if not (pol_dir / "policy.json").is_file():
                export_run(run, pol_dir, step=step, with_onnx=False)
            cache[run, step] = [evaluate(s.make_env("test"), [s.policy(pol_dir, "ppo")], a.requests, throughput=False)[0]["ppo"]["reward_mean"]
                                for s in at]
        return cache[run, step]

    names = ["shipped", *RULES, "best kept"]
    table: dict[str, list[list[float]]] = {n: [] for n in names}
    summary: dict[str, Any] = {"scenario": scn.label("test"), "prices": prices, "requests": a.requests, "runs": []}
    print(f"\n{scn.label('test')} | {a.requests} test requests per point | seeds {seeds} | training {train_s:.0f} s\n")
    print("| seed | rule | step kept | " + " | ".join(f"test reward at {p:g}" for p in prices) + " |")
    print("|---|---|---|" + "---|" * len(prices))
    for s in seeds:
        run = a.out / f"cond-s{s}"
        history, bad = read_jsonl(run / "validation.jsonl")
        if bad:
            print(f"{run / 'validation.jsonl'}: {bad} line(s) skipped (not JSON objects)", file=sys.stderr)
        chosen = picks(history)
        row: dict[str, Any] = {"seed": s, "evaluations": len(history), "picks": {}}
        for name, step in chosen.items():
            r = test_rewards(run, step)
            table[name].append(r)
            row["picks"][name] = {"step": step, "test_reward": r}
            print(f"| {s} | {name} | {step} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
        if a.ceiling_every:
            steps = sorted({int(m["timesteps"]) for m in history[:: a.ceiling_every]} | set(chosen.values()))
            evals = np.array([test_rewards(run, st) for st in steps])
            best = evals.max(axis=0)
            at_step = [steps[i] for i in evals.argmax(axis=0)]
            table["best kept"].append(best.tolist())
            row["best_kept"] = {"models_evaluated": len(steps), "test_reward": best.tolist(), "steps": at_step}
            print(f"| {s} | best kept ({len(steps)} models) | " + ", ".join(map(str, at_step)) + " | "
                  + " | ".join(f"{v:.4f}" for v in best) + " |")
        summary["runs"].append(row)
    print("\nmean (min-max) over seeds:\n")
    print("| rule | " + " | ".join(f"{p:g}" for p in prices) + " |")
    print("|---|" + "---|" * len(prices))
    for name in names:
        if table[name]:
            m = np.array(table[name])
            print(f"| {name} | " + " | ".join(f"{v:.4f} ({lo:.4f}-{hi:.4f})" for v, lo, hi in zip(m.mean(0), m.min(0), m.max(0))) + " |")
    (a.out / "selection_replay.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwritten: {a.out / 'selection_replay.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
