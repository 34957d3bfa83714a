"""Shared helpers of the routing tests: CLI command, free ports, subprocess servers, constant policies."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cli(*args: str) -> list[str]:
    """The installed ``mllm-offload`` command (``python -m mllm_offload`` where it is not on PATH)."""
    exe = shutil.which("mllm-offload")
    return [exe, *args] if exe else [sys.executable, "-m", "mllm_offload", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], url: str, timeout_s: float = 120.0) -> subprocess.Popen:
    """Start a server subprocess and wait until ``url``/health answers 200."""
    import httpx

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[:3]} exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{args[:3]} did not come up within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def const_policy(path: Path, action: tuple[float, float, float], name: str = "const") -> Path:
    """An exported MLP artifact whose action is always ``action`` (zero weights, bias = action)."""
    from mllm_offload.artifact import Network, write_artifact
    from mllm_offload.observation import OBSERVATION_SPEC
    from mllm_offload.tradeoff import TradeOffRange

    n = len(OBSERVATION_SPEC)
    return write_artifact(path, kind="mlp", tradeoff_range=TradeOffRange(), name=name, arrays={"w0": np.zeros((3, n), np.float32), "b0": np.asarray(action, np.float32)},
                          network=Network(layers=[n, 3]))


def png(seed: int = 0, size: tuple[int, int] = (30, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def metric(url: str, name: str) -> float:
    """A Prometheus sample's value (the first line starting with ``name``)."""
    import httpx

    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {":
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {url}/metrics")


def random_mlp(sizes: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random actor weights ``w0, b0, ...`` for an artifact with layer ``sizes`` (``w`` shaped ``(out, in)``)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i in range(len(sizes) - 1):
        arrays[f"w{i}"] = rng.normal(0, 0.5, (sizes[i + 1], sizes[i])).astype(np.float32)
        arrays[f"b{i}"] = rng.normal(0, 0.1, sizes[i + 1]).astype(np.float32)
    return arrays
