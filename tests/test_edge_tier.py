"""The edge tier: model descriptions from real configs, the exact partition planner, backups, dropout costs, edge-plan."""

from __future__ import annotations

import itertools
import json
import math
import struct

import numpy as np
import pytest

from mllm_offload.cli import main
from mllm_offload.edge_tier import (
    CLUSTERS,
    PRESETS,
    REFERENCE_FLOPS_PER_S,
    BlockCosts,
    DeviceSpec,
    EdgeCluster,
    InfeasiblePlanError,
    compare_plans,
    dropout_costs,
    evaluate_plan,
    load_devices,
    load_model_config,
    model_from_config,
    pipeline_completions,
    place_backups,
    plan_partition,
    proportional_partition,
    resolve_devices,
    shipped_configs,
    uniform_partition,
)
from mllm_offload.errors import UserInputError

# ------------------------------------------------------------------------------------------- helpers


def _costs(flops, param_bytes, out_bytes=None, state_bytes=None, tied=()) -> BlockCosts:
    n = len(flops)
    return BlockCosts(names=tuple(f"b{k}" for k in range(n)), flops=np.asarray(flops, float), param_bytes=np.asarray(param_bytes, float),
                      state_bytes=np.zeros(n) if state_bytes is None else np.asarray(state_bytes, float),
                      out_bytes=np.zeros(n) if out_bytes is None else np.asarray(out_bytes, float), tied=tuple(tied), tokens=1)


def _cluster(speeds, memories, mbps=None, latency_s=0.0) -> EdgeCluster:
    mbps = mbps or [1000.0] * len(speeds)
    return EdgeCluster(devices=[DeviceSpec(name=f"d{k}", flops_per_s=s, memory_bytes=m, link_mbps=b, link_latency_s=latency_s)
                                for k, (s, m, b) in enumerate(zip(speeds, memories, mbps))])


def _all_splits(n: int, m: int):
    """Every split of blocks 0..n into m non-empty contiguous ranges."""
    for cuts in itertools.combinations(range(1, n), m - 1):
        edges = (0, *cuts, n)
        yield list(itertools.pairwise(edges))


def _random_case(rng: np.random.Generator):
    n, m = int(rng.integers(3, 9)), int(rng.integers(1, 5))
    m = min(m, n)
    flops = rng.uniform(1e9, 5e10, n)
    pbytes = rng.uniform(1e8, 1e9, n)
    tied = ((0, n - 1, float(min(pbytes[0], pbytes[-1]) / 2)),) if n > 2 and rng.random() < 0.5 else ()
    costs = _costs(flops, pbytes, out_bytes=rng.uniform(1e5, 5e7, n), state_bytes=rng.uniform(0, 1e7, n), tied=tied)
    total = costs.range_memory(0, n)
    cluster = _cluster(rng.uniform(5e11, 1e13, m), rng.uniform(0.2, 0.9, m) * total, mbps=list(rng.uniform(50, 1000, m)),
                       latency_s=float(rng.uniform(0, 0.005)))
    return costs, cluster


# ----------------------------------------------------------------------------------------- the planner


def test_memory_matrix_matches_range_memory_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        costs, _ = _random_case(rng)
        mem = costs.memory_matrix()
        n = len(costs)
        for i in range(n):
            for j in range(i + 1, n + 1):
                assert mem[i, j] == pytest.approx(costs.range_memory(i, j))


def test_dp_planner_is_optimal_against_brute_force():
    rng = np.random.default_rng(1)
    feasible = infeasible = 0
    for _ in range(300):
        costs, cluster = _random_case(rng)
        plans = [evaluate_plan(costs, cluster, b) for b in _all_splits(len(costs), len(cluster))]
        ok = [p for p in plans if p.fits_memory]
        if not ok:
            infeasible += 1
            with pytest.raises(InfeasiblePlanError, match="no memory-feasible plan"):
                plan_partition(costs, cluster)
            continue
        feasible += 1
        best = min(p.bottleneck_s for p in ok)
        dp = plan_partition(costs, cluster)
        assert dp.fits_memory
        assert dp.bottleneck_s == pytest.approx(best, rel=1e-9)
        # second criterion: least latency among the plans with the optimal bottleneck
        assert dp.latency_s == pytest.approx(min(p.latency_s for p in ok if p.bottleneck_s <= best * (1 + 1e-9)), rel=1e-9)
        assert all(s.memory_bytes <= s.memory_available_bytes * (1 + 1e-9) for s in dp.stages)
    assert feasible > 50 and infeasible > 10, (feasible, infeasible)


