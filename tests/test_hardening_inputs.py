"""Hardening (issue 20, points 6-8): every bad input is one line and exit status 2, never a
traceback; non-finite or absurd values are refused with the field named; JSON output is always
JSON; policy.json carries a digest (and optionally an HMAC); a log's truncated last line is
skipped; a resumed run validates once per eval_freq; commands that unpickle say so."""

from __future__ import annotations

import gzip
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from routing_helpers import random_mlp

from mllm_offload.artifact import KEY_ENV, Network, Normalization, read_artifact, write_artifact
from mllm_offload.cli import main
from mllm_offload.errors import UserInputError
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.runtime import OffloadPolicy
from mllm_offload.trace_format import load_trace
from mllm_offload.tradeoff import TradeOffRange

N = len(OBSERVATION_SPEC)
EVAL = ["--requests", "20", "--policies", "edge", "--no-throughput", "--quiet", "--split", "all"]


@pytest.fixture(autouse=True)
def _no_policy_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def one_line(capsys, argv: list[str], *expect: str) -> str:
    """``main(argv)`` exits 2 with exactly one stderr line ``mllm-offload CMD: error: ...``."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"mllm-offload {argv[0]}: error: "), err
    assert "Traceback" not in err
    for e in expect:
        assert e in err, err
    return err


def _real_lines(n: int = 60) -> list[str]:
    """Header and ``n`` records of the embedded shapes-real trace."""
    f = resources.files("mllm_offload") / "traces" / "data" / "shapes-real.jsonl.gz"
    with gzip.open(str(f), "rt", encoding="utf-8") as fh:
        return [next(fh).rstrip("\n") for _ in range(n + 1)]


def _no_nan_json(text: str) -> object:
    def bad(name: str) -> None:
        raise AssertionError(f"{name} in JSON output")

    return json.loads(text, parse_constant=bad)


# -- point 6: one line, exit 2 ------------------------------------------------------------------


def test_binary_config_file(tmp_path, capsys):
    cfg = tmp_path / "bin.yaml"
    cfg.write_bytes(b"\xff\xfe\x00\x01binary\x89PNG")
    one_line(capsys, ["evaluate", "--config", str(cfg), *EVAL], "bin.yaml: not a YAML text file")


def test_binary_hyperparameter_file(tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_bytes(b"\xff\xfe\x00binary")
    one_line(capsys, ["train", "--hyperparams", str(hp), "--out", str(tmp_path / "r"), "--quiet"], "hp.yaml: not a YAML text file")
    assert not (tmp_path / "r").exists()


def test_huge_payload_bytes_in_a_trace(tmp_path, capsys):
    lines = _real_lines()
    lines[1] = lines[1].replace('"payload_bytes":{"text":47', '"payload_bytes":{"text":1' + "0" * 400)
    assert "0" * 400 in lines[1]
    t = tmp_path / "big.jsonl"
    t.write_text("\n".join(lines) + "\n")
    one_line(capsys, ["evaluate", "--trace", str(t), *EVAL], "big.jsonl:2: payload_bytes", "about 10^400")
    one_line(capsys, ["report", "--trace", str(t)], "big.jsonl:2: payload_bytes")


def test_non_finite_numbers_in_a_trace(tmp_path):
    lines = _real_lines(5)
    d = json.loads(lines[2])
    d["edge"]["latency_s"] = 1e999  # json.dumps writes Infinity, which json.loads accepts
    lines[2] = json.dumps(d)
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserInputError, match=r"t.jsonl:3: edge.latency_s: Input should be a finite number"):
        load_trace(tmp_path / "t.jsonl")


def _bw_folder(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "bw"
    d.mkdir()
    (d / "trace1").write_text(text, encoding="utf-8")
    return d


def test_mahimahi_line_with_a_superscript_digit(tmp_path, capsys):
    d = _bw_folder(tmp_path, "10\n20\n²\n")
    one_line(capsys, ["evaluate", "--bandwidth", str(d), *EVAL], "trace1:3: expected one integer millisecond timestamp, got '²'")


def test_mahimahi_timestamp_of_a_trillion_ms(tmp_path, capsys):
    d = _bw_folder(tmp_path, "10\n20\n1000000000000\n")
    one_line(capsys, ["evaluate", "--bandwidth", str(d), *EVAL], "trace1:3: timestamp 1000000000000 ms", "at most 86400000 ms")


def test_pensieve_trace_longer_than_a_day_or_too_slow(tmp_path):
    from mllm_offload.traces.bandwidth import load_bandwidth

    (tmp_path / "long.log").write_text("0 1\n1e6 2\n")
    with pytest.raises(UserInputError, match="may last at most 86400 s"):
        load_bandwidth(tmp_path / "long.log")
    (tmp_path / "slow.log").write_text("0 1e-9\n1 1e-9\n")
    with pytest.raises(UserInputError, match=r"mean rate .* below 0.001 Mbps"):
        load_bandwidth(tmp_path / "slow.log")


def test_absurd_constant_bandwidth(capsys):
    one_line(capsys, ["evaluate", "--bandwidth", "constant:1e-300", *EVAL], "'constant:1e-300': rates must be Mbps in [0.001, 1e+06]")
    one_line(capsys, ["evaluate", "--bandwidth", "constant:nan", *EVAL], "rates must be Mbps")


@pytest.mark.parametrize("yaml_text, field", [
    ("reward:\n  latency: .inf\n", "reward.latency: Input should be a finite number"),
    ("reward:\n  quality: -.inf\n", "reward.quality: Input should be a finite number"),
    ("system:\n  rtt_s: .nan\n", "system.rtt_s: Input should be a finite number"),
    ("reward:\n  cost_per_usd: 1.0e+300\n", "reward.cost_per_usd: Input should be less than or equal to 1000000"),
    ("system:\n  bw_prior_mbps: 1.0e-300\n", "system.bw_prior_mbps: Input should be greater than or equal to 0.001"),
    ("episode:\n  rate_scale: [0.0, 2.0]\n", "episode.rate_scale: Value error, must satisfy 0.001 <= lo <= hi <= 1000"),
    ("episode:\n  edge_speed: [1.0, .inf]\n", "episode.edge_speed.1: Input should be a finite number"),
])
def test_non_finite_or_absurd_config_values_name_the_field(tmp_path, capsys, yaml_text, field):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    js = tmp_path / "out.json"
    one_line(capsys, ["evaluate", "--config", str(cfg), "--json", str(js), *EVAL], f"c.yaml: {field}")
    assert not js.exists()


@pytest.mark.parametrize("yaml_text, expect", [
    ("default:\n  learning_rate: .nan\n", "hp.yaml: default.learning_rate: Input should be a finite number"),
    ("default:\n  policy_kwargs: {net_arch: [100000000]}\n", "default.policy_kwargs.net_arch.0"),
    ("default:\n  warm_start: tuned-static\n", "hp.yaml: default.warm_start: Input should be 'none' or 'tuned'"),
    ("default:\n  warm_start: tuned\n  warm_start_prices: 0\n", "default.warm_start_prices: Input should be greater than or equal to 1"),
    ("mobile-3g:\n  training_scores: maybe\n", "hp.yaml: mobile-3g.training_scores: Input should be 'realised', 'expected' or 'auto'"),
], ids=["non-finite", "absurd-net", "bad-warm-start", "no-warm-start-prices", "bad-training-scores"])
def test_a_bad_hyperparameter_names_the_field(tmp_path, capsys, yaml_text, expect):
    """Non-finite, absurd or unknown values in a hyperparameter file: one line naming the field,
    and no run folder left behind."""
    hp = tmp_path / "hp.yaml"
    hp.write_text(yaml_text)
    one_line(capsys, ["train", "--hyperparams", str(hp), "--out", str(tmp_path / "r"), "--quiet"], expect)
    assert not (tmp_path / "r").exists()


def test_expected_scores_on_a_recording_is_refused_before_the_run_folder(tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  training_scores: expected\n")
    one_line(capsys, ["train", "--trace", "shapes-real", "--hyperparams", str(hp), "--out", str(tmp_path / "r"), "--quiet"],
             "training_scores: expected needs a synthetic profile", "shapes-real has none")
    assert not (tmp_path / "r").exists()


def test_json_output_is_always_json(tmp_path):
    from mllm_offload._io import json_text
    from mllm_offload.evaluation import write_json

    out = tmp_path / "r.json"
    write_json(out, {"ppo": {"reward_mean": float("-inf"), "score_mean": float("nan"), "n": np.float32(0.5)}},
               {"slo_s": math.inf}, {"sentence": "x", "lead": np.nan})
    doc = _no_nan_json(out.read_text())
    assert doc == {"meta": {"slo_s": None}, "policies": {"ppo": {"reward_mean": None, "score_mean": None, "n": 0.5}},
                   "verdict": {"sentence": "x", "lead": None}}
    assert _no_nan_json(json_text([np.array([1.0, np.inf]), (np.int64(2), float("nan"))])) == [[1.0, None], [2, None]]


def test_report_json_is_json(tmp_path, capsys):
    lines = _real_lines(40)
    t = tmp_path / "t.jsonl"
    t.write_text("\n".join(lines) + "\n")
    js = tmp_path / "rep.json"
    main(["report", "--trace", str(t), "--json", str(js)])
    capsys.readouterr()
    _no_nan_json(js.read_text())


# -- point 6: a damaged run folder on --resume and export --------------------------------------


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as train writes it, without training: run.json and a checkpoint/ to damage."""
    pytest.importorskip("stable_baselines3")
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  n_envs: 1\n  n_steps: 64\n  batch_size: 64\n  eval_freq: 64\n  eval_episodes: 1\n  checkpoint_freq: 64\n")
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    args = {"profile": "mobile-3g", "trace": None, "bandwidth": "constant:2", "config": None, "seed": 0, "episode_len": 10,
            "score_floor": "none", "hyperparams": str(hp), "timesteps": 128, "latency_price": None, "cost_price": None,
            "latency_price_range": None, "p95_budget": None, "cost_budget": None, "upload_budget": None, "edge_tier": None,
            "upload_plans": "auto"}
    (run / "run.json").write_text(json.dumps({"args": args, "observation": list(OBSERVATION_SPEC.names)}))
    (run / "checkpoint" / "info.json").write_text(json.dumps({"seed": 0, "lam": 0.5, "num_timesteps": 128}))
    (run / "checkpoint" / "model.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return run


RESUME = ["--timesteps", "256", "--no-eval", "--quiet"]


@pytest.mark.parametrize("content, expect", [
    (b"\xff{", "info.json: unreadable checkpoint state"),
    (b"[1, 2]", "info.json: unreadable checkpoint state: expected a JSON object, got list"),
    (b'{"num_timesteps": "abc"}', "info.json: num_timesteps: expected an integer >= 0"),
    (b'{"num_timesteps": 128, "lam": -1}', "info.json: lam: expected a finite number >= 0"),
    (b'{"num_timesteps": 128, "lam": 1' + b"0" * 400 + b"}", "info.json: lam: expected a finite number >= 0"),
    (b'{"num_timesteps": 128, "lam": NaN}', "info.json: lam: expected a finite number >= 0"),
])
def test_resume_with_a_damaged_checkpoint_state(run_dir, capsys, content, expect):
    (run_dir / "checkpoint" / "info.json").write_bytes(content)
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], expect)


