"""Command line: ``mllm-offload {evaluate,train,synth,profiles}`` (also ``train.py``, ``evaluate.py``).

Bad input (unknown profile or policy, malformed trace or config, unreadable bandwidth file)
prints one line ``mllm-offload: error: ...`` naming the file/line and field, exits with status 2
and writes no output file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .config import EpisodeConfig, RewardWeights, ScenarioOverrides, load_yaml
from .errors import UserInputError

__all__ = ["main", "build_parser"]

DEFAULT_POLICIES = "edge,cloud,msao,tuned,oracle"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _add_scenario_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--profile", default="mobile-3g", help="synthetic profile (see `mllm-offload profiles`); also the system defaults [mobile-3g]")
    g.add_argument("--trace", type=Path, help="recorded request trace (JSONL, .jsonl.gz) instead of synthetic requests")
    g.add_argument("--bandwidth", help="folder of Pensieve/Mahimahi traces, 'constant:MBPS,...' or 'markov:NAME' [the profile's default]")
    g.add_argument("--config", type=Path, help="YAML overrides with sections system, reward, episode")
    g.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes [0]")
    g.add_argument("--episode-len", type=_positive_int, default=100, help="requests per episode [100]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mllm-offload", description="Learned edge/cloud offloading for multimodal LLM requests.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="evaluate policies side by side", description="Evaluate policies on the same requests, bandwidth traces and seeds; print a markdown table.")
    _add_scenario_args(ev)
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"], help="part of the requests and bandwidth folder to evaluate on [test]")
    ev.add_argument("--requests", type=_positive_int, default=2000, help="requests per policy [2000]")
    ev.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated: edge, cloud, random, msao, tuned, oracle [{DEFAULT_POLICIES}]")
    ev.add_argument("--json", type=Path, help="write metrics as JSON")
    ev.add_argument("--csv", type=Path, help="write metrics as CSV")
    ev.add_argument("--plots", type=Path, help="folder for PNG plots (latency CDF, score vs cloud share)")
    ev.add_argument("--no-throughput", action="store_true", help="skip the throughput search")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser("train", help="train PPO thresholds (small budget for now)", description="Train PPO on the training split, compare with MSAO on validation episodes.")
    _add_scenario_args(tr)
    tr.add_argument("--timesteps", type=_positive_int, default=20_000, help="PPO environment steps [20000]")
    tr.add_argument("--n-envs", type=_positive_int, default=1, help="parallel environments (SubprocVecEnv when > 1) [1]")
    tr.add_argument("--eval-requests", type=_positive_int, default=1000, help="validation requests for the before/after comparison [1000]")
    tr.add_argument("--out", type=Path, default=Path("runs/ppo"), help="run folder [runs/ppo]")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")

    sy = sub.add_parser("synth", help="write a synthetic request trace", description="Draw requests from a profile and write them as a JSONL trace.")
    sy.add_argument("--profile", default="mobile-3g", help="profile name [mobile-3g]")
    sy.add_argument("--requests", type=_positive_int, default=2000, help="requests [2000]")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")

    sub.add_parser("profiles", help="list synthetic profiles and their sources")
    return parser


# -- helpers -------------------------------------------------------------------------------------


def _progress(desc: str, quiet: bool):
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the train extra
        return None
    return lambda it: tqdm(it, desc=desc, file=sys.stderr, leave=False)


def _scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Validated env keyword arguments shared by every split."""
    from .traces.bandwidth import bandwidth_source
    from .traces.schema import load_trace
    from .traces.synth import get_profile

    prof = get_profile(args.profile)
    # never run longer episodes than the requests asked for
    ep_len = min(args.episode_len, getattr(args, "requests", args.episode_len))
    system, reward, episode = prof.system, RewardWeights(), EpisodeConfig(n_requests=ep_len)
    if args.config is not None:
        ov = load_yaml(args.config, ScenarioOverrides)
        system, reward, episode = ov.apply(str(args.config), system, reward, episode)
        if "n_requests" not in ov.episode:
            episode = episode.model_copy(update={"n_requests": ep_len})
    trace = load_trace(args.trace) if args.trace is not None else None
    bw = args.bandwidth or prof.bandwidth
    if not (bw.startswith("constant:") or bw.startswith("markov:")):
        bandwidth_source(bw, "all")  # validate every file once, up front
    return dict(profile=prof.name, trace=trace, bandwidth=bw, system=system, reward=reward, episode=episode)


def _make_env(scn: dict[str, Any], split: str):
    from .envs import OffloadEnv

    return OffloadEnv(split=split, **scn)