def test_planner_never_worse_than_a_feasible_uniform_split():
    rng = np.random.default_rng(2)
    for _ in range(100):
        costs, cluster = _random_case(rng)
        uni = uniform_partition(costs, cluster)
        if uni.fits_memory:
            assert plan_partition(costs, cluster).bottleneck_s <= uni.bottleneck_s * (1 + 1e-12)


def test_identical_devices_and_blocks_give_the_uniform_split():
    for n, m in [(12, 4), (12, 3), (13, 4), (7, 7)]:
        costs = _costs([1e10] * n, [1e8] * n)
        cluster = _cluster([1e12] * m, [1e10] * m)
        dp, uni = plan_partition(costs, cluster), uniform_partition(costs, cluster)
        assert dp.throughput_rps == pytest.approx(uni.throughput_rps, rel=1e-12)
        if n % m == 0:
            assert dp.bounds == uni.bounds
    prop = proportional_partition(_costs([1e10] * 12, [1e8] * 12), _cluster([1e12] * 4, [1e10] * 4))
    assert [s.n_blocks for s in prop.stages] == [3, 3, 3, 3]


def test_memory_is_respected_and_infeasible_is_a_clear_error():
    costs = _costs([1e10] * 6, [1e9] * 6)
    # the fast device could take everything but holds only two blocks
    plan = plan_partition(costs, _cluster([1e13, 1e11, 1e11], [2e9, 1e10, 1e10]))
    assert plan.stages[0].n_blocks <= 2 and plan.fits_memory
    with pytest.raises(InfeasiblePlanError) as e:
        plan_partition(costs, _cluster([1e12, 1e12], [2e9, 2e9]))
    msg = str(e.value)
    assert "\n" not in msg and "6.00 GB" in msg and "4.00 GB" in msg
    with pytest.raises(InfeasiblePlanError, match="block b0 alone"):
        plan_partition(_costs([1e10] * 3, [5e9, 1e8, 1e8]), _cluster([1e12, 1e12], [3e9, 3e9]))
    with pytest.raises(InfeasiblePlanError, match="3 devices for 2 blocks"):
        plan_partition(_costs([1e10] * 2, [1e8] * 2), _cluster([1e12] * 3, [1e10] * 3))
    assert isinstance(e.value, UserInputError)


def test_pipeline_throughput_and_latency_definitions():
    costs = _costs([1e10, 2e10, 3e10], [1e8] * 3, out_bytes=[1e6, 1e6, 0])
    cluster = _cluster([1e12, 1e12, 1e12], [1e10] * 3, mbps=[80.0] * 3, latency_s=0.001)
    plan = evaluate_plan(costs, cluster, [(0, 1), (1, 2), (2, 3)])
    transfer = 0.002 + 1e6 / 10e6  # two hops of 1 ms; 80 Mbps = 10 MB/s
    assert [s.transfer_s for s in plan.stages] == pytest.approx([transfer, transfer, 0.0])
    assert [s.compute_s for s in plan.stages] == pytest.approx([0.01, 0.02, 0.03])
    assert plan.bottleneck_s == pytest.approx(max(0.01 + transfer, 0.02 + transfer, 0.03))
    assert plan.latency_s == pytest.approx(0.06 + 2 * transfer)
    # the flow shop of back-to-back requests settles at 1 / the slowest stage
    stage_s = [s.stage_s for s in plan.stages]
    done = pipeline_completions(stage_s, np.zeros(200))
    assert done[0] == pytest.approx(sum(stage_s))
    assert np.diff(done) == pytest.approx(np.full(199, max(stage_s)))


