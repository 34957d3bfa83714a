"""Hand-computed scenarios for the discrete-event system model."""

import pytest

from mllm_offload.config import SystemConfig
from mllm_offload.decision import Mode, Thresholds
from mllm_offload.envs.system import EdgeCloudSystem, SimRequests, Timeline, erlang_c
from mllm_offload.traces.bandwidth import BandwidthTrace

EDGE_ONLY = Thresholds(1.0, 1.0, 0.0)
CLOUD = Thresholds(0.0, 0.0, 1.0)
SPEC = Thresholds(0.0, 1.0, 0.5)  # speculative, accept conf >= 0.5
EDGE_FIRST = Thresholds(1.0, 1.0, 0.5)  # escalate when conf < 0.5

CFG = SystemConfig(rtt_s=0.1, cloud_servers=1, edge_power_w=10.0, radio_power_w=2.0,
                   price_in_usd_per_mtok=1.0, price_out_usd_per_mtok=2.0, bw_prior_mbps=5.0)


def make(n=1, arrival=None, conf=0.9, edge_s=1.0, cloud_s=0.5, payload=1_000_000, mbps=8.0):
    req = SimRequests(
        arrival=arrival or [0.0] * n, payload=[payload] * n, edge_s=[edge_s] * n, cloud_s=[cloud_s] * n,
        conf=[conf] * n if isinstance(conf, float) else conf, edge_score=[0.0] * n, cloud_score=[1.0] * n,
        in_tokens=[1000.0] * n, out_tokens=[100.0] * n, mas_score=[0.5] * n, rtt=[0.1] * n, bg_delay=[0.0] * n,
    )
    return EdgeCloudSystem(CFG, BandwidthTrace.constant(mbps), 0.0, req)


def test_cloud_path_latency_cost_energy():
    o = make().step(0, CLOUD)  # 1 MB at 1 MB/s + rtt/2 + 0.5 s compute + rtt/2
    assert o.mode is Mode.CLOUD and o.answered_by == "cloud"
    assert o.latency_s == pytest.approx(1.0 + 0.05 + 0.5 + 0.05)
    assert o.score == 1.0 and o.bytes_sent == 1_000_000 and o.cloud_called
    assert o.cloud_cost_usd == pytest.approx(1000e-6 * 1.0 + 100e-6 * 2.0)
    assert o.energy_j == pytest.approx(1.0 * 2.0)  # radio only
    assert o.edge_busy_s == 0.0


def test_edge_first_accept_and_escalate():
    o = make(conf=0.9).step(0, EDGE_FIRST)
    assert (o.answered_by, o.latency_s, o.cloud_called) == ("edge", pytest.approx(1.0), False)
    assert o.energy_j == pytest.approx(10.0)
    o = make(conf=0.1).step(0, EDGE_FIRST)  # edge 1 s, then the whole cloud path
    assert o.answered_by == "cloud" and o.latency_s == pytest.approx(1.0 + 1.6)
    assert o.energy_j == pytest.approx(10.0 + 2.0)


def test_speculative_accept_cancels_and_charges_what_was_spent():
    # edge finishes at 1.0 s; upload 2 MB at 1 MB/s would end at 2.0 s -> half was sent
    o = make(conf=0.9, payload=2_000_000).step(0, SPEC)
    assert o.answered_by == "edge" and o.cancelled and o.latency_s == pytest.approx(1.0)
    assert o.bytes_sent == pytest.approx(1_000_000)
    assert o.cloud_cost_usd == 0.0  # never reached the cloud
    o = make(conf=0.9, payload=100_000, edge_s=0.5, cloud_s=1.0).step(0, SPEC)
    # upload 0.1 s, arrives 0.15 s; compute 0.15-1.15; edge done 0.5; cancel arrives 0.55 -> 0.4 of 1.0 s spent
    assert o.cancelled and o.latency_s == pytest.approx(0.5)
    assert o.cloud_cost_usd == pytest.approx(1000e-6 * 1.0 + 0.4 * 100e-6 * 2.0)
    assert o.cloud_tokens == pytest.approx(1000 + 40)


def test_speculative_reject_waits_and_cloud_first_stops_edge():
    o = make(conf=0.1).step(0, SPEC)  # cloud answer at 1.6 s, edge at 1.0 s is rejected
    assert o.answered_by == "cloud" and o.latency_s == pytest.approx(1.6) and not o.cancelled
    o = make(conf=0.9, edge_s=5.0, payload=100_000).step(0, SPEC)  # cloud answers at 0.7 s
    assert o.answered_by == "cloud" and o.latency_s == pytest.approx(0.7)
    assert o.edge_busy_s == pytest.approx(0.7)  # edge stopped when the cloud answered


