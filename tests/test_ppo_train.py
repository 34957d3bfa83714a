"""PPO training: it learns, writes its run folder, resumes, and exports a deployable artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from mllm_offload.agents.export import export_run
from mllm_offload.agents.ppo import SB3Policy, train
from mllm_offload.artifact import ArtifactPolicy
from mllm_offload.config import PPOHyperparams
from mllm_offload.envs import OffloadEnv
from mllm_offload.evaluation import evaluate
from mllm_offload.runtime import OffloadPolicy
from mllm_offload.scenario import Scenario

pytestmark = pytest.mark.slow  # trains PPO

HP = dict(n_envs=1, n_steps=512, batch_size=128, eval_freq=2048, eval_episodes=4, checkpoint_freq=1024)


SCENARIO = Scenario.build(profile="mobile-3g", synthetic_requests=5000)


def make_env(split: str) -> OffloadEnv:
    return SCENARIO.make_env(split)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    res = train(make_env, PPOHyperparams(n_timesteps=6144, **HP), d, seed=0, progress_bar=False, log=lambda s: None)
    return d, res


def test_short_training_improves_reward_over_untrained(run):
    from stable_baselines3 import PPO

    d, _res = run
    val = make_env("val")
    untrained = SB3Policy(PPO("MlpPolicy", make_env("train"), seed=0, device="cpu"), None, None)
    trained = ArtifactPolicy.load(export_run(d, d / "policy"))
    trained.name = "trained"
    untrained.name = "untrained"
    out, _ = evaluate(val, [untrained, trained], 600, throughput=False)
    assert out["trained"]["reward_mean"] > out["untrained"]["reward_mean"] + 0.02


def test_run_folder_layout_and_tensorboard_scalars(run):
    d, res = run
    assert res.timesteps == 6144
    for sub in ("best", "final", "checkpoint"):
        assert (d / sub / "model.zip").is_file()
        assert (d / sub / "vecnormalize.json").is_file()
    events = list((d / "tb").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for t in ("eval/reward", "eval/score", "eval/latency_p50_s", "eval/latency_p95_s", "eval/slo_attainment",
              "eval/cloud_share", "eval/tau_low_mean", "eval/tau_high_mean", "eval/tau_conf_mean", "eval/msao_reward"):
        assert t in tags, t
    # validation happened at 2048, 4096, 6144 steps, and MSAO's reference is constant
    msao = [e.value for e in acc.Scalars("eval/msao_reward")]
    assert len(msao) == 3 and len(set(msao)) == 1


def test_resume_continues_to_the_new_total(tmp_path):
    hp = PPOHyperparams(n_timesteps=1024, **HP)
    train(make_env, hp, tmp_path, seed=1, progress_bar=False, log=lambda s: None)
    state = json.loads((tmp_path / "checkpoint" / "info.json").read_text())
    assert state["num_timesteps"] == 1024
    res = train(make_env, hp.model_copy(update={"n_timesteps": 2048}), tmp_path, seed=1, resume=True, progress_bar=False, log=lambda s: None)
    assert res.timesteps == 2048
    assert json.loads((tmp_path / "checkpoint" / "info.json").read_text())["num_timesteps"] == 2048


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    from mllm_offload.errors import UserInputError

    with pytest.raises(UserInputError, match="nothing to resume"):
        train(make_env, PPOHyperparams(n_timesteps=512, **HP), tmp_path, resume=True, progress_bar=False)


def test_score_floor_raises_the_lagrange_multiplier(tmp_path):
    # an unreachable floor: the multiplier must grow after every rollout
    train(make_env, PPOHyperparams(n_timesteps=1536, **HP), tmp_path, progress_bar=False, score_floor=0.99, log=lambda s: None)
    state = json.loads((tmp_path / "checkpoint" / "info.json").read_text())
    assert state["lam"] > 0.3


def test_exported_policy_matches_sb3_predict(run):
    from stable_baselines3 import PPO

    d, _ = run
    art = export_run(d, d / "policy_parity")
    model = PPO.load(d / "best" / "model.zip", device="cpu")
    stats = json.loads((d / "best" / "vecnormalize.json").read_text())
    sb3 = SB3Policy(model, stats["mean"], stats["var"], stats["clip_obs"], stats["epsilon"])
    env = make_env("test")
    obs, _ = env.reset(seed=3)
    pols = [OffloadPolicy.load(art), OffloadPolicy.load(art, backend="onnx")]
    worst = 0.0
    for _ in range(100):
        ref = sb3.thresholds(obs)
        for p in pols:
            th = p.thresholds(obs)
            worst = max(worst, abs(th.tau_low - ref.tau_low), abs(th.tau_high - ref.tau_high), abs(th.tau_conf - ref.tau_conf))
        obs, *_ = env.step_thresholds(ref)
    assert worst <= 1e-5
    manifest = json.loads((art / "policy.json").read_text())
    assert manifest["training"]["parity_max_abs_diff"]["max"] <= 1e-3  # the export tolerance (extreme inputs included)
    assert np.isfinite(manifest["training"]["checkpoint_info"]["validation"]["reward_mean"])


def test_two_envs_use_subprocesses(tmp_path):
    hp = PPOHyperparams(n_timesteps=1024, n_envs=2, n_steps=256, batch_size=128, eval_freq=1024, eval_episodes=2, checkpoint_freq=1024)
    seen = []

    def log(s):
        seen.append(s)

    res = train(make_env, hp, tmp_path, seed=0, progress_bar=False, log=log)
    assert res.timesteps == 1024 and seen
    from stable_baselines3 import PPO

    assert PPO.load(tmp_path / "final" / "model.zip", device="cpu").n_envs == 2


def test_action_bias_init_one_number_starts_every_action_there(tmp_path):
    """``action_bias_init: 0.5`` sets the initial mean of all six actions (thresholds and upload
    plan: images at ``model_res``); a list covers the first actions only; too long a list is refused."""
    from stable_baselines3 import PPO

    from mllm_offload.config import PolicyKwargs
    from mllm_offload.errors import UserInputError

    assert PolicyKwargs(action_bias_init=0.5).action_bias(6) == [0.5] * 6
    assert PolicyKwargs(action_bias_init=[0.2, 0.9]).action_bias(3) == [0.2, 0.9]
    assert PolicyKwargs().action_bias(6) is None
    with pytest.raises(UserInputError, match="4 values for 3 actions"):
        PolicyKwargs(action_bias_init=[0.5] * 4).action_bias(3)
    hp = PPOHyperparams(n_timesteps=512, learning_rate=1e-12, policy_kwargs={"action_bias_init": 0.5}, **HP)
    train(make_env, hp, tmp_path, seed=0, progress_bar=False, log=lambda s: None)
    bias = PPO.load(tmp_path / "final" / "model.zip", device="cpu").policy.action_net.bias.detach().numpy()
    assert make_env("train").action_space.shape == (6,)
    np.testing.assert_allclose(bias, 0.5, atol=1e-4)


@pytest.mark.parametrize("plans", [True, False])
def test_warm_start_imitates_tuned_static_and_is_validated_at_step_zero(tmp_path, plans):
    """``warm_start: tuned``: before any PPO update the actor reproduces TunedStatic fitted at the
    run's price (thresholds and, with upload plans, the plan), that actor is validated at step 0
    (a candidate for ``best/``), and ``best/info.json`` records the targets; hyperparameters and
    targets that disagree are refused."""
    from mllm_offload.agents.ppo.run import TrainingTradeOffs, warm_start_prices
    from mllm_offload.agents.ppo.warm_start import tuned_targets
    from mllm_offload.errors import UserInputError
    from mllm_offload.tradeoff import TradeOff, TradeOffRange

    scn = Scenario.build(profile="msao-paper", synthetic_requests=3000, episode_len=50, upload_plans=plans)
    fixed = scn.with_tradeoff(TradeOff(latency_price=0.3, cost_price=scn.trade.cost_price), None)
    tt = TrainingTradeOffs(fixed, fixed, fixed, TradeOffRange.single(fixed.trade))
    assert warm_start_prices(tt, 7) == [0.3]
    ranged = fixed.with_tradeoff(fixed.trade, TradeOffRange(latency_price=(0.01, 1.0), cost_price=(0.1, 0.1)))
    assert warm_start_prices(TrainingTradeOffs(ranged, ranged, fixed, TradeOffRange()), 3) == pytest.approx([0.01, 0.1, 1.0])
    n = 6 if plans else 3
    targets = tuned_targets(fixed, [0.3], n)
    assert len(targets) == 1 and len(targets[0].action) == n
    hp = PPOHyperparams(n_timesteps=512, learning_rate=1e-12, warm_start="tuned", **HP)
    with pytest.raises(UserInputError, match="no targets were given"):
        train(tt.make_env, hp, tmp_path / "none", seed=0, progress_bar=False, log=lambda s: None)
    with pytest.raises(UserInputError, match="warm_start: none"):
        train(tt.make_env, PPOHyperparams(n_timesteps=512, **HP), tmp_path / "none", seed=0, progress_bar=False, log=lambda s: None,
              warm_start=targets)
    res = train(tt.make_env, hp, tmp_path, seed=0, progress_bar=False, log=lambda s: None, warm_start=targets)
    assert res.history[0]["timesteps"] == 0
    recorded = json.loads((tmp_path / "best" / "info.json").read_text())["warm_start"]
    assert recorded["targets"][0]["action"] == pytest.approx(list(targets[0].action)) and recorded["mse"] < 1e-3
    from stable_baselines3 import PPO

    stats = json.loads((tmp_path / "best" / "vecnormalize.json").read_text())
    pol = SB3Policy(PPO.load(tmp_path / "best" / "model.zip", device="cpu"), stats["mean"], stats["var"], stats["clip_obs"], stats["epsilon"])
    want = np.asarray(targets[0].action)
    env = fixed.make_env("val")
    obs, _ = env.reset(seed=1)
    close = []
    for _ in range(200):
        th, plan = pol.decide(obs)
        got = np.asarray([*th.to_action(), *(plan.to_action() if plan is not None else ())])
        close.append(np.all(np.abs(np.clip(got, 0, 1) - np.clip(want, 0, 1)) < 0.05))
        obs, _r, done, _t, _i = env.step(want.astype(np.float32))
        if done:
            obs, _ = env.reset()
    assert np.mean(close) >= 0.95
