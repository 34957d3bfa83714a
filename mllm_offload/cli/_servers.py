"""What the commands that load models or serve share: backend options, binding the port before
announcing, quieting library output unless ``--verbose``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError
from ._parser import positive_int

if TYPE_CHECKING:
    import socket


def check_port(port: int, host: str, api_key: str | None) -> None:
    """A port in 1..65535, and no non-loopback bind without an API key."""
    from ..mllm_backends.openai_protocol import is_loopback

    if not 0 < port < 65536:
        raise UserInputError(f"--port: must be in 1..65535, got {port}")
    if not is_loopback(host) and not api_key:
        raise UserInputError(f"--host {host}: refusing to bind a non-loopback address without --api-key")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backends")
    g.add_argument("--edge", required=True, help="edge model: a local model folder, or the URL of an OpenAI-compatible server")
    g.add_argument("--cloud", required=True, help="cloud model: URL of an OpenAI-compatible server (vLLM, SGLang, TGI, ...), or a local folder")
    g.add_argument("--edge-model", help="model name to request from an --edge URL [the server's first]")
    g.add_argument("--cloud-model", help="model name to request from a --cloud URL [the server's first]")
    g.add_argument("--edge-api-key", help="API key of an --edge URL")
    g.add_argument("--cloud-api-key", default=None, help="API key of a --cloud URL [env OPENAI_API_KEY]")
    g.add_argument("--cloud-timeout", type=float, default=30.0, help="cloud deadline per call, seconds [30]")
    g.add_argument("--threads", type=positive_int, help="torch threads of local models [torch default]")
    g.add_argument("--unsupported", default="error", choices=["error", "ignore"],
                   help="local models: a modality the model cannot take (audio) is an error, or is dropped [error]")
    g.add_argument("--edge-slowdown", type=float, default=1.0, help="local edge model: compute factor >= 1, stands in for a slower device [1]")


def backend(spec: str, role: str, args: argparse.Namespace, timeout_s: float) -> Any:
    """A backend from ``--edge``/``--cloud``: an http(s) URL or a local model folder."""
    import os

    if spec.startswith(("http://", "https://")):
        from ..mllm_backends.openai_compat import OpenAICompatBackend

        key = getattr(args, f"{role}_api_key") or (os.environ.get("OPENAI_API_KEY") if role == "cloud" else None)
        return OpenAICompatBackend(spec, getattr(args, f"{role}_model"), api_key=key, timeout_s=timeout_s, name=f"{role}:{spec}")
    from ..mllm_backends.hf_local import HFLocalBackend, check_model_dir

    check_model_dir(spec)
    return HFLocalBackend(spec, threads=args.threads, unsupported=args.unsupported, slowdown=args.edge_slowdown if role == "edge" else 1.0)


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` for the server to listen on, so that a busy port is
    one line (``--port 8001: address already in use``) before anything is announced."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":  # as uvicorn: a port left in TIME_WAIT can be bound again
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserInputError(f"--port {port}: address already in use") from None
        if e.errno == errno.EACCES:
            raise UserInputError(f"--port {port}: permission denied") from None
        raise UserInputError(f"--host {host} --port {port}: cannot bind: {e.strerror or e}") from None
    return sock


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="show the progress bars and info logs of transformers / huggingface_hub")


@contextlib.contextmanager
def library_output(verbose: bool) -> Iterator[None]:
    """Without ``verbose``: no transformers / huggingface_hub progress bars ("Loading weights",
    "Writing model shards") and only their errors in the log, in this process and in the worker
    processes it spawns meanwhile (through their environment variables); restored on exit."""
    if verbose:
        yield
        return
    try:
        from huggingface_hub import utils as hub
        from transformers.utils import logging as tf_logging
    except ImportError:  # pragma: no cover - both ship with the serve extra
        yield
        return
    import os

    env = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    saved_env = {k: os.environ.get(k) for k in env}
    bars, hub_bars, level = tf_logging.is_progress_bar_enabled(), not hub.are_progress_bars_disabled(), tf_logging.get_verbosity()
    os.environ.update(env)
    tf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    tf_logging.set_verbosity_error()
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        tf_logging.set_verbosity(level)
        if bars:
            tf_logging.enable_progress_bar()  # also enables huggingface_hub's
        if hub_bars:
            hub.enable_progress_bars()
        elif bars:
            hub.disable_progress_bars()
