"""``mllm-offload serve``: a local model as an OpenAI-compatible node (loopback by default)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..mllm_backends.base import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_REQUEST_PIXELS
from ._parser import positive_int
from ._servers import add_verbose_arg, bind_port, check_port, library_output


def add_parser(sub: Any) -> None:
    sv = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible API (a cloud node on loopback)",
                        description="Expose a local image-text-to-text model at /v1/chat/completions (streaming, logprobs), /v1/models, /health, /metrics. "
                        "Limits answered with an OpenAI error body: prompt tokens (400 context_length_exceeded), image pixels (400), "
                        "body size (413), queue (429), request deadline (504).")
    sv.add_argument("--model", type=Path, required=True, help="local model folder (with its processor)")
    sv.add_argument("--host", default="127.0.0.1", help="bind address; non-loopback needs --api-key [127.0.0.1]")
    sv.add_argument("--port", type=int, default=8000, help="port [8000]")
    sv.add_argument("--served-name", help="model name clients use [folder name]")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every path but /health (/metrics too, unless --public-metrics)")
    sv.add_argument("--public-metrics", action="store_true", help="with --api-key: serve /metrics without the key")
    sv.add_argument("--device", default="cpu", help="torch device [cpu]")
    sv.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype [auto]")
    sv.add_argument("--threads", type=positive_int, help="torch threads [torch default]")
    sv.add_argument("--max-queue", type=positive_int, default=16, help="requests in flight (streamed or not) before answering 429 [16]")
    sv.add_argument("--max-prompt-tokens", type=positive_int, help="longest prompt, tokens (images included); longer: 400 [the model's context length]")
    sv.add_argument("--max-image-pixels", type=positive_int, default=DEFAULT_MAX_IMAGE_PIXELS,
                    help=f"largest image, width x height, read from its header; larger: 400 [{DEFAULT_MAX_IMAGE_PIXELS}]")
    sv.add_argument("--max-request-pixels", type=positive_int, default=DEFAULT_MAX_REQUEST_PIXELS,
                    help=f"all images of one request together, pixels [{DEFAULT_MAX_REQUEST_PIXELS}]")
    sv.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MB, counted while read (chunked too); larger: 413 [32]")
    sv.add_argument("--request-timeout", type=float, default=120.0,
                    help="deadline per request from admission, seconds: then generation stops, the worker is freed, the client gets 504 [120]")
    sv.add_argument("--slowdown", type=float, default=1.0, help="compute factor >= 1: wait (F-1) x each forward pass, to stand in for a slower GPU [1]")
    sv.add_argument("--unsupported", default="error", choices=["error", "ignore"],
                    help="a modality the model cannot take (audio): answer 400, or drop it and answer from the rest [error]")
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level [warning]")
    add_verbose_arg(sv)

    sv.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..mllm_backends.hf_local import HFLocalBackend, check_model_dir
    from ..mllm_backends.serve import run_server

    check_port(args.port, args.host, args.api_key)
    for flag, v in (("--max-body-mb", args.max_body_mb), ("--request-timeout", args.request_timeout)):
        if not 0 < v < float("inf"):
            raise UserInputError(f"{flag}: must be a finite number > 0, got {v}")
    check_model_dir(args.model)
    sock = bind_port(args.host, args.port)  # a busy port is one line, before the model loads or anything is announced
    try:
        with library_output(args.verbose):
            backend = HFLocalBackend(args.model, device=args.device, dtype=args.dtype, threads=args.threads, slowdown=args.slowdown,
                                     unsupported=args.unsupported, max_prompt_tokens=args.max_prompt_tokens,
                                     max_image_pixels=args.max_image_pixels, max_request_pixels=args.max_request_pixels)
            name = args.served_name or backend.name
            print(f"serving {args.model} as {name!r} on http://{args.host}:{args.port}/v1", flush=True)
            run_server(backend, name, args.host, args.port, api_key=args.api_key, max_queue=args.max_queue, log_level=args.log_level, sock=sock,
                       max_body_bytes=int(args.max_body_mb * 1024 * 1024), request_timeout_s=args.request_timeout,
                       max_image_pixels=args.max_image_pixels, max_request_pixels=args.max_request_pixels, public_metrics=args.public_metrics)
    finally:
        sock.close()
    return 0
