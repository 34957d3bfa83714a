"""The trade-off contract: prices, ranges, the env's per-episode trade-off, artifacts, budgets."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from mllm_offload.artifact import ArtifactPolicy, Network, write_artifact
from mllm_offload.config import RewardWeights
from mllm_offload.decision import Thresholds
from mllm_offload.envs.offload_env import reward_of
from mllm_offload.errors import UserInputError
from mllm_offload.observation import N_FEATURES_V1, OBSERVATION_SPEC
from mllm_offload.scenario import Scenario
from mllm_offload.tradeoff import DEFAULT_RANGE, PRESETS, Budgets, TradeOff, TradeOffRange, parse_prices

LP = OBSERVATION_SPEC.index("latency_price_log")


def test_default_tradeoff_is_the_default_reward_weights():
    w = RewardWeights()
    t = TradeOff.from_weights(w)
    assert (t.latency_price, t.cost_price) == (0.2, 0.1)
    assert t.weights(w) == w
    w2 = TradeOff(latency_price=1.0, cost_price=0.5).weights(w)
    assert (w2.latency, w2.cost_per_usd, w2.quality) == (1.0, 500.0, w.quality)
    assert w2.slo_violation == pytest.approx(w.slo_violation * 5)  # an SLO miss keeps costing 2.5 SLOs of latency
    assert PRESETS["balanced"] == t.latency_price


def test_range_sampling_checks_and_default():
    r = TradeOffRange(latency_price=(0.02, 1.0))
    rng = np.random.default_rng(0)
    lps = np.array([r.sample(rng).latency_price for _ in range(4000)])
    assert lps.min() >= 0.02 and lps.max() <= 1.0
    # log-uniform: the median is the geometric middle
    assert abs(np.median(np.log(lps)) - np.log(np.sqrt(0.02))) < 0.1
    assert r.default().latency_price == 0.2
    assert TradeOffRange(latency_price=(0.5, 2.0)).default().latency_price == pytest.approx(1.0)
    r.check(TradeOff(latency_price=1.0))
    with pytest.raises(UserInputError, match=r"latency price 2 .*outside.*\[0.02, 1\]"):
        r.check(TradeOff(latency_price=2.0))
    single = TradeOffRange.single(TradeOff(latency_price=0.3))
    with pytest.raises(UserInputError, match=r"0\.3 only"):
        single.check(TradeOff(latency_price=0.2))
    with pytest.raises(ValueError):
        TradeOffRange(latency_price=(1.0, 0.5))
    assert DEFAULT_RANGE.latency_price[1] / DEFAULT_RANGE.latency_price[0] >= 40


@pytest.mark.parametrize("text,msg", [("a", "not a number"), ("", "no price"), ("-1", "must be a number"), ("nan", "must be"), ("1e9", "must be")])
def test_parse_prices_errors(text, msg):
    with pytest.raises(UserInputError, match=msg):
        parse_prices(text)


def test_parse_prices_presets_sorted():
    assert parse_prices("latency-first,0.05,balanced") == [0.05, 0.2, 1.0]


@pytest.fixture(scope="module")
def scn():
    return Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", episode_len=40)


def test_same_seed_same_requests_at_every_tradeoff(scn):
    outs = {}
    for lp in (0.05, 1.0):
        env = scn.with_tradeoff(TradeOff(latency_price=lp)).make_env("test")
        obs, info = env.reset(seed=3)
        assert obs[LP] == pytest.approx(np.log(lp), abs=1e-6)
        lat, rew, score = [], [], []
        done = False
        while not done:
            obs, r, done, _, inf = env.step_thresholds(Thresholds(0.3, 0.6, 0.7))
            o = inf["outcome"]
            lat.append(o.latency_s), rew.append(r), score.append(o.score)
            # the reward is the trade-off's: score - price * latency / SLO - ...
            w = env.episode_weights
            expect = o.score - lp * (o.latency_s / env.slo_s + (2.5 if o.latency_s > env.slo_s else 0)) \
                - 1000 * 0.1 * o.cloud_cost_usd - w.energy_per_kj * o.energy_j * 1e-3
            assert r == pytest.approx(expect, abs=1e-9)
        outs[lp] = (info["start"], lat, score, rew)
    assert outs[0.05][:3] == outs[1.0][:3]  # same requests and outcomes ...
    assert outs[0.05][3] != outs[1.0][3]    # ... priced differently


def test_range_env_draws_a_tradeoff_per_episode_and_options_fix_it(scn):
    env = scn.with_tradeoff(tradeoff_range=TradeOffRange(latency_price=(0.02, 1.0))).make_env("train")
    fixed = scn.make_env("train")
    prices = set()
    for s in range(6):
        obs, info = env.reset(seed=s)
        _, info_fixed = fixed.reset(seed=s)
        assert info["start"] == info_fixed["start"] and info["bandwidth_offset_s"] == info_fixed["bandwidth_offset_s"]
        assert 0.02 <= info["latency_price"] <= 1.0 and obs[LP] == pytest.approx(np.log(info["latency_price"]), abs=1e-5)
        prices.add(round(info["latency_price"], 6))
    assert len(prices) == 6
    obs, info = env.reset(seed=0, options={"tradeoff": TradeOff(latency_price=0.5)})
    assert info["latency_price"] == 0.5
    with pytest.raises(UserInputError, match="TradeOff"):
        env.reset(seed=0, options={"tradeoff": 0.5})
    env.set_tradeoff(TradeOff(latency_price=0.07))
    assert env.reset(seed=1)[1]["latency_price"] == 0.07


def _mlp(tmp_path, n_in, trange=DEFAULT_RANGE, name="p"):
    rng = np.random.default_rng(0)
    arrays = {"w0": rng.normal(size=(4, n_in)).astype(np.float32), "b0": np.zeros(4, np.float32),
              "w1": rng.normal(size=(3, 4)).astype(np.float32), "b1": np.full(3, 0.5, np.float32)}
    d = write_artifact(tmp_path / name, kind="mlp", name=name, arrays=arrays, network=Network(layers=[n_in, 4, 3]),
                       tradeoff_range=trange)
    if n_in != len(OBSERVATION_SPEC):  # an artifact of an older build: fewer observation names
        m = json.loads((d / "policy.json").read_text())
        m["observation"] = m["observation"][:n_in]
        from mllm_offload.artifact import manifest_digest
        m.pop("digest")
        m["digest"] = manifest_digest(m)
        (d / "policy.json").write_text(json.dumps(m))
    return d


def test_version1_artifact_loads_and_ignores_the_tradeoff(tmp_path):
    with pytest.raises(UserInputError, match=r"network\.layers"):
        _mlp(tmp_path, N_FEATURES_V1)  # the writer of this build records 19 names: a 17-input net is refused ...
    d = _mlp(tmp_path, len(OBSERVATION_SPEC), name="v2")
    # ... but a manifest of version 1 (17 names, 17 inputs) loads and reads only its 17 features
    m = json.loads((d / "policy.json").read_text())
    w = np.load(d / "policy.npz")
    arrays = {k: w[k] for k in w.files}
    arrays["w0"] = arrays["w0"][:, :N_FEATURES_V1]
    d1 = tmp_path / "v1"
    d1.mkdir()
    np.savez(d1 / "policy.npz", **arrays)
    from mllm_offload.artifact import manifest_digest, sha256_file
    m["observation"] = m["observation"][:N_FEATURES_V1]
    m["network"]["layers"][0] = N_FEATURES_V1
    m.pop("tradeoff_range")  # version 1 had no such field
    m["files"] = {"policy.npz": {"sha256": sha256_file(d1 / "policy.npz"), "bytes": (d1 / "policy.npz").stat().st_size}}
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d1 / "policy.json").write_text(json.dumps(m))
    pol = ArtifactPolicy.load(d1)
    assert pol.tradeoff_range is None
    obs = np.zeros(len(OBSERVATION_SPEC), np.float32)
    a = pol.actions(obs)
    obs[LP] = 3.0  # the trade-off features are not read
    assert np.array_equal(a, pol.actions(obs))
    assert pol.check_tradeoff(TradeOff(latency_price=50.0)).latency_price == 50.0


def test_a_policy_reading_the_prices_must_record_its_range_and_a_v1_one_must_not(tmp_path):
    with pytest.raises(ValueError, match="tradeoff_range"):
        _mlp(tmp_path, len(OBSERVATION_SPEC), trange=None)
    d = _mlp(tmp_path, len(OBSERVATION_SPEC), name="v2")
    from mllm_offload.artifact import manifest_digest
    m = json.loads((d / "policy.json").read_text())
    m["tradeoff_range"] = None
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d / "policy.json").write_text(json.dumps(m))
    with pytest.raises(UserInputError, match="tradeoff_range: required"):
        ArtifactPolicy.load(d)


def test_artifact_records_and_checks_its_range(tmp_path):
    d = _mlp(tmp_path, len(OBSERVATION_SPEC), TradeOffRange(latency_price=(0.05, 0.5)))
    pol = ArtifactPolicy.load(d)
    assert pol.tradeoff_range is not None and pol.tradeoff_range.latency_price == (0.05, 0.5)
    assert json.loads((d / "policy.json").read_text())["tradeoff_range"]["latency_price"] == [0.05, 0.5]
    with pytest.raises(UserInputError, match="outside the policy's trained range"):
        pol.check_tradeoff(TradeOff(latency_price=1.0))


def test_lagrangian_raises_the_multiplier_of_a_violated_p95_budget(scn):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from mllm_offload.agents.ppo.constraints import Lagrangian, constraints_for

    cons = constraints_for(None, Budgets(p95_latency_s=0.01), lam_init=0.0)
    assert [c.name for c in cons] == ["p95_latency"]
    venv = Lagrangian(DummyVecEnv([lambda: scn.make_env("train")]), cons, lam_lr=1.0)
    venv.reset()
    for _ in range(20):
        venv.step(np.array([[0.0, 0.0, 1.0]], np.float32))  # cloud only: always slower than 10 ms
    means = venv.update()
    assert means["p95_latency"] == 1.0 and cons[0].lam == pytest.approx(0.95)
    _, r, _, infos = venv.step(np.array([[0.0, 0.0, 1.0]], np.float32))
    env = venv.venv.envs[0]
    raw = reward_of(infos[0]["outcome"], env.episode_weights, env.slo_s)
    assert r[0] == pytest.approx(raw - 0.95 * (1.0 - 0.05), abs=1e-5)  # r - lam * (g - limit)
    cons_cost = constraints_for(0.5, Budgets(cost_usd_per_1k=0.1), lam_init=0.3, lams={"cost": 2.0})
    assert [(c.name, c.lam) for c in cons_cost] == [("score_floor", 0.3), ("cost", 2.0)]


def test_lagrangian_upload_budget_prices_the_bytes_sent(scn):
    """The upload budget's signal is the MB a request sent (a cancelled upload: what was sent);
    cloud only over budget raises the multiplier, edge only (nothing sent) lowers it."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from mllm_offload.agents.ppo.constraints import Lagrangian, constraints_for

    budget = 0.01
    cons = constraints_for(None, Budgets(upload_mb_per_request=budget), lam_init=0.0)
    assert [(c.name, c.limit, c.scale) for c in cons] == [("upload", budget, 1.0)]  # the multiplier: score per MB
    venv = Lagrangian(DummyVecEnv([lambda: scn.make_env("train")]), cons, lam_lr=1.0)
    venv.reset()
    sent = []
    for _ in range(20):
        _, r, _, infos = venv.step(np.array([[0.0, 0.0, 1.0]], np.float32))  # cloud only: everything uploaded
        o = infos[0]["outcome"]
        sent.append(o.bytes_sent / 1e6)
        assert o.bytes_sent > 0
    means = venv.update()
    assert means["upload"] == pytest.approx(np.mean(sent))
    assert cons[0].lam == pytest.approx(np.mean(sent) - budget) and cons[0].lam > 0
    lam = cons[0].lam
    _, r, _, infos = venv.step(np.array([[0.0, 0.0, 1.0]], np.float32))
    env = venv.venv.envs[0]
    raw = reward_of(infos[0]["outcome"], env.episode_weights, env.slo_s)
    assert r[0] == pytest.approx(raw - lam * (infos[0]["outcome"].bytes_sent / 1e6 - budget), rel=1e-5)
    last = infos[0]["outcome"].bytes_sent / 1e6
    for _ in range(199):
        _, _, _, infos = venv.step(np.array([[1.0, 1.0, 0.0]], np.float32))  # edge only: nothing sent
        assert infos[0]["outcome"].bytes_sent == 0
    means = venv.update()
    assert means["upload"] == pytest.approx(last / 200)
    assert cons[0].lam == pytest.approx(max(0.0, lam + (last / 200 - budget)))


