import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllm_offload.errors import UserInputError
from mllm_offload.splits import split_of_name
from mllm_offload.traces.bandwidth import (
    MARKOV_MODELS,
    BandwidthTrace,
    bandwidth_source,
    fit_markov,
    load_bandwidth,
    load_bandwidth_dir,
)


def test_constant_link():
    bw = BandwidthTrace.constant(8.0)  # 1 MB/s
    assert bw.transfer_time(3.7, 1_000_000) == pytest.approx(1.0)
    assert bw.transfer_time(0.0, 0) == 0.0


def test_piecewise_integration_and_loop():
    bw = BandwidthTrace([0, 1, 2], [8, 0, 16], name="t")  # period 3 s; 1 MB, 0, 2 MB per period
    assert bw.period_s == 3.0
    assert bw.transfer_time(0.0, 1_500_000) == pytest.approx(2.25)  # skips the dead second
    assert bw.transfer_time(0.5, 500_000) == pytest.approx(0.5)
    assert bw.transfer_time(1.5, 2_000_000) == pytest.approx(1.5)
    assert bw.transfer_time(0.0, 6_000_000) == pytest.approx(6.0)  # ends on a period boundary
    assert bw.transfer_time(0.0, 4_500_000) == pytest.approx(5.25)  # loops into the 2nd period
    assert bw.bytes_between(0.0, 6.0) == pytest.approx(6_000_000)
    assert bw.mean_mbps == pytest.approx(8.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 1e4), st.floats(1, 5e7))
def test_transfer_time_inverts_bytes_between(start, n):
    bw = BandwidthTrace([0, 0.7, 1.9, 2.0, 5.0], [3.0, 0.0, 12.0, 0.5, 1.0])
    d = bw.transfer_time(start, n)
    assert d > 0
    assert bw.bytes_between(start, start + d) == pytest.approx(n, rel=1e-9, abs=1e-3)


def test_readers(tmp_path):
    p = tmp_path / "pens.log"
    p.write_text("0.0 1.0\n1.0 2.0\n2.0 4.0\n")
    bw = load_bandwidth(p)
    assert len(bw) == 3 and bw.rate_mbps(1.5) == pytest.approx(2.0)
    m = tmp_path / "mahi.up"
    m.write_text("\n".join(str(t) for t in [0, 0, 50, 100, 150, 1000]) + "\n")  # 6 packets in 1 s
    mb = load_bandwidth(m, bin_s=0.5)
    assert mb.period_s == pytest.approx(1.0)
    assert mb.bytes_between(0, 1.0) == pytest.approx(6 * 1500)


@pytest.mark.parametrize("text, msg", [
    ("0 1\n1 x\n", ":2: not numbers"),
    ("0 1\n0 2\n", ":2: time 0.0 s does not increase"),
    ("0 1\n1 -2\n", ":2: rate must be >= 0"),
    ("0 1 2\n", ":1: expected 'time_s Mbps'"),
    ("", "empty bandwidth trace"),
    ("0 0\n1 0\n", "every rate is zero"),
])
def test_reader_errors_name_file_and_line(tmp_path, text, msg):
    p = tmp_path / "bad.log"
    p.write_text(text)
    with pytest.raises(UserInputError, match=msg) as e:
        load_bandwidth(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_unreadable_file_and_folder(tmp_path):
    with pytest.raises(UserInputError, match="cannot read"):
        load_bandwidth(tmp_path / "missing.log")
    with pytest.raises(UserInputError, match="not a folder"):
        load_bandwidth_dir(tmp_path / "nope")
    (tmp_path / "bin.log").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserInputError, match="not UTF-8"):
        load_bandwidth(tmp_path / "bin.log")
    with pytest.raises(UserInputError, match="constant"):
        bandwidth_source("constant:fast")
    with pytest.raises(UserInputError, match="unknown synthetic model"):
        bandwidth_source("markov:5g")


def test_shared_traces_split_and_markov_fit(shared_bw):
    traces = load_bandwidth_dir(shared_bw)
    assert len(traces) >= 100
    parts = {n: [t for t in traces if split_of_name(t.name) == n] for n in ("train", "val", "test")}
    assert all(parts.values()) and sum(map(len, parts.values())) == len(traces)
    assert split_of_name(traces[0].name) == split_of_name(traces[0].name)
    assert len(load_bandwidth_dir(shared_bw, "test")) == len(parts["test"])
    # the embedded model is what fit_markov gives on these traces
    fitted = fit_markov(traces)
    emb = MARKOV_MODELS["mobile-3g"]
    assert np.allclose(fitted.log_mean, emb.log_mean, atol=0.01)
    assert np.allclose(fitted.transition, emb.transition, atol=0.01)
    # and its samples have the real traces' statistics
    real = np.concatenate([[t.rate_mbps(x) for x in np.arange(0, t.period_s, 1.0)] for t in traces])
    syn = np.concatenate([[t.rate_mbps(x) for x in np.arange(0, t.period_s, 1.0)] for t in bandwidth_source("markov:mobile-3g", "train")])
    assert np.median(syn) == pytest.approx(np.median(real), rel=0.15)
    assert np.mean(syn) == pytest.approx(np.mean(real), rel=0.15)


def test_markov_splits_differ_and_are_deterministic():
    a = bandwidth_source("markov:mobile-3g", "train", n_synthetic=2, duration_s=60)
    b = bandwidth_source("markov:mobile-3g", "train", n_synthetic=2, duration_s=60)
    c = bandwidth_source("markov:mobile-3g", "test", n_synthetic=2, duration_s=60)
    assert a[0].rates_bps == b[0].rates_bps and a[0].rates_bps != c[0].rates_bps
