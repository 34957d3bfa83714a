"""The embedded `shapes-real` trace: loads by name, carries real recordings, works in the pipeline."""

import pytest

from mllm_offload.cli import main
from mllm_offload.trace_format import EMBEDDED_TRACES, load_trace, resolve_trace
from mllm_offload.traces.analysis import trace_report


def test_loads_by_name_and_is_a_real_recording():
    assert resolve_trace("shapes-real").name == EMBEDDED_TRACES["shapes-real"]
    tr = load_trace("shapes-real")
    assert tr.meta["source"] == "record" and "hardware" in tr.meta
    assert len(tr.records) >= 2000
    levels = {(r.item or {}).get("difficulty") for r in tr.records}
    assert levels == {"easy", "medium", "hard"}
    assert any("video" in r.modalities for r in tr.records) and any("audio" in r.modalities for r in tr.records)
    rep = trace_report(tr)
    # the figures the issue asks for exist and are meaningful (MAS tracks the drawn difficulty)
    assert 0.5 < rep["confidence_auroc"] <= 1.0
    assert rep["mas_difficulty_rho"] > 0.5


def test_a_local_file_named_like_an_embedded_trace_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes-real").write_text("not a trace\n")
    assert resolve_trace("shapes-real").resolve() == tmp_path / "shapes-real"


@pytest.mark.parametrize("cmd", [["report", "--trace", "shapes-real"],
                                 ["evaluate", "--trace", "shapes-real", "--policies", "edge,cloud,msao", "--requests", "64", "--quiet"]])
def test_cli_accepts_the_embedded_name(cmd, capsys):
    assert main(cmd) == 0
    assert "shapes-real" in capsys.readouterr().out
