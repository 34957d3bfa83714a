"""The house rules: one registry of policy names, one Scenario, one place for splits and seeds."""

import subprocess
import sys

import numpy as np
import pytest

import mllm_offload.agents  # noqa: F401  (registers tuned and oracle)
from mllm_offload import splits
from mllm_offload.decision import Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.evaluation import evaluate, run_episodes
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.policy import REGISTRY, Policy, PolicyContext, policy_names, resolve, resolve_many
from mllm_offload.scenario import Scenario


def test_registry_names_build_policies_that_follow_the_protocol():
    assert policy_names()[:5] == ["edge", "cloud", "random", "static", "msao"]
    assert {"tuned", "oracle"} <= set(REGISTRY)
    obs = np.zeros(len(OBSERVATION_SPEC), np.float32)
    for name in ("edge", "cloud", "random", "msao", "static:0.2,0.6,0.7"):
        pol = resolve(name, PolicyContext(slo_s=3.0))
        assert isinstance(pol, Policy)
        pol.reset(0)
        assert isinstance(pol.thresholds(obs), Thresholds)
    assert resolve("static:0.2,0.6,0.7").thresholds(obs) == Thresholds(0.2, 0.6, 0.7)
    assert resolve("msao", PolicyContext(slo_s=3.0)).slo_s == 3.0  # type: ignore[attr-defined]
    assert resolve("edge", name="baseline").name == "baseline"
    pols = resolve_many("edge, static:0.2,0.6,0.7 ,msao,static:0,1,0.5")
    assert [p.name for p in pols] == ["edge", "static:0.2,0.6,0.7", "msao", "static:0,1,0.5"]