def _policies(names: str, scn: dict[str, Any], args: argparse.Namespace) -> list:
    from .agents.evaluation import run_episodes
    from .agents.heuristics import POLICY_NAMES, CloudOnly, EdgeOnly, HindsightOracle, MSAOHeuristic, RandomPolicy, TunedStatic

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise UserInputError("policies: empty list")
    for n in wanted:
        if n not in POLICY_NAMES:
            raise UserInputError(f"policies: unknown policy {n!r} (known: {', '.join(POLICY_NAMES)})")
    slo = scn["system"].slo_s
    out = []
    for n in wanted:
        if n == "edge":
            out.append(EdgeOnly())
        elif n == "cloud":
            out.append(CloudOnly())
        elif n == "random":
            out.append(RandomPolicy(args.seed))
        elif n == "msao":
            out.append(MSAOHeuristic(slo))
        elif n == "oracle":
            out.append(HindsightOracle())
        elif n == "tuned":
            train_env = _make_env(scn, "train")
            seeds = [10_000 + k for k in range(4)]

            def score(p) -> float:
                return sum(run_episodes(train_env, p, seeds).reward) / (len(seeds) * train_env.n_requests)

            out.append(TunedStatic.fit(score, progress=_progress("tuning static thresholds", args.quiet)))
    return out


# -- commands --------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .agents.evaluation import evaluate, markdown_table, write_csv, write_json, write_plots

    scn = _scenario(args)
    env = _make_env(scn, args.split)
    policies = _policies(args.policies, scn, args)
    t0 = time.perf_counter()
    results, logs = evaluate(env, policies, args.requests, seed=args.seed, throughput=not args.no_throughput, progress=_progress("evaluating", args.quiet))
    meta = {
        "profile": scn["profile"], "trace": str(args.trace) if args.trace else None,
        "bandwidth": scn["bandwidth"], "bandwidth_traces": len(env.bandwidths), "split": args.split,
        "requests": int(next(iter(results.values()))["requests"]), "episode_len": env.n_requests,
        "seed": args.seed, "slo_s": env.slo_s, "seconds": round(time.perf_counter() - t0, 2),
        "system": env.system_cfg.model_dump(), "reward": env.weights.model_dump(),
        "thresholds": {p.name: [p.th.tau_low, p.th.tau_high, p.th.tau_conf] for p in policies if hasattr(p, "th")},
    }
    print(f"{meta['profile'] if not args.trace else args.trace} | bandwidth {meta['bandwidth']} ({meta['bandwidth_traces']} traces, split {args.split}) | "
          f"{meta['requests']} requests per policy | SLO {env.slo_s:g} s\n")
    print(markdown_table(results))
    if args.json:
        write_json(args.json, results, meta)
    if args.csv:
        write_csv(args.csv, results)
    if args.plots:
        write_plots(args.plots, results, logs, env.slo_s)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from .agents.ppo import train_ppo
    except ImportError as e:  # pragma: no cover
        raise UserInputError(f"train: needs the 'train' extra (pip install 'mllm-offload[train]'): {e}") from None
    from .agents.evaluation import evaluate, markdown_table
    from .agents.heuristics import MSAOHeuristic

    scn = _scenario(args)
    val_env = _make_env(scn, "val")
    msao = MSAOHeuristic(scn["system"].slo_s)
    t0 = time.perf_counter()
    policy = train_ppo(lambda: _make_env(scn, "train"), args.timesteps, seed=args.seed, n_envs=args.n_envs, out_dir=args.out, progress_bar=not args.quiet)
    elapsed = time.perf_counter() - t0
    results, _ = evaluate(val_env, [msao, policy], args.eval_requests, seed=args.seed, throughput=False)
    print(f"trained PPO for {args.timesteps} steps in {elapsed:.1f} s; model in {args.out}/model.zip\n")
    print(markdown_table(results))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .traces.synth import generate

    trace = generate(args.profile, args.requests, args.seed, with_records=True)
    trace.write_jsonl(args.out)
    print(f"wrote {len(trace)} requests of profile {args.profile} to {args.out}")
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from .traces.synth import PROFILES

    for p in PROFILES.values():
        print(f"{p.name}: {p.description}")
        for k, v in p.sources.items():
            print(f"    {k}: {v}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"evaluate": cmd_evaluate, "train": cmd_train, "synth": cmd_synth, "profiles": cmd_profiles}[args.command]
    try:
        return handler(args)
    except UserInputError as e:
        print(f"mllm-offload: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mllm-offload: interrupted", file=sys.stderr)
        return 130


def main_train() -> int:
    """``python train.py ...`` = ``mllm-offload train ...``."""
    return main(["train", *sys.argv[1:]])


def main_evaluate() -> int:
    """``python evaluate.py ...`` = ``mllm-offload evaluate ...``."""
    return main(["evaluate", *sys.argv[1:]])