@pytest.mark.parametrize("edit, expect", [
    (lambda a: a.update(trace=5), "run.json: args.trace: unexpected value '5'"),
    (lambda a: a.update(seed="abc"), "run.json: args.seed: unexpected value 'abc'"),
    (lambda a: a.update(episode_len=0), "run.json: args.episode_len: unexpected value '0'"),
    (lambda a: a.pop("profile"), "run.json: args.profile: unexpected value 'None'"),
])
def test_resume_with_a_damaged_run_record(run_dir, capsys, edit, expect):
    doc = json.loads((run_dir / "run.json").read_text())
    edit(doc["args"])
    (run_dir / "run.json").write_text(json.dumps(doc))
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], expect)
    (run_dir / "run.json").write_text('{"args": ' + "[" * 50000 + "]" * 50000 + "}")
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], "run.json: unreadable")


def test_resume_with_damaged_recorded_hyperparameters(run_dir, capsys):
    """--resume trains with run.json's hyperparameters: a damaged record is one line naming the field."""
    doc = json.loads((run_dir / "run.json").read_text())
    doc["hyperparams"] = {"n_steps": -1}
    (run_dir / "run.json").write_text(json.dumps(doc))
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], "run.json: hyperparams.n_steps: Input should be greater than")


def test_a_bad_value_in_a_trace_section_names_the_section(tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("default: {}\nshapes-real:\n  policy_kwargs: {action_bias_init: 2}\n")
    one_line(capsys, ["train", "--trace", "shapes-real", "--hyperparams", str(hp), "--out", str(tmp_path / "run"), "--quiet"],
             "hp.yaml: shapes-real.policy_kwargs.action_bias_init: Value error, every value must lie in [0, 1], got 2")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("names, drop, expect", [
    (None, "latency_price", "reads 17 observation features, this build has 20"),  # before the trade-off input
    (None, None, "reads 19 observation features, this build has 20"),  # before the edge capacity
    (list(OBSERVATION_SPEC.names)[:19], None, "reads 19 observation features, this build has 20"),
])
def test_resume_of_a_run_of_an_older_observation_is_refused(run_dir, capsys, names, drop, expect):
    doc = json.loads((run_dir / "run.json").read_text())
    doc.pop("observation")
    if names is not None:
        doc["observation"] = names
    if drop:
        doc["args"].pop(drop)
    (run_dir / "run.json").write_text(json.dumps(doc))
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], expect, "cannot be resumed")


