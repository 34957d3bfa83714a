"""The expected-outcome oracle and the expected-score columns of synthetic traces."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mllm_offload.agents  # noqa: F401  (registers oracle and oracle-expected)
from mllm_offload.agents import ExpectedOracle, HindsightOracle
from mllm_offload.decision import SEND_ALL, Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.evaluation import evaluate
from mllm_offload.scenario import Scenario
from mllm_offload.trace_format import EXPECTED_COLUMNS, load_trace
from mllm_offload.traces.synth import PROFILES, generate


@pytest.mark.parametrize("name", list(PROFILES))
def test_expected_columns_match_realised_outcomes(name):
    tr = generate(name, 20_000, seed=0)
    assert tr.has_expected_scores
    for c in EXPECTED_COLUMNS:
        v = getattr(tr, c)
        assert v.shape == (len(tr),) and np.all((v >= 0.0) & (v <= 1.0)), c
    # the realised scores are coin flips of the expected ones: equal means, and calibrated per bin
    assert tr.edge_score.mean() == pytest.approx(tr.edge_score_expected.mean(), abs=0.01)
    assert tr.cloud_score.mean() == pytest.approx(tr.cloud_score_expected.mean(), abs=0.01)
    for exp, real in ((tr.edge_score_expected, tr.edge_score), (tr.cloud_score_expected, tr.cloud_score)):
        bins = np.quantile(exp, [0.0, 0.25, 0.5, 0.75, 1.0])
        which = np.clip(np.searchsorted(bins, exp, side="right") - 1, 0, 3)
        for b in range(4):
            m = which == b
            assert real[m].mean() == pytest.approx(exp[m].mean(), abs=0.03)
    # harder requests (latent difficulty) have lower expected scores
    assert np.corrcoef(tr.extra["difficulty"], tr.edge_score_expected)[0, 1] < -0.8
    # given the confidence: calibrated among confident and unconfident answers alike, and sharper
    g = tr.edge_score_expected_given_conf
    for m in (tr.edge_confidence >= np.median(tr.edge_confidence), tr.edge_confidence < np.median(tr.edge_confidence)):
        assert tr.edge_score[m].mean() == pytest.approx(g[m].mean(), abs=0.015)
    high = tr.edge_confidence >= np.median(tr.edge_confidence)
    assert g[high].mean() > tr.edge_score_expected[high].mean()


def test_expected_columns_round_trip_and_old_files_still_load(tmp_path):
    tr = generate("mobile-3g", 300, seed=4, with_records=True)
    for name in ("a.jsonl", "a.jsonl.gz"):
        tr.write_jsonl(tmp_path / name)
        back = load_trace(tmp_path / name)
        assert back.has_expected_scores
        for c in EXPECTED_COLUMNS:
            assert np.allclose(getattr(back, c), getattr(tr, c)), c
    test = back.split("test")
    assert np.array_equal(test.cloud_score_expected, back.cloud_score_expected[-len(test):])
    # a file without the fields (a recording, or a trace written before they existed) loads without them
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    old = [lines[0]]
    for line in lines[1:]:
        d = json.loads(line)
        d["edge"].pop("expected_score")
        d["edge"].pop("expected_score_given_confidence")
        d["cloud"].pop("expected_score")
        old.append(json.dumps(d))
    (tmp_path / "old.jsonl").write_text("\n".join(old) + "\n")
    plain = load_trace(tmp_path / "old.jsonl")
    assert not plain.has_expected_scores and all(getattr(plain, c) is None for c in EXPECTED_COLUMNS)
    assert plain.split("train").edge_score_expected is None
    assert np.allclose(plain.edge_score, tr.edge_score)
    # a column is kept only when every record has it
    (tmp_path / "mixed.jsonl").write_text("\n".join([lines[0], old[1], *lines[2:]]) + "\n")
    mixed = load_trace(tmp_path / "mixed.jsonl")
    assert mixed.edge_score_expected is None and mixed.cloud_score_expected is None
    with pytest.raises(UserInputError, match=r"cloud\.expected_score: Input should be less than or equal to 1"):
        bad = json.loads(lines[1])
        bad["cloud"]["expected_score"] = 1.5
        (tmp_path / "bad.jsonl").write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
        load_trace(tmp_path / "bad.jsonl")


def _check_counterfactual_expected(env, expected_edge, expected_cloud):
    """Walk an episode: at every request the expected rewards of edge only, cloud only and a gated
    mode differ from the realised ones by quality * (expected - realised score) of whoever answers,
    with ``expected_edge(k, accepted_on_conf)`` and ``expected_cloud(k, escalated)``."""
    env.reset(seed=3)
    t, w = env.trace, env.episode_weights
    edge_only, cloud_only, gated = Thresholds(1.0, 1.0, 0.0), Thresholds(0.0, 0.0, 1.0), Thresholds(1.0, 1.0, 0.5)
    seen = set()
    for i in range(env.n_requests):
        k = env.episode_info["start"] + i
        real = env.counterfactual_rewards([edge_only, cloud_only, gated])
        exp = env.counterfactual_rewards([edge_only, cloud_only, gated], expected=True)
        assert exp[0] - real[0] == pytest.approx(w.quality * (expected_edge(k, False) - t.edge_score[k]))
        assert exp[1] - real[1] == pytest.approx(w.quality * (expected_cloud(k, False) - t.cloud_score[k]))
        accepted = bool(t.edge_confidence[k] >= 0.5)
        seen.add(accepted)
        want = expected_edge(k, True) - t.edge_score[k] if accepted else expected_cloud(k, True) - t.cloud_score[k]
        assert exp[2] - real[2] == pytest.approx(w.quality * want)
        _, _, _, _, info = env.step_thresholds(cloud_only)
        # the oracle's numbers are the ones every step reports (what training_scores: expected uses);
        # a trace read back from a file reports none
        assert info["expected_score"] == (pytest.approx(expected_cloud(k, False)) if env.has_expected_scores else None)
    assert seen == {True, False}


def test_counterfactual_rewards_expected_condition_on_the_edge_confidence():
    """A profile's in-memory trace: every candidate is scored given the difficulty and the edge's
    confidence, the cloud too (its coin is correlated with the edge's). Unconditioned, a cloud
    answer sent because the edge was unsure would be credited P(cloud | difficulty), more than it
    earns on such requests (``tests/test_tradeoff.py`` measures that bias), and the oracle would
    overrate the gated modes."""
    env = Scenario.build(profile="mobile-3g", synthetic_requests=2000, episode_len=30).make_env("test")
    assert env.has_expected_scores
    t = env.trace
    cloud = t.extra["cloud_score_expected_given_conf"][:, SEND_ALL.index]
    _check_counterfactual_expected(env, lambda k, _: t.edge_score_expected_given_conf[k], lambda k, _: cloud[k])
    # the conditioning matters: on unsure requests the conditional cloud score is lower
    unsure = t.edge_confidence < 0.5
    assert cloud[unsure].mean() < t.cloud_score_expected[unsure].mean() - 0.01


def test_counterfactual_rewards_expected_use_the_plan_sent():
    """With upload plans, a cloud answer is scored with the cloud's expected score for the plan
    actually sent (the request's own modalities), not the whole request's."""
    env = Scenario.build(profile="mobile-3g", synthetic_requests=2000, episode_len=60).make_env("test")
    env.reset(seed=1)
    t, w = env.trace, env.episode_weights
    cloud = t.extra["cloud_score_expected_given_conf"]
    cloud_only = Thresholds(0.0, 0.0, 1.0)
    differs = 0
    for i in range(env.n_requests):
        k = env.episode_info["start"] + i
        plans = env.request_plans()
        cands = [(cloud_only, p) for p in plans]
        real = env.counterfactual_rewards(cands)
        exp = env.counterfactual_rewards(cands, expected=True)
        for p, r, e in zip(plans, real, exp):
            o = env.sim.plan(i, cloud_only, p.index).outcome
            assert o.upload_plan == p.index
            assert e - r == pytest.approx(w.quality * (cloud[k, p.index] - o.score))
        differs += len({round(float(cloud[k, p.index]), 9) for p in plans}) > 1
        env.step_thresholds(cloud_only)
    assert differs > 0  # some requests' plans change the cloud's expected score


def test_counterfactual_rewards_expected_from_a_file_use_the_columns_it_keeps(tmp_path):
    """A synthetic trace read back from a file keeps P(correct | difficulty) per model and the
    edge's given its confidence, not the cloud's given the edge's confidence: those columns."""
    generate("mobile-3g", 2000, seed=5, with_records=True).write_jsonl(tmp_path / "s.jsonl")
    env = Scenario.build(profile="mobile-3g", trace=tmp_path / "s.jsonl", episode_len=30).make_env("test")
    assert not env.has_expected_scores
    t = env.trace
    _check_counterfactual_expected(
        env, lambda k, on_conf: (t.edge_score_expected_given_conf if on_conf else t.edge_score_expected)[k],
        lambda k, _: t.cloud_score_expected[k])


@pytest.mark.parametrize("profile", ["mobile-3g", "msao-paper"])
def test_expected_oracle_lies_between_causal_baselines_and_hindsight(profile):
    scn = Scenario.build(profile=profile, bandwidth="markov:mobile-3g", synthetic_requests=5000)
    env = scn.make_env("test")
    pols = scn.policies("edge,cloud,msao,oracle-expected,oracle")
    assert isinstance(pols[3], ExpectedOracle) and isinstance(pols[4], HindsightOracle)
    res, logs = evaluate(env, pols, 1000, throughput=False)
    reward = {n: m["reward_mean"] for n, m in res.items()}
    best_causal = max(reward[n] for n in ("edge", "cloud", "msao"))
    assert best_causal < reward["oracle-expected"] < reward["oracle"]
    # what it earns is the realised outcome, as for every policy: coin flips, not probabilities
    assert set(logs["oracle-expected"].score) <= {0.0, 1.0}


def test_expected_oracle_refuses_recorded_traces(tmp_path):
    scn = Scenario.build(profile="mobile-3g", trace="shapes-real")
    msg = "the expected-outcome oracle needs a synthetic profile (expected scores); trace shapes-real has none"
    with pytest.raises(UserInputError) as e:
        scn.policies("edge,oracle-expected")
    assert msg in str(e.value) and "\n" not in str(e.value)
    # the simulator refuses too (an oracle built without a scenario), naming the file
    env = scn.make_env("test")
    oracle = ExpectedOracle()
    obs, _ = env.reset(seed=0)
    oracle.reset(0, env=env)
    with pytest.raises(UserInputError, match=r"expected-outcome oracle needs a synthetic profile .*shapes-real\.jsonl\.gz has none"):
        oracle.thresholds(obs)
    HindsightOracle().reset(0, env=env)  # the hindsight oracle still works on recordings
    assert len(env.counterfactual_rewards(HindsightOracle.CANDIDATES)) == 4
