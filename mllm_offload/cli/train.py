"""``mllm-offload train`` (``python train.py``): train PPO, export the best validated policy, and
compare it with the baselines on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ._common import add_scenario_args, progress, scenario
from ._parser import nonnegative_float, positive_float, positive_int

#: The parser's defaults of the arguments ``--resume`` restores (to tell a given flag from a default).
_DEFAULTS: dict[str, Any] = {"profile": "mobile-3g", "trace": None, "bandwidth": None, "config": None, "seed": 0, "episode_len": 100,
                             "score_floor": "none", "hyperparams": None, "latency_price": None, "cost_price": None,
                             "latency_price_range": None, "p95_budget": None, "cost_budget": None, "upload_budget": None,
                             "edge_tier": None, "upload_plans": "auto"}


def add_parser(sub: Any) -> None:
    tr = sub.add_parser(
        "train", help="train PPO thresholds, evaluate against the baselines, export the policy",
        description="Train PPO on the training split (validation against MSAO on the validation split), "
        "export the best validated model to RUN_DIR/policy, then evaluate it with the baselines on the test split.",
    )
    add_scenario_args(tr, seed_help="seed of PPO (weights, training episodes) [0]; the test episodes are always seed 0")
    tr.add_argument("--timesteps", type=positive_int,
                    help="PPO environment steps in total, rounded up to whole rollouts of n_steps x n_envs [hyperparameter file: n_timesteps]")
    tr.add_argument("--n-envs", type=positive_int, help="parallel environments, SubprocVecEnv when > 1 [hyperparameter file: n_envs]")
    tr.add_argument("--hyperparams", type=Path,
                    help="rl-zoo style YAML of PPO hyperparameters: section 'default', then the profile's, then an embedded trace's (shapes-real) [the shipped configs/ppo.yaml]")
    tr.add_argument("--score-floor", default="none",
                    help="constrain the mean score: 'none' (plain reward), 'msao' (MSAO's score on training episodes) or a number in [0,1] [none]")
    tr.add_argument("--latency-price-range", metavar="LO,HI",
                    help="without --latency-price: train ONE policy conditioned on the latency price, drawn log-uniformly per "
                    "episode from [LO, HI]; it serves any price in the range at deploy time [0.02,1.0]")
    tr.add_argument("--p95-budget", type=positive_float, metavar="SECONDS",
                    help="hold the 95th-percentile latency at or below SECONDS (a Lagrange multiplier in training) [none]")
    tr.add_argument("--cost-budget", type=nonnegative_float, metavar="USD_PER_1K",
                    help="hold the cloud cost at or below USD_PER_1K dollars per 1000 requests [none]")
    tr.add_argument("--upload-budget", type=nonnegative_float, metavar="MB",
                    help="hold the mean upload at or below MB megabytes (1e6 bytes) per request, e.g. a mobile data plan "
                    "(with upload plans the policy can send less of each request, not only fewer of them) [none]")
    tr.add_argument("--out", type=Path, default=Path("runs/ppo"), help="run folder, new or empty [runs/ppo]")
    tr.add_argument("--overwrite", action="store_true", help="replace the run already in --out (a folder holding run.json)")
    tr.add_argument("--resume", type=Path, metavar="RUN_DIR",
                    help="continue RUN_DIR from its last checkpoint (scenario and hyperparameters from RUN_DIR/run.json); "
                    "this unpickles SB3's model.zip and vecnormalize.pkl of RUN_DIR: resume only run folders you trust")
    tr.add_argument("--eval-requests", type=positive_int, default=2000, help="test requests per policy in the final comparison [2000]")
    tr.add_argument("--baselines", help="policies compared with PPO at the end "
                    "[edge,cloud,msao,tuned,oracle, moaoff with upload plans, and oracle-expected on a synthetic profile's requests]")
    tr.add_argument("--latency-prices", metavar="LIST",
                    help="for a conditioned policy: the latency prices of the final frontier "
                    "[quality-first,balanced,latency-first: 0.05,0.2,1]")
    tr.add_argument("--no-eval", action="store_true", help="skip the final comparison on the test split")
    tr.add_argument("--throughput", action="store_true", help="include the throughput search in the final comparison")
    tr.add_argument("--json", type=Path, help="also write the final comparison as JSON [RUN_DIR/eval_test.json always]")
    tr.add_argument("--keep-evaluations", action="store_true",
                    help="keep every validated model in RUN_DIR/evals/STEPS/ (about 100 KB each), to study checkpoint selection "
                    "against RUN_DIR/validation.jsonl; export one with 'export RUN_DIR --step STEPS' (--resume of such a run keeps them too)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or validation lines")
    tr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..agents.ppo.run import RUN_ARGS, final_comparison, hyperparams, read_run_args, resumed_hyperparams, train_and_export
    from ..evaluation import write_json
    from ..evaluation.report import comparison_text

    resume = args.resume is not None
    if args.latency_prices:
        from ..tradeoff import parse_prices

        parse_prices(args.latency_prices)  # a bad list fails now, not after training
        if args.latency_price is not None or args.no_eval:
            raise UserInputError("--latency-prices: the final frontier of a conditioned policy; not with --latency-price or --no-eval")
    if resume:
        _restore(args, read_run_args(args.resume), RUN_ARGS)
    if args.baselines is not None:
        from ..policy import check_names

        check_names(args.baselines, "--baselines")  # a typo fails now, not after training
    replace = not resume and args.out.exists() and any(args.out.iterdir())
    if replace:
        _check_replace(args.out, args.overwrite)  # deleted only once every input has been checked
    scn = scenario(args)
    # resumed: the hyperparameters it was trained with (run.json), not today's file; an embedded
    # trace's section (shapes-real) is tuned for its upload plans: only with them
    recorded = resumed_hyperparams(args.resume, args.timesteps, args.n_envs) if resume else None
    hp, hp_source = recorded or hyperparams(args.hyperparams, scn.profile, args.timesteps, args.n_envs,
                                            trace=args.trace if scn.plans_on else None)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    done = train_and_export(scn, {k: getattr(args, k) for k in RUN_ARGS}, hp, hp_source, args.out, floor_spec=str(args.score_floor),
                            resume=resume, progress_bar=not args.quiet, log=log, replace=replace,
                            keep_evaluations=args.keep_evaluations or (resume and (args.out / "evals").is_dir()))
    res, best = done.result, done.result.best
    print(f"trained {res.timesteps} steps in {res.seconds:.0f} s; best validation reward {best.get('reward_mean', float('nan')):.4f} "
          f"at {best.get('timesteps', 0)} steps (MSAO {res.msao_validation['reward_mean']:.4f}); policy exported to {done.policy_dir}")
    if args.no_eval:
        return 0
    scn = done.scenario or scn  # at a trade-off the policy serves, with the budgets
    baselines = args.baselines or ("edge,cloud,msao" + (",moaoff" if scn.plans_on else "") + ",tuned,oracle"
                                   + (",oracle-expected" if scn.trace is None else ""))
    results, logs, env = final_comparison(scn, done.policy_dir, baselines, args.eval_requests, seed=args.seed, throughput=args.throughput,
                                    tuning_progress=progress("tuning static thresholds", args.quiet),
                                    progress=progress("evaluating on the test split", args.quiet))
    print(f"\ntest split: {len(env.bandwidths)} bandwidth traces, {int(results['ppo']['requests'])} requests per policy, SLO {env.slo_s:g} s, "
          f"{scn.trade.label()}\n")
    text, v = comparison_text(results, logs, env.n_requests)
    print(text)
    _print_budgets(args, results["ppo"])
    meta = {"profile": scn.profile, "bandwidth": scn.bandwidth, "split": "test", "seed": 0, "tradeoff": scn.trade.model_dump(),
            "policy": str(done.policy_dir), "train_seed": args.seed, "timesteps": res.timesteps, "train_seconds": round(res.seconds, 1)}
    extra = _final_frontier(args, scn, done.policy_dir, baselines)
    write_json(args.out / "eval_test.json", results, meta, v, extra=extra)
    if args.json:
        write_json(args.json, results, meta, v, extra=extra)
    return 0


def _print_budgets(args: argparse.Namespace, ppo: dict[str, float]) -> None:
    """Whether the trained policy holds its budgets on the test split (one line each)."""
    from ..tradeoff import BUDGETS

    for b in BUDGETS:
        limit = getattr(args, b.arg)
        if limit is not None:
            ok = ppo[b.metric] <= limit
            print("\n" + b.line.format(limit=limit, value=ppo[b.metric]) + f" ({'held' if ok else 'NOT held'}; score {ppo['score_mean']:.3f})")


def _final_frontier(args: argparse.Namespace, scn: Any, policy_dir: Path, baselines: str) -> dict[str, Any] | None:
    """For a policy conditioned on the trade-off: the frontier at the named settings (or
    ``--latency-prices``), the winner of each, and ``RUN_DIR/frontier.png``."""
    from ..agents import threshold_grid
    from ..evaluation import frontier, frontier_text, write_frontier_plot
    from ..tradeoff import PRESETS, parse_prices

    pol = scn.policy(policy_dir, "ppo")
    trange = getattr(pol, "tradeoff_range", None)
    if trange is None or trange.latency_price[0] == trange.latency_price[1]:
        return None
    prices = parse_prices(args.latency_prices) if args.latency_prices else list(PRESETS.values())
    fr = frontier(scn, pol, baselines, prices, args.eval_requests, seed=0, progress=progress("frontier", args.quiet),
                  tuned_grid=threshold_grid())
    print(f"\n## One policy, every trade-off: the frontier at latency prices {', '.join(f'{p:g}' for p in fr.prices)} "
          f"(tuned and MSAO refitted at each price; {fr.requests} test requests per point)\n")
    print(frontier_text(fr, None if args.latency_prices else PRESETS))
    write_frontier_plot(args.out / "frontier.png", fr, scn.label("test"))
    print(f"\nfrontier plot: {args.out / 'frontier.png'}")
    out: dict[str, Any] = fr.to_json()
    return out


def _restore(args: argparse.Namespace, saved: dict[str, Any], keys: tuple[str, ...]) -> None:
    """``--resume RUN_DIR``: the run's scenario and training arguments from its run.json; a flag
    given with another value is refused rather than silently ignored (``--timesteps`` and
    ``--n-envs`` may change)."""
    for k in keys:
        given, default = getattr(args, k), _DEFAULTS.get(k)
        if given != default and given != saved[k]:
            flag = "--" + k.replace("_", "-")
            raise UserInputError(f"{flag}: --resume takes it from {args.resume}/run.json ({saved[k]!r}); drop {flag} or start a new run")
        setattr(args, k, saved[k])
    if args.timesteps is None:
        args.timesteps = saved["timesteps"]
    args.out = args.resume


def _check_replace(out: Path, overwrite: bool) -> None:
    """An existing ``--out`` is replaced only with ``--overwrite``, and only if it is a run folder;
    :func:`~..agents.ppo.run.train_and_export` deletes it once the scenario and hyperparameters
    have passed their checks, so a mistyped flag leaves the old run whole."""
    if not overwrite:
        raise UserInputError(f"--out {out}: already holds files; pick another folder, add --overwrite to replace the run, "
                             f"or continue it with --resume {out}")
    if not (out / "run.json").is_file():
        raise UserInputError(f"--out {out}: not a run folder (no run.json); --overwrite only replaces a previous run")
