"""CLI error messages: one line naming the subcommand (plus a ``see: ... --help`` line for parse
errors), exit status 2, "did you mean" for flags, commands, policy / trace / profile names, no
prefix abbreviations, a busy port refused before anything is announced, library progress bars
only with ``--verbose``."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mllm_offload.cli import build_parser, main
from mllm_offload.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]


def _parse_error(capsys, argv: list[str]) -> list[str]:
    """The stderr lines of an argparse error (SystemExit 2)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "usage:" not in cap.err
    return cap.err.strip().splitlines()


def _user_error(capsys, argv: list[str]) -> str:
    """The one stderr line of a ``UserInputError`` (exit 2)."""
    assert main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in cap.err
    return lines[0]


# -- argparse ------------------------------------------------------------------------------------


def test_a_misspelled_flag_names_the_subcommand_and_the_closest_flag(capsys):
    assert _parse_error(capsys, ["train", "--timestpes", "1000"]) == [
        "mllm-offload train: error: unrecognized arguments: --timestpes 1000 (did you mean --timesteps?)",
        "see: mllm-offload train --help",
    ]
    err = _parse_error(capsys, ["evaluate", "--polices=edge", "--quite"])
    assert err[0].startswith("mllm-offload evaluate: error: unrecognized arguments: --polices=edge --quite")
    assert "--policies for --polices" in err[0] and "--quiet for --quite" in err[0]
    assert err[1] == "see: mllm-offload evaluate --help"


def test_a_nested_subcommand_names_itself(capsys):
    err = _parse_error(capsys, ["shapes", "train", "--out", "x", "--edge-step", "3"])
    assert err == ["mllm-offload shapes train: error: unrecognized arguments: --edge-step 3 (did you mean --edge-steps?)",
                   "see: mllm-offload shapes train --help"]


def test_no_flag_is_taken_by_its_prefix(capsys, tmp_path):
    err = _parse_error(capsys, ["train", "--timestep", "1000", "--no-eval", "--quiet", "--out", str(tmp_path / "run")])
    assert err[0] == "mllm-offload train: error: unrecognized arguments: --timestep 1000 (did you mean --timesteps?)"
    assert not (tmp_path / "run").exists()
    assert build_parser().parse_args(["train", "--timesteps", "1000"]).timesteps == 1000


def test_a_range_error_is_one_line(capsys):
    assert _parse_error(capsys, ["train", "--timesteps", "-5"]) == [
        "mllm-offload train: error: argument --timesteps: must be >= 1, got -5",
        "see: mllm-offload train --help",
    ]
    err = _parse_error(capsys, ["serve", "--model", "m", "--dtype", "float8"])
    assert len(err) == 2 and err[0].startswith("mllm-offload serve: error: argument --dtype: invalid choice: 'float8'")


def test_an_unknown_command_suggests_the_closest(capsys):
    err = _parse_error(capsys, ["trian"])
    assert err[0].startswith("mllm-offload: error: unknown command 'trian'; did you mean 'train'? (commands: evaluate, train,")
    assert err[1] == "see: mllm-offload --help"
    err = _parse_error(capsys, ["shapes", "genrate"])
    assert err[0] == "mllm-offload shapes: error: unknown command 'genrate'; did you mean 'generate'? (commands: generate, train)"
    err = _parse_error(capsys, ["zzzz"])
    assert "did you mean" not in err[0]


@pytest.mark.parametrize(("script", "argv", "first"), [
    ("train.py", ["--timestpes", "1000"], "mllm-offload train: error: unrecognized arguments: --timestpes 1000 (did you mean --timesteps?)"),
    ("train.py", ["--timesteps", "-5"], "mllm-offload train: error: argument --timesteps: must be >= 1, got -5"),
    ("evaluate.py", ["--polices", "edge"], "mllm-offload evaluate: error: unrecognized arguments: --polices edge (did you mean --policies?)"),
])
def test_the_wrapper_scripts_say_the_same(script, argv, first):
    p = subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [first, f"see: mllm-offload {script.removesuffix('.py')} --help"]


# -- names ---------------------------------------------------------------------------------------


def test_a_policy_name_suggests_the_closest(capsys):
    line = _user_error(capsys, ["route", "--policy", "msoa", "--edge", "a", "--cloud", "b"])
    assert line.startswith("mllm-offload route: error: policy: unknown policy 'msoa'; did you mean 'msao'?")
    assert "(known: edge, cloud" in line and "msao" in line
    line = _user_error(capsys, ["evaluate", "--policies", "edge,clod", "--requests", "50", "--quiet"])
    assert "unknown policy 'clod'; did you mean 'cloud'?" in line

    from mllm_offload.policy import resolve

    with pytest.raises(UserInputError) as e:
        resolve("zzzz")
    assert "did you mean" not in str(e.value) and "known: edge, cloud" in str(e.value)