def test_budgets_validate():
    with pytest.raises(ValueError):
        Budgets(p95_latency_s=0.0)
    with pytest.raises(ValueError):
        Budgets(upload_mb_per_request=-0.1)
    assert not Budgets().active() and Budgets(cost_usd_per_1k=0.0).active() and Budgets(upload_mb_per_request=0.5).active()
    from mllm_offload.tradeoff import BUDGETS

    # every budget field has its flag and metric (the CLI, run.json and validation read this table)
    assert [b.field for b in BUDGETS] == list(Budgets.model_fields)
    assert [b.arg for b in BUDGETS] == ["p95_budget", "cost_budget", "upload_budget"]
    b = Budgets(p95_latency_s=2.0, upload_mb_per_request=0.1)
    assert [(s.field, v) for s, v in b.limits()] == [("p95_latency_s", 2.0), ("upload_mb_per_request", 0.1)]
    assert b.met_by({"latency_p95_s": 2.0, "mb_uploaded_mean": 0.1, "cloud_cost_usd_per_1k": 99.0})
    assert not b.met_by({"latency_p95_s": 2.1, "mb_uploaded_mean": 0.1})


def test_reward_scale_divides_by_the_episode_price(scn):
    from mllm_offload.agents.ppo.reward_scale import TrainingReward, reward_scale

    raw = scn.with_tradeoff(TradeOff(latency_price=0.5)).make_env("train")
    wrapped = TrainingReward(scn.with_tradeoff(TradeOff(latency_price=0.5)).make_env("train"), per_price=True)
    plain = TrainingReward(scn.with_tradeoff(TradeOff(latency_price=0.5)).make_env("train"))
    raw.reset(seed=4), wrapped.reset(seed=4), plain.reset(seed=4)
    a = np.array([0.3, 0.6, 0.7], np.float32)
    for _ in range(10):
        edge = raw.unwrapped.current_edge_score()
        _, r0, _, _, info = raw.step(a)
        r1 = wrapped.step(a)[1]
        r2 = plain.step(a)[1]
        assert r2 == pytest.approx(r0 - edge) and r1 == pytest.approx((r0 - edge) / 3.5) and reward_scale(0.5) == 3.5
        if info["outcome"].answered_by == "edge":  # the edge's own answer: no score noise left
            assert r2 == pytest.approx(r0 - info["outcome"].score)


