"""train: one conditioned policy by default, one price with --latency-price, budgets, the final frontier."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("stable_baselines3")

from mllm_offload.cli import main

SMALL = ["--bandwidth", "markov:mobile-3g", "--timesteps", "1024", "--eval-requests", "200", "--quiet"]


@pytest.mark.slow  # trains PPO
def test_conditioned_by_default_records_its_range_and_prints_the_frontier(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--latency-price-range", "0.05,0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "policy" / "policy.json").read_text())
    assert m["tradeoff_range"]["latency_price"] == [0.05, 0.5]  # what it serves; training draws from a wider range
    assert "## One policy, every trade-off" in text and "### quality-first (latency price 0.05)" in text
    assert "latency-first (latency price 1)" in text  # outside the range: noted, the baselines still shown
    assert (out / "frontier.png").stat().st_size > 10_000
    ev = json.loads((out / "eval_test.json").read_text())
    assert {p["latency_price"] for p in ev["frontier"]["ppo"]} == {0.05, 0.2}
    assert "msao" in ev["dominance"] and "ppo_p95_over_baseline_at_equal_score" in ev["dominance"]["msao"]
    # the chosen model's validation reward at each validation price (10 episodes over the range served, ends included)
    by_price = json.loads((out / "best" / "info.json").read_text())["validation"]["reward_by_price"]
    prices = [p["latency_price"] for p in by_price]
    assert len(prices) == 10 and prices == sorted(prices) and prices[0] == pytest.approx(0.05) and prices[-1] == pytest.approx(0.5)
    assert all(isinstance(p["reward_mean"], float) for p in by_price)


@pytest.mark.slow  # trains PPO
def test_one_price_with_a_budget(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--latency-price", "0.3", "--p95-budget", "2.5", "--upload-budget", "0.05", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    m = json.loads((out / "policy" / "policy.json").read_text())
    assert m["tradeoff_range"]["latency_price"] == [0.3, 0.3]
    assert m["training"]["budgets"] == {"p95_latency_s": 2.5, "cost_usd_per_1k": None, "upload_mb_per_request": 0.05}
    assert "p95 budget 2.5 s: PPO's p95 on the test split is" in text
    assert "upload budget 0.05 MB per request: PPO uploads" in text
    assert "## One policy, every trade-off" not in text
    run = json.loads((out / "run.json").read_text())["args"]
    assert run["latency_price"] == 0.3 and run["p95_budget"] == 2.5 and run["upload_budget"] == 0.05


@pytest.mark.parametrize("argv,msg", [
    (["--latency-price-range", "0,1"], "--latency-price-range: prices must be > 0"),
    (["--latency-price-range", "x"], "--latency-price-range: 'x' is not a number"),
    (["--latency-prices", "0.1,zz"], "--latency-prices: 'zz' is not a number"),
    (["--p95-budget", "-1"], "--p95-budget"),
    (["--latency-price", "500"], "--latency-price"),
    (["--p95-budget", "3"], "a budget is held at one trade-off; add --latency-price"),
    (["--upload-budget", "-0.5"], "--upload-budget"),
    (["--upload-budget", "0.05"], "a budget is held at one trade-off; add --latency-price"),
    (["--latency-price", "0.2", "--latency-price-range", "0.1,1"], "give one of them"),
    (["--latency-price", "0.2", "--latency-prices", "0.1,1"], "not with --latency-price or --no-eval"),
])
def test_bad_tradeoff_flags_are_one_line_before_training(tmp_path, capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        rc = main(["train", *SMALL, "--out", str(tmp_path / "r"), *argv])
        raise SystemExit(rc)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("mllm-offload train: error: ") and msg in err[0]
    assert len(err) == 1 or err[1].startswith("see: mllm-offload train --help")  # argparse's own errors add where to look
    assert not (tmp_path / "r").exists()