def test_an_embedded_trace_name_suggests_the_closest(capsys):
    line = _user_error(capsys, ["evaluate", "--trace", "shapes-rael", "--requests", "50", "--quiet"])
    assert line.startswith("mllm-offload evaluate: error: shapes-rael: cannot read:")
    assert "did you mean 'shapes-real'?" in line and "(embedded: shapes-real)" in line


def test_a_missing_trace_path_is_still_cannot_read(tmp_path):
    from mllm_offload.trace_format import load_trace

    with pytest.raises(UserInputError) as e:
        load_trace(tmp_path / "none.jsonl")
    assert "cannot read" in str(e.value) and "did you mean" not in str(e.value)


def test_a_profile_name_suggests_the_closest(capsys):
    line = _user_error(capsys, ["evaluate", "--profile", "mobile3g", "--requests", "50", "--quiet"])
    assert line == "mllm-offload evaluate: error: profile: unknown profile 'mobile3g'; did you mean 'mobile-3g'? (known: msao-paper, mobile-3g, mobile-photos)"


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture
def busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_serve_on_a_busy_port_is_one_line_before_any_banner(tiny_model_dir, busy_port, capsys):
    assert main(["serve", "--model", str(tiny_model_dir), "--port", str(busy_port)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""  # no "serving ... on http://..." banner
    assert cap.err.strip().splitlines() == [f"mllm-offload serve: error: --port {busy_port}: address already in use"]


def test_route_on_a_busy_port_is_one_line_before_any_banner(tiny_model_dir, busy_port, tmp_path, capsys):
    argv = ["route", "--edge", str(tiny_model_dir), "--cloud", "http://127.0.0.1:9/v1", "--policy", "msao", "--port", str(busy_port),
            "--log-dir", str(tmp_path / "logs")]
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.strip().splitlines() == [f"mllm-offload route: error: --port {busy_port}: address already in use"]
    assert not (tmp_path / "logs").exists()


def test_bind_port_hands_over_a_bound_socket():
    from mllm_offload.cli._servers import bind_port

    sock = bind_port("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        sock.listen(1)
        with pytest.raises(UserInputError, match=f"--port {port}: address already in use"):
            bind_port("127.0.0.1", port)
    finally:
        sock.close()


# -- library output ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["serve", "--model", "m"],
    ["route", "--edge", "a", "--cloud", "b", "--policy", "msao"],
    ["record", "--edge", "a", "--cloud", "b", "--dataset", "jsonl:x", "--out", "o.jsonl"],
    ["tiny-model", "--out", "t"],
    ["shapes", "train", "--out", "o"],
])
def test_verbose_is_accepted(argv):
    parser = build_parser()
    assert parser.parse_args([*argv, "--verbose"]).verbose is True
    assert parser.parse_args(argv).verbose is False


def test_tiny_model_is_quiet_and_says_its_weights_are_random(tmp_path, capsys):
    from transformers.utils import logging as tf_logging

    before = (tf_logging.is_progress_bar_enabled(), tf_logging.get_verbosity())
    assert main(["tiny-model", "--out", str(tmp_path / "t")]) == 0
    cap = capsys.readouterr()
    assert "Writing model shards" not in cap.err
    lines = cap.out.strip().splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 't'} (") and "random weights" in lines[1] and "noise" in lines[1]
    assert (tf_logging.is_progress_bar_enabled(), tf_logging.get_verbosity()) == before  # restored for the rest of the process
    if before[0]:  # bars on in this process: --verbose keeps them
        assert main(["tiny-model", "--out", str(tmp_path / "v"), "--verbose"]) == 0
        assert "Writing model shards" in capsys.readouterr().err


@pytest.mark.slow  # trains a model for a few steps (~8 s)
def test_a_smoke_run_of_shapes_train_says_so(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["shapes", "train", "--out", str(tmp_path / "m"), "--which", "edge", "--edge-steps", "2", "--edge-vision-steps", "0",
                 "--scenes", "4", "--eval", "0", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("note: a smoke run (edge 2 steps; presets: edge 4000)") and "not meaningful" in out[-1]


def test_route_policy_key_env_must_be_set(capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    rc = main(["route", "--edge", "a", "--cloud", "http://127.0.0.1:9/v1", "--policy", "msao", "--policy-key-env", "NO_SUCH_KEY_VAR"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0] == "mllm-offload route: error: --policy-key-env NO_SUCH_KEY_VAR: that environment variable is not set or empty"