def test_expected_scores_replace_the_coin_flip(scn):
    """``expected_scores``: each step reports the answer's expected score given the difficulty and
    the edge's confidence (the cloud's by plan), and the training reward is the realised one with
    that expectation in place of the coin flip, less the edge's expected score as the baseline."""
    from mllm_offload.agents.ppo.reward_scale import TrainingReward

    s = scn.with_tradeoff(TradeOff(latency_price=0.2))
    raw, exp = s.make_env("train"), TrainingReward(s.make_env("train"), expected=True)
    raw.reset(seed=5), exp.reset(seed=5)
    base, t = raw.unwrapped, raw.unwrapped.trace
    assert base.has_expected_scores and t.plans is not None
    q = base.episode_weights.quality
    seen = set()
    for i in range(base.n_requests):
        a = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.7]][i % 3] + [0.5, 0.0, 0.0], np.float32)
        k = base.episode_info["start"] + base._i
        e_conf = float(t.edge_score_expected_given_conf[k])
        _, r0, _, _, info = raw.step(a)
        r1 = exp.step(a)[1]
        o = info["outcome"]
        seen.add(o.answered_by)
        if o.answered_by == "cloud":  # k is this request's row: the realised score is the trace's
            assert o.score == t.plans.cloud_score[k, o.upload_plan]
            want = float(t.extra["cloud_score_expected_given_conf"][k, o.upload_plan])
        else:
            assert o.score == t.edge_score[k]
            want = e_conf
        assert info["expected_score"] == pytest.approx(want) and 0.0 <= want <= 1.0
        assert r1 == pytest.approx(r0 - q * (o.score - want) - q * e_conf)
    assert seen == {"edge", "cloud"}


