"""The edge tier, simulated and for real on loopback, side by side in one run.

    python benchmarks/edge_tier.py [--requests 96] [--concurrency 32] [--new-tokens 8] [--layers 10]

(a) **Simulated** (``edge_tier``, pure arithmetic): Qwen2-VL-2B (the shipped config) on the
    ``home-4`` cluster preset (laptop, Orin Nano, tablet, phone): the planner's throughput
    against the uniform split's and their ratio, p50/p95 latency of a first-come-first-served
    pipeline at 80 % of the uniform split's capacity (Poisson arrivals, 2000 requests), and per
    device the recovery time after it drops out, with its backup (switch) and by redeployment.

(a') **In the offload simulator** (``benchmarks/_edge_tier_sim.py``, the env's edge tier): the same
    model and cluster as the simulated edge of ``OffloadEnv``: EdgeOnly on mobile-3g requests at
    11x their rate, 200 paired episodes; p50/p95 request latency of the planner and the uniform
    split with every device up and with dropouts (10 min up / 1 min down per device), and the
    stall after a dropout with backups against redeployment.

(b) **Real, on loopback**: a tiny random LLaVA (built offline: 2 CLIP layers, ``--layers``
    Llama layers of width 128; 14 blocks by default) split over 3 worker processes emulating
    devices of relative speed 4, 2 and 1 (slowdowns 1, 2 and 4: after each forward pass a worker
    waits (F - 1) x that pass). The planner's split and the uniform split (equal block counts)
    are each served by a fresh 3-worker pipeline and loaded with ``--requests`` requests,
    ``--concurrency`` in flight (enough to keep every stage busy), each one 32x32 image and
    ``--new-tokens`` greedy tokens; throughput is requests answered per second of wall time.

    What makes the comparison honest: the planner must see what the blocks really cost *here*.
    Its FLOP model counts a prefill only, but on a CPU a small model's block time is mostly
    per-layer overhead and the decoder layers run at every decode step while the vision tower
    runs once: FLOPs would misjudge the blocks. So the block costs are **measured** first on
    this host (``measure_block_seconds``: the same request shape, prefill plus decode steps,
    median of 5) and given to the planner with the devices' true relative speeds and free links
    (loopback has no network to emulate): exactly what ``edge-cluster --costs measured`` does.
    Both splits run on the same host, in the same run, with the same slowdowns, threads (1 per
    worker) and requests; only the cut points differ. The emulated slowdown is what makes one
    worker slower, so the fastest worker's stage time is the host's real compute, and the
    coordinator's relay and framing overhead (the same for both splits) is included in the
    measured figures.

(c) **kill -9 under load**: during a load run, one worker is killed with SIGKILL; reported: the
    requests lost (must be 0), and the time from the kill until answer tokens flow again, with
    a backup (planner pipeline, backups placed by ``place_backups``: the stage is switched) and
    without one (uniform pipeline started without backups: a new worker process is started and
    loads the stage; the requests wait for it).

Prints figures only; nothing is hard-coded. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mllm_offload.cli.edge_cluster import block_costs, cluster_plan
from mllm_offload.edge_tier import (
    REFERENCE_FLOPS_PER_S,
    EdgeCluster,
    compare_plans,
    load_model_config,
    pipeline_completions,
    resolve_devices,
)
from mllm_offload.mllm_backends.base import MMRequest
from mllm_offload.mllm_backends.pipeline import PipelineBackend

SPEEDS = (4.0, 2.0, 1.0)


def simulated() -> None:
    """(a): the planner against the uniform split, queueing latency, dropout recovery (edge_tier arithmetic)."""
    model = load_model_config("qwen2-vl-2b")
    costs = model.costs()
    cluster = resolve_devices("home-4")
    comp = compare_plans(costs, cluster)
    print(f"(a) simulated: {model.name} on home-4 ({', '.join(cluster.names)}), {costs.tokens} LM tokens per request")
    print(f"    throughput: planner {comp.planner.throughput_rps:.2f} req/s, uniform {comp.uniform.throughput_rps:.2f} req/s, "
          f"ratio {comp.ratio:.2f}x")
    rate = 0.8 * comp.uniform.throughput_rps
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1.0 / rate, 2000))
    for plan in (comp.planner, comp.uniform):
        lat = pipeline_completions([s.stage_s for s in plan.stages], arrivals) - arrivals
        print(f"    {plan.label:<8} at {rate:.2f} req/s (80 % of uniform capacity): p50 {np.percentile(lat, 50) * 1e3:.0f} ms, "
              f"p95 {np.percentile(lat, 95) * 1e3:.0f} ms")
    print("    dropout: device lost -> recovery with backup (switch) | by redeployment")
    for d in comp.dropouts:
        sw = "-" if d.switch_s is None else f"{d.switch_s:.2f} s on {d.backup_device}"
        red = "no recovery" if d.redeploy_s is None else f"{d.redeploy_s:.1f} s"
        print(f"      {d.device:<18} {sw:<28} | {red}")


def _requests(n: int, new_tokens: int) -> list[MMRequest]:
    rng = np.random.default_rng(1)
    return [MMRequest(prompt=f"what is in picture {i}?", images=[rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)],
                      max_new_tokens=new_tokens, id=str(i)) for i in range(n)]


async def _load(backend: PipelineBackend, reqs: list[MMRequest], concurrency: int, kill_after_s: float | None = None,
                kill_worker: int = 1) -> tuple[float, int, float | None, float | None]:
    """``(wall seconds, requests lost, seconds from the kill until the stage had a worker again,
    seconds from the kill to the first answer token after it)``."""
    sem = asyncio.Semaphore(concurrency)

    async def one(r: MMRequest) -> None:
        async with sem:
            gen = await backend.generate(r)
            if gen.out_tokens < 1:
                raise RuntimeError(f"request {r.id}: no tokens")

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(r)) for r in reqs]
    t_kill = None
    if kill_after_s is not None:
        await asyncio.sleep(kill_after_s)
        t_kill = time.perf_counter()
        os.kill(backend.worker_pids()[kill_worker], signal.SIGKILL)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - t0
    lost = sum(isinstance(x, BaseException) for x in results)
    ready = back = None
    if t_kill is not None and backend.failures:
        ev = backend.failures[-1]
        ready = None if ev.ready_at is None else ev.ready_at - t_kill
        back = None if ev.recovered_at is None else ev.recovered_at - t_kill
    return wall, lost, ready, back


def _describe(label: str, plan, names: list[str]) -> str:  # type: ignore[no-untyped-def]
    cuts = " | ".join(f"{names[a]}..{names[b - 1]}" if b - a > 1 else names[a] for a, b in plan.stages)
    return f"    {label:<8} split: {cuts}  (planned bottleneck {plan.plan.bottleneck_s * 1e3:.1f} ms/request)"


def real(args: argparse.Namespace) -> None:
    """(b) and (c): two 3-worker pipelines of the same model, planner and uniform split, then kill -9."""
    with tempfile.TemporaryDirectory(prefix="edge-tier-bench-") as tmp:
        _real(args, Path(tmp) / "tiny")


def _real(args: argparse.Namespace, model_dir: Path) -> None:
    from mllm_offload.shapes.tiny import build_tiny_vlm

    build_tiny_vlm(model_dir, seed=0, text_layers=args.layers, text_hidden=128, heads=4, vision_layers=2)
    cluster = EdgeCluster(devices=[{"name": f"speed-{s:g}", "flops_per_s": s * REFERENCE_FLOPS_PER_S, "memory_bytes": 1e9,
                                    "link_mbps": 1000.0} for s in SPEEDS])
    costs = block_costs(model_dir, "measured", threads=1, host_flops_per_s=max(SPEEDS) * REFERENCE_FLOPS_PER_S)
    names = list(costs.names)
    print(f"\n(b) real, loopback: tiny LLaVA ({len(names)} blocks), 3 workers of relative speed {', '.join(f'{s:g}' for s in SPEEDS)} "
          f"(slowdowns {', '.join(f'{max(SPEEDS) / s:g}' for s in SPEEDS)}), {args.requests} requests, {args.concurrency} in flight, "
          f"{args.new_tokens} tokens each")
    print("    measured block ms per request: " + ", ".join(f"{n} {c / (max(SPEEDS) * REFERENCE_FLOPS_PER_S) * 1e3:.2f}"
                                                       for n, c in zip(names, costs.flops)))
    reqs = _requests(args.requests, args.new_tokens)
    results: dict[str, float] = {}
    kills: dict[str, tuple[int, float | None, float | None, str]] = {}
    for split, backups in (("planner", True), ("uniform", False)):
        plan = cluster_plan(costs, cluster, split=split, backups=backups)
        print(_describe(split, plan, names))
        with PipelineBackend(model_dir, plan.stages, slowdowns=plan.slowdowns, threads=[1] * 3, backups=plan.backups) as pb:
            asyncio.run(_load(pb, reqs[: args.concurrency], args.concurrency))  # warm-up
            walls = [asyncio.run(_load(pb, reqs, args.concurrency))[0] for _ in range(args.repeats)]
            wall = statistics.median(walls)
            results[split] = args.requests / wall
            print(f"    {split:<8} throughput {results[split]:.2f} req/s (median of {args.repeats} runs: "
                  f"{', '.join(f'{args.requests / w:.2f}' for w in walls)})")
            if plan.backups:
                print("    backups: " + ", ".join(f"stage {s} on w{w}" for s, w in sorted(plan.backups.items())))
            _, lost, ready, back = asyncio.run(_load(pb, reqs, args.concurrency, kill_after_s=0.5 * wall, kill_worker=1))
            action = pb.failures[-1].action if pb.failures else "none"
            kills[split] = (lost, ready, back, action + (f" to {', '.join(pb.failures[-1].to)}" if pb.failures else ""))
    print(f"    planner / uniform: {results['planner'] / results['uniform']:.2f}x")
    print("\n(c) kill -9 of worker 1 under load:")
    for split, (lost, ready, back, action) in kills.items():
        how = "with a backup" if action.startswith("switch") else "without a backup"
        print(f"    {how:<17} ({split} pipeline, {action}): requests lost {lost}; stage served again "
              f"{'-' if ready is None else f'{ready:.3f} s'}, answers flow again {'-' if back is None else f'{back:.3f} s'} after the kill")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=96, help="requests per load run [96]")
    ap.add_argument("--concurrency", type=int, default=32, help="requests in flight [32]")
    ap.add_argument("--new-tokens", type=int, default=8, help="tokens per request [8]")
    ap.add_argument("--layers", type=int, default=10, help="decoder layers of the benchmark model [10]")
    ap.add_argument("--repeats", type=int, default=3, help="load runs per split; the median is reported [3]")
    ap.add_argument("--simulated-only", action="store_true", help="only (a) and (a')")
    args = ap.parse_args(argv)
    if min(args.requests, args.concurrency, args.new_tokens, args.layers, args.repeats) < 1:
        ap.error("every count must be >= 1")
    simulated()
    from _edge_tier_sim import format_simulated
    from _edge_tier_sim import simulated as in_simulator

    print()
    print(format_simulated(in_simulator(), 11.0))
    print()
    if not args.simulated_only:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        real(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
