import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from mllm_offload.cli import main
from mllm_offload.traces.synth import generate

REQUIRED = {"reward_mean", "score_mean", "latency_mean_s", "latency_p50_s", "latency_p95_s", "slo_attainment", "cloud_share", "throughput_rps"}


@pytest.mark.slow
def test_evaluate_script_msao_paper(tmp_path):
    out = tmp_path / "out.json"
    csv, plots = tmp_path / "out.csv", tmp_path / "plots"
    r = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--profile", "msao-paper", "--requests", "400", "--policies", "edge,cloud,msao,oracle",
         "--json", str(out), "--csv", str(csv), "--plots", str(plots), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "| msao |" in r.stdout
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"edge", "cloud", "msao", "oracle"}
    for m in data["policies"].values():
        assert REQUIRED <= set(m)
    assert data["meta"]["requests"] == 400
    assert csv.read_text().startswith("policy,")
    assert (plots / "latency_cdf.png").stat().st_size > 1000 and (plots / "score_vs_cloud_share.png").exists()


def test_evaluate_real_bandwidth_with_tuned(shared_bw, tmp_path, capsys):
    out = tmp_path / "o.json"
    rc = main(["evaluate", "--profile", "mobile-3g", "--bandwidth", str(shared_bw), "--requests", "300",
               "--policies", "edge,cloud,msao,tuned,oracle", "--json", str(out), "--quiet", "--no-throughput"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["split"] == "test" and data["meta"]["bandwidth_traces"] >= 5
    pol = data["policies"]
    assert pol["oracle"]["reward_mean"] >= max(m["reward_mean"] for k, m in pol.items() if k != "oracle")
    assert "tuned" in data["meta"]["thresholds"] and set(data["meta"]["upload_plans"]) <= {"tuned"}  # a fixed plan, if tuned chose one


def test_evaluate_recorded_trace(shared_bw, tmp_path):
    trace = tmp_path / "rec.jsonl"
    generate("mobile-3g", 600, seed=4, with_records=True).write_jsonl(trace)
    out = tmp_path / "o.json"
    rc = main(["evaluate", "--trace", str(trace), "--bandwidth", str(shared_bw), "--policies", "edge,msao,oracle",
               "--requests", "200", "--json", str(out), "--quiet", "--no-throughput"])
    assert rc == 0 and json.loads(out.read_text())["meta"]["trace"] == str(trace)


def _bad(tmp_path, capsys, argv):
    out = tmp_path / "never.json"
    rc = main([*argv, "--json", str(out), "--quiet", "--requests", "50"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"mllm-offload {argv[0]}: error: ")
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".never.json*"))
    return err


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    generate("mobile-3g", 20, seed=1, with_records=True).write_jsonl(trace)
    lines = trace.read_text().splitlines()

    def with_line(n, text):
        p = tmp_path / f"t{n}.jsonl"
        p.write_text("\n".join([*lines[:n - 1], text, *lines[n:]]) + "\n")
        return p

    err = _bad(tmp_path, capsys, ["evaluate", "--trace", str(with_line(3, "{not json"))])
    assert ":3: invalid JSON" in err
    rec = json.loads(lines[4])
    del rec["cloud"]
    err = _bad(tmp_path, capsys, ["evaluate", "--trace", str(with_line(5, json.dumps(rec)))])
    assert ":5: cloud: Field required" in err
    rec = json.loads(lines[5])
    rec["edge"]["latency_s"] = -0.5
    err = _bad(tmp_path, capsys, ["evaluate", "--trace", str(with_line(6, json.dumps(rec)))])
    assert ":6: edge.latency_s:" in err
    bwdir = tmp_path / "bw"
    bwdir.mkdir()
    (bwdir / "good.log").write_text("0 1\n1 2\n")
    (bwdir / "bad.log").write_text("0 1\n1 fast\n")
    err = _bad(tmp_path, capsys, ["evaluate", "--bandwidth", str(bwdir)])
    assert "bad.log:2:" in err
    err = _bad(tmp_path, capsys, ["evaluate", "--profile", "nope"])
    assert "unknown profile 'nope'" in err
    err = _bad(tmp_path, capsys, ["evaluate", "--policies", "edge,best"])
    assert "unknown policy 'best'" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("system:\n  slo_s: -1\n")
    err = _bad(tmp_path, capsys, ["evaluate", "--config", str(cfg)])
    assert "c.yaml: system.slo_s:" in err


@pytest.mark.slow
def test_train_help_and_synth(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--timesteps" in r.stdout
    out = tmp_path / "s.jsonl.gz"
    assert main(["synth", "--profile", "msao-paper", "--requests", "25", "--out", str(out)]) == 0
    from mllm_offload.traces import load_trace
    assert len(load_trace(out)) == 25


@pytest.mark.slow
def test_train_exports_and_evaluate_adds_ppo(shared_bw, tmp_path, capsys):
    """The issue's interface: train.py ... --out RUN_DIR, then evaluate.py --policy RUN_DIR/policy."""
    import pytest

    pytest.importorskip("stable_baselines3")
    run = tmp_path / "run"
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  n_envs: 1\n  n_steps: 256\n  batch_size: 64\n  eval_freq: 1024\n  eval_episodes: 2\n")
    rc = main(["train", "--profile", "mobile-3g", "--bandwidth", str(shared_bw), "--timesteps", "1024", "--seed", "3",
               "--out", str(run), "--hyperparams", str(hp), "--eval-requests", "200", "--baselines", "msao,oracle", "--quiet",
               "--keep-evaluations"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gap recovered" in out and "| ppo |" in out
    # every evaluation in validation.jsonl, every evaluated model kept; one of them exported by its step
    lines = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert [int(x["timesteps"]) for x in lines] == [1024] and lines[0]["selected"] and "reward_by_price" in lines[0]
    assert (run / "evals" / "1024" / "model.zip").is_file()
    assert main(["export", str(run), "--step", "1024", "--no-onnx"]) == 0  # beside the kept model, not over RUN/policy
    assert json.loads((run / "evals" / "1024" / "policy" / "policy.json").read_text())["training"]["checkpoint"] == "evals/1024"
    capsys.readouterr()
    err = _bad_plain(capsys, ["export", str(run), "--step", "7"])
    assert "no model kept at step 7 (kept: 1024)" in err
    err = _bad_plain(capsys, ["export", str(run), "--step", "1024", "--which", "best"])
    assert "--step: a kept model instead of --which" in err
    assert (run / "policy" / "policy.json").is_file() and (run / "policy" / "policy.onnx").is_file()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    m = json.loads((run / "policy" / "policy.json").read_text())
    assert m["training"]["profile"] == "mobile-3g" and m["training"]["seed"] == 3
    res = json.loads((run / "eval_test.json").read_text())
    assert set(res["policies"]) == {"msao", "oracle", "ppo"}
    # export again elsewhere, then evaluate with the exported policy
    assert main(["export", str(run), "--out", str(tmp_path / "p2"), "--which", "final"]) == 0
    js = tmp_path / "out.json"
    rc = main(["evaluate", "--profile", "mobile-3g", "--bandwidth", str(shared_bw), "--policy", str(tmp_path / "p2"),
               "--policies", "edge,msao", "--requests", "200", "--no-throughput", "--json", str(js), "--quiet"])
    assert rc == 0
    assert set(json.loads(js.read_text())["policies"]) == {"edge", "msao", "ppo"}
    # resume to a larger budget, with the hyperparameters it was trained with (the file has changed since)
    hp.write_text("default:\n  n_envs: 1\n  n_steps: 512\n  batch_size: 128\n  eval_freq: 1024\n  eval_episodes: 3\n")
    # as if a killed run had gone past its checkpoint (1024): a record of step 1300, its kept model, and a cut-off line
    with open(run / "validation.jsonl", "a") as f:
        f.write(json.dumps({**lines[0], "timesteps": 1300}) + "\n" + '{"timesteps": 14')
    (run / "evals" / "1300").mkdir()
    rc = main(["train", "--resume", str(run), "--timesteps", "1536", "--no-eval", "--quiet"])
    assert rc == 0
    recorded = json.loads((run / "run.json").read_text())["hyperparams"]
    assert (recorded["n_steps"], recorded["eval_episodes"], recorded["n_timesteps"]) == (256, 2, 1536)
    assert json.loads((run / "checkpoint" / "info.json").read_text())["num_timesteps"] == 1536
    best_step = json.loads((run / "best" / "info.json").read_text())["validation"]["timesteps"]
    assert best_step in (1024, 1536)
    # the records past the checkpoint are gone, the resumed evaluation appended, its model kept (the run keeps them)
    lines = [json.loads(x) for x in (run / "validation.jsonl").read_text().splitlines()]
    assert [x["timesteps"] for x in lines] == [1024, 1536] and [x["timesteps"] for x in lines if x["selected"]][-1] == best_step
    assert sorted(d.name for d in (run / "evals").iterdir()) == ["1024", "1536"]
    # a finished run, a changed scenario flag on --resume, an occupied --out: one line each, nothing written
    before = sorted(p.name for p in run.rglob("*"))
    err = _bad_plain(capsys, ["train", "--resume", str(run), "--timesteps", "1536", "--quiet"])
    assert "already trained 1536 steps" in err
    err = _bad_plain(capsys, ["train", "--resume", str(run), "--profile", "msao-paper", "--timesteps", "2048", "--quiet"])
    assert "--profile: --resume takes it from" in err
    err = _bad_plain(capsys, ["train", "--out", str(run), "--timesteps", "256", "--quiet"])
    assert "already holds files" in err and "--overwrite" in err
    assert sorted(p.name for p in run.rglob("*")) == before
    err = _bad_plain(capsys, ["train", "--out", str(tmp_path), "--overwrite", "--quiet"])
    assert "not a run folder" in err
    # --overwrite with a bad setting: refused before the old run is deleted
    bad = tmp_path / "bad.yaml"
    bad.write_text("default:\n  batch_size: 4096\n  n_steps: 64\n")
    err = _bad_plain(capsys, ["train", "--out", str(run), "--overwrite", "--hyperparams", str(bad), "--quiet"])
    assert "bad.yaml: default" in err and sorted(p.name for p in run.rglob("*")) == before
    err = _bad_plain(capsys, ["train", "--out", str(run), "--overwrite", "--baselines", "msao,tunde", "--quiet"])
    assert "--baselines: unknown policy 'tunde'; did you mean 'tuned'?" in err and sorted(p.name for p in run.rglob("*")) == before
    # with good ones it replaces the run: nothing of the old one is left
    rc = main(["train", "--profile", "mobile-3g", "--bandwidth", str(shared_bw), "--timesteps", "256", "--out", str(run),
               "--overwrite", "--hyperparams", str(hp), "--no-eval", "--quiet"])
    assert rc == 0 and json.loads((run / "run.json").read_text())["hyperparams"]["n_timesteps"] == 256  # the new run's, not 1536
    assert not (run / "eval_test.json").exists() and json.loads((run / "checkpoint" / "info.json").read_text())["num_timesteps"] == 512


def _bad_plain(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"mllm-offload {argv[0]}: error: "), err
    return err


def test_train_and_export_bad_inputs(tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  batch_size: 4096\n  n_steps: 64\n")
    err = _bad_plain(capsys, ["train", "--hyperparams", str(hp), "--out", str(tmp_path / "r")])
    assert "hp.yaml: default" in err and "batch_size" in err
    hp.write_text("mobile-3g:\n  learning_rat: 0.1\n")
    err = _bad_plain(capsys, ["train", "--hyperparams", str(hp), "--out", str(tmp_path / "r")])
    assert "hp.yaml: mobile-3g.learning_rat: Extra inputs are not permitted" in err
    err = _bad_plain(capsys, ["train", "--score-floor", "high", "--out", str(tmp_path / "r")])
    assert "--score-floor" in err
    err = _bad_plain(capsys, ["train", "--resume", str(tmp_path / "none")])
    assert "not a run directory" in err
    err = _bad_plain(capsys, ["train", "--bandwidth", "markov:nope", "--out", str(tmp_path / "bw")])
    assert "unknown synthetic model 'nope'" in err and not (tmp_path / "bw").exists()
    err = _bad_plain(capsys, ["export", str(tmp_path / "none")])
    assert "not a run directory" in err
    err = _bad(tmp_path, capsys, ["evaluate", "--policy", str(tmp_path)])
    assert "not a policy directory (no policy.json" in err
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.json").write_text("{")
    err = _bad(tmp_path, capsys, ["evaluate", "--policy", str(tmp_path / "p")])
    assert "policy.json" in err and "JSON" in err


def test_shipped_hyperparameters_validate_and_match_the_builtin_defaults():
    from mllm_offload.config import PPOHyperparams, default_hyperparams_path, load_hyperparams

    assert load_hyperparams(default_hyperparams_path(), "some-trace") == PPOHyperparams()
    m3g = load_hyperparams(default_hyperparams_path(), "mobile-3g")  # the defaults but expected scores where they exist
    assert m3g == PPOHyperparams(training_scores="auto")
    msao = load_hyperparams(default_hyperparams_path(), "msao-paper")  # the defaults but the warm start
    assert msao.warm_start == "tuned" and msao.policy_kwargs.log_std_init == -1.0
    assert msao.model_copy(update={"warm_start": "none", "policy_kwargs": PPOHyperparams().policy_kwargs}) == PPOHyperparams()


def test_example_narrow_hyperparameters_validate_and_start_every_action_at_the_centre():
    """examples/ppo-narrow.yaml (documented in docs/training.md) loads for any profile and starts
    thresholds and upload plan at 0.5, with or without plans."""
    from mllm_offload.config import load_hyperparams

    hp = load_hyperparams(ROOT / "examples" / "ppo-narrow.yaml", "mobile-3g")
    assert hp.policy_kwargs.log_std_init == -2.0 and hp.eval_episodes == 40 and hp.n_steps == 2048
    assert hp.policy_kwargs.action_bias(6) == [0.5] * 6 and hp.policy_kwargs.action_bias(3) == [0.5] * 3


def test_an_embedded_trace_has_its_own_section_over_the_profile(tmp_path, monkeypatch):
    """`train --trace shapes-real` reads the shipped file's shapes-real section over the profile's
    (the narrow start of examples/ppo-narrow.yaml); a trace file, even one named shapes-real, does not."""
    from mllm_offload.agents.ppo.run import hyperparams
    from mllm_offload.config import load_hyperparams

    shapes, source = hyperparams(None, "mobile-3g", trace=Path("shapes-real"))
    assert shapes == load_hyperparams(ROOT / "examples" / "ppo-narrow.yaml", "mobile-3g")
    assert source.endswith("[default < mobile-3g < shapes-real]")
    plain, _ = hyperparams(None, "mobile-3g")
    assert plain.policy_kwargs.action_bias_init is None and plain.n_steps == 512
    assert hyperparams(None, "mobile-3g", timesteps=4096, trace=Path("shapes-real"))[0].n_timesteps == 4096
    monkeypatch.chdir(tmp_path)
    Path("shapes-real").write_text("{}\n")  # a local file of that name is a trace file, not the embedded one
    assert hyperparams(None, "mobile-3g", trace=Path("shapes-real"))[0] == plain
    # sections merge in order, policy_kwargs key by key
    f = tmp_path / "hp.yaml"
    f.write_text("default:\n  n_steps: 256\n  policy_kwargs: {net_arch: [32]}\nmobile-3g:\n  batch_size: 64\n"
                 "shapes-real:\n  n_steps: 1024\n  policy_kwargs: {log_std_init: -1.0}\n")
    Path("shapes-real").unlink()
    hp, _ = hyperparams(f, "mobile-3g", trace=Path("shapes-real"))
    assert (hp.n_steps, hp.batch_size, hp.policy_kwargs.net_arch, hp.policy_kwargs.log_std_init) == (1024, 64, [32], -1.0)


@pytest.mark.slow
def test_train_applies_the_trace_section_only_with_upload_plans(tmp_path):
    """The shapes-real section is tuned for its upload plans: `--upload-plans off` trains without it."""
    pytest.importorskip("stable_baselines3")
    hp = tmp_path / "hp.yaml"
    hp.write_text("default:\n  n_steps: 64\n  batch_size: 64\n  eval_freq: 64\n  eval_episodes: 1\n  checkpoint_freq: 64\n"
                  "shapes-real:\n  eval_episodes: 2\n")
    for plans, episodes, source in (("auto", 2, "[default < mobile-3g < shapes-real]"), ("off", 1, "[default < mobile-3g]")):
        run = tmp_path / f"run-{plans}"
        assert main(["train", "--trace", "shapes-real", "--bandwidth", "constant:2", "--upload-plans", plans, "--episode-len", "10",
                     "--latency-price", "0.2", "--timesteps", "64", "--hyperparams", str(hp), "--out", str(run), "--no-eval", "--quiet"]) == 0
        record = json.loads((run / "run.json").read_text())
        assert record["hyperparams"]["eval_episodes"] == episodes and record["hyperparams_source"].endswith(source)