@pytest.mark.parametrize("spec, words", [
    ("msoa", ["unknown policy 'msoa'", "edge, cloud", "msao"]),
    ("static", ["static:TAU_LOW,TAU_HIGH,TAU_CONF"]),
    ("static:0.7,0.2,0.5", ["TAU_LOW <= TAU_HIGH"]),
    ("static:a,b,c", ["expected static:"]),
    ("edge:1", ["takes no parameter"]),
    ("tuned", ["only evaluate and train"]),
])
def test_bad_names_are_one_clear_line(spec, words):
    with pytest.raises(UserInputError) as e:
        resolve(spec)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_simulation_only_names_are_listed_but_never_deployed(tmp_path):
    code = ("from mllm_offload.policy import policy_names, resolve\n"
            "print(policy_names())\n"
            "try:\n    resolve('oracle')\nexcept Exception as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['edge', 'cloud', 'random', 'static', 'msao', 'msao-model-res', 'moaoff', 'tuned', 'oracle', 'oracle-expected']"
    assert "import mllm_offload.agents first" in out[1]
    from mllm_offload.runtime import OffloadPolicy

    for name in ("tuned", "oracle", "oracle-expected"):
        with pytest.raises(UserInputError, match="not deployable"):
            OffloadPolicy.load(name)
    with pytest.raises(UserInputError, match="empty list"):
        resolve_many(" , ")
    with pytest.raises(UserInputError, match="given twice"):
        resolve_many("edge,msao,edge")


def test_a_policy_folder_wins_over_a_registered_name(tmp_path, monkeypatch):
    from mllm_offload.artifact import HeuristicSpec, write_artifact

    write_artifact(tmp_path / "msao", kind="heuristic", name="mine", heuristic=HeuristicSpec(rule="edge"))
    monkeypatch.chdir(tmp_path)
    assert resolve("msao").name == "mine"
    assert resolve("cloud").name == "cloud"


def test_splits_and_seeds_are_the_documented_formulas():
    assert splits.evaluation_seeds(2000, 100, 0) == list(range(20))
    assert splits.evaluation_seeds(250, 100, 2) == [200_006, 200_007, 200_008]
    assert splits.validation_seeds(3) == [900_000, 900_001, 900_002]
    assert splits.vec_env_seed(5, 0) == 5 and splits.vec_env_seed(5, 100) == 5 + 7919 * 100
    assert splits.TUNING_SEEDS == (10_000, 10_001, 10_002, 10_003)
    assert len(splits.SCORE_FLOOR_SEEDS) == 16
    parts = [splits.split_slice(101, p) for p in ("train", "val", "test")]
    assert [(s.start, s.stop) for s in parts] == [(0, 71), (71, 86), (86, 101)]
    names = [f"trace_{i}.log" for i in range(2000)]
    share = {p: sum(splits.split_of_name(n) == p for n in names) / len(names) for p in ("train", "val", "test")}
    assert abs(share["train"] - 0.7) < 0.04 and abs(share["val"] - 0.15) < 0.03
    with pytest.raises(UserInputError, match="unknown part"):
        splits.check_split("holdout")


def test_scenario_builds_envs_policies_and_seeds_once(tmp_path):
    cfg = tmp_path / "over.yaml"
    cfg.write_text("system: {slo_s: 2.5}\nreward: {latency: 0.3}\n")
    scn = Scenario.build(profile="msao-paper", config=cfg, episode_len=50, requests=30)
    assert scn.slo_s == 2.5 and scn.reward.latency == 0.3 and scn.episode.n_requests == 30
    env = scn.make_env("test")
    assert env.slo_s == 2.5 and env.n_requests == 30 and env.split == "test"
    assert scn.evaluation_seeds(60) == [0, 1]
    pols = scn.policies("edge,msao,oracle")
    assert [p.name for p in pols] == ["edge", "msao", "oracle"]
    res, _ = evaluate(env, pols, 60, throughput=False)
    assert res["oracle"]["reward_mean"] >= max(res["edge"]["reward_mean"], res["msao"]["reward_mean"])
    assert scn.describe()["system"]["slo_s"] == 2.5
    with pytest.raises(UserInputError, match="unknown part"):
        scn.make_env("holdout")


def test_the_oracle_reads_outcomes_only_through_reset():
    scn = Scenario.build(profile="msao-paper", episode_len=20)
    env = scn.make_env("val")
    oracle = scn.policy("oracle")
    with pytest.raises(TypeError, match="reset"):
        oracle.thresholds(np.zeros(len(OBSERVATION_SPEC), np.float32))
    log = run_episodes(env, oracle, [0])
    assert len(log) == 20


def test_router_import_loads_no_simulator_training_or_demo_code():
    code = ("import sys, mllm_offload.runtime.router, mllm_offload.runtime.server\n"
            "print(sorted(m for m in sys.modules if m.startswith('mllm_offload')))\n"
            "print(sorted(m for m in ('torch', 'gymnasium', 'stable_baselines3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    loaded = eval(out[0])
    for banned in ("traces", "envs", "agents", "evaluation", "shapes", "scenario", "recording", "cli"):
        assert not any(m == f"mllm_offload.{banned}" or m.startswith(f"mllm_offload.{banned}.") for m in loaded), (banned, loaded)
    assert out[1] == "[]"


def test_route_takes_priors_from_the_policy_not_from_a_simulation_profile():
    from types import SimpleNamespace

    from mllm_offload.cli.route import _system
    from mllm_offload.config import SystemConfig

    assert _system(None, None) == SystemConfig()
    recorded = SimpleNamespace(training={"system": SystemConfig(slo_s=4.5, rtt_s=0.2).model_dump(), "profile": "msao-paper"})
    assert _system(None, recorded).slo_s == 4.5 and _system(None, recorded).rtt_s == 0.2
    old = SimpleNamespace(training={"profile": "msao-paper"})  # artifacts from before training.system
    assert _system(None, old).slo_s == 1.0
    assert _system("mobile-3g", recorded).slo_s == 3.0  # an explicit --profile wins
    with pytest.raises(UserInputError, match=r"training\.system"):
        _system(None, SimpleNamespace(training={"system": {"slo_s": -1}}))
