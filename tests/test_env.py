import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mllm_offload.envs  # noqa: F401  (registers the env)
from mllm_offload.config import RewardWeights
from mllm_offload.decision import Thresholds
from mllm_offload.envs import ENV_ID, OffloadEnv, reward_of
from mllm_offload.errors import UserInputError


@pytest.mark.parametrize("profile", ["mobile-3g", "msao-paper"])
def test_gymnasium_and_sb3_checkers(profile):
    env = gym.make(ENV_ID, profile=profile, synthetic_requests=2000)
    check_env(env.unwrapped, skip_render_check=True)
    from stable_baselines3.common.env_checker import check_env as sb3_check

    sb3_check(OffloadEnv(profile=profile, synthetic_requests=2000), warn=False)


def test_seeding_is_deterministic_and_observations_in_space():
    def rollout(seed):
        env = OffloadEnv(synthetic_requests=2000, episode={"n_requests": 50})
        obs, info = env.reset(seed=seed)
        out = [obs]
        rng = np.random.default_rng(0)
        done = False
        while not done:
            obs, r, done, _trunc, _ = env.step(rng.random(3).astype(np.float32))
            assert env.observation_space.contains(obs)
            out.append(obs)
            out.append(np.array([r]))
        return np.concatenate(out), info

    a, ia = rollout(5)
    b, ib = rollout(5)
    c, _ = rollout(6)
    assert np.array_equal(a, b) and ia == ib
    assert not np.array_equal(a, c)


def test_bandwidth_estimate_comes_from_measurements_not_the_trace():
    env = OffloadEnv(bandwidth="constant:2", episode={"n_requests": 40}, synthetic_requests=2000)
    obs, _ = env.reset(seed=0)
    ix = env.observation_space.shape[0]
    from mllm_offload.observation import OBSERVATION_SPEC
    k = OBSERVATION_SPEC.index("bw_est_mbps_log")
    assert obs[k] == pytest.approx(np.log(env.system_cfg.bw_prior_mbps))  # nothing measured yet
    for _ in range(39):
        obs, *_ = env.step_thresholds(Thresholds(0.0, 0.0, 1.0))
    assert ix == len(OBSERVATION_SPEC)
    assert obs[k] == pytest.approx(np.log(2.0), abs=1e-4)  # measured uploads at 2 Mbps


def test_reward_weights_and_options():
    env = OffloadEnv(synthetic_requests=2000, reward={"quality": 1.0, "latency": 0, "slo_violation": 0, "cost_per_usd": 0, "energy_per_kj": 0})
    env.reset(seed=1)
    _, r, *_, info = env.step_thresholds(Thresholds(1.0, 1.0, 0.0))
    assert r == info["outcome"].score
    o = info["outcome"]
    w = RewardWeights()
    manual = o.score - w.latency * o.latency_s / 2.0 - (0.5 if o.latency_s > 2.0 else 0) - 100 * o.cloud_cost_usd - o.energy_j * 1e-3
    assert reward_of(o, w, 2.0) == pytest.approx(manual)
    _, info = env.reset(seed=1, options={"rate_scale": 3.0, "edge_speed": 0.5, "bandwidth_index": 2})
    assert info["rate_scale"] == 3.0 and info["edge_speed"] == 0.5
    with pytest.raises(UserInputError, match="unknown part"):
        OffloadEnv(split="dev")
    with pytest.raises(Exception, match="n_requests"):
        OffloadEnv(episode={"n_requests": 0})


def test_randomisation_ranges_apply():
    env = OffloadEnv(synthetic_requests=2000, episode={"rate_scale": (0.5, 2.0), "edge_speed": (0.8, 1.2)})
    infos = [env.reset(seed=s)[1] for s in range(20)]
    rates = [i["rate_scale"] for i in infos]
    assert min(rates) >= 0.5 and max(rates) <= 2.0 and len(set(rates)) > 1
    assert len({i["bandwidth"] for i in infos}) > 1


def test_step_reward_equals_reward_of():
    env = OffloadEnv(synthetic_requests=2000, episode={"n_requests": 60})
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    done = False
    while not done:
        _, r, done, _, info = env.step(rng.random(3))
        assert r == pytest.approx(reward_of(info["outcome"], env.weights, env.slo_s), abs=1e-12)


def test_bad_reset_options_are_rejected():
    env = OffloadEnv(synthetic_requests=2000)
    with pytest.raises(UserInputError, match="rate_scale and edge_speed must be > 0"):
        env.reset(seed=0, options={"rate_scale": 0.0})
    with pytest.raises(RuntimeError, match="reset"):
        OffloadEnv(synthetic_requests=2000).step(np.zeros(3))
