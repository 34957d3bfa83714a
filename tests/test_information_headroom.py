"""examples/information_headroom.py: oracle >= per cell in hindsight >= one candidate for all; bad input is one line."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest


def _load():
    spec = importlib.util.spec_from_file_location("information_headroom", Path(__file__).parents[1] / "examples" / "information_headroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cells_bin_each_feature_by_training_quantiles():
    m = _load()
    x = np.array([[0.1, 5.0], [0.4, 1.0], [0.6, 1.0], [0.9, 5.0]])
    cells = m.Cells(x, [0, 1], 2)
    assert cells.sizes == [2, 2] and cells.n == 4
    assert cells.index(x).tolist() == [1, 0, 2, 3]
    assert m.table(cells.index(x), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), 4, 0).tolist() == [1, 0, 0, 1]


def test_bounds_are_ordered(capsys):
    argv = ["--profile", "msao-paper", "--train-requests", "300", "--requests", "200", "--bins", "3"]
    assert _load().main(argv) == 0
    out = capsys.readouterr().out
    val = {k: float(re.search(rf"{re.escape(k)}\s+(-?\d+\.\d+)", out).group(1))
           for k in ("per request (oracle)", "per cell, in hindsight", "per cell, fitted on train", "one candidate for all")}
    assert val["per request (oracle)"] >= val["per cell, in hindsight"] - 1e-12 >= val["one candidate for all"] - 2e-12
    assert val["per cell, in hindsight"] >= val["per cell, fitted on train"] - 1e-12
    assert "table policy (fitted on train)" in out and "oracle-expected" in out


@pytest.mark.parametrize("argv", [["--features", "no_such_feature"], ["--bins", "0"], ["--profile", "no-such-profile"],
                                  ["--policy", "/nonexistent"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert _load().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
