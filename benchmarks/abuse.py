"""Resource-exhaustion and abuse attacks against `mllm-offload serve` and `mllm-offload route` on loopback.

    python benchmarks/abuse.py [--only NAME ...] [--max-queue 16]

Builds two tiny random-weight models (the cloud one of a seed whose generations run to
``max_tokens``), starts ``serve`` (the cloud model, with an API key) and ``route`` (the edge
model folder, that serve as its cloud, policy ``cloud``, an API key) on free loopback ports, then
runs each attack against each server, one at a time. After each attack and its normal request,
the server is given ``--settle`` seconds to have nothing in flight, else it is restarted (said in
the note), so that one attack's leftovers do not count against the next:

===================  =========================================================================
attack               what is sent
===================  =========================================================================
prompt 1.9 MB        one text prompt of 1.9 MB ("hello world " x 160000)
png 13000x13000      one valid 8-bit grey PNG of 13000x13000 (164 KB; 169 MP once decoded)
4 pngs 13000x13000   four of them in one request
chunked 600 MB       a 600 MB body, chunked (no Content-Length), 1 MB a chunk from a raw
                     socket; sending pauses when the answer arrives, then the rest is offered
                     to see whether the server goes on reading (the note)
40 streams > queue   40 concurrent ``stream: true`` requests (max_tokens 4096) against
                     ``--max-queue`` 16; each dropped once its status is known (10 s at most)
dropped request      a non-streamed request (max_tokens 4096) whose socket closes after 0.5 s;
                     "time" is until the server has nothing in flight again
wrong API key        a chat request with another key
/metrics no key      ``GET /metrics`` without the key (a key is set)
malformed JSON       a body that is not JSON
300 images           300 small valid PNGs (32x32) in one request
40 images > context  40 of them: few enough to parse, too many image tokens for the tiny
                     models' context of 512 (a 400 from the model, which route must pass on)
===================  =========================================================================

Per attack and server the table gives the HTTP status (several: counts), the time to answer,
the server process's RSS growth (VmRSS after minus before) and peak growth (VmHWM, reset before
the attack through /proc/PID/clear_refs, minus VmRSS before), all from /proc/PID/status, and the
time of a normal request (``"hi"``, 2 tokens) sent right after. The last line says whether every
attack met the goal: a 4xx (or served within the limits) in under 2 s, peak RSS growth under
300 MB, the normal request after it answered 200 in under 2 s. Exit status 0 when it did.

Loopback only, bounded (each attack has its own client timeout; the whole run stops after
``--max-seconds``); the servers are stopped and the temporary folder removed however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from _servers import free_port, start, stop

CHAT = "/v1/chat/completions"
KEY = "abuse-key"
AUTH = {"authorization": f"Bearer {KEY}"}
NORMAL = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
GOAL_S, GOAL_MB = 2.0, 300.0


# ----------------------------------------------------------------------------- processes


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mllm_offload", *args]


def _status_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5, Linux 4.0+); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- payloads


def big_png(w: int = 13000, h: int = 13000) -> bytes:
    """A valid 8-bit grey PNG of ``w`` x ``h``, all black: 164 KB at 13000 x 13000 (169 MP decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + w)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def small_png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def images_body(images: list[bytes], text: str = "what is it?") -> dict:
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b).decode()}} for b in images]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 4}


# ----------------------------------------------------------------------------- attacks


@dataclass
class Outcome:
    status: str
    took_s: float
    note: str = ""
    ok: bool = True  # the answer itself met the goal (a 4xx, or served within the limits)


