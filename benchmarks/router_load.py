"""Load test of the router on loopback: 1000 requests, 50 in flight, tiny edge and cloud models.

    python benchmarks/router_load.py [--requests 1000] [--concurrency 50]

Starts ``mllm-offload serve`` (tiny cloud model) and, for each of the policies ``edge`` (the local
edge model answers) and ``cloud`` (every request forwarded to the cloud node), an
``mllm-offload route`` server, then sends the requests with httpx. Per request, the router's
overhead is the client-measured latency minus the latency of the backend call that produced the
answer (``offload.backend_latency_s``): HTTP in and out of the router, media decoding, MAS, the
observation, the policy and the response ("client overhead"); the server also reports the part
spent inside the router process (``offload.router_overhead_s``: body parsing to response, minus
the backend call). Both policies are measured side by side in the same run. Reports lost
requests (anything but HTTP 200), p50/p99 overhead, the router process's memory (RSS) before and
after, and that the log holds one record per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mllm_offload", *args]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{' '.join(args[:4])} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{url} did not come up")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _body(i: int) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 4}


async def _load(url: str, n: int, concurrency: int) -> tuple[list[float], list[float], int]:
    bodies = [_body(i % 64) for i in range(n)]
    sem = asyncio.Semaphore(concurrency)
    overhead, latency, ok = [], [], 0
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(b: dict) -> None:
            nonlocal ok
            async with sem:
                t = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=b)
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    ok += 1
                    latency.append(dt)
                    off = r.json()["offload"]
                    overhead.append((dt - off["backend_latency_s"], off["router_overhead_s"]))
        await asyncio.gather(*(one(b) for b in bodies))
    return overhead, latency, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, seed in (("edge", 0), ("cloud", 1)):
            subprocess.run(_cli("tiny-model", "--out", str(t / name), "--seed", str(seed)), check=True, capture_output=True)
        cport = _port()
        curl = f"http://127.0.0.1:{cport}"
        cloud = _start(_cli("serve", "--model", str(t / "cloud"), "--port", str(cport), "--max-queue", "1000", "--threads", "1"), curl)
        rows = []
        try:
            for policy in ("edge", "cloud"):
                rport = _port()
                rurl = f"http://127.0.0.1:{rport}"
                logs = t / f"logs-{policy}"
                router = _start(_cli("route", "--edge", str(t / "edge"), "--cloud", curl, "--policy", policy, "--port", str(rport),
                                     "--log-dir", str(logs), "--edge-concurrency", "1000", "--cloud-concurrency", "1000",
                                     "--max-queue", "1000", "--threads", "1"), rurl)
                try:
                    asyncio.run(_load(rurl, 20, 10))  # warm-up
                    rss0 = _rss_mb(router.pid)
                    t0 = time.perf_counter()
                    over, lat, ok = asyncio.run(_load(rurl, args.requests, args.concurrency))
                    wall = time.perf_counter() - t0
                    rss1 = _rss_mb(router.pid)
                    time.sleep(1.0)
                    logged = sum(len(f.read_text().splitlines()) - 1 for f in logs.glob("route-*.jsonl"))
                finally:
                    router.terminate()
                    router.wait(20)
                o = np.array(over) * 1e3
                rows.append((policy, args.requests - ok, *np.percentile(o[:, 0], [50, 99]), *np.percentile(o[:, 1], [50, 99]),
                             np.percentile(np.array(lat) * 1e3, 50), rss0, rss1, logged - 20, wall))
        finally:
            cloud.terminate()
            cloud.wait(20)
    print(f"router_load: {args.requests} requests, {args.concurrency} in flight, tiny models on loopback (2 threads of this machine shared)")
    print("| policy | lost | client overhead p50 / p99 (ms) | in-router overhead p50 / p99 (ms) | latency p50 (ms) | RSS before / after (MB) | logged | wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for p, lost, o50, o99, i50, i99, l50, r0, r1, logged, wall in rows:
        print(f"| {p} | {lost} | {o50:.2f} / {o99:.2f} | {i50:.2f} / {i99:.2f} | {l50:.0f} | {r0:.0f} / {r1:.0f} | {logged} | {wall:.1f} |")
    print("goal: 0 lost, p50 overhead <= 1 ms")
    return 0 if all(r[1] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
