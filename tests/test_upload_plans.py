"""Upload plans: the contract, the trace format's variants, the synthetic variant model, the
simulator's charging by plan, the plan-choosing policies and artifacts, and the CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllm_offload.artifact import ArtifactPolicy, Network, write_artifact
from mllm_offload.cli import main
from mllm_offload.decision import N_PLANS, SEND_ALL, Thresholds, UploadPlan, all_plans
from mllm_offload.envs import OffloadEnv
from mllm_offload.errors import UserInputError
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.policy import decide
from mllm_offload.rules import MoAOffRule, MSAOModelRes, MSAORule
from mllm_offload.trace_format import TraceRecord, load_trace
from mllm_offload.traces.synth import generate
from mllm_offload.tradeoff import DEFAULT_RANGE

# -- the contract ---------------------------------------------------------------------------------


def test_plans_enumerate_and_label():
    plans = all_plans()
    assert len(plans) == N_PLANS == 12 and [p.index for p in plans] == list(range(12)) and plans[0] == SEND_ALL
    p = UploadPlan(image="model_res", audio="drop")
    assert p.variant() == "model_res+no_audio" and SEND_ALL.variant() == ""
    assert p.label(True, False, True) == "image=model_res,audio=drop" and p.label(False, False, False) == "text"
    assert UploadPlan.parse("image=model_res,audio=drop") == p
    assert p.effective(False, True, True) == UploadPlan(audio="drop")  # no image: nothing to resize
    with pytest.raises(ValueError, match="image"):
        UploadPlan(image="tiny")
    with pytest.raises(ValueError, match="each once"):
        UploadPlan.parse("image=full,image=reduced")


@given(st.lists(st.floats(-1.0, 2.0, allow_nan=False), min_size=3, max_size=3))
def test_plan_actions_map_into_the_plans_and_back(a):
    p = UploadPlan.from_action(a)
    assert p in all_plans() and UploadPlan.from_action(p.to_action()) == p


# -- trace format -----------------------------------------------------------------------------------


def _record(**over):
    base = {"id": "r", "arrival_s": 0.0, "modalities": {"image": {"tokens": 391}, "text": {"tokens": 20}},
            "payload_bytes": {"image": 160000, "text": 80}, "mas": {"score": 0.5},
            "edge": {"latency_s": 0.4, "ttft_s": 0.3, "out_tokens": 3, "confidence": 0.8, "score": 1.0},
            "cloud": {"latency_s": 0.5, "ttft_s": 0.4, "out_tokens": 3, "score": 1.0}}
    base.update(over)
    return base


def test_variant_keys_and_sizes_are_validated():
    ok = {"reduced": {"payload_bytes": {"image": 40000}, "tokens": {"image": 98},
                      "cloud": {"latency_s": 0.45, "ttft_s": 0.35, "out_tokens": 3, "score": 0.0}}}
    TraceRecord.model_validate(_record(variants=ok))
    for bad, msg in (({"keyframes": ok["reduced"]}, "has no video"), ({"no_audio+reduced": ok["reduced"]}, "in the order"),
                     ({"shrunk": ok["reduced"]}, "a variant is one of"),
                     ({"reduced": {**ok["reduced"], "tokens": {}}}, "exactly the changed modalities")):
        with pytest.raises(ValueError, match=msg):
            TraceRecord.model_validate(_record(variants=bad))


def _write(path, records, version=2):
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"format": "mllm-offload-trace", "version": version, "meta": {}}) + "\n")
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


def test_a_version_1_trace_loads_without_plans_and_a_trace_with_variants_has_a_plan_table(tmp_path):
    old = load_trace(_write(tmp_path / "v1.jsonl.gz", [_record(id=f"r{i}", arrival_s=float(i)) for i in range(5)], version=1))
    assert old.plans is None
    with pytest.raises(UserInputError, match="has no variant outcomes"):
        OffloadEnv(trace=old, bandwidth="constant:5", upload_plans=True)
    assert OffloadEnv(trace=old, bandwidth="constant:5").action_space.shape == (3,)  # auto: off
    red = {"payload_bytes": {"image": 40000}, "tokens": {"image": 98}, "cloud": {"latency_s": 0.45, "ttft_s": 0.35, "out_tokens": 3, "score": 0.0}}
    recs = [_record(id=f"r{i}", arrival_s=float(i), variants={"reduced": red}) for i in range(5)]
    t = load_trace(_write(tmp_path / "v2.jsonl.gz", recs))
    assert t.plans is not None and t.plans.coverage() == {"reduced": 1.0, "model_res": 0.0}
    j = UploadPlan(image="reduced").index
    assert t.plans.payload_bytes[0, j] == 40080 and t.plans.input_tokens[0, j] == 118 and t.plans.cloud_score[0, j] == 0.0
    assert t.plans.payload_bytes[0, UploadPlan(audio="drop").index] == 160080  # no audio to drop: the request as given
    assert t.plans.missing(0, UploadPlan(image="model_res"))
    env = OffloadEnv(trace=t, bandwidth="constant:5", episode={"n_requests": 5})
    assert env.action_space.shape == (6,)
    env.reset(seed=0)
    _, _, _, _, info = env.step_thresholds(Thresholds(0.0, 0.0, 1.0), UploadPlan(image="reduced"))  # always the cloud
    assert info["outcome"].bytes_sent == 40080 and info["outcome"].score == 0.0 and info["upload_plan"] == UploadPlan(image="reduced")
    with pytest.raises(UserInputError, match="no outcome for upload-plan variant 'model_res'"):
        env.step_thresholds(info["thresholds"], UploadPlan(image="model_res"))


def test_synthetic_variants_round_trip_through_the_file_format(tmp_path):
    t = generate("mobile-3g", 200, 3, with_records=True)
    t.write_jsonl(tmp_path / "t.jsonl")
    back = load_trace(tmp_path / "t.jsonl")
    assert back.plans is not None and t.plans is not None
    for col in ("payload_bytes", "input_tokens", "cloud_score", "cloud_out_tokens"):
        np.testing.assert_allclose(getattr(back.plans, col), getattr(t.plans, col))
    np.testing.assert_allclose(back.plans.cloud_latency_s, t.plans.cloud_latency_s, rtol=1e-12)


def test_the_synthetic_variant_model():
    t = generate("mobile-3g", 4000, 0)
    pt = t.plans
    assert pt is not None
    np.testing.assert_array_equal(pt.payload_bytes[:, 0], t.payload_bytes)  # plan 0 is the request as given
    np.testing.assert_array_equal(pt.cloud_score[:, 0], t.cloud_score)
    img, vid, aud = pt.present.T
    mr, red = UploadPlan(image="model_res").index, UploadPlan(image="reduced").index
    # COCO-sized images are smaller than what Qwen2.5-VL consumes: model_res sends the same
    np.testing.assert_array_equal(pt.payload_bytes[:, mr], pt.payload_bytes[:, 0])
    assert np.all(pt.payload_bytes[img, red] < pt.payload_bytes[img, 0]) and np.all(pt.input_tokens[img, red] < pt.input_tokens[img, 0])
    # a variant is correct only where the full request is, and never more likely to be
    for j in range(N_PLANS):
        assert np.all(pt.cloud_score[:, j] <= pt.cloud_score[:, 0])
        assert np.all(pt.cloud_score_expected[:, j] <= pt.cloud_score_expected[:, 0] + 1e-12)
    # reduced costs accuracy where the image is dense, little where it is sparse
    sp = t.mas["spatial"]
    loss = pt.cloud_score_expected[:, 0] - pt.cloud_score_expected[:, red]
    assert loss[img & (sp > 0.7)].mean() > 3 * loss[img & (sp < 0.3)].mean()
    drop = UploadPlan(audio="drop").index
    assert np.all(pt.payload_bytes[aud, drop] < pt.payload_bytes[aud, 0])
    np.testing.assert_array_equal(pt.payload_bytes[~aud, drop], pt.payload_bytes[~aud, 0])
    kf = UploadPlan(video="keyframes").index
    assert np.all(pt.payload_bytes[vid, kf] <= pt.payload_bytes[vid, 0]) and np.any(pt.payload_bytes[vid, kf] < pt.payload_bytes[vid, 0])


# -- simulator and policies ------------------------------------------------------------------------


def test_env_charges_the_plan_and_without_plans_sends_everything():
    on = OffloadEnv("mobile-3g", bandwidth="constant:2", episode={"n_requests": 60})
    off = OffloadEnv("mobile-3g", bandwidth="constant:2", episode={"n_requests": 60}, upload_plans=False)
    assert on.action_space.shape == (6,) and off.action_space.shape == (3,)
    cloud = np.array([0.0, 0.0, 1.0, 0.9, 0.9, 0.9])  # CLOUD, image reduced, keyframes, drop audio
    sent = {}
    for name, env in (("on", on), ("off", off)):
        env.reset(seed=1)
        total = 0.0
        for _ in range(60):
            _, _, _, _, info = env.step(cloud if name == "on" else cloud[:3])
            total += info["outcome"].bytes_sent
        sent[name] = total
    assert sent["on"] < 0.6 * sent["off"]
    off.reset(seed=1)
    _, _, _, _, info = off.step(cloud)  # a plan given to an env without plans is not applied
    assert info["upload_plan"] == SEND_ALL


def test_rules_choose_plans_and_msao_sends_everything():
    obs = np.zeros(len(OBSERVATION_SPEC), np.float32)
    obs[OBSERVATION_SPEC.index("mas_spatial")] = 0.1
    obs[OBSERVATION_SPEC.index("mas_temporal")] = 0.9
    obs[OBSERVATION_SPEC.index("mas_audio")] = 0.05
    th, plan = decide(MoAOffRule(2.0), obs)
    assert plan == UploadPlan(image="reduced", video="all", audio="drop") and th == MSAORule(2.0).thresholds(obs)
    assert decide(MSAOModelRes(2.0), obs)[1] == UploadPlan(image="model_res")
    assert decide(MSAORule(2.0), obs)[1] is None


def test_an_artifact_of_six_outputs_chooses_the_plan(tmp_path):
    n = len(OBSERVATION_SPEC)
    rng = np.random.default_rng(0)
    arrays = {"w0": rng.normal(size=(4, n)).astype(np.float32), "b0": np.zeros(4, np.float32),
              "w1": rng.normal(size=(6, 4)).astype(np.float32), "b1": np.array([0.5, 0.5, 0.5, 0.9, 0.9, 0.1], np.float32)}
    d = write_artifact(tmp_path / "p6", kind="mlp", name="p6", arrays=arrays, network=Network(layers=[n, 4, 6]), tradeoff_range=DEFAULT_RANGE)
    m = json.loads((d / "policy.json").read_text())
    assert m["action"]["mapping"] == "thresholds-plan-v1"
    pol = ArtifactPolicy.load(d)
    th, plan = pol.decide(np.zeros(n, np.float32))
    assert plan == UploadPlan.from_action(pol.actions(np.zeros(n, np.float32))[3:]) and th == pol.thresholds(np.zeros(n, np.float32))
    m["action"]["mapping"] = "thresholds-v1"  # six outputs under a three-output mapping: refused
    from mllm_offload.artifact import manifest_digest
    m.pop("digest")
    m["digest"] = manifest_digest(m)
    (d / "policy.json").write_text(json.dumps(m))
    with pytest.raises(UserInputError, match=r"network\.layers: .* end with 3"):
        ArtifactPolicy.load(d)


def test_evaluate_reports_plan_shares_and_refuses_plans_without_variants(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["evaluate", "--policies", "msao,moaoff", "--requests", "200", "--bandwidth", "constant:2", "--no-throughput",
                 "--quiet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    msao, moaoff = doc["policies"]["msao"], doc["policies"]["moaoff"]
    assert msao["plan_shares"]["image"] == {"full": 1.0} and set(moaoff["plan_shares"]["image"]) <= {"model_res", "reduced"}
    assert moaoff["mb_uploaded_mean"] < msao["mb_uploaded_mean"]
    assert main(["evaluate", "--policies", "msao", "--requests", "200", "--bandwidth", "constant:2", "--no-throughput", "--quiet",
                 "--upload-plans", "off", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["policies"]["msao"]["plan_shares"]["whole"] == 1.0
    capsys.readouterr()
    old = _write(tmp_path / "v1.jsonl.gz", [_record(id=f"r{i}", arrival_s=float(i)) for i in range(5)], version=1)
    assert main(["evaluate", "--policies", "msao", "--trace", str(old), "--bandwidth", "constant:2", "--upload-plans", "on"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no variant outcomes" in err


def test_report_shows_what_each_variant_costs(tmp_path, capsys):
    t = generate("mobile-3g", 300, 5, with_records=True)
    t.write_jsonl(tmp_path / "t.jsonl")
    assert main(["report", "--trace", str(tmp_path / "t.jsonl"), "--json", str(tmp_path / "r.json")]) == 0
    v = json.loads((tmp_path / "r.json").read_text())["variants"]
    red, mr = v["reduced"], v["model_res"]
    assert red["n"] == mr["n"] == int(t.plans.present[:, 0].sum())
    assert red["bytes_mean"] < red["bytes_whole_mean"] and red["cloud_score"] <= red["cloud_score_whole"]
    assert mr["bytes_mean"] == mr["bytes_whole_mean"] and mr["cloud_score"] == mr["cloud_score_whole"]  # COCO sizes
    assert "variant reduced" in capsys.readouterr().out


def test_static_plans_leave_out_a_plan_that_some_request_lacks():
    """TunedStatic's plan candidates are the plans every request of the trace has an outcome for:
    a variant missing for one *test* request must not make the fitted baseline fail on test."""
    import copy

    import mllm_offload.agents  # noqa: F401
    from mllm_offload.agents import TunedStatic
    from mllm_offload.decision import UploadPlan
    from mllm_offload.evaluation import run_episodes
    from mllm_offload.scenario import Scenario
    from mllm_offload.splits import split_slice

    full = Scenario.build(trace="shapes-real", bandwidth="constant:2")
    assert "reduced" in [p.variant() for p in full.static_plans()]
    tr = copy.deepcopy(full.trace)
    test = range(len(tr))[split_slice(len(tr), "test")]
    i = next(k for k in test if tr.plans.present[k, 0])
    tr.plans.cloud_latency_s[i, UploadPlan(image="reduced").index] = np.nan
    scn = Scenario.build(trace=tr, bandwidth="constant:2")
    names = [p.variant() for p in scn.static_plans()]
    assert "reduced" not in names and "model_res" in names and names[0] == ""
    tuned = TunedStatic.fit_scenario(scn)
    assert tuned.plan is None or tuned.plan.image != "reduced"
    log = run_episodes(scn.make_env("test"), tuned, scn.evaluation_seeds(len(list(test))))
    assert len(log) > 0
    assert Scenario.build(trace=tr, bandwidth="constant:2", upload_plans=False).static_plans() is None
