import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllm_offload.decision import Mode, Thresholds, accept_edge, decide
from mllm_offload.observation import OBSERVATION_SPEC, RequestFeatures, SystemState, build_observation
from mllm_offload.tradeoff import TradeOff

unit = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)


@given(unit, unit, unit)
def test_from_action_orders_and_clips(a0, a1, a2):
    t = Thresholds.from_action([a0, a1, a2])
    assert 0.0 <= t.tau_low <= t.tau_high <= 1.0
    assert 0.0 <= t.tau_conf <= 1.0
    again = Thresholds.from_action(t.to_action())
    assert math.isclose(again.tau_low, t.tau_low, abs_tol=1e-12)
    assert again.tau_high == t.tau_high and again.tau_conf == t.tau_conf


def test_rule_table():
    t = Thresholds(0.3, 0.7, 0.6)
    assert decide(0.1, t) is Mode.EDGE_FIRST
    assert decide(0.3, t) is Mode.SPECULATIVE
    assert decide(0.69, t) is Mode.SPECULATIVE
    assert decide(0.7, t) is Mode.CLOUD
    assert accept_edge(0.6, t) and not accept_edge(0.59, t)
    assert Mode.SPECULATIVE.label == "speculative"


def test_thresholds_validate():
    with pytest.raises(ValueError, match="tau_low <= tau_high"):
        Thresholds(0.8, 0.2, 0.5)
    with pytest.raises(ValueError, match="tau_conf"):
        Thresholds(0.1, 0.2, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        Thresholds.from_action([float("nan"), 0.5, 0.5])
    with pytest.raises(ValueError, match="3 components"):
        Thresholds.from_action([0.5, 0.5])


def test_observation_order_units_and_clipping():
    names = OBSERVATION_SPEC.names
    assert len(names) == len(set(names)) == len(OBSERVATION_SPEC)
    assert names[0] == "mas_score" and "bw_est_mbps_log" in names
    req = RequestFeatures({"score": 0.4, "spatial": 0.5}, payload_bytes=250_000, input_tokens=400)
    state = SystemState(bw_est_mbps=2.0, rtt_s=0.05, uplink_queue_bytes=500_000, edge_queue_n=2, edge_queue_s=1.0)
    obs = build_observation(req, state, TradeOff())
    assert obs.dtype == np.float32 and obs.shape == (len(OBSERVATION_SPEC),)
    ix = OBSERVATION_SPEC.index
    assert obs[ix("bw_est_mbps_log")] == pytest.approx(math.log(2.0))
    assert obs[ix("uplink_queue_s")] == pytest.approx(2.0)  # 500 kB at 2 Mbps
    assert obs[ix("upload_est_s_log1p")] == pytest.approx(math.log1p(1.0 + 0.05))
    assert obs[ix("mas_temporal")] == 0.0
    # identical inputs give the identical vector (simulator and runtime share this function)
    assert np.array_equal(obs, build_observation(req, SystemState(2.0, 0.05, 500_000, 2, 1.0), TradeOff()))
    huge = build_observation(req, SystemState(bw_est_mbps=1e-9, rtt_s=99.0, edge_queue_n=10**6), TradeOff())
    assert np.all(huge >= OBSERVATION_SPEC.low) and np.all(huge <= OBSERVATION_SPEC.high)
    with pytest.raises(KeyError):
        ix("nope")


def test_batch_request_features_match_single():
    from mllm_offload.observation import request_features_batch
    from mllm_offload.traces.synth import generate

    tr = generate("mobile-3g", 2000, seed=5)
    batch = request_features_batch(tr.mas, tr.payload_bytes, tr.input_tokens, tr.has_video, tr.has_audio)
    state = SystemState(1.3, 0.06, 1e5, 1, 0.4, 2, 0.8)
    for i in range(0, 2000, 7):
        one = tr.request_features(i)
        assert np.allclose(build_observation(batch[i], state, TradeOff()), build_observation(one, state, TradeOff()), rtol=1e-6, atol=0)
        assert batch[i].mas == one.mas and batch[i].has_video == one.has_video