def test_expected_scores_need_a_synthetic_trace():
    from mllm_offload.agents.ppo.reward_scale import TrainingReward

    env = Scenario.build(trace="shapes-real", bandwidth="markov:mobile-3g", episode_len=20).make_env("val")
    env.reset(seed=0)
    assert not env.unwrapped.has_expected_scores
    assert env.unwrapped.step(np.full(6, 0.5, np.float32))[4]["expected_score"] is None
    with pytest.raises(ValueError, match="has none"):
        TrainingReward(env, expected=True)


def test_expected_cloud_score_given_confidence_is_unbiased_where_the_edge_was_unsure():
    """The two models' coins are correlated (a copula), so a cloud answer sent because the edge was
    unsure is right less often than P(cloud correct | difficulty): the conditional expectation the
    synthetic trace keeps for training matches the realised scores there, the unconditional one
    does not (for every upload plan)."""
    from mllm_offload.traces.synth import generate

    t = generate("mobile-3g", 40_000, seed=11)
    cond, pt = t.extra["cloud_score_expected_given_conf"], t.plans
    unsure = t.edge_confidence < 0.5
    for j in range(pt.cloud_score.shape[1]):
        m = unsure & ~np.isnan(pt.cloud_score[:, j])
        d = pt.cloud_score[m, j] - cond[m, j]
        se = d.std() / np.sqrt(m.sum())
        assert abs(d.mean()) < 4 * se, (j, d.mean(), se)
        assert (pt.cloud_score[m, j] - pt.cloud_score_expected[m, j]).mean() < -4 * se  # the bias it removes
    everyone = pt.cloud_score[:, 0] - cond[:, 0]
    assert abs(everyone.mean()) < 4 * everyone.std() / np.sqrt(len(everyone))


