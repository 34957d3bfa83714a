"""What the server benchmarks share: a free loopback port, start a server subprocess and wait for
its ``/health``, stop it. Imported by ``abuse.py`` and ``router_load.py`` (run as scripts from
this folder)."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], url: str, log: Path | None = None) -> subprocess.Popen:
    """Start ``args`` (its output to ``log``, a temporary file by default, never a pipe that can
    fill up) in a session of its own, and wait until ``url``/health answers 200."""
    if log is None:
        log = Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1])
    out = log.open("w")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(args[2:4])} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{url} did not come up")


def stop(proc: subprocess.Popen) -> None:
    """Terminate ``proc``, kill it if it does not stop within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