def test_resume_with_a_damaged_vecnormalize_pickle(run_dir, capsys):
    (run_dir / "checkpoint" / "vecnormalize.pkl").write_bytes(b"\x80\x04garbage")
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], "vecnormalize.pkl: cannot load the checkpoint's normalisation statistics")


def test_resume_with_a_damaged_model_zip(run_dir, capsys):
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], "checkpoint/model.zip: cannot load the checkpoint")


def test_resume_with_a_damaged_best_record(run_dir, capsys, monkeypatch):
    (run_dir / "best").mkdir()
    (run_dir / "best" / "info.json").write_text('{"validation": 3}')
    from stable_baselines3 import PPO

    monkeypatch.setattr(PPO, "load", classmethod(lambda cls, *a, **k: PPO("MlpPolicy", k["env"], n_steps=64, batch_size=64, device="cpu")))
    one_line(capsys, ["train", "--resume", str(run_dir), *RESUME], "best/info.json: validation: expected an object")


def test_export_with_damaged_run_files(run_dir, capsys, monkeypatch):
    from stable_baselines3 import PPO

    sub = run_dir / "final"
    sub.mkdir()
    (sub / "model.zip").write_bytes(b"not a zip")
    one_line(capsys, ["export", str(run_dir), "--which", "final"], "final/model.zip: cannot load")
    monkeypatch.setattr(PPO, "load", classmethod(lambda cls, *a, **k: object()))
    (sub / "vecnormalize.json").write_text("[1, 2]")
    one_line(capsys, ["export", str(run_dir), "--which", "final"], "vecnormalize.json: bad normalisation statistics")
    (sub / "vecnormalize.json").unlink()
    (run_dir / "run.json").write_text('{"export_meta": 5}')
    one_line(capsys, ["export", str(run_dir), "--which", "final"], "run.json: export_meta: expected an object")
    (run_dir / "run.json").write_bytes(b"\xff\xfe")
    one_line(capsys, ["export", str(run_dir), "--which", "final"], "run.json: unreadable")