@dataclass
class Target:
    """One server under attack; ``launch`` starts it (again) on ``port``."""

    name: str
    port: int
    max_queue: int
    launch: Callable[[], subprocess.Popen]
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc = self.launch()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def settle(t: Target, cap_s: float = 60.0) -> tuple[bool, float]:
    """Wait until ``t`` has nothing in flight; (settled, seconds waited)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < cap_s:
        try:
            if _in_flight(t) == 0:
                return True, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False, time.perf_counter() - t0


def _post(url: str, body: dict | bytes, *, headers: dict | None = None, timeout: float = 60) -> tuple[httpx.Response, float]:
    t = time.perf_counter()
    if isinstance(body, bytes):
        r = httpx.post(url + CHAT, content=body, headers={"content-type": "application/json", **AUTH, **(headers or {})}, timeout=timeout)
    else:
        r = httpx.post(url + CHAT, json=body, headers={**AUTH, **(headers or {})}, timeout=timeout)
    return r, time.perf_counter() - t


def _refused(r: httpx.Response, took: float, expect: tuple[int, ...]) -> Outcome:
    try:
        msg = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        msg = r.text[:80]
    return Outcome(str(r.status_code), took, msg[:90], ok=r.status_code in expect and took < GOAL_S)


def a_prompt(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, {"messages": [{"role": "user", "content": "hello world " * 160_000}], "max_tokens": 4})
    return _refused(r, took, (400,))


def a_png(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, images_body([p["png"]]))
    return _refused(r, took, (400,))


def a_pngs(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, images_body([p["png"]] * 4))
    return _refused(r, took, (400,))


def a_chunked(t: Target, p: dict, total_mb: int = 600) -> Outcome:
    """A chunked body of ``total_mb`` MB over a raw socket, 1 MB a chunk. Sending pauses when the
    answer arrives (or the server closes); the rest is then offered (2 s without progress at most)
    to see whether the server keeps reading after its answer."""
    head = (f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer {KEY}\r\n"
            "transfer-encoding: chunked\r\n\r\n").encode()
    frame = b"100000\r\n" + b" " * (1 << 20) + b"\r\n"
    sent, closed = 0, False
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        s.sendall(head)
        while sent < total_mb and not select.select([s], [], [], 0)[0]:
            try:
                s.sendall(frame)
            except OSError:  # reset, broken pipe, or 10 s without the server reading
                closed = True
                break
            sent += 1
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        except OSError:
            pass
        took = time.perf_counter() - t0
        more = 0
        if not closed:
            s.settimeout(2)
            try:
                while sent + more < total_mb:
                    s.sendall(frame)
                    more += 1
            except OSError:
                pass
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "no answer"
    after = f"then it read {more} MB more" if more > 8 else "then it closed the connection"
    return Outcome(status, took, f"answered after {sent} of {total_mb} MB sent, {after}", ok=status == "413" and took < GOAL_S)


def a_streams(t: Target, p: dict, n: int = 40, cap_s: float = 10.0) -> Outcome:
    """``n`` streams at once; each is held open until every status is in (``cap_s`` at most), then
    all are dropped. Time: until the last refusal; the note gives when the last admitted stream
    started (route answers a stream once its routing has settled)."""
    body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096, "stream": True}

    async def run() -> tuple[Counter, list[float], list[float]]:
        statuses: Counter = Counter()
        refused_at: list[float] = []
        started_at: list[float] = []
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=t.url, headers=AUTH, timeout=cap_s + 5, limits=limits) as client:
            everyone = asyncio.Event()
            hold = asyncio.Event()
            t0 = time.perf_counter()

            async def one() -> None:
                try:
                    async with client.stream("POST", CHAT, json=body) as r:
                        statuses[r.status_code] += 1
                        (started_at if r.status_code == 200 else refused_at).append(time.perf_counter() - t0)
                        if sum(statuses.values()) == n:
                            everyone.set()
                        await hold.wait()  # keep the stream open until every status is in
                except httpx.HTTPError as e:
                    statuses[type(e).__name__] += 1

            tasks = [asyncio.create_task(one()) for _ in range(n)]
            try:
                await asyncio.wait_for(everyone.wait(), cap_s)
            except TimeoutError:
                pass
            hold.set()  # drop them all
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        missing = n - sum(statuses.values())
        if missing:
            statuses[f"no status in {cap_s:.0f} s"] += missing
        return statuses, refused_at, started_at

    statuses, refused_at, started_at = asyncio.run(run())
    admitted = statuses.get(200, 0)
    text = ", ".join(f"{c}x{s}" for s, c in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    took = max(refused_at, default=float("nan"))
    last = f"last admitted stream started at {max(started_at):.2f} s" if started_at else "no stream started"
    ok = set(statuses) <= {200, 429} and admitted <= t.max_queue and bool(refused_at) and took < GOAL_S
    return Outcome(text, took, f"--max-queue {t.max_queue}; {last}; all dropped then", ok=ok)


def _in_flight(t: Target) -> int:
    """Requests the server has in flight (``/health``, open without the key)."""
    return int(httpx.get(t.url + "/health", timeout=5).json()["in_flight"])


def a_dropped(t: Target, p: dict, cap_s: float = 30.0) -> Outcome:
    payload = json.dumps({"messages": [{"role": "user", "content": "go"}], "max_tokens": 4096}).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nauthorization: Bearer {KEY}\r\n"
            f"content-length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", t.port)) as s:
        s.sendall(head + payload)
        time.sleep(0.5)
        seen = _in_flight(t)
    t0 = time.perf_counter()
    while _in_flight(t) and time.perf_counter() - t0 < cap_s:
        time.sleep(0.05)
    took = time.perf_counter() - t0
    left = _in_flight(t)
    note = f"in flight while connected: {seen}; after the drop: {left}" + (f" after {cap_s:.0f} s" if left else "")
    if not seen:
        note += " (it ended before the drop: not a test)"
    return Outcome("dropped", took, note, ok=bool(seen) and left == 0 and took < GOAL_S)


def a_wrong_key(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, NORMAL, headers={"authorization": "Bearer not-the-key"})
    return _refused(r, took, (401,))


def a_metrics(t: Target, p: dict) -> Outcome:
    t0 = time.perf_counter()
    r = httpx.get(t.url + "/metrics", timeout=30)
    return _refused(r, time.perf_counter() - t0, (401,))


def a_malformed(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, b'{"messages": [{"role": "user", "content": "hi"}, ')
    return _refused(r, took, (400,))


def a_300(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, images_body(p["small"]))
    out = _refused(r, took, (200, 400))
    if r.status_code == 200:
        out.note = "served"
    return out


def a_40(t: Target, p: dict) -> Outcome:
    r, took = _post(t.url, images_body(p["small"][:40]))
    return _refused(r, took, (400,))


ATTACKS: dict[str, Callable[[Target, dict], Outcome]] = {
    "prompt 1.9 MB": a_prompt,
    "png 13000x13000": a_png,
    "4 pngs 13000x13000": a_pngs,
    "chunked 600 MB": a_chunked,
    "40 streams > queue": a_streams,
    "dropped request": a_dropped,
    "wrong API key": a_wrong_key,
    "/metrics no key": a_metrics,
    "malformed JSON": a_malformed,
    "300 images": a_300,
    "40 images > context": a_40,
}


def normal(t: Target) -> tuple[int | str, float]:
    t0 = time.perf_counter()
    try:
        r = httpx.post(t.url + CHAT, json=NORMAL, headers=AUTH, timeout=60)
        status: int | str = r.status_code
    except httpx.HTTPError as e:
        status = type(e).__name__
    return status, time.perf_counter() - t0


# ----------------------------------------------------------------------------- main


class RunTimeout(BaseException):
    """--max-seconds passed (a BaseException: no attack's own error handling swallows it)."""


def _timeout(signum: int, frame: object) -> None:
    raise RunTimeout("abuse.py: --max-seconds passed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(ATTACKS), metavar="ATTACK", help="run these attacks only")
    ap.add_argument("--servers", nargs="+", choices=["serve", "route"], default=["serve", "route"])
    ap.add_argument("--max-queue", type=int, default=16, help="--max-queue of both servers [16]")
    ap.add_argument("--policy", default="cloud", help="route's --policy [cloud: every request goes through serve]")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="after an attack, wait this long for the server to have nothing in flight, else restart it [60]")
    ap.add_argument("--max-seconds", type=int, default=1200, help="stop the whole run after this [1200]")
    args = ap.parse_args()
    attacks = {k: v for k, v in ATTACKS.items() if not args.only or k in args.only}
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(args.max_seconds)
    payloads = {"png": big_png(), "small": [small_png(i) for i in range(300)]}
    rows: list[tuple] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
        d = Path(tmp)
        serve = Target("serve", free_port(), args.max_queue, lambda: proc_serve())
        route = Target("route", free_port(), args.max_queue, lambda: proc_route())

        def proc_serve() -> subprocess.Popen:
            return start(_cli("serve", "--model", str(d / "cloud"), "--port", str(serve.port), "--served-name", "tiny-cloud",
                               "--api-key", KEY, "--max-queue", str(args.max_queue), "--threads", "1"), serve.url, d / "serve.log")

        def proc_route() -> subprocess.Popen:
            return start(_cli("route", "--edge", str(d / "edge"), "--cloud", serve.url, "--cloud-api-key", KEY, "--policy", args.policy,
                               "--port", str(route.port), "--api-key", KEY, "--max-queue", str(args.max_queue), "--threads", "1",
                               "--log-dir", str(d / "logs")), route.url, d / "route.log")

        try:
            # the cloud model's seed is one whose random weights run to max_tokens (no early end of sequence)
            for name, seed in (("edge", 0), ("cloud", 2)):
                subprocess.run(_cli("tiny-model", "--out", str(d / name), "--seed", str(seed)), check=True, capture_output=True)
            serve.start()
            route.start()
            targets = [t for t in (serve, route) if t.name in args.servers]
            for t in targets:
                normal(t)  # warm-up: the first request loads what it loads
                normal(t)
            for t in targets:
                for name, attack in attacks.items():
                    before = _status_mb(t.pid)
                    peak_ok = _reset_peak(t.pid)
                    try:
                        out = attack(t, payloads)
                    except Exception as e:  # report and go on: the next request says whether the server survived
                        out = Outcome(type(e).__name__, float("nan"), str(e)[:90], ok=False)
                    alive = t.proc is not None and t.proc.poll() is None
                    after = _status_mb(t.pid) if alive else {"VmRSS": float("nan"), "VmHWM": float("nan")}
                    grew = after["VmRSS"] - before["VmRSS"]
                    peak = (after["VmHWM"] if peak_ok else max(after["VmHWM"], before["VmHWM"])) - before["VmRSS"]
                    st, took_n = normal(t)
                    met = out.ok and peak < GOAL_MB and st == 200 and took_n < GOAL_S
                    note = out.note
                    settled, waited = settle(t, args.settle) if alive else (False, 0.0)
                    if not settled:  # the next attack gets a fresh server
                        note += f"; still busy {waited:.0f} s later: {t.name} restarted" if alive else f"; {t.name} died: restarted"
                        t.stop()
                        t.start()
                        normal(t)
                    elif waited > 1.0:
                        note += f"; nothing in flight {waited:.0f} s later"
                    rows.append((t.name, name, out.status, out.took_s, grew, peak, st, took_n, met, note))
                    print(f"  {t.name:5s} {name:20s} {out.status:22s} {out.took_s:6.2f} s  peak +{peak:5.0f} MB  next {st} {took_n:.2f} s",
                          file=sys.stderr, flush=True)
        finally:
            signal.alarm(0)
            route.stop()
            serve.stop()
    print(f"abuse: {len(attacks)} attacks x {len(targets)} servers, tiny models on loopback (route: policy {args.policy}, serve as its cloud), "
          f"--max-queue {args.max_queue}, {time.perf_counter() - t_start:.0f} s")
    print("| server | attack | HTTP status | time to answer (s) | RSS growth / peak (MB) | normal request after (s) | goal met | note |")
    print("|---|---|---|---|---|---|---|---|")
    for server, name, status, took, grew, peak, st, took_n, met, note in rows:
        after = f"{took_n:.2f}" if st == 200 else f"{st} in {took_n:.2f}"
        print(f"| {server} | {name} | {status} | {took:.2f} | {grew:+.0f} / {peak:+.0f} | {after} | {'yes' if met else '**no**'} | {note} |")
    goal = f"goal (a 4xx or served within limits in < {GOAL_S:g} s, peak RSS growth < {GOAL_MB:g} MB, normal request after: 200 in < {GOAL_S:g} s)"
    failed = [f"{r[0]} {r[1]}" for r in rows if not r[8]]
    if failed:
        print(f"{goal}: NOT met by {len(failed)} of {len(rows)}: {', '.join(failed)}")
        return 1
    print(f"{goal}: met by all {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
