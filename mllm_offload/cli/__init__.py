"""Command line: ``mllm-offload {evaluate,train,export,synth,profiles,report,tiny-model,serve,route,record,shapes,edge-plan,edge-cluster}``
(also ``train.py``, ``evaluate.py``). One small module per command: parse arguments, call the
library, print.

Bad input (unknown profile or policy, malformed trace or config, unreadable bandwidth file)
prints one line ``mllm-offload COMMAND: error: ...`` naming the file/line and field, exits with
status 2 and writes no output file. A bad flag or value is one such line too, with a "did you
mean" for a misspelled flag or command, then ``see: mllm-offload COMMAND --help``; flags are
never abbreviated (:class:`~mllm_offload.cli._parser.CLIParser`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UserInputError
from . import edge_cluster, edge_plan, evaluate, export, profiles, record, report, route, serve, shapes, synth, tiny_model, train
from ._parser import CLIParser, command_parser

__all__ = ["build_parser", "main", "main_evaluate", "main_train"]

_COMMANDS = (evaluate, train, export, synth, profiles, tiny_model, serve, route, record, report, shapes, edge_plan, edge_cluster)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (each module adds its own subparsers)."""
    parser = CLIParser(prog="mllm-offload", description="Learned edge/cloud offloading for multimodal LLM requests.")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _COMMANDS:
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.handler(args)
        return rc
    except UserInputError as e:
        print(f"{command_parser(parser, args).prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mllm-offload: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main_train() -> int:
    """``python train.py ...`` = ``mllm-offload train ...``."""
    return main(["train", *sys.argv[1:]])


def main_evaluate() -> int:
    """``python evaluate.py ...`` = ``mllm-offload evaluate ...``."""
    return main(["evaluate", *sys.argv[1:]])
