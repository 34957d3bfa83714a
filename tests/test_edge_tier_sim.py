"""The edge as an edge tier in the simulator: modes under dropouts, the episode schedule, the
pipeline's per-device timelines, the capacity feature, and the scenario/CLI plumbing."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllm_offload.config import EdgeTierConfig, SystemConfig
from mllm_offload.decision import Thresholds
from mllm_offload.edge_tier import load_model_config, pipeline_completions, resolve_devices
from mllm_offload.edge_tier.tier import EdgeTier, draw_outages
from mllm_offload.envs import OffloadEnv
from mllm_offload.envs.tier_edge import TierEdge
from mllm_offload.errors import UserInputError
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.scenario import Scenario
from mllm_offload.traces.synth import get_profile

CAP = OBSERVATION_SPEC.index("edge_capacity")
EDGE_ONLY = Thresholds(1.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def costs():
    return load_model_config("qwen2-vl-2b").costs()


@pytest.fixture(scope="module")
def tier(costs):
    return EdgeTier(costs, resolve_devices("home-4"))


def test_modes_under_dropouts(costs, tier):
    assert tier.healthy.kind == "healthy" and tier.healthy.capacity == pytest.approx(1.0)
    for d in range(len(tier)):  # every stage has a backup on home-4: losing one device is a takeover
        m = tier.mode(frozenset({d}))
        assert m.kind == "takeover" and d not in m.hosts and 0.0 < m.capacity <= 1.0 + 1e-9
        assert m.bounds == tier.healthy.bounds
    no_backup = EdgeTier(costs, resolve_devices("home-4"), backups=False)
    m = no_backup.mode(frozenset({0}))
    assert m.kind == "re-planned" and 0 not in m.hosts and len(m.hosts) == 3
    everything = frozenset(range(len(tier)))
    assert tier.mode(everything).kind == "down" and tier.mode(everything).capacity == 0.0
    # the laptop holds the largest stage: losing it costs the most
    assert tier.mode(frozenset({0})).capacity == min(tier.mode(frozenset({d})).capacity for d in range(len(tier)))


def test_schedule_stalls_on_a_loss_and_switches_back_without_one(costs, tier):
    segs = tier.schedule([[], [], [(10.0, 70.0)], []])  # the tablet (stage 2, backup on the phone) drops
    assert segs[0].start == 0.0 and math.isinf(segs[-1].end)
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    healthy, stall_unknown, stall_known, degraded, back = segs
    assert healthy.mode is tier.healthy and healthy.end == 10.0 and healthy.ends_by_dropout
    # the router learns of the loss detect_s later: until then it sees the old capacity
    assert stall_unknown.mode is None and stall_unknown.seen_capacity == 1.0 and stall_unknown.end == pytest.approx(10.0 + tier.detect_s)
    assert stall_known.mode is None and stall_known.seen_capacity == 0.0
    assert degraded.mode is not None and degraded.mode.kind == "takeover" and not degraded.ends_by_dropout
    # a switch to a backup: detection + re-sending the stage's input activations (tens of ms on Wi-Fi)
    assert tier.detect_s < degraded.start - 10.0 < tier.detect_s + 0.1
    assert back.mode is tier.healthy and back.start == pytest.approx(70.0 + tier.detect_s)  # the device kept its weights
    # without backups the survivors load the weights they lack: a redeployment takes seconds
    no_backup = EdgeTier(costs, resolve_devices("home-4"), backups=False)
    segs = no_backup.schedule([[(10.0, 70.0)], [], [], []])
    replanned = next(s for s in segs if s.mode is not None and s.mode.kind == "re-planned")
    assert replanned.start - 10.0 > 5.0
    assert all(s.mode is None for s in segs if 10.0 <= s.start < replanned.start)


def test_schedule_of_a_device_down_from_the_start_and_of_the_whole_tier_down(tier):
    segs = tier.schedule([[], [], [(0.0, 5.0)], []])
    assert segs[0].mode is not None and segs[0].mode.kind == "takeover" and segs[0].start == 0.0
    segs = tier.schedule([[(1.0, 3.0)], [(1.0, 4.0)], [(1.0, 5.0)], [(1.0, 6.0)]])
    down = [s for s in segs if 1.0 <= s.start < 5.0]
    assert down and all(s.mode is None for s in down)
    assert segs[-1].mode is tier.healthy


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1.0, 100.0), st.floats(0.5, 50.0))
def test_outages_are_ordered_and_start_within_the_horizon(seed, up, down):
    spans = draw_outages(np.random.default_rng(seed), 3, 500.0, up, down)
    for dev in spans:
        for (a, b), (c, _) in itertools.pairwise(dev):
            assert a < b <= c
        assert all(0.0 <= a < 500.0 and b > a for a, b in dev)
    assert draw_outages(np.random.default_rng(seed), 3, 500.0, up, 0.0) == [[], [], []]


def test_outages_are_down_the_stationary_fraction_of_the_time():
    spans = draw_outages(np.random.default_rng(0), 200, 2000.0, 60.0, 20.0)
    down = sum(min(b, 2000.0) - a for dev in spans for a, b in dev) / (200 * 2000.0)
    assert down == pytest.approx(20.0 / 80.0, abs=0.02)


def test_a_healthy_tier_is_the_pipeline_flow_shop(tier):
    """Without dropouts, equal requests through the tier finish as the flow shop of its stages."""
    edge = TierEdge(tier, tier.schedule([[], [], [], []]))
    service = 0.8  # seconds on the reference device
    arrivals = [0.0, 0.0, 0.05, 0.1, 2.0, 2.01]
    ends = []
    for a in arrivals:
        _, end, jobs = edge.schedule(a, service)
        edge.reserve(jobs)
        ends.append(end)
    stage = [service * s / tier.reference_s for s in tier.healthy.stage_s]
    np.testing.assert_allclose(ends, pipeline_completions(stage, arrivals), rtol=1e-12)
    # throughput: back-to-back requests leave one bottleneck apart
    assert ends[1] - ends[0] == pytest.approx(max(stage))


def test_a_request_in_the_tier_at_a_dropout_restarts_after_the_switch(tier):
    edge = TierEdge(tier, tier.schedule([[(0.5, 100.0)], [], [], []]))
    start, end, jobs = edge.schedule(0.3, 1.0)  # would run 0.3 .. 1.1 s: the laptop (stage 0) drops at 0.5
    assert start == pytest.approx(0.5 + tier.detect_s)  # the first stage has no input to re-send: detection only
    assert all(h != 0 for h, _, _ in jobs)  # the laptop's stage runs on its backup
    assert end - start == pytest.approx(sum(1.0 * s / tier.reference_s for s in tier.mode(frozenset({0})).stage_s))
    assert edge.seen_capacity(0.4) == 1.0 and edge.seen_capacity(0.6) == 1.0  # not known yet
    assert edge.seen_capacity(5.0) == pytest.approx(tier.mode(frozenset({0})).capacity)
    # a request done before the dropout is not touched
    s0, e0, _ = edge.schedule(0.0, 0.2)
    assert s0 == 0.0 and e0 < 0.5


def _env(tier_cfg: EdgeTierConfig | None, n=150, rate=4.0):
    system = get_profile("mobile-3g").system.model_copy(update={"edge_tier": tier_cfg})
    return OffloadEnv("mobile-3g", bandwidth="markov:mobile-3g", system=system,
                      episode={"n_requests": n, "rate_scale": (rate, rate)})


def _edge_latencies(env, episodes=6):
    lat, caps, infos = [], [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=ep)
        infos.append(info)
        done = False
        while not done:
            caps.append(float(obs[CAP]))
            obs, _, done, _, step = env.step_thresholds(EDGE_ONLY)
            lat.append(step["outcome"].latency_s)
    return np.array(lat), np.array(caps), infos


def test_env_with_an_edge_tier_sees_its_capacity_and_dropouts():
    _lat1, caps1, _ = _edge_latencies(_env(None), 2)
    assert np.all(caps1 == 1.0)
    _lat, caps, infos = _edge_latencies(_env(EdgeTierConfig(mean_up_s=200.0, mean_down_s=40.0)))
    assert sum(i["edge_dropouts"] for i in infos) > 0
    assert caps.min() < 1.0 and 0.0 <= caps.min() and caps.max() <= 2.0
    assert all(0.0 <= i["edge_capacity_mean"] <= 1.0 + 1e-9 for i in infos)


def test_planner_tier_answers_faster_than_the_uniform_split_under_load():
    always_up = {"mean_down_s": 0.0}
    planner, _, _ = _edge_latencies(_env(EdgeTierConfig(**always_up)))
    uniform, _, _ = _edge_latencies(_env(EdgeTierConfig(split="uniform", **always_up)))
    assert np.percentile(planner, 50) < 0.7 * np.percentile(uniform, 50)
    assert np.percentile(planner, 95) < np.percentile(uniform, 95)


def test_env_with_a_tier_is_deterministic_per_seed_and_keeps_the_requests():
    a, b = _env(EdgeTierConfig()), _env(EdgeTierConfig())
    oa, ia = a.reset(seed=3)
    ob, ib = b.reset(seed=3)
    assert ia == ib and np.array_equal(oa, ob)
    plain = _env(None)
    _, ip = plain.reset(seed=3)
    assert ip["start"] == ia["start"] and ip["bandwidth"] == ia["bandwidth"]


def test_scenario_and_cli_validate_the_edge_tier(tmp_path, capsys):
    scn = Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", edge_tier="jetson-3")
    assert scn.system.edge_tier is not None and scn.system.edge_tier.devices == "jetson-3"
    assert scn.describe()["system"]["edge_tier"]["devices"] == "jetson-3"
    with pytest.raises(UserInputError, match="devices"):
        Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", edge_tier="no-such-cluster")
    cfg = tmp_path / "tier.yaml"
    cfg.write_text("system:\n  edge_tier: {devices: home-4, split: sideways}\n")
    with pytest.raises(UserInputError, match=r"system\.edge_tier\.split"):
        Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", config=cfg)
    with pytest.raises(UserInputError, match="memory"):  # a 7B model in float16 (14 GB) on a phone and a tablet (9 GB)
        Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g", config=_yaml(tmp_path, model="llava-1.5-7b"),
                       edge_tier="phone,tablet")
    from mllm_offload.cli import main

    assert main(["evaluate", "--policies", "edge", "--requests", "20", "--bandwidth", "markov:mobile-3g", "--edge-tier", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err


def _yaml(tmp_path, **tier) -> object:
    p = tmp_path / "model.yaml"
    p.write_text("system:\n  edge_tier: " + json.dumps(tier) + "\n")
    return p


def test_system_config_without_a_tier_is_unchanged():
    assert SystemConfig().edge_tier is None
    assert "edge_tier" in SystemConfig.model_fields


def test_a_slow_takeover_is_followed_by_a_background_replan(tier):
    """Losing the laptop puts its large stage on the Jetson (a fast switch, a slow pipeline); the
    survivors load a re-plan meanwhile and switch to it without stalling."""
    segs = tier.schedule([[(10.0, 170.0)], [], [], []])
    kinds = [None if s.mode is None else s.mode.kind for s in segs]
    assert kinds == ["healthy", None, "takeover", "re-planned", "healthy"]
    take, replan = segs[2], segs[3]
    assert not take.ends_by_dropout and replan.mode is not None and take.mode is not None
    assert replan.mode.capacity > take.mode.capacity
    assert replan.mode.kind == tier.replanned(frozenset({0})).kind and 0 not in replan.mode.hosts
