import numpy as np
import pytest

from mllm_offload.agents import CloudOnly, EdgeOnly, HindsightOracle, MSAORule, RandomPolicy, StaticThresholds, TunedStatic
from mllm_offload.decision import SEND_ALL, Thresholds, UploadPlan, distinct_plans
from mllm_offload.evaluation import evaluate, markdown_table, run_episodes
from mllm_offload.observation import OBSERVATION_SPEC, RequestFeatures, SystemState, build_observation
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import TradeOff


def _obs(bw, edge_wait=0.0):
    return build_observation(RequestFeatures({"score": 0.5}, 200_000, 400), SystemState(bw, 0.05, edge_queue_s=edge_wait, edge_queue_n=int(edge_wait > 0)), TradeOff())


def test_msao_moves_thresholds_with_bandwidth_and_load():
    msao = MSAORule(slo_s=2.0)
    fast, slow = msao.thresholds(_obs(100.0)), msao.thresholds(_obs(0.2))
    assert slow.tau_low > fast.tau_low and slow.tau_high > fast.tau_high  # slow link: stay on the edge
    assert slow.tau_conf < fast.tau_conf
    busy = msao.thresholds(_obs(100.0, edge_wait=5.0))
    assert busy.tau_high < fast.tau_high  # busy edge: offload more


@pytest.mark.parametrize("profile", ["msao-paper", "mobile-3g"])
def test_oracle_bounds_every_policy(profile):
    env = Scenario.build(profile=profile, synthetic_requests=3000).make_env("test")
    pols = [EdgeOnly(), CloudOnly(), RandomPolicy(0), MSAORule(env.slo_s), StaticThresholds(Thresholds(0.3, 0.7, 0.6)), HindsightOracle()]
    res, logs = evaluate(env, pols, 600, throughput=False)
    best_other = max(m["reward_mean"] for n, m in res.items() if n != "oracle")
    assert res["oracle"]["reward_mean"] >= best_other
    assert res["edge"]["cloud_share"] == 0.0 and res["cloud"]["cloud_share"] == 1.0
    assert res["cloud"]["score_mean"] > res["edge"]["score_mean"]
    assert len(logs["msao"]) == 600
    table = markdown_table(res)
    assert table.count("\n") == len(pols) + 1 and "| oracle |" in table


def test_tuned_static_is_best_of_its_grid():
    env = Scenario.build(profile="msao-paper", synthetic_requests=2000, episode_len=50).make_env("train")

    def score(p):
        return float(np.mean(run_episodes(env, p, [1, 2]).reward))

    grid = ((0.0, 0.5, 1.0), (0.0, 0.7))
    tuned = TunedStatic.fit(score, grid)
    assert tuned.train_reward == pytest.approx(score(tuned))
    for lo, hi, c in [(0, 0, 0), (0, 1, 0.7), (1, 1, 0), (0.5, 1, 0.7)]:
        assert tuned.train_reward >= score(StaticThresholds(Thresholds(lo, hi, c))) - 1e-12


def test_tuned_static_plan_search_is_the_coordinate_search():
    """(1) best thresholds sending all, (2) best plan there, (3) thresholds again under that plan."""
    reduced, keyframes = UploadPlan(image="reduced"), UploadPlan(video="keyframes")
    calls = []

    def score(p):
        th, plan = p.decide(None)
        calls.append((th, plan))
        bonus = {None: 0.0, reduced: 0.1, keyframes: 0.05}.get(plan, -1.0)
        return -abs(th.tau_low - 0.5) + bonus + (0.7 if plan == reduced and th.tau_low == 0.0 else 0.0)

    grid = ((0.0, 0.5, 1.0), (0.0,))
    tuned = TunedStatic.fit(score, grid, plans=[SEND_ALL, reduced, keyframes])
    assert tuned.plan == reduced and tuned.th.tau_low == 0.0 and tuned.train_reward == pytest.approx(-0.5 + 0.1 + 0.7)
    assert tuned.decide(None) == (tuned.th, reduced)
    assert len(calls) == 6 + 2 + 6  # grid, the two plans, the grid again
    plain = TunedStatic.fit(score, grid)
    assert plain.plan is None and plain.decide(None)[1] is None and plain.th.tau_low == 0.5
    assert [p.variant() for p in distinct_plans([True, False, True])] == ["", "no_audio", "model_res", "model_res+no_audio",
                                                                           "reduced", "reduced+no_audio"]


def test_throughput_search_orders_policies():
    env = Scenario.build(profile="msao-paper", synthetic_requests=3000).make_env("test")
    res, _ = evaluate(env, [EdgeOnly(), CloudOnly()], 300, throughput=True)
    # the edge alone serves ~5 req/s; a single loaded cloud server far less within a 1 s SLO
    assert res["edge"]["throughput_rps"] > res["cloud"]["throughput_rps"] > 0
    with pytest.raises(TypeError):
        HindsightOracle().thresholds(np.zeros(len(OBSERVATION_SPEC)))
