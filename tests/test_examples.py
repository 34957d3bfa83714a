"""The examples run as documented (they are part of the docs)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_trains_evaluates_exports_and_deploys(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path / "qs"), "--timesteps", "2048"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "exported to" in out and "| ppo |" in out and "| tuned |" in out
    assert "Verdict: " in out and "thresholds for one request: Thresholds(" in out
    assert (tmp_path / "qs" / "policy" / "policy.onnx").is_file()


def test_gymnasium_make_after_importing_envs():
    code = ("import gymnasium as gym\n"
            "import mllm_offload.envs\n"
            "gym.register_envs(mllm_offload.envs)\n"
            "env = gym.make('mllm_offload/Offload-v0', profile='msao-paper')\n"
            "obs, info = env.reset(seed=0)\n"
            "obs, reward, terminated, truncated, info = env.step(env.action_space.sample())\n"
            "env2 = gym.make('mllm_offload.envs:mllm_offload/Offload-v0')\n"
            "print(obs.shape, env2.spec.id)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "mllm_offload/Offload-v0"
