"""examples/static_headroom.py: the hindsight bounds are ordered and bad input is one line."""

import importlib.util
from pathlib import Path

import pytest


def _load():
    spec = importlib.util.spec_from_file_location("static_headroom", Path(__file__).parents[1] / "examples" / "static_headroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bounds_are_ordered_edge_le_best_static_le_per_episode(capsys):
    assert _load().main(["--requests", "30", "--episode-len", "10", "--bandwidth", "constant:2"]) == 0
    lines = {ln.split(" reward ")[0].strip(): float(ln.split(" reward ")[1].split()[0])
             for ln in capsys.readouterr().out.splitlines() if " reward " in ln}
    edge, static, per_ep = (lines[k] for k in ("EdgeOnly", "best static setting in hindsight", "best setting per episode (one link each)"))
    assert edge <= static + 1e-12  # edge-only thresholds are in the grid, on the same episodes
    assert static <= per_ep + 1e-12


@pytest.mark.parametrize("argv", [["--requests", "0"], ["--trace", "/nonexistent.jsonl"], ["--bandwidth", "/nonexistent"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert _load().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_frontier_in_hindsight_at_every_price_is_ordered(capsys):
    assert _load().main(["--requests", "30", "--episode-len", "10", "--bandwidth", "constant:2", "--latency-prices", "0.05,1"]) == 0
    blocks = capsys.readouterr().out.split("latency price ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["0.05", "1"]
    for b in blocks:
        r = {ln.split(" reward ")[0].strip(): float(ln.split(" reward ")[1].split()[0]) for ln in b.splitlines() if " reward " in ln}
        assert r["EdgeOnly"] <= r["best static setting in hindsight"] + 1e-12 <= r["best setting per episode (one link each)"] + 2e-12