def test_fifo_queues_and_cancellation_frees_the_link():
    sim = make(n=3, arrival=[0.0, 0.1, 0.2], conf=0.9)
    a, b = sim.step(0, EDGE_ONLY), sim.step(1, EDGE_ONLY)
    assert a.latency_s == pytest.approx(1.0) and b.latency_s == pytest.approx(1.9)  # waited 0.9 s
    sim = make(n=2, arrival=[0.0, 0.0], conf=0.9, payload=3_000_000)
    first = sim.step(0, SPEC)  # upload cancelled at 1.0 s
    assert first.cancelled
    second = sim.step(1, CLOUD)  # link free again at 1.0 s: 3 s upload + 0.6 s
    assert second.latency_s == pytest.approx(1.0 + 3.0 + 0.6)


def test_plan_is_pure_and_observe_uses_only_completed_measurements():
    sim = make(n=3, arrival=[0.0, 0.5, 3.0], conf=0.9)
    p1 = sim.plan(0, CLOUD)
    p2 = sim.plan(0, CLOUD)
    assert p1.outcome == p2.outcome
    sim.commit(p1)  # upload 0-1 s, answer at 1.6 s
    s = sim.observe(1)  # at 0.5 s nothing has completed yet
    assert s.bw_est_mbps == CFG.bw_prior_mbps and s.cloud_latency_recent_s == 0.0
    assert s.cloud_inflight_n == 1 and s.uplink_queue_bytes == pytest.approx(500_000)
    sim.step(1, EDGE_ONLY)
    s = sim.observe(2)  # at 3.0 s: upload measured at 8 Mbps, response 0.6 s, edge service 1 s
    assert s.bw_est_mbps == pytest.approx(8.0)
    assert s.cloud_latency_recent_s == pytest.approx(0.6)
    assert s.cloud_inflight_n == 0 and s.edge_queue_n == 0


def test_timeline_first_fit_and_erlang():
    t = Timeline()
    t.reserve(1.0, 2.0)
    t.reserve(3.0, 4.0)
    assert t.earliest(0.0, 0.5) == 0.0
    assert t.earliest(0.0, 1.5) == 4.0
    assert t.earliest(2.0, 1.0) == 2.0
    t.prune(2.5)
    assert t.starts == [3.0]
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(4, 0.0) == 0.0


def test_timeline_merges_back_to_back_jobs():
    t = Timeline()
    for s, e in [(0, 1), (1, 2), (3, 4), (2, 3)]:
        t.reserve(s, e)
    assert (t.starts, t.ends) == ([0], [4])
    t.reserve(6, 7)
    assert t.earliest(0.0, 1.0) == 4.0 and t.earliest(0.0, 2.5) == 7.0


def test_outcome_invariants_under_random_thresholds():
    import numpy as np

    from mllm_offload.envs import OffloadEnv

    env = OffloadEnv(profile="mobile-3g", synthetic_requests=3000, episode={"n_requests": 200})
    rng = np.random.default_rng(0)
    for seed in range(5):
        env.reset(seed=seed)
        req = env.sim.req
        for i in range(env.n_requests):
            th = Thresholds.from_action(rng.random(3))
            o = env.step_thresholds(th)[4]["outcome"]
            assert o.mode is th.mode(req.mas_score[i])
            assert o.latency_s > 0 and o.energy_j >= 0 and o.cloud_cost_usd >= 0
            assert 0 <= o.bytes_sent <= req.payload[i] + 1e-6
            if o.answered_by == "edge":
                assert o.latency_s >= req.edge_s[i] - 1e-9 and o.score == req.edge_score[i]
                assert o.mode is not Mode.CLOUD and req.conf[i] >= th.tau_conf
            else:
                assert o.cloud_called and o.score == req.cloud_score[i] and not o.cancelled
                assert o.latency_s >= req.rtt[i] + req.cloud_s[i] - 1e-9
            if o.cancelled:
                assert o.mode is Mode.SPECULATIVE and o.answered_by == "edge"
            if o.mode is Mode.CLOUD:
                assert o.answered_by == "cloud" and o.edge_busy_s == 0.0