# -- point 7: policy.json integrity --------------------------------------------------------------


def _artifact(d: Path, key: str | None = None) -> Path:
    sizes = [N, 8, 3]
    arrays = random_mlp(sizes)
    norm = Normalization(mean=[0.4940507893046294] * N, var=[1.0] * N)
    return write_artifact(d, kind="mlp", tradeoff_range=TradeOffRange(), name="p", arrays=arrays, normalization=norm, network=Network(layers=sizes),
                          training={"note": "t", "nan": float("nan")}, key=key)


def test_policy_json_has_a_digest_and_an_edited_digit_fails(tmp_path, capsys):
    d = _artifact(tmp_path / "p")
    text = (d / "policy.json").read_text()
    assert json.loads(text)["digest"].startswith("sha256:") and "hmac" not in json.loads(text)
    assert json.loads(text)["training"]["nan"] is None  # never NaN in JSON
    OffloadPolicy.load(d)
    (d / "policy.json").write_text(text.replace("0.4940507893046294", "0.4140507893046294", 1))
    with pytest.raises(UserInputError, match=r"p/policy.json: digest: the content does not match its digest"):
        OffloadPolicy.load(d)
    one_line(capsys, ["evaluate", "--policy", str(d), *EVAL], "policy.json: digest")
    # reformatting (indentation, key order) is not an edit
    (d / "policy.json").write_text(json.dumps(json.loads(text), indent=None, sort_keys=True))
    OffloadPolicy.load(d)


