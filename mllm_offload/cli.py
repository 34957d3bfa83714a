"""Command line: ``mllm-offload {evaluate,train,export,synth,profiles,tiny-model,serve,route,record,report,shapes}`` (also ``train.py``, ``evaluate.py``).

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
_REPO = Path(__file__).resolve().parent.parent
_DEFAULT_HP = "configs/ppo.yaml"


def _int_at_least(lo: int):
    """An argparse ``type``: an integer ``>= lo``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


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
    ev.add_argument("--policy", type=Path, action="append", default=[], metavar="DIR", help="an exported policy folder, evaluated as 'ppo' (repeatable)")
    ev.add_argument("--json", type=Path, help="write metrics as JSON")
    ev.add_argument("--csv", type=Path, help="write metrics as CSV")
    ev.add_argument("--plots", type=Path, help="folder for PNG plots (latency CDF, score vs cloud share)")
    ev.add_argument("--no-throughput", action="store_true", help="skip the throughput search")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")

    tr = sub.add_parser(
        "train", help="train PPO thresholds, evaluate against the baselines, export the policy",
        description="Train PPO on the training split (validation against MSAO on the validation split), "
        "export the best validated model to RUN_DIR/policy, then evaluate it with the baselines on the test split.",
    )
    _add_scenario_args(tr)
    tr.add_argument("--timesteps", type=_positive_int, help="PPO environment steps in total [hyperparameter file: n_timesteps]")
    tr.add_argument("--n-envs", type=_positive_int, help="parallel environments, SubprocVecEnv when > 1 [hyperparameter file: n_envs]")
    tr.add_argument("--hyperparams", type=Path, help=f"rl-zoo style YAML of PPO hyperparameters; section = profile name over 'default' [{_DEFAULT_HP}]")
    tr.add_argument("--score-floor", default="none", help="constrain the mean score: 'none' (plain reward), 'msao' (MSAO's score on training episodes) or a number in [0,1] [none]")
    tr.add_argument("--out", type=Path, default=Path("runs/ppo"), help="run folder [runs/ppo]")
    tr.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint (scenario and hyperparameters from RUN_DIR/run.json)")
    tr.add_argument("--eval-requests", type=_positive_int, default=2000, help="test requests per policy in the final comparison [2000]")
    tr.add_argument("--baselines", default="edge,cloud,msao,tuned,oracle", help="policies compared with PPO at the end [edge,cloud,msao,tuned,oracle]")
    tr.add_argument("--no-eval", action="store_true", help="skip the final comparison on the test split")
    tr.add_argument("--throughput", action="store_true", help="include the throughput search in the final comparison")
    tr.add_argument("--json", type=Path, help="also write the final comparison as JSON [RUN_DIR/eval_test.json always]")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or validation lines")

    ex = sub.add_parser("export", help="export a training run as a deployable policy artifact",
                        description="Write policy.json + policy.npz + policy.onnx from RUN_DIR (after a parity check against SB3).")
    ex.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ex.add_argument("--out", type=Path, help="artifact folder [RUN_DIR/policy]")
    ex.add_argument("--which", choices=["best", "final"], default="best", help="best validated model or the last one [best]")
    ex.add_argument("--no-onnx", action="store_true", help="skip policy.onnx (numpy backend only)")

    sy = sub.add_parser("synth", help="write a synthetic request trace", description="Draw requests from a profile and write them as a JSONL trace.")
    sy.add_argument("--profile", default="mobile-3g", help="profile name [mobile-3g]")
    sy.add_argument("--requests", type=_positive_int, default=2000, help="requests [2000]")
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")

    sub.add_parser("profiles", help="list synthetic profiles and their sources")

    tm = sub.add_parser("tiny-model", help="write a tiny random-weight VLM checkpoint (for tests and demos)",
                        description="Build a small LLaVA (CLIP vision tower + Llama text model) with an offline tokenizer and processor; "
                        "it loads with AutoProcessor + AutoModelForImageTextToText like any checkpoint.")
    tm.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    tm.add_argument("--seed", type=int, default=0, help="weight seed [0]")

    sv = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible API (a cloud node on loopback)",
                        description="Expose a local image-text-to-text model at /v1/chat/completions (streaming, logprobs), /v1/models, /health, /metrics.")
    sv.add_argument("--model", type=Path, required=True, help="local model folder (with its processor)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs --api-key [127.0.0.1]")
    sv.add_argument("--port", type=int, default=8000, help="port [8000]")
    sv.add_argument("--served-name", help="model name clients use [folder name]")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/*")
    sv.add_argument("--device", default="cpu", help="torch device [cpu]")
    sv.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype [auto]")
    sv.add_argument("--threads", type=_positive_int, help="torch threads [torch default]")
    sv.add_argument("--max-queue", type=_positive_int, default=16, help="requests in flight before answering 429 [16]")
    sv.add_argument("--slowdown", type=float, default=1.0, help="compute factor >= 1: wait (F-1) x each forward pass, to stand in for a slower GPU [1]")
    sv.add_argument("--unsupported", default="error", choices=["error", "ignore"],
                    help="a modality the model cannot take (audio): answer 400, or drop it and answer from the rest [error]")
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level [warning]")

    ro = sub.add_parser("route", help="serve the offloading router (OpenAI-compatible) in front of an edge and a cloud backend",
                        description="Route each chat completion to the edge, the cloud or both (speculation) with a policy; "
                        "log every request as a trace record in --log-dir.")
    _add_backend_args(ro)
    ro.add_argument("--policy", required=True, help="exported policy folder, or a heuristic name: msao, edge, cloud")
    ro.add_argument("--policy-backend", default="numpy", choices=["numpy", "onnx"], help="policy inference backend [numpy]")
    ro.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs --api-key [127.0.0.1]")
    ro.add_argument("--port", type=int, default=8080, help="port [8080]")
    ro.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/*")
    ro.add_argument("--log-dir", type=Path, default=Path("route-logs"), help="folder of the rotating trace logs [route-logs]")
    ro.add_argument("--log-max-mb", type=float, default=64.0, help="rotate a log file at this size, MB [64]")
    ro.add_argument("--max-queue", type=_positive_int, default=64, help="requests in flight before answering 429 [64]")
    ro.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MB [32]")
    ro.add_argument("--edge-concurrency", type=_positive_int, default=1, help="edge generations at once [1]")
    ro.add_argument("--cloud-concurrency", type=_positive_int, default=16, help="cloud calls at once [16]")
    ro.add_argument("--edge-timeout", type=float, default=120.0, help="edge deadline, seconds [120]")
    ro.add_argument("--shadow-rate", type=float, default=0.0, help="fraction of requests whose other side is also run, for the logs [0]")
    ro.add_argument("--profile", default=None, help="take estimator priors and the SLO from this profile's system [policy's training profile, else mobile-3g]")
    ro.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level [warning]")

    rc = sub.add_parser("record", help="record a request trace by running both backends on a dataset",
                        description="Run the edge and the cloud on every item, measure latencies and confidences, score the answers, "
                        "compute MAS, and write a trace. Resumable: a rerun skips ids already recorded.")
    _add_backend_args(rc)
    rc.add_argument("--dataset", required=True, metavar="SPEC", help="vqav2:QUESTIONS.json,ANNOTATIONS.json,IMAGE_DIR | mmbench:FILE.tsv | jsonl:FILE")
    rc.add_argument("--out", type=Path, required=True, help="output trace (.jsonl or .jsonl.gz)")
    rc.add_argument("--limit", type=_positive_int, help="first N items only")
    rc.add_argument("--max-new-tokens", type=_positive_int, default=16, help="tokens per answer [16]")
    rc.add_argument("--edge-concurrency", type=_positive_int, default=1, help="edge generations at once [1]")
    rc.add_argument("--cloud-concurrency", type=_positive_int, default=4, help="cloud calls at once [4]")
    rc.add_argument("--rate", type=float, default=1.0, help="arrival rate of the recorded trace, requests/s [1.0]")
    rc.add_argument("--seed", type=int, default=0, help="seed of the arrival times [0]")
    rc.add_argument("--quiet", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", help="accuracy by difficulty, edge confidence AUROC and MAS correlations of a recorded trace",
                        description="Figures of a trace with both outcomes (see mllm_offload.traces.analysis).")
    rp.add_argument("--trace", required=True, type=Path, help="trace file, log folder or embedded name (shapes-real)")
    rp.add_argument("--json", type=Path, help="also write the figures as JSON")

    sh = sub.add_parser("shapes", help="procedural shapes VQA: write a dataset, train the edge/cloud VLM pair",
                        description="Shapes VQA: drawn scenes with exact-answer questions, and two real VLMs trained on them on CPU.")
    shs = sh.add_subparsers(dest="shapes_command", required=True, metavar="{generate,train}")
    sg = shs.add_parser("generate", help="write a shapes VQA dataset (JSONL + PNG/WAV media)",
                        description="Write OUT/shapes.jsonl (the generic jsonl dataset format) and OUT/media/.")
    sg.add_argument("--out", type=Path, required=True, help="output folder")
    sg.add_argument("--n", type=_positive_int, default=3000, help="items [3000]")
    sg.add_argument("--seed", type=int, default=0, help="item stream [0]; the models train on stream seed+1000")
    sg.add_argument("--size", type=_positive_int, default=224, help="canvas side, pixels [224]")
    sg.add_argument("--video-share", type=float, default=0.05, help="share of items that are short videos [0.05]")
    sg.add_argument("--audio-share", type=float, default=0.05, help="share of items with an audio clip [0.05]")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    st = shs.add_parser("train", help="train the edge and cloud shapes VLMs on CPU and report accuracy by difficulty",
                        description="Train OUT/edge and OUT/cloud (transformers LLaVA checkpoints) from scratch, deterministically by seed; "
                        "write OUT/train_report.json.")
    st.add_argument("--out", type=Path, required=True, help="output folder (OUT/edge, OUT/cloud)")
    st.add_argument("--which", default="edge,cloud", help="presets to train [edge,cloud]")
    st.add_argument("--seed", type=int, default=0, help="weights, batch order and training scenes [0]")
    st.add_argument("--scenes", type=_positive_int, default=5000, help="training scenes, a caption and 3 questions each [5000]")
    st.add_argument("--edge-steps", type=_positive_int, help="optimizer steps of the edge model [preset: 4000]")
    st.add_argument("--cloud-steps", type=_positive_int, help="optimizer steps of the cloud model [preset: 5400]")
    st.add_argument("--edge-vision-steps", type=_nonnegative_int,
                    help="vision-tower pretraining steps of the edge model before those; 0: none [preset: 1200]")
    st.add_argument("--cloud-vision-steps", type=_nonnegative_int,
                    help="vision-tower pretraining steps of the cloud model before those; 0: none [preset: 800]")
    st.add_argument("--eval", type=int, default=600, help="held-out items of `generate`'s stream 0 for the accuracy table; 0: none [600]")
    st.add_argument("--jobs", type=_positive_int, help="presets trained side by side in worker processes [min(presets, cores)]")
    st.add_argument("--threads", type=_positive_int, help="torch threads per preset [cores / jobs]")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backends")
    g.add_argument("--edge", required=True, help="edge model: a local model folder, or the URL of an OpenAI-compatible server")
    g.add_argument("--cloud", required=True, help="cloud model: URL of an OpenAI-compatible server (vLLM, SGLang, TGI, ...), or a local folder")
    g.add_argument("--edge-model", help="model name to request from an --edge URL [the server's first]")
    g.add_argument("--cloud-model", help="model name to request from a --cloud URL [the server's first]")
    g.add_argument("--edge-api-key", help="API key of an --edge URL")
    g.add_argument("--cloud-api-key", default=None, help="API key of a --cloud URL [env OPENAI_API_KEY]")
    g.add_argument("--cloud-timeout", type=float, default=30.0, help="cloud deadline per call, seconds [30]")
    g.add_argument("--threads", type=_positive_int, help="torch threads of local models [torch default]")
    g.add_argument("--unsupported", default="error", choices=["error", "ignore"],
                   help="local models: a modality the model cannot take (audio) is an error, or is dropped [error]")
    g.add_argument("--edge-slowdown", type=float, default=1.0, help="local edge model: compute factor >= 1, stands in for a slower device [1]")


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
    from .trace_format import load_trace
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
    from .agents.baselines import POLICY_NAMES, CloudOnly, EdgeOnly, HindsightOracle, MSAOHeuristic, RandomPolicy, TunedStatic

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
    if args.policy:
        from .agents.export import ArtifactPolicy

        for k, d in enumerate(args.policy):
            policies.append(ArtifactPolicy(d, "ppo" if k == 0 else f"ppo:{d}"))
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
    summary = _gap_summary(results)
    if summary:
        print("\n" + summary)
    if args.json:
        write_json(args.json, results, meta)
    if args.csv:
        write_csv(args.csv, results)
    if args.plots:
        write_plots(args.plots, results, logs, env.slo_s)
    return 0


def _hyperparams(args: argparse.Namespace, section: str):
    from pydantic import ValidationError

    from .config import PPOHyperparams, format_validation_error, load_hyperparams

    path = args.hyperparams
    if path is None and (_REPO / _DEFAULT_HP).is_file():
        path = _REPO / _DEFAULT_HP
    hp = load_hyperparams(path, section) if path is not None else PPOHyperparams()
    upd = {k: v for k, v in (("n_timesteps", args.timesteps), ("n_envs", args.n_envs)) if v is not None}
    if upd:
        try:
            hp = PPOHyperparams.model_validate({**hp.model_dump(), **upd})
        except ValidationError as e:
            raise UserInputError(format_validation_error("train: --timesteps/--n-envs", e)) from None
    return hp, (str(path) if path is not None else "built-in defaults")


_RUN_ARGS = ("profile", "trace", "bandwidth", "config", "seed", "episode_len", "score_floor", "hyperparams")


def _resume_args(args: argparse.Namespace) -> argparse.Namespace:
    """Restore the scenario of a run from RUN_DIR/run.json (explicit --timesteps/--n-envs win)."""
    run = args.resume
    rj = run / "run.json"
    if not rj.is_file():
        raise UserInputError(f"{run}: not a run directory (no run.json)")
    import json

    try:
        saved = json.loads(rj.read_text(encoding="utf-8"))["args"]
    except (ValueError, KeyError) as e:
        raise UserInputError(f"{rj}: unreadable: {e}") from None
    for k in _RUN_ARGS:
        v = saved.get(k)
        setattr(args, k, Path(v) if k in ("trace", "config", "hyperparams") and v is not None else v)
    if args.timesteps is None:
        args.timesteps = saved.get("timesteps")
    args.out = run
    return args


def _score_floor(text: str, scn: dict[str, Any]) -> float | None:
    if text == "none":
        return None
    if text == "msao":
        from .agents.ppo import msao_reference

        env = _make_env(scn, "train")
        return msao_reference(env, [50_000 + k for k in range(16)])["score_mean"]
    try:
        v = float(text)
    except ValueError:
        raise UserInputError(f"--score-floor: expected 'msao', 'none' or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise UserInputError(f"--score-floor: must be in [0, 1], got {v}")
    return v


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from ._io import atomic_write_text

    resume = args.resume is not None
    if resume:
        args = _resume_args(args)
    scn = _scenario(args)
    hp, hp_source = _hyperparams(args, scn["profile"])
    from .agents.export import ArtifactPolicy, export_run
    from .agents.ppo import train

    run = args.out
    floor = _score_floor(str(args.score_floor), scn)
    run_args = {k: (str(getattr(args, k)) if isinstance(getattr(args, k), Path) else getattr(args, k)) for k in _RUN_ARGS}
    run_args["timesteps"] = hp.n_timesteps
    record = {
        "args": run_args, "hyperparams": hp.model_dump(), "hyperparams_source": hp_source, "score_floor_value": floor,
        "export_meta": {"profile": scn["profile"], "bandwidth": scn["bandwidth"], "trace": run_args["trace"],
                        "seed": args.seed, "timesteps": hp.n_timesteps, "score_floor": floor,
                        "hyperparams": hp.model_dump(), "slo_s": scn["system"].slo_s},
    }
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "run.json", json.dumps(record, indent=2) + "\n")
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    log(f"training PPO on {scn['profile']} | bandwidth {scn['bandwidth']} | {hp.n_timesteps} steps, {hp.n_envs} envs | "
        f"hyperparameters: {hp_source} | score floor: {'none' if floor is None else f'{floor:.3f}'} | run: {run}")
    res = train(lambda split: _make_env(scn, split), hp, run, seed=args.seed, resume=resume,
                progress_bar=not args.quiet, score_floor=floor, log=log)
    policy_dir = export_run(run, run / "policy")
    best = res.best
    print(f"trained {res.timesteps} steps in {res.seconds:.0f} s; best validation reward {best.get('reward_mean', float('nan')):.4f} "
          f"at {best.get('timesteps', 0)} steps (MSAO {res.msao_validation['reward_mean']:.4f}); policy exported to {policy_dir}")
    if args.no_eval:
        return 0
    from .agents.evaluation import evaluate, markdown_table, write_json

    env = _make_env(scn, "test")
    args.requests = args.eval_requests
    pols = _policies(args.baselines, scn, args) + [ArtifactPolicy(policy_dir, "ppo")]
    results, _ = evaluate(env, pols, args.eval_requests, seed=0, throughput=args.throughput,
                          progress=_progress("evaluating on the test split", args.quiet))
    print(f"\ntest split: {len(env.bandwidths)} bandwidth traces, {int(results['ppo']['requests'])} requests per policy, SLO {env.slo_s:g} s\n")
    print(markdown_table(results))
    summary = _gap_summary(results)
    if summary:
        print("\n" + summary)
    meta = {"profile": scn["profile"], "bandwidth": scn["bandwidth"], "split": "test", "seed": 0,
            "policy": str(policy_dir), "train_seed": args.seed, "timesteps": res.timesteps, "train_seconds": round(res.seconds, 1)}
    write_json(run / "eval_test.json", results, meta)
    if args.json:
        write_json(args.json, results, meta)
    return 0


def _gap_summary(results: dict[str, dict[str, float]]) -> str:
    """One line: share of the MSAO -> oracle reward gap that PPO recovers, and the side conditions."""
    if not {"ppo", "msao", "oracle"} <= results.keys():
        return ""
    r = {k: v["reward_mean"] for k, v in results.items()}
    gap = r["oracle"] - r["msao"]
    rec = (r["ppo"] - r["msao"]) / gap if gap > 0 else float("nan")
    p, m = results["ppo"], results["msao"]
    parts = [f"gap recovered (R_ppo - R_msao)/(R_oracle - R_msao) = {rec:.3f}",
             f"p95 {p['latency_p95_s']:.2f} s vs MSAO {m['latency_p95_s']:.2f} s",
             f"score {p['score_mean']:.3f} vs MSAO {m['score_mean']:.3f} ({100 * (p['score_mean'] - m['score_mean']):+.1f} pts)"]
    if "tuned" in r:
        parts.append(f"reward {r['ppo']:.4f} vs tuned {r['tuned']:.4f}")
    return "; ".join(parts)


def cmd_export(args: argparse.Namespace) -> int:
    from .agents.export import export_run

    out = export_run(args.run_dir, args.out, which=args.which, with_onnx=not args.no_onnx)
    print(f"exported {args.which} model of {args.run_dir} to {out}")
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


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from .shapes.tiny import build_tiny_vlm

    model = build_tiny_vlm(args.out, seed=args.seed)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({n:,} parameters, seed {args.seed})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .mllm_backends.hf_local import HFLocalBackend, check_model_dir
    from .mllm_backends.serve import is_loopback, run_server

    if not 0 < args.port < 65536:
        raise UserInputError(f"--port: must be in 1..65535, got {args.port}")
    if not is_loopback(args.host) and not args.api_key:
        raise UserInputError(f"--host {args.host}: refusing to bind a non-loopback address without --api-key")
    check_model_dir(args.model)
    backend = HFLocalBackend(args.model, device=args.device, dtype=args.dtype, threads=args.threads, slowdown=args.slowdown,
                             unsupported=args.unsupported)
    name = args.served_name or backend.name
    print(f"serving {args.model} as {name!r} on http://{args.host}:{args.port}/v1", flush=True)
    run_server(backend, name, args.host, args.port, api_key=args.api_key, max_queue=args.max_queue, log_level=args.log_level)
    return 0


def _backend(spec: str, role: str, args: argparse.Namespace, timeout_s: float):
    """A backend from ``--edge``/``--cloud``: an http(s) URL or a local model folder."""
    import os

    if spec.startswith(("http://", "https://")):
        from .mllm_backends.openai_compat import OpenAICompatBackend

        key = getattr(args, f"{role}_api_key") or (os.environ.get("OPENAI_API_KEY") if role == "cloud" else None)
        return OpenAICompatBackend(spec, getattr(args, f"{role}_model"), api_key=key, timeout_s=timeout_s, name=f"{role}:{spec}")
    from .mllm_backends.hf_local import HFLocalBackend, check_model_dir

    check_model_dir(spec)
    return HFLocalBackend(spec, threads=args.threads, unsupported=args.unsupported, slowdown=args.edge_slowdown if role == "edge" else 1.0)


def cmd_route(args: argparse.Namespace) -> int:
    from .mllm_backends.serve import is_loopback
    from .runtime import OffloadPolicy
    from .runtime.router import Router, RouterConfig
    from .runtime.server import run_route_server
    from .runtime.tracelog import TraceLog
    from .traces.synth import get_profile

    if not 0 < args.port < 65536:
        raise UserInputError(f"--port: must be in 1..65535, got {args.port}")
    if not is_loopback(args.host) and not args.api_key:
        raise UserInputError(f"--host {args.host}: refusing to bind a non-loopback address without --api-key")
    for flag, v in (("--edge-timeout", args.edge_timeout), ("--cloud-timeout", args.cloud_timeout), ("--log-max-mb", args.log_max_mb), ("--max-body-mb", args.max_body_mb)):
        if not v > 0:
            raise UserInputError(f"{flag}: must be > 0, got {v}")
    if not 0.0 <= args.shadow_rate <= 1.0:
        raise UserInputError(f"--shadow-rate: must be in [0, 1], got {args.shadow_rate}")
    policy = OffloadPolicy.load(args.policy, backend=args.policy_backend)
    trained = (policy.manifest.training or {}).get("profile") if policy.manifest is not None else None
    system = get_profile(args.profile or trained or "mobile-3g").system
    if policy.kind == "heuristic" and policy.manifest is None and args.policy == "msao":
        policy = OffloadPolicy.heuristic("msao", slo_s=system.slo_s)
    edge = _backend(args.edge, "edge", args, args.edge_timeout)
    cloud = _backend(args.cloud, "cloud", args, args.cloud_timeout)
    cfg = RouterConfig(edge_timeout_s=args.edge_timeout, cloud_timeout_s=args.cloud_timeout, edge_concurrency=args.edge_concurrency,
                       cloud_concurrency=args.cloud_concurrency, shadow_rate=args.shadow_rate, system=system)
    from .recording.record import hardware_info

    log = TraceLog(args.log_dir, {"edge_model": getattr(edge, "name", args.edge), "cloud_model": getattr(cloud, "name", args.cloud),
                                  "policy": policy.name, "policy_path": str(args.policy), "hardware": hardware_info()},
                   max_bytes=int(args.log_max_mb * 1024 * 1024))
    router = Router(edge, cloud, policy, cfg, log)
    print(f"routing on http://{args.host}:{args.port}/v1 (edge {args.edge}, cloud {args.cloud}, policy {policy.name}); logs in {args.log_dir}", flush=True)
    run_route_server(router, args.host, args.port, api_key=args.api_key, max_queue=args.max_queue,
                     max_body_bytes=int(args.max_body_mb * 1024 * 1024), log_level=args.log_level)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    import asyncio

    from .traces.datasets import load_dataset
    from .recording.record import record_dataset

    if not args.rate > 0:
        raise UserInputError(f"--rate: must be > 0, got {args.rate}")
    if args.out.suffix not in (".jsonl", ".gz"):
        raise UserInputError(f"--out {args.out}: expected a .jsonl or .jsonl.gz file")
    items = load_dataset(args.dataset, limit=args.limit)
    edge = _backend(args.edge, "edge", args, 600.0)
    cloud = _backend(args.cloud, "cloud", args, args.cloud_timeout)

    async def run():
        try:
            return await record_dataset(items, edge, cloud, args.out, meta={"dataset": args.dataset, "edge_path": args.edge, "cloud_path": args.cloud},
                                        max_new_tokens=args.max_new_tokens, edge_concurrency=args.edge_concurrency,
                                        cloud_concurrency=args.cloud_concurrency, rate_rps=args.rate, seed=args.seed,
                                        timeout_s=max(args.cloud_timeout, 600.0), progress=not args.quiet)
        finally:
            await edge.aclose()
            await cloud.aclose()

    s = asyncio.run(run())
    print(f"wrote {args.out}: {s.recorded} new records, {s.resumed} resumed, {s.skipped} skipped, {s.seconds:.1f} s; "
          f"mean score edge {s.edge_score:.3f}, cloud {s.cloud_score:.3f}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from ._io import atomic_write_text
    from .traces.analysis import format_report, trace_report
    from .trace_format import load_trace

    rep = trace_report(load_trace(args.trace))
    print(f"{args.trace}: {rep.get('records', 0)} records with both outcomes")
    print(format_report(rep))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(rep, indent=2))
    return 0 if rep.get("records") else 2


def cmd_shapes(args: argparse.Namespace) -> int:
    if args.shapes_command == "generate":
        from .shapes.vqa import write_dataset

        for flag, v in (("--video-share", args.video_share), ("--audio-share", args.audio_share)):
            if not 0.0 <= v <= 1.0:
                raise UserInputError(f"{flag}: must be in [0, 1], got {v}")
        t0 = time.perf_counter()
        path = write_dataset(args.out, args.n, seed=args.seed, size=args.size, video_share=args.video_share,
                             audio_share=args.audio_share, progress=_progress("generate", args.quiet))
        print(f"wrote {args.n} items to {path} in {time.perf_counter() - t0:.1f} s; use --dataset jsonl:{path}")
        return 0
    import json

    from .shapes.models import PRESETS, train_presets

    which = [w.strip() for w in args.which.split(",") if w.strip()]
    for w in which:
        if w not in PRESETS:
            raise UserInputError(f"--which: unknown preset {w!r} (known: {', '.join(PRESETS)})")
    if args.eval < 0:
        raise UserInputError(f"--eval: must be >= 0, got {args.eval}")
    if len(set(which)) != len(which):
        raise UserInputError(f"--which: a preset is named twice in {args.which!r}")
    import os

    jobs = args.jobs if args.jobs is not None else min(len(which), os.cpu_count() or 1)
    t0 = time.perf_counter()
    done = train_presets(which, args.out, seed=args.seed, train_scenes=args.scenes, steps={w: getattr(args, f"{w}_steps") for w in which},
                         vision_steps={w: getattr(args, f"{w}_vision_steps") for w in which}, n_eval=args.eval, jobs=jobs, threads=args.threads,
                         # bars from two processes would overwrite each other: side by side, log lines instead
                         log_every=0 if args.quiet or jobs == 1 else 200, progress=not args.quiet and jobs == 1)
    wall = time.perf_counter() - t0
    reports = {}
    for w, rep in done.items():
        reports[w] = {"parameters": rep.parameters, "seconds": round(rep.seconds, 1), "steps": rep.steps, "vision_steps": rep.vision_steps,
                      "final_loss": round(rep.final_loss, 4), "accuracy": rep.accuracy, "accuracy_by_qtype": rep.accuracy_by_qtype}
    print(f"trained {', '.join(which)} in {wall:.0f} s wall time ({jobs} job{'s' if jobs > 1 else ''})")
    prior: dict[str, dict[str, float]] = {}
    if args.eval:
        from .shapes.vqa import DIFFICULTIES, QUESTION_TYPES

        first = next(iter(done.values()))  # every preset trains on the same questions: one prior
        prior = {"accuracy": first.prior, "accuracy_by_qtype": first.prior_by_qtype}
        for key, cols in (("accuracy", ("all", *DIFFICULTIES)), ("accuracy_by_qtype", ("all", *QUESTION_TYPES))):
            print(f"{'accuracy on ' + str(args.eval) + ' held-out items (stream 0)':<41} | " + " | ".join(f"{c:>7}" for c in cols))
            rows = [(f"{w:<8} {r['parameters']:>10,} params, {r['seconds']:>6.0f} s", r[key]) for w, r in reports.items()]
            rows.append(("prior (question-blind majority answer)", prior[key]))
            for label, acc in rows:
                print(f"{label:<41} | " + " | ".join(f"{acc.get(c, float('nan')):7.3f}" for c in cols))
    from ._io import atomic_write_text

    atomic_write_text(args.out / "train_report.json", json.dumps({"seed": args.seed, "scenes": args.scenes, "jobs": jobs, "wall_seconds": round(wall, 1), "models": reports,
                                                                    "prior": prior}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"evaluate": cmd_evaluate, "train": cmd_train, "export": cmd_export, "synth": cmd_synth, "profiles": cmd_profiles,
               "tiny-model": cmd_tiny_model, "serve": cmd_serve, "route": cmd_route, "record": cmd_record, "shapes": cmd_shapes, "report": cmd_report}[args.command]
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
