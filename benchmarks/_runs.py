"""What the training benchmarks share: their scenario flags, the train command, and training one run folder in a subprocess (or reusing it)."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

#: the training command a benchmark ran into a run folder (to refuse reusing it for another)
CMD_FILE = "bench_cmd.json"


def _shipped_hyperparams_sha() -> str:
    from mllm_offload.config import default_hyperparams_path

    return hashlib.sha256(default_hyperparams_path().read_bytes()).hexdigest()[:16]


def train_run(cmd: list[str], out: Path) -> tuple[Path, float]:
    """Run ``cmd`` (a ``train`` command line) into ``out`` unless it already holds an exported
    policy trained by the same command with the same shipped hyperparameter file; returns the
    folder and the seconds spent (0 when reused). A folder trained by another command (other
    flags, e.g. ``--upload-plans``) or under another version of the shipped hyperparameters is an
    error, not silently reused."""
    wanted = {"cmd": cmd[1:], "shipped_hyperparams_sha256": _shipped_hyperparams_sha()}  # cmd without the interpreter's path
    done = (out / "policy" / "policy.json").is_file()
    if done and (out / CMD_FILE).is_file():
        had = json.loads((out / CMD_FILE).read_text())
        if had != wanted:
            what = " ".join(had["cmd"] if isinstance(had, dict) else had)
            raise SystemExit(f"{out}: trained by another command or shipped hyperparameter file ({what}); use another --out or delete the folder")
    if done:
        return out, 0.0
    t0 = time.perf_counter()
    args = [*cmd, "--out", str(out), "--no-eval", "--quiet"] + (["--overwrite"] if (out / "run.json").is_file() else [])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"training {out} failed:\n{r.stderr[-2000:]}")
    (out / CMD_FILE).write_text(json.dumps(wanted))
    return out, time.perf_counter() - t0


def add_training_args(ap: argparse.ArgumentParser, trace_help: str) -> None:
    """The scenario and training-budget flags every training benchmark takes."""
    ap.add_argument("--profile", default="mobile-3g")
    ap.add_argument("--trace", help=trace_help)
    ap.add_argument("--bandwidth", help="bandwidth spec (a folder of real traces, pensieve-sample, markov:NAME) [the profile's]")
    ap.add_argument("--timesteps", type=int, help="PPO steps per training [the hyperparameter file's for the profile or embedded trace]")
    ap.add_argument("--seeds", type=seed_list, default="0,1,2", help="training seeds, comma-separated [0,1,2]")
    ap.add_argument("--requests", type=int, default=2000, help="test requests per point [2000]")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time [2]")


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (an argparse type: a bad list is one line and exit 2)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return seeds


def train_command(a: argparse.Namespace) -> list[str]:
    """``python -m mllm_offload train`` with the flags of :func:`add_training_args` that were given."""
    return [sys.executable, "-m", "mllm_offload", "train", "--profile", a.profile, *(["--trace", a.trace] if a.trace else []),
            *(["--bandwidth", a.bandwidth] if a.bandwidth else []), *(["--timesteps", str(a.timesteps)] if a.timesteps else [])]
