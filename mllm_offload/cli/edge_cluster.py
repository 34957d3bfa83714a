"""``mllm-offload edge-cluster``: one VLM split over worker processes on loopback, as an OpenAI endpoint.

The devices of ``--devices`` (a ``devices.yaml``, a cluster preset or device presets) are
emulated, one worker process each, on this host: the plan (``--split planner``: the edge tier's
exact partition planner; ``uniform``: equal block counts) gives each worker a contiguous range of
the model's blocks, ``--backups on`` gives each stage a backup copy on another worker
(``place_backups``), and each worker is slowed to its device's relative speed:

    slowdown of device k = (FLOP/s of the fastest device) / (FLOP/s of device k)

so the fastest device runs at this host's speed (slowdown 1) and a device half as fast waits one
extra forward-pass duration after each pass (``HFLocalBackend(slowdown=...)``'s rule). The
workers talk over loopback, so the plan is made with free links (``--links loopback``: no
transfer time) unless ``--links devices`` asks for the devices' own links, which are not
emulated. ``--costs config`` sizes the blocks by their FLOPs (from ``config.json``, prefill
only); ``--costs measured`` times every block on this host first (prefill and decode steps of
a typical request), which is what the blocks really cost a small model on a CPU.

Served: ``/health``, ``/v1/models``, ``/v1/chat/completions`` (streaming, logprobs) and
``/metrics``, by the same server as ``mllm-offload serve``. Ctrl-C or SIGTERM stops the server
and every worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from ._parser import positive_int
from ._servers import add_verbose_arg, bind_port, check_port, library_output

if TYPE_CHECKING:
    from ..edge_tier import BlockCosts, EdgeCluster, Plan

#: Link rate used for "loopback" planning, Mbit/s (transfers cost nothing next to compute).
LOOPBACK_MBPS = 1e7


@dataclass(frozen=True)
class ClusterPlan:
    """What the workers are given: block ranges, slowdowns, backups; and the plan's report lines."""

    stages: list[tuple[int, int]]
    slowdowns: list[float]
    backups: dict[int, int]
    devices: list[str]
    plan: Plan
    lines: list[str]


def _loopback(cluster: EdgeCluster) -> EdgeCluster:
    """The same devices with free links between them (what loopback workers have)."""
    from ..edge_tier import EdgeCluster, Links

    n = len(cluster)
    return EdgeCluster(devices=cluster.devices, links=Links(mbps=[[LOOPBACK_MBPS] * n for _ in range(n)],
                                                             latency_s=[[0.0] * n for _ in range(n)]))


def block_costs(model_dir: Path, mode: str, threads: int | None = 1, host_flops_per_s: float | None = None) -> BlockCosts:
    """Per-block costs of one default request: FLOPs from ``config.json`` (``config``), or this
    host's measured seconds per block (``measured``: a typical request, prefill and decode
    steps) times ``host_flops_per_s``, the speed this host stands for (the fastest device, which
    runs at slowdown 1; default the reference device), so that the plan's stage times are the
    emulated ones."""
    from ..edge_tier import REFERENCE_FLOPS_PER_S, load_model_config

    costs = load_model_config(model_dir).costs()
    if mode == "config":
        return costs
    import numpy as np

    from ..mllm_backends.pipeline import measure_block_seconds

    seconds = measure_block_seconds(model_dir, threads=threads)
    if len(seconds) != len(costs):
        raise UserInputError(f"{model_dir}: the edge tier counts {len(costs)} blocks, the pipeline {len(seconds)}")
    return dataclasses.replace(costs, flops=np.asarray(seconds) * (host_flops_per_s or REFERENCE_FLOPS_PER_S))


def cluster_plan(costs: BlockCosts, cluster: EdgeCluster, *, split: str = "planner", backups: bool = True,
                 links: str = "loopback") -> ClusterPlan:
    """Plan the split (planner or uniform) and the backups, and map device speeds to slowdowns."""
    from ..edge_tier import InfeasiblePlanError, format_plan, place_backups, plan_partition, uniform_partition

    cl = _loopback(cluster) if links == "loopback" else cluster
    plan = plan_partition(costs, cl) if split == "planner" else uniform_partition(costs, cl)
    if len(plan.stages) != len(cluster):
        raise InfeasiblePlanError(f"the plan uses {len(plan.stages)} of {len(cluster)} devices")
    fastest = max(d.flops_per_s for d in cluster.devices)
    slowdowns = [fastest / d.flops_per_s for d in cluster.devices]
    if max(slowdowns) > 1000:
        raise UserInputError(f"devices: the slowest is {max(slowdowns):.0f}x slower than the fastest; at most 1000x can be emulated")
    lines = format_plan(plan, f"{plan.label} split ({'free loopback links' if links == 'loopback' else 'the devices own links'}):")
    if not plan.fits_memory:
        lines.append("note: this split exceeds a device's memory; the loopback workers run it anyway")
    placed: dict[int, int] = {}
    if backups:
        for b in place_backups(plan, costs, cl):
            if b.device is not None:
                placed[b.stage] = cluster.names.index(b.device)
            lines.append(f"  backup of stage {b.stage} ({b.stage_device}): {b.device or 'none (no device has the spare memory)'}")
    for k, (d, f) in enumerate(zip(cluster.devices, slowdowns)):
        lines.append(f"  worker w{k}: {d.name}, {d.flops_per_s / 1e12:.3g} TFLOP/s -> slowdown {f:.3g}")
    return ClusterPlan(plan.bounds, slowdowns, placed, cluster.names, plan, lines)