def test_planner_beats_uniform_on_heterogeneous_presets():
    costs = load_model_config("qwen2-vl-2b").costs()
    comp = compare_plans(costs, resolve_devices("home-4"))
    assert comp.planner.fits_memory and comp.ratio >= 1.3
    assert comp.planner.throughput_rps >= comp.proportional.throughput_rps * (1 - 1e-12)
    # identical devices: the planner still balances unequal blocks (vision layers are heavier than decoder layers)
    same = compare_plans(costs, resolve_devices("jetson-orin-nano,jetson-orin-nano,jetson-orin-nano"))
    assert same.ratio >= 1.0


# ------------------------------------------------------------------------------------ backups, dropout


def test_backups_fit_spare_memory_and_switching_beats_redeploying():
    costs = load_model_config("qwen2-vl-2b").costs()
    cluster = resolve_devices("home-4")
    plan = plan_partition(costs, cluster)
    backups = place_backups(plan, costs, cluster)
    assert len(backups) == len(plan.stages)
    held = {d.name: 0.0 for d in cluster.devices}
    for s in plan.stages:
        held[s.device] += s.memory_bytes
    for b in backups:
        assert b.device is not None and b.device != b.stage_device
        held[b.device] += b.bytes
    assert all(held[d.name] <= d.memory_bytes for d in cluster.devices)
    drops = dropout_costs(plan, costs, cluster, backups, detect_s=0.3)
    for d in drops:
        assert d.switch_s is not None and d.redeploy_s is not None and d.redeploy_bytes
        assert 0.3 <= d.switch_s < d.redeploy_s
        assert d.throughput_with_backup_rps and d.throughput_after_redeploy_rps
    # the degraded pipeline is the plan with the backup device hosting the lost stage
    k = 1
    hosts = list(plan.hosts)
    hosts[k] = cluster.names.index(backups[k].device)
    assert drops[k].throughput_with_backup_rps == pytest.approx(evaluate_plan(costs, cluster, plan.bounds, hosts).throughput_rps)


def test_no_spare_memory_means_no_backup_and_redeploy_needs_room():
    costs = _costs([1e10] * 4, [1e9] * 4, out_bytes=[1e6] * 4)
    cluster = _cluster([1e12, 1e12], [2e9, 2e9])  # full: no room for a backup, nor for the survivor alone
    plan = plan_partition(costs, cluster)
    assert all(b.device is None for b in place_backups(plan, costs, cluster))
    d = dropout_costs(plan, costs, cluster)[0]
    assert d.switch_s is None and d.redeploy_s is None
    roomy = _cluster([1e12, 1e12], [6e9, 6e9])
    plan = plan_partition(costs, roomy)
    d = dropout_costs(plan, costs, roomy, detect_s=0.1)[0]
    assert d.backup_device == "d1" and d.switch_s == pytest.approx(0.1)  # stage 0: nothing to re-send
    # without a backup the survivor loads the lost two blocks (2 GB) at its 1000 Mbps link
    assert d.redeploy_s == pytest.approx(0.1 + 2e9 / 125e6)
    assert d.throughput_after_redeploy_rps == pytest.approx(1 / 0.04)


# ------------------------------------------------------------------------------------- model configs


def test_shipped_configs_match_published_parameter_counts():
    assert set(shipped_configs()) == {"qwen2-vl-2b", "qwen2.5-vl-3b", "llava-1.5-7b"}
    published = {"qwen2-vl-2b": 2.21e9, "qwen2.5-vl-3b": 3.75e9, "llava-1.5-7b": 7.06e9}
    for name, n in published.items():
        spec = load_model_config(name)
        assert spec.n_params == pytest.approx(n, rel=0.01), name
    q = load_model_config("qwen2-vl-2b")
    assert (q.vision_tokens, q.image_tokens, q.image_px) == (1564, 391, (644, 476))  # 640x480 -> 23x17 tokens of 28 px
    assert q.weight_dtype == "bfloat16" and q.tied
    assert [b.kind for b in q.blocks].count("vision") == 32 and [b.kind for b in q.blocks].count("decoder") == 28
    ll = load_model_config("llava-1.5-7b")
    assert (ll.vision_tokens, ll.image_tokens) == (577, 576)  # CLS dropped by the "default" strategy
    assert [b.kind for b in ll.blocks].count("vision") == 23  # vision_feature_layer -2: the last layer is not needed
    assert ll.blocks[-2].params == 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096  # Llama-7B defaults fill the sparse text_config
    assert load_model_config("llava-1.5-7b", weight_dtype="int4").weight_bytes == pytest.approx(ll.n_params * 0.5)


