"""The verdict: best deployable policy, paired leads, and whether they exceed the episode spread."""

import json

import numpy as np

from mllm_offload.cli import main
from mllm_offload.evaluation import EpisodeLog, verdict


def _log(per_episode: list[float], n: int = 10) -> EpisodeLog:
    log = EpisodeLog()
    log.reward = [r for r in per_episode for _ in range(n)]
    return log


def test_paired_leads_and_the_spread():
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.1, 30).tolist()  # episodes differ a lot; paired differences do not
    logs = {"edge": _log(base), "msao": _log([b - 0.001 * (1 if k % 2 else -1) for k, b in enumerate(base)]),
            "ppo": _log([b + 0.02 for b in base]), "oracle": _log([b + 0.5 for b in base])}
    results = {k: {"reward_mean": float(np.mean(v.reward))} for k, v in logs.items()}
    v = verdict(results, logs, 10)
    assert v["best"] == "ppo"  # the oracle is never the verdict
    assert v["comparisons"]["edge"]["exceeds_spread"] and abs(v["comparisons"]["edge"]["difference"] - 0.02) < 1e-9
    assert "CloudOnly" not in v["sentence"] and v["sentence"].startswith("Verdict: PPO (the trained policy) is the best deployable policy")
    # a lead of the same size as the per-episode noise is within the spread
    noisy = {"edge": _log(base), "tuned": _log([b + 0.001 + rng.normal(0, 0.05) for b in base])}
    res2 = {k: {"reward_mean": float(np.mean(v.reward))} for k, v in noisy.items()}
    v2 = verdict(res2, noisy, 10)
    other = "edge" if v2["best"] == "tuned" else "tuned"
    assert not v2["comparisons"][other]["exceeds_spread"] and "no lead is beyond" in v2["sentence"]
    assert verdict({"oracle": {"reward_mean": 1.0}}, {"oracle": _log([1.0])}, 10)["best"] is None


def test_evaluate_prints_and_writes_the_verdict(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--profile", "msao-paper", "--requests", "400", "--policies", "edge,cloud,msao,oracle",
                 "--no-throughput", "--quiet", "--json", str(out), "--plots", str(tmp_path / "plots")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("Verdict: ") and "over" not in lines[-1].split(",")[0]
    doc = json.loads(out.read_text())
    assert doc["verdict"]["sentence"] == lines[-1] and doc["verdict"]["best"] in ("edge", "cloud", "msao")
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"latency_cdf.png", "score_vs_cloud_share.png"}