def test_bivariate_normal_cdf_against_known_values():
    """Sheppard's integral plus Phi(h) Phi(k) is the bivariate normal CDF; Acklam's quantile."""
    from mllm_offload.traces.synth import _norm_ppf, _sheppard

    cdf = NormalDist().cdf

    def bvn(h: float, k: float, rho: float) -> float:
        return cdf(h) * cdf(k) + float(_sheppard(np.array([h]), np.array([k]), rho)[0])

    # P(Z1 < 0, Z2 < 0) = 1/4 + asin(rho) / (2 pi); independence; and rho = 0.5 at (1, -0.5)
    for rho in (0.0, 0.3, 0.5, 0.9):
        assert bvn(0.0, 0.0, rho) == pytest.approx(0.25 + math.asin(rho) / (2 * math.pi), abs=1e-12)
    assert bvn(1.0, -0.5, 0.5) == pytest.approx(0.2960906, abs=1e-6)  # scipy.stats.multivariate_normal
    p = np.array([1e-9, 0.01, 0.3, 0.5, 0.8, 0.99, 1 - 1e-9])
    assert np.allclose(_norm_ppf(p), [NormalDist().inv_cdf(v) for v in p], rtol=1e-8, atol=1e-8)


def test_a_synthetic_trace_read_back_from_a_file_has_no_expected_scores_for_training(tmp_path):
    """The conditional expectations are not written to trace files: a synthetic trace read back
    trains on realised scores under auto, and is refused under expected."""
    from mllm_offload.traces.synth import generate

    f = tmp_path / "syn.jsonl"
    generate("mobile-3g", 300, seed=3, with_records=True).write_jsonl(f)
    env = Scenario.build(trace=str(f), bandwidth="markov:mobile-3g", episode_len=20).make_env("train")
    assert not env.unwrapped.has_expected_scores
    assert Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", episode_len=20).make_env("train").unwrapped.has_expected_scores


@pytest.mark.parametrize("setting, available, want", [
    ("realised", True, False), ("realised", False, False), ("expected", True, True),
    ("auto", True, True), ("auto", False, False),
])
def test_training_scores_setting(setting, available, want):
    from mllm_offload.config import PPOHyperparams

    assert PPOHyperparams(training_scores=setting).expected_scores(available) is want


def test_training_scores_expected_without_expected_scores_is_one_line():
    from mllm_offload.config import PPOHyperparams
    from mllm_offload.errors import UserInputError

    with pytest.raises(UserInputError, match=r"training_scores: expected needs a synthetic profile.*my\.jsonl has none: use realised or auto"):
        PPOHyperparams(training_scores="expected").expected_scores(False, "my.jsonl")


def test_validation_ranks_by_expected_reward_when_asked(scn):
    """``eval_metrics(..., expected_scores=True)``: ``selection_reward`` is the mean reward with each
    answer scored by its expectation; the reported metrics stay the realised ones."""
    from mllm_offload.agents import EdgeOnly
    from mllm_offload.agents.ppo.callbacks import eval_metrics
    from mllm_offload.evaluation.rollout import run_episodes

    env = scn.make_env("val")
    plain = eval_metrics(env, EdgeOnly(), [0, 1])
    m = eval_metrics(env, EdgeOnly(), [0, 1], expected_scores=True)
    log = run_episodes(env, EdgeOnly(), [0, 1])
    q = env.unwrapped.episode_weights.quality
    want = np.mean(np.asarray(log.reward) - q * (np.asarray(log.score) - np.asarray(log.expected_score)))
    assert m["reward_mean"] == plain["reward_mean"] == pytest.approx(np.mean(log.reward))
    assert m["selection_reward"] == m["expected_reward_mean"] == pytest.approx(want) != plain["selection_reward"]
    assert "expected_reward_mean" not in plain


