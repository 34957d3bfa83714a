"""Load test of the router on loopback: 1000 requests, 50 in flight, tiny edge and cloud models.

    python benchmarks/router_load.py [--requests 1000] [--concurrency 50] [--kill-cloud-after N]

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

``--kill-cloud-after N`` runs, instead of those two, one run under the policy ``cloud`` in which
the cloud node is killed (SIGKILL) once N requests have been answered: the router must lose
nothing, answering the rest from the edge (``answered_by: edge-degraded``). It reports the
requests, lost ones, p50/p99 latency, how many were answered by the cloud and edge-degraded, the
router's RSS before, after and at its peak (VmHWM), and the logged records.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _servers import free_port, start


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mllm_offload", *args]


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _body(i: int) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]}],
            "max_tokens": 4}


async def _load(url: str, n: int, concurrency: int, *, kill_after: int | None = None, kill_pid: int | None = None,
                answered_by: dict[str, list[float]] | None = None) -> tuple[list[float], list[float], int]:
    """Send ``n`` requests, ``concurrency`` at once; (overheads, latencies, answered). With
    ``kill_after``: SIGKILL ``kill_pid`` once that many have been answered. ``answered_by``
    collects the latencies by ``offload.answered_by``."""
    bodies = [_body(i % 64) for i in range(n)]
    sem = asyncio.Semaphore(concurrency)
    overhead, latency, ok = [], [], 0
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(b: dict) -> None:
            nonlocal ok
            async with sem:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=b)
                except httpx.HTTPError:
                    return  # lost
                dt = time.perf_counter() - t
                if r.status_code == 200:
                    ok += 1
                    latency.append(dt)
                    off = r.json()["offload"]
                    overhead.append((dt - off["backend_latency_s"], off["router_overhead_s"]))
                    if answered_by is not None:
                        answered_by.setdefault(off["answered_by"], []).append(dt)
                    if kill_after is not None and kill_pid is not None and ok == kill_after:
                        os.kill(kill_pid, signal.SIGKILL)
        await asyncio.gather(*(one(b) for b in bodies))
    return overhead, latency, ok


def _kill_run(t: Path, args: argparse.Namespace) -> int:
    """The cloud node killed mid-load (see the module docstring); prints its table, returns the exit status."""
    cport = free_port()
    curl = f"http://127.0.0.1:{cport}"
    cloud = start(_cli("serve", "--model", str(t / "cloud"), "--port", str(cport), "--max-queue", "1000", "--threads", "1"), curl)
    rport = free_port()
    rurl = f"http://127.0.0.1:{rport}"
    logs = t / "logs-kill"
    router = None
    try:
        router = start(_cli("route", "--edge", str(t / "edge"), "--cloud", curl, "--policy", "cloud", "--port", str(rport),
                             "--log-dir", str(logs), "--edge-concurrency", "1000", "--cloud-concurrency", "1000",
                             "--max-queue", "1000", "--threads", "1"), rurl)
        asyncio.run(_load(rurl, 20, 10))  # warm-up, the cloud alive
        rss0 = _rss_mb(router.pid)
        by: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        _, lat, ok = asyncio.run(_load(rurl, args.requests, args.concurrency, kill_after=args.kill_cloud_after, kill_pid=cloud.pid,
                                       answered_by=by))
        wall = time.perf_counter() - t0
        rss1, hwm = _rss_mb(router.pid), _rss_mb(router.pid, "VmHWM")
        killed = cloud.poll() is not None
        time.sleep(1.0)
        logged = sum(len(f.read_text().splitlines()) - 1 for f in logs.glob("route-*.jsonl"))
    finally:
        if router is not None:
            router.terminate()
            router.wait(20)
        if cloud.poll() is None:
            cloud.terminate()
        cloud.wait(20)

    def pct(xs: list[float]) -> str:
        return f"{np.percentile(np.array(xs) * 1e3, 50):.0f} / {np.percentile(np.array(xs) * 1e3, 99):.0f}" if xs else "-"

    lost = args.requests - ok
    n_cloud, n_edge = len(by.get("cloud", [])), len(by.get("edge-degraded", []))
    print(f"router_load: {args.requests} requests, {args.concurrency} in flight, policy cloud, the cloud node killed (SIGKILL) after "
          f"{args.kill_cloud_after} answers, tiny models on loopback (2 threads of this machine shared)")
    print("| requests | cloud killed after | lost | answered by cloud / edge-degraded / other | latency p50 / p99 (ms) | edge-degraded p50 / p99 (ms) "
          "| RSS before / after / peak (MB) | logged | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.requests} | {args.kill_cloud_after}{'' if killed else ' (not killed)'} | {lost} | {n_cloud} / {n_edge} / {ok - n_cloud - n_edge} | "
          f"{pct(lat)} | {pct(by.get('edge-degraded', []))} | {rss0:.0f} / {rss1:.0f} / {hwm:.0f} | {logged - 20} | {wall:.1f} |")
    print("goal: 0 lost (a cloud call that fails falls back to the edge: edge-degraded)")
    return 0 if lost == 0 and killed else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--kill-cloud-after", type=int, default=None, metavar="N",
                    help="instead of the two policy runs: one run (policy cloud) that kills the cloud node after N answers")
    args = ap.parse_args()
    if args.kill_cloud_after is not None and not 0 < args.kill_cloud_after < args.requests:
        ap.error(f"--kill-cloud-after: must be between 1 and --requests - 1 ({args.requests - 1}), got {args.kill_cloud_after}")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, seed in (("edge", 0), ("cloud", 1)):
            subprocess.run(_cli("tiny-model", "--out", str(t / name), "--seed", str(seed)), check=True, capture_output=True)
        if args.kill_cloud_after is not None:
            return _kill_run(t, args)
        cport = free_port()
        curl = f"http://127.0.0.1:{cport}"
        cloud = start(_cli("serve", "--model", str(t / "cloud"), "--port", str(cport), "--max-queue", "1000", "--threads", "1"), curl)
        rows = []
        try:
            for policy in ("edge", "cloud"):
                rport = free_port()
                rurl = f"http://127.0.0.1:{rport}"
                logs = t / f"logs-{policy}"
                router = start(_cli("route", "--edge", str(t / "edge"), "--cloud", curl, "--policy", policy, "--port", str(rport),
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
