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
    # a feature with a mass point (an empty queue most of the time): the mass point is a bin of its own
    q = np.array([[0.0], [0.0], [0.0], [2.0], [3.0]])
    tied = m.Cells(q, [0], 2)
    assert tied.edges[0].tolist() == [0.0] and tied.index(q).tolist() == [0, 0, 0, 1, 1]


def test_bounds_are_ordered(capsys):
    argv = ["--profile", "msao-paper", "--train-requests", "300", "--requests", "200", "--bins", "3"]
    assert _load().main(argv) == 0
    out = capsys.readouterr().out
    val = {k: float(re.search(rf"{re.escape(k)}\s+(-?\d+\.\d+)", out).group(1))
           for k in ("per request (oracle)", "per cell, in hindsight", "per cell, fitted on train", "one candidate for all")}
    assert val["per request (oracle)"] >= val["per cell, in hindsight"] - 1e-12 >= val["one candidate for all"] - 2e-12
    assert val["per cell, in hindsight"] >= val["per cell, fitted on train"] - 1e-12
    assert "table policy (fitted on train)" in out
    # the rolled-out figures are evaluate's episodes: oracle-expected's reward equals a direct rollout
    import mllm_offload.agents  # noqa: F401
    from mllm_offload.evaluation import run_episodes
    from mllm_offload.scenario import Scenario
    from mllm_offload.tradeoff import TradeOff

    scn = Scenario.build(profile="msao-paper", upload_plans=False)
    scn = scn.with_tradeoff(TradeOff(latency_price=0.2, cost_price=scn.trade.cost_price))
    direct = np.mean(run_episodes(scn.make_env("test"), scn.policy("oracle-expected"), scn.evaluation_seeds(200)).reward)
    printed = float(re.search(r"oracle-expected\s+reward (-?\d+\.\d+)", out).group(1))
    assert printed == pytest.approx(direct, abs=5e-5)


@pytest.mark.parametrize("argv", [["--features", "no_such_feature"], ["--bins", "0"], ["--profile", "no-such-profile"],
                                  ["--policy", "/nonexistent"]])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert _load().main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
