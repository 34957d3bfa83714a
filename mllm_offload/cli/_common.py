"""What several commands share: argument types, the scenario and backend options, progress bars."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserInputError

if TYPE_CHECKING:  # the simulator loads only for the commands that use it
    from ..scenario import Scenario

__all__ = ["add_backend_args", "add_scenario_args", "backend", "check_port", "int_at_least", "nonnegative_int", "positive_int",
           "progress", "scenario"]


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= lo``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def add_scenario_args(p: argparse.ArgumentParser, seed_help: str = "seed of the evaluation episodes [0]") -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--profile", default="mobile-3g", help="synthetic profile (see `mllm-offload profiles`); also the system defaults [mobile-3g]")
    g.add_argument("--trace", type=Path, help="recorded request trace (JSONL, .jsonl.gz) instead of synthetic requests")
    g.add_argument("--bandwidth", help="folder of Pensieve/Mahimahi traces, 'constant:MBPS,...' or 'markov:NAME' [the profile's default]")
    g.add_argument("--config", type=Path, help="YAML overrides with sections system, reward, episode")
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    g.add_argument("--episode-len", type=positive_int, default=100, help="requests per episode [100]")


def scenario(args: argparse.Namespace) -> Scenario:
    """The validated :class:`Scenario` of the scenario options (episodes no longer than ``--requests``)."""
    from ..scenario import Scenario

    return Scenario.build(profile=args.profile, trace=args.trace, bandwidth=args.bandwidth, config=args.config,
                          episode_len=args.episode_len, requests=getattr(args, "requests", None))


def progress(desc: str, quiet: bool) -> Callable[[Iterable[Any]], Iterable[Any]] | None:
    """A tqdm wrapper on stderr, or None when quiet (or tqdm is missing)."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the train extra
        return None
    return lambda it: tqdm(it, desc=desc, file=sys.stderr, leave=False)


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
