"""What several commands share: the argument parser class, argument types, the scenario and
backend options, progress bars, binding the port of a server, quieting library output."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import UserInputError

if TYPE_CHECKING:  # the simulator loads only for the commands that use it
    import socket

    from ..scenario import Scenario

__all__ = ["CLIParser", "add_backend_args", "add_scenario_args", "add_verbose_arg", "backend", "bind_port", "check_port", "command_parser",
           "did_you_mean", "int_at_least", "library_output", "nonnegative_int", "positive_int", "progress", "scenario"]


def did_you_mean(text: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``text`` (``difflib``), or None when none is close."""
    close = difflib.get_close_matches(text, list(choices), n=1)
    return close[0] if close else None


class CLIParser(argparse.ArgumentParser):
    """The parser of ``mllm-offload`` and of every subcommand (``add_subparsers`` makes its
    subparsers of this class too).

    No prefix abbreviations (``--timestep`` is not ``--timesteps``). Every parse error is one
    line ``PROG: error: ...`` naming the (sub)command, with a "did you mean" for misspelled flags
    and command names, then one line ``see: PROG --help``; exit status 2. A subcommand reports
    its own unrecognized arguments (argparse would hand them to the top-level parser, which
    prints the top-level usage).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        self._is_command = bool(kwargs.pop("is_command", False))
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _CommandParser)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee: {self.prog} --help\n")

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras and self._is_command:
            self.error(self.unrecognized(extras))
        return ns, extras

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return ns

    def unrecognized(self, extras: Sequence[str]) -> str:
        """``unrecognized arguments: ...`` with the closest known flag of each unknown one."""
        flags = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for x in extras:
            if x.startswith("--"):
                flag = x.split("=", 1)[0]
                close = did_you_mean(flag, flags)
                if close:
                    hints.append((flag, close))
        hint = ""
        if len(hints) == 1:
            hint = f" (did you mean {hints[0][1]}?)"
        elif hints:
            hint = " (did you mean " + ", ".join(f"{c} for {f}" for f, c in hints) + "?)"
        return f"unrecognized arguments: {' '.join(extras)}{hint}"

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and action.choices is not None and value not in action.choices:
            names = list(action.choices)
            close = did_you_mean(str(value), names)
            hint = f"; did you mean {close!r}?" if close else ""
            raise argparse.ArgumentError(None, f"unknown command {value!r}{hint} (commands: {', '.join(names)})")
        super()._check_value(action, value)


class _CommandParser(CLIParser):
    """A subcommand's parser: reports its own unrecognized arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("is_command", True)
        super().__init__(*args, **kwargs)


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed for (``mllm-offload shapes train``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = (action.choices or {}).get(getattr(args, action.dest, None))
            if isinstance(sub, argparse.ArgumentParser):
                return command_parser(sub, args)
    return parser


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