def test_llava_class_dict_by_hand():
    cfg = {"model_type": "llava", "torch_dtype": "float16", "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
           "vision_config": {"model_type": "clip_vision_model", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
                             "num_attention_heads": 2, "image_size": 16, "patch_size": 4},
           "text_config": {"model_type": "llama", "hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 3,
                           "num_attention_heads": 3, "num_key_value_heads": 1, "vocab_size": 50}}
    spec = model_from_config(cfg)
    assert [b.name for b in spec.blocks] == ["vision.0", "vision.1", "projector", "decoder.0", "decoder.1", "decoder.2", "lm_head"]
    assert (spec.vision_tokens, spec.image_tokens) == (17, 16)
    costs = spec.costs(tokens=20)
    hd = 12 // 3
    dec_matmul = 12 * 12 + 2 * 12 * hd + 12 * 12 + 3 * 12 * 20
    assert costs.flops[3] == pytest.approx(2 * dec_matmul * 20 + 2 * 12 * 20 * 21)  # causal attention over 20 tokens
    assert costs.flops[0] == pytest.approx(2 * (4 * 64 + 2 * 8 * 16 + 3 * 16 * 8) * 17 + 4 * 8 * 17**2)
    assert costs.flops[-1] == pytest.approx(2 * 50 * 12)  # the last position only
    assert costs.out_bytes[0] == 17 * 8 * 2 and costs.out_bytes[2] == 20 * 12 * 2 and costs.out_bytes[-1] == 0
    assert costs.state_bytes[3] == 2 * 1 * hd * 20 * 2
    with pytest.raises(UserInputError, match="must exceed the 16 image tokens"):
        spec.costs(tokens=16)


def test_qwen_configs_match_transformers_parameter_counts():
    """Both config layouts (Qwen's top-level text fields, transformers 5's nested text_config) count as torch does."""
    pytest.importorskip("transformers")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
                bos_token_id=0, eos_token_id=1, rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 1e4})
    cases = [(Qwen2VLConfig, Qwen2VLForConditionalGeneration, dict(depth=2, embed_dim=32, hidden_size=48, mlp_ratio=2, num_heads=2,
                                                                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2)),
             (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, dict(depth=3, hidden_size=32, intermediate_size=40, out_hidden_size=48,
                                                                         num_heads=2, patch_size=14, spatial_merge_size=2,
                                                                         temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1]))]
    for cfg_cls, model_cls, vision in cases:
        for tie in (True, False):
            cfg = cfg_cls(text_config={**text, "tie_word_embeddings": tie}, vision_config=vision, tie_word_embeddings=tie)
            n = sum(p.numel() for p in model_cls(cfg).parameters())
            spec = model_from_config(json.loads(cfg.to_json_string()))
            assert spec.n_params == n, (cfg_cls.__name__, tie)


