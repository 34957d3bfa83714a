"""examples/plan_headroom.py: the bytes frontier with plans lies below the one without; bad input is one line."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def _load():
    spec = importlib.util.spec_from_file_location("plan_headroom", Path(__file__).parents[1] / "examples" / "plan_headroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lagrangian_choice_on_a_hand_made_request():
    m = _load()
    edge = np.array([0.5])
    cloud, nbytes = np.array([[0.9, 0.8]]), np.array([[100.0, 10.0]])
    s, b = m.frontier(edge, cloud, nbytes, np.array([0.0, 0.005, 1.0]))
    assert s.tolist() == [0.9, 0.8, 0.5] and b.tolist() == [100.0, 10.0, 0.0]
    assert m.bytes_at(0.85, s, b) == pytest.approx(55.0) and m.bytes_at(0.95, s, b) is None


def test_with_plans_never_needs_more_bytes_than_without(capsys):
    assert _load().main(["--profile", "mobile-3g", "--scores", "0.66,0.72,0.78"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 0.")]
    assert len(rows) == 3
    ratios = []
    for ln in rows:
        _, without, with_plans, ratio = (c.strip() for c in ln.strip("|").split("|"))
        assert float(with_plans) <= float(without) + 1e-9 and 0.0 < float(ratio) <= 1.0
        ratios.append(float(ratio))
    assert min(ratios) < 0.6  # reduced images and keyframes do save bytes on mobile-3g's requests


@pytest.mark.parametrize("argv", [["--trace", "/nonexistent.jsonl"], ["--scores", "high"], ["--profile", "no-such-profile"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert _load().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
