"""The embedded real-trace sample ``pensieve-sample``: loads by name, splits by file name, runs end to end."""

import json
import math
from importlib import resources

import numpy as np
import pytest

from mllm_offload.cli import main
from mllm_offload.errors import UserInputError
from mllm_offload.scenario import Scenario
from mllm_offload.splits import split_of_name
from mllm_offload.traces.bandwidth import bandwidth_source, embedded_bandwidth_names, load_bandwidth_dir

SAMPLE = "pensieve-sample"
EXPECTED = {"train": 14, "val": 5, "test": 5, "all": 24}
MODES = ("bus", "car", "ferry", "metro", "train", "tram")


def _folder():
    return resources.files("mllm_offload.traces") / "data" / "bandwidth" / SAMPLE


def test_the_sample_is_listed_and_ships_provenance_and_licence():
    assert SAMPLE in embedded_bandwidth_names()
    d = _folder()
    readme = (d / "README.md").read_text(encoding="utf-8")
    licence = (d / "LICENSE-pensieve").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Pensieve" in licence
    assert "Pensieve" in readme and "Measuring Broadband America" in readme and "Riiser" in readme
    assert "shared" not in readme.lower()  # users do not have the project's shared folder
    assert sum(len(f.read_bytes()) for f in d.iterdir() if f.is_file()) < 1_000_000


@pytest.mark.parametrize("split", ["train", "val", "test", "all"])
def test_the_sample_loads_by_name_with_its_split_counts(split):
    traces = bandwidth_source(SAMPLE, split)
    assert len(traces) == EXPECTED[split]
    assert len({t.name for t in traces}) == len(traces)
    if split != "all":
        assert all(split_of_name(t.name) == split for t in traces)


def test_the_sample_covers_both_datasets_and_every_transport_mode():
    names = [t.name for t in bandwidth_source(SAMPLE, "all")]
    assert sum(n.startswith("trace_") for n in names) == 12
    assert {n.split(".", 1)[0] for n in names if not n.startswith("trace_")} == set(MODES)
    for split in ("train", "val", "test"):
        assert sum(split_of_name(n) == split for n in names) >= 3


def test_every_sample_trace_is_valid():
    for t in bandwidth_source(SAMPLE, "all"):
        assert t.period_s > 0 and len(t) >= 10, t
        rates = np.asarray(t.rates_bps)
        assert np.all(np.isfinite(rates)) and np.all(rates >= 0), t
        assert 0.05 < t.mean_mbps < 50, t
        assert math.isfinite(t.transfer_time(3.0, 200_000.0)) and t.transfer_time(3.0, 200_000.0) > 0


def test_the_embedded_sample_equals_the_same_files_read_as_a_folder():
    with resources.as_file(_folder()) as d:  # a real folder in a source tree or an unpacked wheel
        folder = load_bandwidth_dir(d, "test")
    embedded = bandwidth_source(SAMPLE, "test")
    assert [t.name for t in folder] == [t.name for t in embedded]
    assert all(a.times == b.times and a.rates_bps == b.rates_bps for a, b in zip(folder, embedded))


def test_an_existing_folder_is_still_read_as_a_folder(tmp_path, monkeypatch):
    (tmp_path / SAMPLE).mkdir()
    (tmp_path / SAMPLE / "only.log").write_text("0 1\n1 2\n")
    monkeypatch.chdir(tmp_path)
    assert [t.name for t in bandwidth_source(SAMPLE, "all")] == ["only.log"]


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [("pensieve-sampel", "did you mean 'pensieve-sample'?"), ("mobile-3g", "did you mean 'markov:mobile-3g'?"), ("no/such/folder", None)],
)
def test_an_unknown_spec_is_one_line_listing_the_embedded_names(spec, suggestion):
    with pytest.raises(UserInputError) as e:
        bandwidth_source(spec, "test")
    msg = str(e.value)
    assert "\n" not in msg and repr(spec) in msg
    assert f"embedded: {SAMPLE}" in msg and "folder of Pensieve/Mahimahi trace files" in msg
    if suggestion:
        assert suggestion in msg
    else:
        assert "did you mean" not in msg


def test_the_typo_is_one_line_on_the_cli(capsys):
    assert main(["evaluate", "--bandwidth", "pensieve-sampel", "--requests", "50", "--policies", "edge", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'pensieve-sample'?" in err[0], err


def test_a_scenario_on_the_sample_runs_an_episode():
    scn = Scenario.build(profile="mobile-3g", bandwidth=SAMPLE, episode_len=40)
    env = scn.make_env("test")
    assert {t.name for t in env.bandwidths} == {t.name for t in bandwidth_source(SAMPLE, "test")}
    env.action_space.seed(0)
    env.reset(seed=0)
    steps, done, total = 0, False, 0.0
    while not done:
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        total += r
        steps += 1
        done = term or trunc
    assert steps == 40 and math.isfinite(total)


def test_evaluate_on_the_sample_from_the_cli(tmp_path, capsys):
    out = tmp_path / "o.json"
    rc = main(["evaluate", "--bandwidth", SAMPLE, "--requests", "300", "--policies", "edge,msao", "--no-throughput", "--quiet",
               "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["meta"]["split"] == "test" and data["meta"]["bandwidth_traces"] == EXPECTED["test"]
    assert "| msao |" in capsys.readouterr().out