def test_tiny_model_config_matches_its_weights(tiny_model_dir):
    spec = load_model_config(tiny_model_dir)
    assert spec.family == "llava" and spec.name == "tiny" and spec.weight_dtype == "float32"
    with (tiny_model_dir / "model.safetensors").open("rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    header.pop("__metadata__", None)
    stored = sum(math.prod(t["shape"]) for t in header.values())
    width = json.loads((tiny_model_dir / "config.json").read_text())["vision_config"]["hidden_size"]
    assert spec.n_params == stored - 2 * width  # all but the tower's post_layernorm, which LLaVA never uses
    assert load_model_config(tiny_model_dir / "config.json").n_params == spec.n_params
    plan = plan_partition(spec.costs(), _cluster([1e12, 2e12], [1e9, 1e9]))
    assert plan.fits_memory and plan.bounds[-1][1] == len(spec.blocks)


def test_model_config_errors_are_one_line(tmp_path):
    with pytest.raises(UserInputError, match="did you mean 'qwen2-vl-2b'"):
        load_model_config("qwen2-vl-2")
    bad = tmp_path / "bad.json"
    bad.write_text('{"model_type": "llava", "vision_config": {"hidden_size": 0}, "text_config": {}}')
    with pytest.raises(UserInputError, match=r"bad.json: vision_config.hidden_size: expected an integer in \[1, 10000000\], got 0"):
        load_model_config(bad)
    bad.write_text('{"model_type": "qwen2_vl", "vision_config": {"depth": 2}}')
    with pytest.raises(UserInputError, match=r"bad.json: vision_config.embed_dim: required field missing"):
        load_model_config(bad)
    bad.write_text('{"model_type": "bert"}')
    with pytest.raises(UserInputError, match="'bert' is not supported"):
        load_model_config(bad)
    bad.write_text("{oops")
    with pytest.raises(UserInputError, match=r"bad.json:1: invalid JSON"):
        load_model_config(bad)


# ------------------------------------------------------------------------------------------ devices


def test_presets_are_sourced_and_clusters_resolve():
    for d in PRESETS.values():
        assert {"flops_per_s", "memory_bytes", "link_mbps", "link_latency_s"} <= set(d.sources), d.name
    assert REFERENCE_FLOPS_PER_S == pytest.approx(3.3345e12)
    for name, devices in CLUSTERS.items():
        assert resolve_devices(name).names[0] == devices[0]
    c = resolve_devices("jetson-orin-nano,jetson-orin-nano,phone")
    assert c.names == ["jetson-orin-nano", "jetson-orin-nano#2", "phone"]
    bps, lat = c.link(0, 2)
    assert bps == pytest.approx(474e6 / 8) and lat == pytest.approx(0.00027 + 0.0005)


def test_devices_yaml_forms(tmp_path):
    f = tmp_path / "devices.yaml"
    f.write_text("- jetson-orin-nano\n- {preset: phone, memory_bytes: 3 GB}\n"
                 "- {name: box, relative_speed: 2, memory_bytes: 12GiB, link_mbps: 941, link_latency_s: 0.0003}\n")
    c = load_devices(f)
    assert c.names == ["jetson-orin-nano", "phone", "box"]
    assert c.devices[1].memory_bytes == 3e9 and c.devices[1].flops_per_s == PRESETS["phone"].flops_per_s
    assert "memory_bytes" not in c.devices[1].sources
    assert c.devices[2].flops_per_s == pytest.approx(2 * REFERENCE_FLOPS_PER_S) and c.devices[2].memory_bytes == 12 * 2**30
    f.write_text("devices: [phone, tablet]\nlinks: {mbps: [[0, 100], [50, 0]], latency_s: [[0, 0.01], [0.02, 0]]}\n")
    c = load_devices(f)
    assert c.link(1, 0) == (pytest.approx(50e6 / 8), 0.02)
    assert c.without(0).links is not None and c.without(0).link(0, 0)[1] == 0.0


@pytest.mark.parametrize(("text", "expected"), [
    ("- phone\n- {preset: phone, memory_bytes: -1}\n", r"devices.yaml: devices.1.memory_bytes: Input should be greater than or equal to 1000000"),
    ("- phone\n- phon\n", r"devices.yaml: devices.1: unknown device preset 'phon' \(did you mean 'phone'\?\)"),
    ("- {preset: tablett}\n", r"devices.yaml: devices.0.preset: unknown device preset 'tablett' \(did you mean 'tablet'\?\)"),
    ("- {flops_per_s: 1e12, memory_bytes: 1e9, link_mbps: 100}\n", r"devices.yaml: devices.0.name: Field required"),
    ("- {name: x, relative_speed: 1, flops_per_s: 1e12, memory_bytes: 1e9, link_mbps: 1}\n", r"devices.0: .*not both"),
    ("- {name: x, flops_per_s: 1e12, memory_bytes: lots, link_mbps: 1}\n", r"devices.0.memory_bytes: .*expected bytes"),
    ("devices: [phone, tablet]\nlinks: {mbps: [[0, 1]], latency_s: [[0]]}\n", r"devices.yaml: links: .*row 0 of 1 has 2 numbers"),
    ("devices: [phone, tablet]\nlinks: {mbps: [[0]], latency_s: [[0]]}\n", r"devices.yaml: .*a 1 x 1 matrix for 2 devices"),
    ("devices: [phone, tablet]\nlinks: {mbps: [[0, 1], [1, 0]], latency_s: [[0]]}\n", r"links: .*latency_s: expected a 2 x 2"),
    ("devices: [phone]\nlink: {}\n", r"devices.yaml: link: unknown key"),
    ("[]\n", r"devices.yaml: devices: expected a non-empty list"),
    ("- phone\n  - x: [\n", r"devices.yaml:\d+: invalid YAML"),
    ("- {preset: phone, colour: red}\n", r"devices.yaml: devices.0.colour: Extra inputs are not permitted"),
    ("- {preset: phone, name: a}\n- {preset: tablet, name: a}\n", r"devices.yaml: devices: .*device names must be unique, 'a' repeats"),
])
def test_devices_yaml_errors_are_one_line(tmp_path, text, expected):
    f = tmp_path / "devices.yaml"
    f.write_text(text)
    with pytest.raises(UserInputError, match=expected) as e:
        load_devices(f)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- CLI


def test_edge_plan_prints_both_plans_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["edge-plan", "--model-config", "qwen2-vl-2b", "--devices", "home-4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for part in ("planner: least slowest stage", "uniform split: equal numbers", "planner / uniform throughput:", "laptop-rtx4060",
                 "memory GB used/avail", "dropout of one device", "req/s"):
        assert part in text
    data = json.loads(out.read_text())
    ratio = data["planner"]["throughput_rps"] / data["uniform"]["throughput_rps"]
    assert data["throughput_ratio_planner_over_uniform"] == pytest.approx(ratio) and ratio >= 1.3
    assert f"{ratio:.2f}x" in text
    assert [s["device"] for s in data["planner"]["stages"]] == list(CLUSTERS["home-4"])
    assert sum(s["n_blocks"] for s in data["uniform"]["stages"]) == data["model"]["n_blocks"] == 62
    assert len(data["dropouts"]) == 4 and data["request"]["tokens"] == 391 + 64


def test_edge_plan_with_a_devices_file_and_options(tmp_path, capsys):
    f = tmp_path / "devices.yaml"
    f.write_text("- jetson-orin-nano\n- {preset: phone, memory_bytes: 2 GB}\n- laptop-rtx4060\n")
    assert main(["edge-plan", "--model-config", "llava-1.5-7b", "--devices", str(f), "--dtype", "int4", "--tokens", "600"]) == 0
    text = capsys.readouterr().out
    assert "int4 weights" in text and "600 LM tokens" in text
    assert main(["edge-plan", "--list-presets"]) == 0
    assert "cluster home-4" in capsys.readouterr().out


def test_edge_plan_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "plan.json"
    cases = [(["--model-config", "qwen2-vl-2b", "--devices", "home-4,phon"], "did you mean 'phone'"),
             (["--model-config", "llava-1.5-7b", "--devices", "phone,tablet,phone"], "no memory-feasible plan"),
             (["--model-config", "nope", "--devices", "home-4"], "no shipped config"),
             (["--devices", "home-4"], "required: --model-config")]
    for argv, expected in cases:
        assert main(["edge-plan", *argv, "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mllm-offload edge-plan: error:") and expected in err and err.count("\n") == 1, err
        assert not out.exists()


def test_absurd_configs_and_links_are_refused_in_one_line(tmp_path):
    cfg = {"model_type": "llava", "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
           "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 5000,
                           "num_attention_heads": 2, "vocab_size": 100}}
    f = tmp_path / "big.json"
    f.write_text(json.dumps(cfg))
    with pytest.raises(UserInputError, match=r"num_hidden_layers: expected an integer in \[1, 1024\], got 5000"):
        load_model_config(f)
    d = tmp_path / "devices.yaml"
    d.write_text("- {preset: phone, link_mbps: 1.0e-300}\n")
    with pytest.raises(UserInputError, match=r"link_mbps: Input should be greater than or equal to 0.001"):
        load_devices(d)