def _cli_error(capsys, argv):
    from mllm_offload.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mllm-offload {argv[0]}: error: ")
    return err[0]


def test_a_reward_weight_beyond_a_price_range_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("reward: {latency: 150}\n")
    msg = _cli_error(capsys, ["evaluate", "--config", str(cfg), "--bandwidth", "constant:2", "--policies", "edge", "--requests", "20",
                              "--no-throughput"])
    assert "reward.latency: 150 is the latency price, which must be in [0, 100]" in msg


def test_evaluating_a_policy_outside_its_range_is_one_line(tmp_path, capsys):
    d = _mlp(tmp_path, len(OBSERVATION_SPEC), TradeOffRange(latency_price=(0.05, 0.5)))
    msg = _cli_error(capsys, ["evaluate", "--policy", str(d), "--latency-price", "2", "--bandwidth", "constant:2", "--policies", "edge",
                              "--requests", "20", "--no-throughput"])
    assert "--latency-price" in msg and "outside the policy's trained range (latency price [0.05, 0.5]" in msg


def test_a_malformed_tradeoff_range_in_policy_json_is_one_line(tmp_path):
    from mllm_offload.artifact import manifest_digest

    d = _mlp(tmp_path, len(OBSERVATION_SPEC))
    m = json.loads((d / "policy.json").read_text())
    m["tradeoff_range"]["latency_price"] = [1.0, 0.5]
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d / "policy.json").write_text(json.dumps(m))
    with pytest.raises(UserInputError, match=r"policy\.json: tradeoff_range: .*need 0 < lo <= hi"):
        ArtifactPolicy.load(d)


def test_version2_artifact_loads_reads_the_tradeoff_and_ignores_the_edge_capacity(tmp_path):
    from mllm_offload.artifact import manifest_digest, sha256_file
    from mllm_offload.observation import N_FEATURES_V2

    d = _mlp(tmp_path, len(OBSERVATION_SPEC), name="v3")
    m = json.loads((d / "policy.json").read_text())
    w = np.load(d / "policy.npz")
    arrays = {k: w[k] for k in w.files}
    arrays["w0"] = arrays["w0"][:, :N_FEATURES_V2]
    d2 = tmp_path / "v2"
    d2.mkdir()
    np.savez(d2 / "policy.npz", **arrays)
    m["observation"] = m["observation"][:N_FEATURES_V2]
    m["network"]["layers"][0] = N_FEATURES_V2
    m["files"] = {"policy.npz": {"sha256": sha256_file(d2 / "policy.npz"), "bytes": (d2 / "policy.npz").stat().st_size}}
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d2 / "policy.json").write_text(json.dumps(m))
    pol = ArtifactPolicy.load(d2)
    assert pol.tradeoff_range is not None
    obs = np.zeros(len(OBSERVATION_SPEC), np.float32)
    a = pol.actions(obs)
    obs[OBSERVATION_SPEC.index("edge_capacity")] = 0.0 if obs[-1] else 1.0  # the capacity is not read ...
    assert np.array_equal(a, pol.actions(obs))
    obs[LP] = 3.0  # ... the trade-off is
    assert not np.array_equal(a, pol.actions(obs))
    # an 18-name manifest is neither version: refused with the count
    m["observation"] = m["observation"][:18]
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d2 / "policy.json").write_text(json.dumps(m))
    with pytest.raises(UserInputError, match="18 features, this build has 20"):
        ArtifactPolicy.load(d2)


def test_validation_keeps_only_models_within_the_upload_budget():
    from mllm_offload.agents.ppo.callbacks import ValidationCallback

    b = Budgets(upload_mb_per_request=0.05)
    assert ValidationCallback.meets({"mb_uploaded_mean": 0.05}, None, b)
    assert not ValidationCallback.meets({"mb_uploaded_mean": 0.0501}, None, b)
    assert not ValidationCallback.meets({}, None, b)  # a record without the metric: not met
    assert ValidationCallback.meets({"mb_uploaded_mean": 9.0}, None, Budgets())
