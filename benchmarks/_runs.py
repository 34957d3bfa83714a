"""What the training benchmarks share: train one run folder in a subprocess, or reuse it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def train_run(cmd: list[str], out: Path) -> tuple[Path, float]:
    """Run ``cmd`` (a ``train`` command line) into ``out`` unless it already holds an exported
    policy; returns the folder and the seconds spent (0 when reused)."""
    if (out / "policy" / "policy.json").is_file():
        return out, 0.0
    t0 = time.perf_counter()
    args = [*cmd, "--out", str(out), "--no-eval", "--quiet"] + (["--overwrite"] if (out / "run.json").is_file() else [])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"training {out} failed:\n{r.stderr[-2000:]}")
    return out, time.perf_counter() - t0
