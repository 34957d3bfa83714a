"""The environment is learnable: a few thousand PPO steps beat the untrained policy."""

import pytest

pytest.importorskip("stable_baselines3")

from mllm_offload.agents import evaluate  # noqa: E402
from mllm_offload.agents.ppo import train_ppo  # noqa: E402
from mllm_offload.envs import OffloadEnv  # noqa: E402


def test_short_training_improves_reward(tmp_path):
    def make():
        return OffloadEnv(profile="mobile-3g", split="train", synthetic_requests=5000, episode={"n_requests": 100})

    val = OffloadEnv(profile="mobile-3g", split="val", synthetic_requests=5000, episode={"n_requests": 100})
    untrained = train_ppo(make, 1, seed=0, progress_bar=False, n_steps=64, batch_size=64)
    trained = train_ppo(make, 6000, seed=0, out_dir=tmp_path, progress_bar=False)
    untrained.name, trained.name = "untrained", "trained"
    res, _ = evaluate(val, [untrained, trained], 600, throughput=False)
    assert res["trained"]["reward_mean"] > res["untrained"]["reward_mean"] + 0.02
    assert (tmp_path / "model.zip").exists()
