"""``mllm-offload route``: the offloading router (OpenAI-compatible) in front of an edge and a
cloud backend."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..mllm_backends.base import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_PROMPT_CHARS, DEFAULT_MAX_REQUEST_PIXELS
from ._cloud_image import add_cloud_image_args, cloud_image_spec
from ._common import cost_price, price
from ._parser import positive_int
from ._servers import add_backend_args, add_verbose_arg, backend, bind_port, check_port, library_output


def add_parser(sub: Any) -> None:
    ro = sub.add_parser("route", help="serve the offloading router (OpenAI-compatible) in front of an edge and a cloud backend",
                        description="Route each chat completion to the edge, the cloud or both (speculation) with a policy; "
                        "log every request as a trace record in --log-dir.")
    add_backend_args(ro)
    ro.add_argument("--policy", required=True, help="exported policy folder, or a heuristic name: msao, edge, cloud; "
                    "msao-model-res and moaoff also choose upload plans")
    ro.add_argument("--policy-backend", default="numpy", choices=["numpy", "onnx"], help="policy inference backend [numpy]")
    ro.add_argument("--policy-key-env", metavar="NAME",
                    help="require policy.json to carry an HMAC keyed by the environment variable NAME [MLLM_OFFLOAD_POLICY_KEY when set]")
    ro.add_argument("--latency-price", type=price, metavar="X",
                    help="default trade-off: score lost per SLO of latency, a number or quality-first (0.05), balanced (0.2), "
                    "latency-first (1.0); a request may name its own (header x-offload-latency-price); must lie in the policy's "
                    "trained range [the range's default: balanced if inside it; 0.2 for a policy without a range]")
    ro.add_argument("--cost-price", type=cost_price, metavar="Y",
                    help="default trade-off: score lost per USD per 1k requests (header x-offload-cost-price) "
                    "[the range's default; 0.1 for a policy without a range]")
    ro.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs --api-key [127.0.0.1]")
    ro.add_argument("--port", type=int, default=8080, help="port [8080]")
    ro.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every path but /health (/metrics too, unless --public-metrics)")
    ro.add_argument("--public-metrics", action="store_true", help="with --api-key: serve /metrics without the key")
    ro.add_argument("--log-dir", type=Path, default=Path("route-logs"), help="folder of the rotating trace logs [route-logs]")
    ro.add_argument("--log-max-mb", type=float, default=64.0, help="rotate a log file at this size, MB [64]")
    ro.add_argument("--max-queue", type=positive_int, default=64, help="requests in flight before answering 429 [64]")
    ro.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MB, counted while read (chunked too); larger: 413 [32]")
    ro.add_argument("--max-prompt-chars", type=positive_int, default=DEFAULT_MAX_PROMPT_CHARS,
                    help=f"longest prompt, characters, refused (400) before MAS or any backend [{DEFAULT_MAX_PROMPT_CHARS}]")
    ro.add_argument("--max-image-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                    help=f"largest image, width x height, read from its header; larger: 400, never decoded [{DEFAULT_MAX_IMAGE_PIXELS}]")
    ro.add_argument("--max-request-pixels", type=positive_int, default=DEFAULT_MAX_REQUEST_PIXELS,
                    help=f"all images and frames of one request together, pixels [{DEFAULT_MAX_REQUEST_PIXELS}]")
    ro.add_argument("--edge-concurrency", type=positive_int, default=1, help="edge generations at once [1]")
    ro.add_argument("--cloud-concurrency", type=positive_int, default=16, help="cloud calls at once [16]")
    ro.add_argument("--edge-timeout", type=float, default=120.0, help="edge deadline, seconds [120]")
    ro.add_argument("--shadow-rate", type=float, default=0.0, help="fraction of requests whose other side is also run, for the logs [0]")
    ro.add_argument("--profile", default=None,
                    help="take estimator priors and the SLO from this synthetic profile's system "
                    "[the system recorded in the policy's policy.json, else the built-in SystemConfig defaults]")
    add_cloud_image_args(ro)
    ro.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level [warning]")
    add_verbose_arg(ro)

    ro.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..runtime import OffloadPolicy

    check_port(args.port, args.host, args.api_key)
    for flag, v in (("--edge-timeout", args.edge_timeout), ("--cloud-timeout", args.cloud_timeout), ("--log-max-mb", args.log_max_mb), ("--max-body-mb", args.max_body_mb)):
        if not v > 0:
            raise UserInputError(f"{flag}: must be > 0, got {v}")
    if not 0.0 <= args.shadow_rate <= 1.0:
        raise UserInputError(f"--shadow-rate: must be in [0, 1], got {args.shadow_rate}")
    key = None
    if args.policy_key_env:
        import os

        key = os.environ.get(args.policy_key_env)
        if not key:
            raise UserInputError(f"--policy-key-env {args.policy_key_env}: that environment variable is not set or empty")
    policy = OffloadPolicy.load(args.policy, backend=args.policy_backend, key=key)
    system = _system(args.profile, getattr(policy, "manifest", None))
    if getattr(policy, "manifest", None) is None:  # a named rule: MSAO's thresholds move with the SLO
        policy = OffloadPolicy.load(args.policy, backend=args.policy_backend, slo_s=system.slo_s, key=key)
    tradeoff = default_tradeoff(policy, args.latency_price, args.cost_price)
    plans = _chooses_plans(policy)
    cloud_image = cloud_image_spec(args, args.cloud, strict=plans)  # before the port is bound: a bad flag or config is one line
    sock = bind_port(args.host, args.port)  # a busy port is one line, before the models load or anything is announced
    try:
        with library_output(args.verbose):
            _serve(args, policy, system, sock, tradeoff, cloud_image, plans)
    finally:
        sock.close()
    return 0


def _chooses_plans(policy: Any) -> bool:
    """Whether ``policy`` chooses upload plans: a rule with ``decide`` (``msao-model-res``,
    ``moaoff``), a heuristic artifact of one, or an artifact of six outputs."""
    if not callable(getattr(policy, "decide", None)):
        return False
    return bool(getattr(policy, "chooses_plan", True))


def default_tradeoff(policy: Any, latency_price: float | None, cost_price: float | None) -> Any:
    """The router's default trade-off from ``--latency-price``/``--cost-price`` (checked now,
    before the port is bound: one line when outside the policy's trained range)."""
    from ..runtime.router import default_tradeoff as router_default

    flags = " ".join(f for f, v in (("--latency-price", latency_price), ("--cost-price", cost_price)) if v is not None) or "trade-off"
    where = f" (policy {policy.path})" if getattr(policy, "path", None) is not None else ""
    return router_default(policy, latency_price, cost_price, flags + where)