def test_artifact_without_a_digest_still_loads(tmp_path):
    d = _artifact(tmp_path / "p")
    m = json.loads((d / "policy.json").read_text())
    del m["digest"]  # as exported before the digest existed
    (d / "policy.json").write_text(json.dumps(m, indent=2))
    assert OffloadPolicy.load(d).name == "p"


def test_hmac_with_a_user_key(tmp_path, monkeypatch, capsys):
    signed = _artifact(tmp_path / "s", key="s3cret")
    assert json.loads((signed / "policy.json").read_text())["hmac"].startswith("hmac-sha256:")
    read_artifact(signed)  # no key configured: the digest is checked, the HMAC cannot be
    read_artifact(signed, key="s3cret")
    OffloadPolicy.load(signed, key=b"s3cret")
    with pytest.raises(UserInputError, match="hmac: does not match the configured policy key"):
        OffloadPolicy.load(signed, key="other")
    plain = _artifact(tmp_path / "plain")
    with pytest.raises(UserInputError, match="hmac: missing, but a policy key is configured"):
        read_artifact(plain, key="s3cret")
    # the environment variable configures the key for every loader (evaluate, route, ...)
    monkeypatch.setenv(KEY_ENV, "s3cret")
    read_artifact(signed)
    one_line(capsys, ["evaluate", "--policy", str(plain), *EVAL], "plain/policy.json: hmac: missing")
    monkeypatch.setenv(KEY_ENV, "wrong")
    one_line(capsys, ["evaluate", "--policy", str(signed), *EVAL], "s/policy.json: hmac: does not match")
    # a forger who edits the content and recomputes the digest still fails the HMAC
    from mllm_offload.artifact import manifest_digest

    m = json.loads((signed / "policy.json").read_text())
    m["normalization"]["mean"][0] = 0.1
    m["digest"] = manifest_digest(m)
    (signed / "policy.json").write_text(json.dumps(m))
    with pytest.raises(UserInputError, match="hmac: does not match"):
        read_artifact(signed, key="s3cret")


def test_export_hmac_key_env_must_be_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    (tmp_path / "run").mkdir()
    one_line(capsys, ["export", str(tmp_path / "run"), "--hmac-key-env", "NO_SUCH_KEY_VAR"], "--hmac-key-env NO_SUCH_KEY_VAR: that environment variable is not set")


# -- point 8: truncated log lines, resume validation, pickle warnings ----------------------------


def _route_log(d: Path, n: int, start: int = 0) -> Path:
    from mllm_offload.runtime.tracelog import TraceLog

    log = TraceLog(d)
    for i in range(start, start + n):
        log.write({"id": f"r{i}", "arrival_s": float(i), "modalities": {"text": {"tokens": 5}}, "payload_bytes": {"text": 20},
                   "mas": {"score": 0.5}, "edge": {"latency_s": 0.2, "ttft_s": 0.1, "out_tokens": 3, "confidence": 0.9, "score": 1.0},
                   "cloud": {"latency_s": 0.4, "ttft_s": 0.2, "out_tokens": 3, "score": 1.0}})
    log.close()
    return log.files[-1]


def test_truncated_last_line_of_a_log_is_skipped_with_a_warning(tmp_path, capsys):
    f = _route_log(tmp_path / "logs", 30)
    full = f.read_text()
    f.write_text(full + full.splitlines()[-1][:57])  # a crash in the middle of writing a record
    tr = load_trace(tmp_path / "logs")
    err = capsys.readouterr().err
    assert len(tr) == 30 and tr.meta["truncated_lines"] == 1
    assert err.count("\n") == 1 and f"{f}:32: skipped a truncated last line" in err
    # the same file on its own, and through the CLI (a warning, then the table)
    assert load_trace(f).meta["truncated_lines"] == 1
    capsys.readouterr()
    assert main(["evaluate", "--trace", str(tmp_path / "logs"), *EVAL]) == 0
    assert "skipped a truncated last line" in capsys.readouterr().err
    # a file whose only record was cut short (the router died on its first write) is skipped too
    g = _route_log(tmp_path / "logs", 1, start=100)
    g.write_text(g.read_text()[:-20])
    tr = load_trace(tmp_path / "logs")
    assert len(tr) == 30 and tr.meta["truncated_lines"] == 2 and tr.meta["files"] == 1


