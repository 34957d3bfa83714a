"""The deployable artifact: round trip, validation of every file, runtime without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mllm_offload.artifact import HeuristicSpec, Network, read_artifact, write_artifact
from mllm_offload.errors import UserInputError
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.runtime import OffloadPolicy
from mllm_offload.tradeoff import TradeOffRange

N = len(OBSERVATION_SPEC)


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [N, 16, 16, 3]
    out = {}
    for i in range(3):
        out[f"w{i}"] = rng.normal(0, 0.5, (sizes[i + 1], sizes[i])).astype(np.float32)
        out[f"b{i}"] = rng.normal(0, 0.1, sizes[i + 1]).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An untrained SB3 PPO actor with made-up normalisation statistics, exported with ONNX."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from mllm_offload.agents.export import export_model
    from mllm_offload.scenario import Scenario

    env = Scenario.build(profile="msao-paper", synthetic_requests=2000, episode_len=50).make_env("train")
    model = PPO("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [32, 32]})
    rng = np.random.default_rng(1)
    mean, var = rng.normal(0, 1, N), rng.uniform(0.5, 2.0, N)
    d = tmp_path_factory.mktemp("art") / "policy"
    export_model(model, d, mean, var, training={"note": "test"}, tradeoff_range=TradeOffRange())
    return d


def copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def one_line_error(path, match, **kw):
    with pytest.raises(UserInputError) as e:
        OffloadPolicy.load(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    assert match in msg, msg
    return msg


def test_round_trip_numpy_and_onnx_agree(exported):
    obs = np.random.default_rng(2).uniform(OBSERVATION_SPEC.low, np.minimum(OBSERVATION_SPEC.high, 50), (64, N)).astype(np.float32)
    a = OffloadPolicy.load(exported)
    b = OffloadPolicy.load(exported, backend="onnx")
    assert (a.backend, b.backend) == ("numpy", "onnx")
    np.testing.assert_allclose(a.actions(obs), b.actions(obs), atol=1e-5)
    assert a.actions(obs).min() >= 0.0 and a.actions(obs).max() <= 1.0
    th = a.thresholds(obs[0])
    assert 0.0 <= th.tau_low <= th.tau_high <= 1.0
    m = json.loads((exported / "policy.json").read_text())
    assert m["observation"] == list(OBSERVATION_SPEC.names)
    assert m["normalization"]["clip_obs"] == 10.0
    assert set(m["files"]) == {"policy.npz", "policy.onnx"}


def test_tampered_npz_fails_with_one_line(exported, tmp_path):
    d = copy(exported, tmp_path)
    raw = bytearray((d / "policy.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "policy.npz").write_bytes(bytes(raw))
    one_line_error(d, "sha256 does not match")


def test_truncated_onnx_fails_with_one_line(exported, tmp_path):
    d = copy(exported, tmp_path)
    raw = (d / "policy.onnx").read_bytes()
    (d / "policy.onnx").write_bytes(raw[: len(raw) // 3])
    one_line_error(d, "truncated or replaced", backend="onnx")


def test_wrong_format_version_fails_with_one_line(exported, tmp_path):
    d = copy(exported, tmp_path)
    m = json.loads((d / "policy.json").read_text())
    m["format_version"] = 2
    (d / "policy.json").write_text(json.dumps(m))
    one_line_error(d, "format_version: 2 is not supported")


def test_feature_order_mismatch_fails_with_one_line(exported, tmp_path):
    d = copy(exported, tmp_path)
    m = json.loads((d / "policy.json").read_text())
    m["observation"][3], m["observation"][4] = m["observation"][4], m["observation"][3]
    (d / "policy.json").write_text(json.dumps(m))
    msg = one_line_error(d, "feature order mismatch")
    assert OBSERVATION_SPEC.names[3] in msg


def test_missing_and_malformed_manifests(tmp_path):
    one_line_error(tmp_path / "nope", "not a policy directory")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "policy.json: missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "policy.json").write_text("{not json")
    one_line_error(tmp_path / "bad", "not valid JSON")
    one_line_error(tmp_path / "bad", "unknown", backend="tpu")


def test_manifest_field_errors_name_the_field(exported, tmp_path):
    d = copy(exported, tmp_path)
    m = json.loads((d / "policy.json").read_text())
    m["network"]["activation"] = "gelu"
    (d / "policy.json").write_text(json.dumps(m))
    one_line_error(d, "network.activation")


def test_missing_weight_array_is_reported(tmp_path):
    w = random_weights()
    del w["b2"]
    with pytest.raises(UserInputError, match="missing array w2 or b2"):
        write_artifact(tmp_path / "p", kind="mlp", tradeoff_range=TradeOffRange(), name="x", arrays=w, network=Network(layers=[N, 16, 16, 3]))
    assert not (tmp_path / "p").exists()  # nothing half-written
    assert not list(tmp_path.iterdir())


def test_write_replaces_an_existing_artifact_atomically(tmp_path):
    d = tmp_path / "p"
    write_artifact(d, kind="mlp", tradeoff_range=TradeOffRange(), name="a", arrays=random_weights(0), network=Network(layers=[N, 16, 16, 3]))
    first = OffloadPolicy.load(d).actions(np.ones(N, np.float32))
    write_artifact(d, kind="mlp", tradeoff_range=TradeOffRange(), name="b", arrays=random_weights(1), network=Network(layers=[N, 16, 16, 3]))
    p = OffloadPolicy.load(d)
    assert p.name == "b"
    assert not np.allclose(first, p.actions(np.ones(N, np.float32)))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]
    one_line_error(d, "required here", backend="onnx")  # this one has no policy.onnx


def test_numpy_forward_is_the_documented_formula(tmp_path):
    w = random_weights(3)
    mean, var = np.linspace(-1, 1, N), np.linspace(0.5, 2, N)
    from mllm_offload.artifact import Normalization

    d = write_artifact(tmp_path / "p", kind="mlp", tradeoff_range=TradeOffRange(), name="x", arrays=w, network=Network(layers=[N, 16, 16, 3], activation="relu"),
                       normalization=Normalization(mean=mean.tolist(), var=var.tolist(), clip_obs=5.0))
    obs = np.random.default_rng(0).normal(0, 3, (10, N))
    x = np.clip((obs - mean) / np.sqrt(var + 1e-8), -5, 5)
    for i in range(3):
        x = x @ w[f"w{i}"].T + w[f"b{i}"]
        if i < 2:
            x = np.maximum(x, 0)
    np.testing.assert_allclose(OffloadPolicy.load(d).actions(obs), np.clip(x, 0, 1), atol=1e-5)


def test_heuristics_load_like_policies(tmp_path):
    from mllm_offload.rules import MSAORule
    from mllm_offload.scenario import Scenario

    env = Scenario.build(profile="mobile-3g", synthetic_requests=2000, episode_len=50).make_env("train")
    ref = MSAORule(env.slo_s)
    by_call = OffloadPolicy.heuristic("msao", slo_s=env.slo_s)
    d = write_artifact(tmp_path / "msao", kind="heuristic", name="msao", heuristic=HeuristicSpec(rule="msao", params={"slo_s": env.slo_s}))
    by_path = OffloadPolicy.load(d)
    assert by_path.kind == "heuristic"
    obs, _ = env.reset(seed=0)
    for _ in range(50):
        th = ref.thresholds(obs)
        assert by_call.thresholds(obs) == th == by_path.thresholds(obs)
        obs, _, done, _, _ = env.step_thresholds(th)
        if done:
            break
    assert OffloadPolicy.load("edge").thresholds(obs).tau_conf == 0.0
    assert OffloadPolicy.load("msao").name == "msao"
    with pytest.raises(UserInputError, match="unknown rule"):
        OffloadPolicy.heuristic("nope")
    with pytest.raises(UserInputError, match="bad parameters"):
        OffloadPolicy.heuristic("msao", slo_s=2.0, base_lo=0.1)


def test_runtime_import_does_not_load_torch_sb3_or_gymnasium(tmp_path):
    d = write_artifact(tmp_path / "p", kind="mlp", tradeoff_range=TradeOffRange(), name="x", arrays=random_weights(), network=Network(layers=[N, 16, 16, 3]))
    code = (
        "import sys, numpy as np\n"
        "import mllm_offload.runtime as rt\n"
        f"p = rt.OffloadPolicy.load({str(d)!r})\n"
        "p.thresholds(np.zeros(%d, np.float32))\n"
        "rt.OffloadPolicy.heuristic('msao').thresholds(np.zeros(%d, np.float32))\n"
        "print(sorted(m for m in ('torch', 'stable_baselines3', 'gymnasium') if m in sys.modules))\n" % (N, N)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_read_artifact_reports_kind(exported):
    art = read_artifact(exported)
    assert art.manifest.kind == "mlp" and art.actor is not None
    assert art.manifest.training["note"] == "test"