def _serve(args: argparse.Namespace, policy: Any, system: Any, sock: Any, tradeoff: Any, cloud_image: Any, plans: bool) -> None:
    from ..runtime.router import Router, RouterConfig
    from ..runtime.server import run_route_server
    from ..runtime.tracelog import TraceLog
    from ..trace_format import hardware_info

    edge = backend(args.edge, "edge", args, args.edge_timeout)
    cloud = backend(args.cloud, "cloud", args, args.cloud_timeout)
    for b in (edge, cloud):  # a local model takes the router's pixel limits (its prompt limit is its own context length)
        if hasattr(b, "max_image_pixels"):
            b.max_image_pixels, b.max_request_pixels = args.max_image_pixels, args.max_request_pixels
    cfg = RouterConfig(edge_timeout_s=args.edge_timeout, cloud_timeout_s=args.cloud_timeout, edge_concurrency=args.edge_concurrency,
                       cloud_concurrency=args.cloud_concurrency, shadow_rate=args.shadow_rate, system=system,
                       max_prompt_chars=args.max_prompt_chars, max_image_pixels=args.max_image_pixels, max_request_pixels=args.max_request_pixels)
    log = TraceLog(args.log_dir, {"edge_model": getattr(edge, "name", args.edge), "cloud_model": getattr(cloud, "name", args.cloud),
                                  "policy": policy.name, "policy_path": str(args.policy), "hardware": hardware_info(),
                                  "tradeoff": {"latency_price": tradeoff.latency_price, "cost_price": tradeoff.cost_price},
                                  "cloud_image": cloud_image.describe() if cloud_image is not None else None},
                   max_bytes=int(args.log_max_mb * 1024 * 1024))
    router = Router(edge, cloud, policy, cfg, log, tradeoff=tradeoff, cloud_image=cloud_image)
    trade = tradeoff.label() if getattr(policy, "tradeoff_range", None) is not None else "no trade-off input"
    uploads = "" if not plans else f", upload plans: cloud images {cloud_image.describe()}" if cloud_image is not None else \
        ", upload plans: cloud image size unknown, images sent whole (give --cloud-image-size, --cloud-image-pixels or --cloud-image-family)"
    print(f"routing on http://{args.host}:{args.port}/v1 (edge {args.edge}, cloud {args.cloud}, policy {policy.name}, {trade}{uploads}); "
          f"logs in {args.log_dir}", flush=True)
    run_route_server(router, args.host, args.port, api_key=args.api_key, max_queue=args.max_queue,
                     max_body_bytes=int(args.max_body_mb * 1024 * 1024), log_level=args.log_level, sock=sock, public_metrics=args.public_metrics)


def _system(profile: str | None, manifest: Any) -> Any:
    """Estimator priors and SLO: ``--profile`` if given, else what the policy was trained with
    (``training.system`` of policy.json; ``training.profile`` for artifacts that predate it),
    else the built-in :class:`~mllm_offload.config.SystemConfig` defaults."""
    from pydantic import ValidationError

    from ..config import SystemConfig, format_validation_error

    training = dict(manifest.training or {}) if manifest is not None else {}
    if profile is None and isinstance(training.get("system"), dict):
        try:
            return SystemConfig.model_validate(training["system"])
        except ValidationError as e:
            raise UserInputError(format_validation_error("policy.json: training.system", e)) from None
    name = profile or training.get("profile")
    if name is None:
        return SystemConfig()
    from ..traces.synth import get_profile

    return get_profile(str(name)).system
