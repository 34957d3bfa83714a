"""Frontiers over latency prices (evaluation/frontier.py) and ``evaluate --frontier``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from routing_helpers import random_mlp

import mllm_offload.agents  # noqa: F401  (registers tuned and oracle)
from mllm_offload.agents import HindsightOracle, TunedStatic, threshold_grid
from mllm_offload.artifact import Network, write_artifact
from mllm_offload.cli import main
from mllm_offload.decision import Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.evaluation import Frontier, dominance, frontier, frontier_text, reward_at, run_episodes, write_frontier_plot
from mllm_offload.evaluation.frontier import MSAO_GRID, msao_candidates, pareto_front
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.policy import REGISTRY, register
from mllm_offload.rules import MSAORule, StaticThresholds
from mllm_offload.scenario import Scenario
from mllm_offload.splits import TUNING_SEEDS
from mllm_offload.tradeoff import PRESETS, TradeOff, TradeOffRange

N = len(OBSERVATION_SPEC)
SCN_ARGS = ["--profile", "mobile-3g", "--bandwidth", "markov:mobile-3g", "--episode-len", "50"]


@pytest.fixture(scope="module")
def scn() -> Scenario:
    return Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", episode_len=50)


@pytest.fixture(scope="module")
def ppo_dir(tmp_path_factory):
    """A tiny random MLP trained (nominally) over latency prices [0.05, 0.5]."""
    sizes = [N, 8, 3]
    arrays = random_mlp(sizes)
    d = tmp_path_factory.mktemp("art") / "policy"
    return write_artifact(d, kind="mlp", name="ppo", arrays=arrays, network=Network(layers=sizes),
                          tradeoff_range=TradeOffRange(latency_price=(0.05, 0.5), cost_price=(0.1, 0.1)))


def test_reward_at_equals_the_env_reward(scn):
    env = scn.make_env("test")
    seeds = [0, 1]
    for pol, t in ((MSAORule(env.slo_s), None), (StaticThresholds(Thresholds(0.2, 0.6, 0.7)), TradeOff(latency_price=1.0)),
                   (HindsightOracle(), TradeOff(latency_price=0.05, cost_price=2.0))):
        log = run_episodes(env, pol, seeds, {"tradeoff": t} if t else None)
        w = (t or env.tradeoff).weights(env.weights)
        assert np.array_equal(reward_at(log, w, env.slo_s), np.asarray(log.reward))  # exactly: the same operations
        other = TradeOff(latency_price=3.0).weights(env.weights)
        assert not np.allclose(reward_at(log, other, env.slo_s), np.asarray(log.reward))


def test_fixed_families_share_everything_but_reward(scn):
    fr = frontier(scn, None, "edge,cloud,static:0.2,0.6,0.7", [1.0, 0.05, 0.2, 0.2], 100)
    assert fr.prices == [0.05, 0.2, 1.0]
    assert list(fr.families) == ["edge", "cloud", "static:0.2,0.6,0.7"]
    for name, pts in fr.families.items():
        assert fr.kinds[name] == "fixed" and len(pts) == 3
        assert [p["knob"] for p in pts] == ["fixed"] * 3 and [p["latency_price"] for p in pts] == fr.prices
        for k in ("score_mean", "latency_p95_s", "latency_mean_s", "cloud_cost_usd_per_1k"):
            assert len({p[k] for p in pts}) == 1, (name, k)
        r = [p["reward_mean"] for p in pts]
        assert r[0] > r[1] > r[2]  # latency costs more at a higher price
    assert dominance(fr) == {}  # no learned family
    text = frontier_text(fr)
    assert "### latency price 0.05" in text and "best deployable by reward" in text


def test_tuned_refit_is_the_argmax_and_matches_a_direct_fit(scn):
    prices = [0.05, 1.0]
    fr = frontier(scn, None, ["tuned"], prices, 100, tuned_grid=threshold_grid())
    env = scn.make_env("train")
    grid = threshold_grid()
    for p, pt in zip(prices, fr.families["tuned"]):
        t = TradeOff(latency_price=p, cost_price=scn.trade.cost_price)
        fit = TunedStatic.fit_scenario(scn.with_tradeoff(t))
        th = Thresholds(pt["params"]["tau_low"], pt["params"]["tau_high"], pt["params"]["tau_conf"])
        assert pt["knob"] == p and th == fit.th
        assert pt["params"].get("upload_plan") == (fit.plan.variant() if fit.plan is not None else None)  # the plan search too
        assert pt["train_reward"] == fit.train_reward
        for cand in [*grid[::9], Thresholds(1.0, 1.0, 0.0), Thresholds(0.0, 0.0, 1.0)]:  # rollouts at that price, no recomputation
            log = run_episodes(env, StaticThresholds(cand), list(TUNING_SEEDS), {"tradeoff": t})
            assert pt["train_reward"] >= sum(log.reward) / len(log) - 1e-12
    assert fr.families["tuned"][0]["params"] != fr.families["tuned"][1]["params"]
    assert fr.grids["tuned"]["candidates"] == len(grid)


def test_tuned_needs_its_grid(scn):
    with pytest.raises(ValueError, match="tuned_grid"):
        frontier(scn, None, "tuned", [0.2], 50)


def test_msao_refit_is_never_worse_than_its_default_on_train(scn):
    prices = [0.02, 0.2, 1.0]
    fr = frontier(scn, None, "msao", prices, 100)
    assert list(fr.families) == ["msao", "msao-default"]
    assert fr.kinds == {"msao": "refit", "msao-default": "fixed"}
    assert fr.grids["msao"]["candidates"] == len(MSAO_GRID[0]) * len(MSAO_GRID[1]) == len(msao_candidates(scn.slo_s))
    env = scn.make_env("train")
    log = run_episodes(env, MSAORule(env.slo_s), list(TUNING_SEEDS))
    for p, pt in zip(prices, fr.families["msao"]):
        r_default = float(np.mean(reward_at(log, TradeOff(latency_price=p).weights(env.weights), env.slo_s)))
        assert pt["train_reward"] >= r_default - 1e-12
        assert set(pt["params"]) == {"shift", "base_low", "base_high", "base_conf"}
    assert {"shift": 0.0, "base_low": 0.35, "base_high": 0.65, "base_conf": 0.75} in [c for c, _ in msao_candidates(scn.slo_s)]


def test_hindsight_names_run_per_price_and_unknown_names_fail(scn):
    register("oracle-test", "a hindsight policy of the test", lambda ctx, arg: HindsightOracle(), needs="simulator")
    try:
        fr = frontier(scn, None, "edge,oracle-test", [0.05, 1.0], 50)
    finally:
        del REGISTRY["oracle-test"]
    assert fr.kinds["oracle-test"] == "per-price" and fr.hindsight == ["oracle-test"]
    assert [p["knob"] for p in fr.families["oracle-test"]] == [0.05, 1.0]
    assert fr.families["oracle-test"][0]["score_mean"] >= fr.families["oracle-test"][1]["score_mean"]
    assert "best deployable by reward: edge" in frontier_text(fr)  # hindsight families never win
    if "oracle-expected" in REGISTRY:  # registered by agents, with needs="simulator": per price like any hindsight name
        fr = frontier(scn, None, "oracle-expected", [0.05, 1.0], 50)
        assert fr.kinds == {"oracle-expected": "per-price"} and fr.hindsight == ["oracle-expected"]
    with pytest.raises(UserInputError, match="unknown policy 'oracle-nope'"):
        frontier(scn, None, "edge,oracle-nope", [0.2], 50)
    with pytest.raises(UserInputError, match="twice"):
        frontier(scn, None, "edge,edge", [0.2], 50)


class _Recorder:
    """The artifact policy, recording the latency price it sees in each observation."""

    def __init__(self, inner):
        self.inner, self.name, self.tradeoff_range, self.seen = inner, "ppo", inner.tradeoff_range, set()

    def reset(self, seed=None, *, env=None):
        self.inner.reset(seed, env=env)

    def thresholds(self, obs):
        self.seen.add(round(math.exp(float(obs[OBSERVATION_SPEC.index("latency_price_log")])), 6))
        return self.inner.thresholds(obs)


def test_learned_policy_runs_per_price_inside_its_range(scn, ppo_dir):
    pol = scn.policy(ppo_dir, "ppo")
    assert pol.tradeoff_range is not None
    rec = _Recorder(pol)
    fr = frontier(scn, rec, "edge,msao", [0.02, 0.05, 0.2, 1.0], 100)
    assert fr.learned == "ppo" and fr.kinds["ppo"] == "conditioned"
    assert [p["knob"] for p in fr.families["ppo"]] == [0.05, 0.2]
    assert rec.seen == {0.05, 0.2}  # the trade-off enters its observation
    assert any("0.02, 1" in n and "skipped" in n for n in fr.notes)
    dom = dominance(fr)
    assert set(dom) == {"msao", "msao-default", "edge"}
    for b, d in dom.items():
        assert len(d["ppo_p95_over_baseline_at_equal_score"]) == len(fr.families[b]) == len(d["latency_price"])
    with pytest.raises(UserInputError, match="inside policy 'ppo'"):
        frontier(scn, pol, "edge", [1.0, 2.0], 50)
    js = json.loads(json.dumps(fr.to_json()))
    assert set(js) == {"frontier", "dominance", "frontier_meta"}


def _pt(score, p95, price=0.2, knob="fixed"):
    return {"knob": knob, "latency_price": price, "score_mean": score, "latency_p95_s": p95, "reward_mean": score - p95 / 10,
            "cloud_cost_usd_per_1k": 0.0}


def test_pareto_front_and_dominance_interpolation():
    ppo = [_pt(0.70, 1.0, 1.0, 1.0), _pt(0.75, 2.0, 0.5, 0.5), _pt(0.72, 3.0, 0.3, 0.3), _pt(0.80, 4.0, 0.05, 0.05)]
    s, q = pareto_front(ppo)  # (0.72, 3.0) is dominated by (0.75, 2.0)
    assert s.tolist() == [0.70, 0.75, 0.80] and q.tolist() == [1.0, 2.0, 4.0]
    fr = Frontier(prices=[0.05, 1.0], cost_price=0.1, learned="ppo", hindsight=["oracle"],
                  families={"ppo": ppo,
                            "msao": [_pt(0.725, 1.5, 0.05, 0.05), _pt(0.9, 3.0, 1.0, 1.0)],
                            "edge": [_pt(0.6, 0.5, 0.05), _pt(0.6, 0.5, 1.0)],
                            "cloud": [_pt(0.80, 8.0, 0.05), _pt(0.80, 8.0, 1.0)],
                            "oracle": [_pt(0.95, 0.5, 0.05), _pt(0.95, 0.5, 1.0)]})
    d = dominance(fr)
    assert list(d) == ["msao", "edge", "cloud"]  # no hindsight baseline
    m = d["msao"]
    assert m["ppo_p95_over_baseline_at_equal_score"][0] == pytest.approx(1.5 / 1.5)  # score 0.725: p95 1.5 on the segment
    assert m["ppo_score_minus_baseline_at_equal_p95"][0] == pytest.approx(0.725 - 0.725)
    assert m["ppo_p95_over_baseline_at_equal_score"][1] is None  # score 0.9 above PPO's best
    assert m["ppo_score_minus_baseline_at_equal_p95"][1] == pytest.approx(0.775 - 0.9)  # p95 3.0: between 2.0 and 4.0
    e = d["edge"]
    assert e["ppo_p95_over_baseline_at_equal_score"] == [None, None] and e["ppo_score_minus_baseline_at_equal_p95"] == [None, None]
    c = d["cloud"]
    assert c["ppo_p95_over_baseline_at_equal_score"] == [pytest.approx(0.5)] * 2  # 4.0 / 8.0
    assert c["ppo_score_minus_baseline_at_equal_p95"] == [None, None]  # p95 8 beyond PPO's 4
    one = Frontier(prices=[0.2], cost_price=0.1, learned="ppo", families={"ppo": [_pt(0.7, 1.0)], "edge": [_pt(0.7, 2.0)]})
    assert dominance(one)["edge"]["ppo_p95_over_baseline_at_equal_score"] == [pytest.approx(0.5)]
    assert dominance(one)["edge"]["ppo_score_minus_baseline_at_equal_p95"] == [None]
    text = frontier_text(fr, PRESETS)
    assert "quality-first (latency price 0.05)" in text and "latency-first (latency price 1)" in text
    assert "preset balanced (latency price 0.2) was not evaluated" in text
    assert "- vs msao:" in text and "n/a" in text


def test_frontier_plot(tmp_path):
    fr = Frontier(prices=[0.05, 1.0], cost_price=0.1, learned="ppo", kinds={"ppo": "conditioned", "edge": "fixed"},
                  families={"ppo": [_pt(0.7, 1.0, 1.0, 1.0), _pt(0.8, 4.0, 0.05, 0.05)], "edge": [_pt(0.6, 0.5, 0.05), _pt(0.6, 0.5, 1.0)]})
    p = write_frontier_plot(tmp_path / "x" / "frontier.png", fr, "a title")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in p.parent.iterdir()] == ["frontier.png"]  # no temporary left behind


def test_cli_frontier_writes_json_and_plot(tmp_path, ppo_dir, capsys):
    out, plots = tmp_path / "f.json", tmp_path / "plots"
    rc = main(["evaluate", *SCN_ARGS, "--requests", "100", "--policies", "edge,cloud,msao,tuned,oracle", "--policy", str(ppo_dir),
               "--frontier", "--latency-prices", "0.05,balanced,1.0", "--json", str(out), "--plots", str(plots), "--no-throughput", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "### latency price 0.2" in text and "- vs msao:" in text and "outside its trained range" in text
    doc = json.loads(out.read_text())
    assert {"meta", "policies", "verdict", "frontier", "dominance", "frontier_meta"} <= set(doc)
    assert set(doc["frontier"]) == {"ppo", "edge", "cloud", "msao", "msao-default", "tuned", "oracle"}
    assert [p["knob"] for p in doc["frontier"]["ppo"]] == [0.05, 0.2]
    assert [p["latency_price"] for p in doc["frontier"]["tuned"]] == [0.05, 0.2, 1.0]
    for p in doc["frontier"]["edge"]:
        assert {"knob", "latency_price", "reward_mean", "score_mean", "latency_mean_s", "latency_p95_s", "cloud_cost_usd_per_1k"} <= set(p)
    for b in ("msao", "tuned", "edge", "cloud"):
        d = doc["dominance"][b]
        assert len(d["ppo_p95_over_baseline_at_equal_score"]) == len(d["ppo_score_minus_baseline_at_equal_p95"]) == 3
    assert (plots / "frontier.png").is_file() and (plots / "latency_cdf.png").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["--frontier", "--latency-prices", "0.1,abc"], "'abc' is not a number"),
    (["--frontier", "--latency-prices", "-1"], "must be a number in [0, 100]"),
    (["--frontier", "--latency-prices", ","], "no price given"),
    (["--latency-prices", "0.1"], "only with --frontier"),
])
def test_cli_bad_latency_prices_exit_2_with_one_line(tmp_path, capsys, argv, msg):
    out = tmp_path / "f.json"
    rc = main(["evaluate", *SCN_ARGS, "--requests", "50", "--policies", "edge", *argv, "--json", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and msg in err and err.startswith("mllm-offload evaluate: error: --latency-prices")
    assert not out.exists()
