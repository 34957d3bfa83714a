"""The argument parser of every command: one-line errors naming the command, no abbreviations,
"did you mean" for flags and commands; integer argument types."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn


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


def float_in(lo: float, hi: float, *, open_lo: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (lo < v <= hi if open_lo else lo <= v <= hi):
            raise argparse.ArgumentTypeError(f"must be in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {text}")
        return v

    return parse


positive_float = float_in(0.0, 1e9, open_lo=True)
nonnegative_float = float_in(0.0, 1e9)