def add_parser(sub: Any) -> None:
    ec = sub.add_parser("edge-cluster", help="serve one VLM split over worker processes on loopback (emulated edge devices)",
                        description="Split a LLaVA-class model over one worker process per device (planner or uniform split, "
                        "optional backups, each worker slowed to its device's relative speed) and serve it as an OpenAI-compatible "
                        "endpoint: /health, /v1/models, /v1/chat/completions, /metrics.")
    ec.add_argument("--model", type=Path, required=True, help="local LLaVA-class model folder (with its processor)")
    ec.add_argument("--devices", required=True, metavar="FILE_OR_PRESETS", help="devices.yaml, cluster preset, or PRESET[,PRESET...] in pipeline order")
    ec.add_argument("--port", type=int, default=8000, help="port [8000]")
    ec.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs --api-key [127.0.0.1]")
    ec.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every path but /health")
    ec.add_argument("--backups", choices=["on", "off"], default="on", help="a backup copy of each stage on another worker [on]")
    ec.add_argument("--split", choices=["planner", "uniform"], default="planner", help="planner (least slowest stage) or equal block counts [planner]")
    ec.add_argument("--costs", choices=["config", "measured"], default="config",
                    help="block costs: FLOPs from config.json, or each block timed on this host first [config]")
    ec.add_argument("--links", choices=["loopback", "devices"], default="loopback",
                    help="plan with free links (what the workers have) or the devices' own links [loopback]")
    ec.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker [1]")
    ec.add_argument("--served-name", help="model name clients use [the folder name]")
    ec.add_argument("--max-queue", type=positive_int, default=64, help="requests in flight before answering 429 [64]")
    ec.add_argument("--max-new-tokens", type=positive_int, default=512, help="cap on a request's max_tokens [512]")
    ec.add_argument("--request-timeout", type=float, default=120.0, help="deadline per request from admission, seconds [120]")
    ec.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level [warning]")
    add_verbose_arg(ec)
    ec.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..edge_tier import resolve_devices
    from ..mllm_backends.hf_local import check_model_dir
    from ..mllm_backends.serve import run_server

    check_port(args.port, args.host, args.api_key)
    if not 0 < args.request_timeout < float("inf"):
        raise UserInputError(f"--request-timeout: must be a finite number > 0, got {args.request_timeout}")
    check_model_dir(args.model)
    cluster = resolve_devices(args.devices)
    with library_output(args.verbose):
        costs = block_costs(args.model, args.costs, args.threads, max(d.flops_per_s for d in cluster.devices))
    plan = cluster_plan(costs, cluster, split=args.split, backups=args.backups == "on", links=args.links)
    print("\n".join(plan.lines), flush=True)
    sock = bind_port(args.host, args.port)  # a busy port is one line, before any worker starts
    backend = None
    try:
        from ..mllm_backends.pipeline import PipelineBackend

        with library_output(args.verbose):
            backend = PipelineBackend(args.model, plan.stages, slowdowns=plan.slowdowns, threads=[args.threads] * len(plan.stages),
                                      backups=plan.backups, max_new_tokens=args.max_new_tokens, name=args.served_name,
                                      on_event=lambda line: print(f"edge-cluster: {line}", file=sys.stderr, flush=True))
            name = args.served_name or args.model.resolve().name
            print(f"serving {args.model} split over {len(plan.stages)} workers as {name!r} on http://{args.host}:{args.port}/v1", flush=True)
            run_server(backend, name, args.host, args.port, api_key=args.api_key, max_queue=args.max_queue, log_level=args.log_level,
                       sock=sock, request_timeout_s=args.request_timeout)
    finally:
        sock.close()
        if backend is not None:
            backend.close()
    return 0
