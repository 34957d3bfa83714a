"""``mllm-offload train`` (``python train.py``): train PPO, export the best validated policy, and
compare it with the baselines on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import add_scenario_args, positive_int, progress, scenario


def add_parser(sub: Any) -> None:
    tr = sub.add_parser(
        "train", help="train PPO thresholds, evaluate against the baselines, export the policy",
        description="Train PPO on the training split (validation against MSAO on the validation split), "
        "export the best validated model to RUN_DIR/policy, then evaluate it with the baselines on the test split.",
    )
    add_scenario_args(tr, seed_help="seed of PPO (weights, training episodes) [0]; the test episodes are always seed 0")
    tr.add_argument("--timesteps", type=positive_int, help="PPO environment steps in total [hyperparameter file: n_timesteps]")
    tr.add_argument("--n-envs", type=positive_int, help="parallel environments, SubprocVecEnv when > 1 [hyperparameter file: n_envs]")
    tr.add_argument("--hyperparams", type=Path,
                    help="rl-zoo style YAML of PPO hyperparameters; section = profile name over 'default' [the shipped configs/ppo.yaml]")
    tr.add_argument("--score-floor", default="none",
                    help="constrain the mean score: 'none' (plain reward), 'msao' (MSAO's score on training episodes) or a number in [0,1] [none]")
    tr.add_argument("--out", type=Path, default=Path("runs/ppo"), help="run folder [runs/ppo]")
    tr.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint (scenario and hyperparameters from RUN_DIR/run.json)")
    tr.add_argument("--eval-requests", type=positive_int, default=2000, help="test requests per policy in the final comparison [2000]")
    tr.add_argument("--baselines", default="edge,cloud,msao,tuned,oracle", help="policies compared with PPO at the end [edge,cloud,msao,tuned,oracle]")
    tr.add_argument("--no-eval", action="store_true", help="skip the final comparison on the test split")
    tr.add_argument("--throughput", action="store_true", help="include the throughput search in the final comparison")
    tr.add_argument("--json", type=Path, help="also write the final comparison as JSON [RUN_DIR/eval_test.json always]")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or validation lines")
    tr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..agents.export import export_run
    from ..agents.ppo import train
    from ..agents.ppo.run import RUN_ARGS, hyperparams, read_run_args, score_floor, write_run_record

    resume = args.resume is not None
    if resume:
        saved = read_run_args(args.resume)
        for k in RUN_ARGS:
            setattr(args, k, saved[k])
        if args.timesteps is None:
            args.timesteps = saved["timesteps"]
        args.out = args.resume
    scn = scenario(args)
    hp, hp_source = hyperparams(args.hyperparams, scn.profile, args.timesteps, args.n_envs)
    run_dir: Path = args.out
    floor = score_floor(str(args.score_floor), scn)
    run_args = {k: getattr(args, k) for k in RUN_ARGS}
    run_args["timesteps"] = hp.n_timesteps
    export_meta = {"profile": scn.profile, "bandwidth": scn.bandwidth, "trace": None if args.trace is None else str(args.trace),
                   "seed": args.seed, "timesteps": hp.n_timesteps, "score_floor": floor,
                   "hyperparams": hp.model_dump(), "slo_s": scn.slo_s, "system": scn.system.model_dump()}
    write_run_record(run_dir, run_args, hp, hp_source, floor, export_meta)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    log(f"training PPO on {scn.profile} | bandwidth {scn.bandwidth} | {hp.n_timesteps} steps, {hp.n_envs} envs | "
        f"hyperparameters: {hp_source} | score floor: {'none' if floor is None else f'{floor:.3f}'} | run: {run_dir}")
    res = train(scn.make_env, hp, run_dir, seed=args.seed, resume=resume, progress_bar=not args.quiet, score_floor=floor, log=log)
    policy_dir = export_run(run_dir, run_dir / "policy")
    best = res.best
    print(f"trained {res.timesteps} steps in {res.seconds:.0f} s; best validation reward {best.get('reward_mean', float('nan')):.4f} "
          f"at {best.get('timesteps', 0)} steps (MSAO {res.msao_validation['reward_mean']:.4f}); policy exported to {policy_dir}")
    if args.no_eval:
        return 0
    return _final_comparison(args, scn, policy_dir, res)


def _final_comparison(args: argparse.Namespace, scn: Any, policy_dir: Path, res: Any) -> int:
    from .. import agents  # noqa: F401  (registers tuned and oracle)
    from ..evaluation import evaluate, gap_summary, markdown_table, write_json

    env = scn.make_env("test")
    pols = scn.policies(args.baselines, seed=args.seed, progress=progress("tuning static thresholds", args.quiet))
    pols.append(scn.policy(policy_dir, "ppo"))
    results, _ = evaluate(env, pols, args.eval_requests, seed=0, throughput=args.throughput,
                          progress=progress("evaluating on the test split", args.quiet))
    print(f"\ntest split: {len(env.bandwidths)} bandwidth traces, {int(results['ppo']['requests'])} requests per policy, SLO {env.slo_s:g} s\n")
    print(markdown_table(results))
    summary = gap_summary(results)
    if summary:
        print("\n" + summary)
    meta = {"profile": scn.profile, "bandwidth": scn.bandwidth, "split": "test", "seed": 0,
            "policy": str(policy_dir), "train_seed": args.seed, "timesteps": res.timesteps, "train_seconds": round(res.seconds, 1)}
    write_json(args.out / "eval_test.json", results, meta)
    if args.json:
        write_json(args.json, results, meta)
    return 0