def test_a_bad_line_elsewhere_is_still_an_error(tmp_path, capsys):
    f = _route_log(tmp_path / "logs", 10)
    lines = f.read_text().splitlines()
    f.write_text("\n".join([*lines[:4], lines[4][:30], *lines[5:]]) + "\n")  # cut in the middle
    one_line(capsys, ["evaluate", "--trace", str(tmp_path / "logs"), *EVAL], f"{f}:5: invalid JSON")
    f.write_text("\n".join([*lines[:-1], lines[-1][:30]]) + "\n")  # cut, but the line ends: not a crash mid-write
    one_line(capsys, ["evaluate", "--trace", str(tmp_path / "logs"), *EVAL], f"{f}:11: invalid JSON")


def test_resumed_model_validates_once_per_eval_freq(tmp_path):
    """A resumed model (25000 steps done) with eval_freq 5000: evaluations at 30000 and 35000
    only, never a burst at the start (the issue saw five back to back: 25000 / 5000)."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import PPO

    from mllm_offload.agents.ppo.callbacks import ValidationCallback
    from mllm_offload.scenario import Scenario

    scn = Scenario.build(profile="mobile-3g", bandwidth="constant:2", synthetic_requests=500, episode_len=10)
    model = PPO("MlpPolicy", scn.make_env("train"), n_steps=64, batch_size=64, device="cpu")
    model.save(tmp_path / "m.zip")
    resumed = PPO.load(tmp_path / "m.zip", env=scn.make_env("train"), device="cpu")
    resumed.num_timesteps = 25_000
    cb = ValidationCallback(scn.make_env("val"), [0], 5000, 1, tmp_path, {}, None, lambda s: None)
    at: list[int] = []
    cb.evaluate = lambda: at.append(cb.num_timesteps) or {}  # type: ignore[method-assign]
    cb.init_callback(resumed)
    for t in range(25_001, 35_001):
        resumed.num_timesteps = t
        cb.on_step()
    assert at == [30_000, 35_000]


@pytest.mark.parametrize("command, words", [("train", "--resume"), ("export", "RUN_DIR")])
def test_commands_that_unpickle_say_so_in_their_help(capsys, command, words):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "unpickles" in text and "trust" in text and words in text


def test_action_bias_init_longer_than_the_actions_is_one_line(tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  n_timesteps: 512\n  policy_kwargs: {action_bias_init: [0.5, 0.5, 0.5, 0.0, 0.0, 0.0]}\n")
    one_line(capsys, ["train", "--profile", "msao-paper", "--upload-plans", "off", "--latency-price", "0.2", "--hyperparams", str(hp),
                      "--out", str(tmp_path / "run"), "--no-eval", "--quiet"], "action_bias_init: 6 values for 3 actions")
    assert not (tmp_path / "run").exists()  # refused before run.json is written
    hp.write_text("default:\n  policy_kwargs: {action_bias_init: [1.5]}\n")
    one_line(capsys, ["train", "--profile", "msao-paper", "--hyperparams", str(hp), "--out", str(tmp_path / "run2"), "--quiet"],
             "default.policy_kwargs.action_bias_init: Value error, every value must lie in [0, 1], got 1.5")



def test_run_record_written_before_the_upload_budget_still_resumes_without_one(run_dir):
    """A run.json from before ``--upload-budget`` existed has no such key: no budget, not an error."""
    from mllm_offload.agents.ppo.run import read_run_args

    rj = run_dir / "run.json"
    rec = json.loads(rj.read_text())
    del rec["args"]["upload_budget"]
    rj.write_text(json.dumps(rec))
    args = read_run_args(run_dir)
    assert args["upload_budget"] is None and args["p95_budget"] is None and args["profile"] == "mobile-3g"
    rec["args"]["upload_budget"] = "0.05"  # a string where a number belongs
    rj.write_text(json.dumps(rec))
    with pytest.raises(UserInputError, match=r"args\.upload_budget"):
        read_run_args(run_dir)


def test_append_jsonl_closes_a_cut_off_line_and_read_jsonl_skips_it(tmp_path):
    from mllm_offload._io import append_jsonl, read_jsonl

    p = tmp_path / "log.jsonl"
    append_jsonl(p, {"a": 1})
    p.write_text(p.read_text() + '{"a": 2')  # an interrupted write: no closing brace, no newline
    append_jsonl(p, {"a": 3, "x": float("nan")})  # non-finite numbers are written as null, never NaN
    assert p.read_text().splitlines()[-1] == '{"a": 3, "x": null}'
    assert read_jsonl(p) == ([{"a": 1}, {"a": 3, "x": None}], 1)
