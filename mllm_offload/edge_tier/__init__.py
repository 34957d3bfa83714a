"""The edge as several heterogeneous devices running one model together (AdaptLink-style).

Pure numpy, pydantic and PyYAML: no torch, no transformers.

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``devices``         :class:`DeviceSpec` (FLOP/s, memory bytes, link Mbps and latency s),
                    :class:`EdgeCluster` (ordered devices, optional link matrix), sourced
                    presets (:data:`PRESETS`, :data:`CLUSTERS`), the ``devices.yaml`` reader
``model``           :class:`ModelSpec` from a Hugging Face ``config.json`` (LLaVA-class,
                    Qwen2-VL, Qwen2.5-VL): per block FLOPs, weight bytes, KV bytes and the
                    activation bytes passed on (:class:`BlockCosts`)
``planner``         the exact memory-feasible partition minimising the slowest stage, the
                    uniform and speed-proportional baselines, backup placement, dropout costs
``tier``            :class:`EdgeTier`: the plan's modes as devices drop out and come back
                    (takeover by backups, re-planning, down), the schedule of those modes over
                    an episode, and the devices' up/down process (:func:`draw_outages`); the
                    simulator's edge when ``SystemConfig.edge_tier`` is set
``report``          the text and JSON of ``mllm-offload edge-plan``
==================  ===========================================================================

Typical use::

    from mllm_offload.edge_tier import compare_plans, load_model_config, resolve_devices

    model = load_model_config("qwen2-vl-2b")            # a folder, a config.json or a shipped name
    cluster = resolve_devices("home-4")                 # devices.yaml, a cluster or device presets
    comp = compare_plans(model.costs(), cluster)
    print(comp.planner.throughput_rps, comp.uniform.throughput_rps, comp.ratio)
"""

from .devices import CLUSTERS, PRESETS, REFERENCE_FLOPS_PER_S, DeviceSpec, EdgeCluster, Links, load_devices, resolve_devices
from .model import DTYPE_BYTES, Block, BlockCosts, ModelSpec, load_model_config, model_from_config, shipped_configs
from .planner import (
    DETECT_S,
    Backup,
    Comparison,
    Dropout,
    InfeasiblePlanError,
    Plan,
    Stage,
    compare_plans,
    dropout_costs,
    evaluate_plan,
    pipeline_completions,
    place_backups,
    plan_partition,
    proportional_partition,
    uniform_partition,
)
from .report import comparison_dict, format_comparison, format_plan
from .tier import SPLITS, EdgeTier, Segment, TierMode, draw_outages

__all__ = [
    "CLUSTERS",
    "DETECT_S",
    "DTYPE_BYTES",
    "PRESETS",
    "REFERENCE_FLOPS_PER_S",
    "SPLITS",
    "Backup",
    "Block",
    "BlockCosts",
    "Comparison",
    "DeviceSpec",
    "Dropout",
    "EdgeCluster",
    "EdgeTier",
    "InfeasiblePlanError",
    "Links",
    "ModelSpec",
    "Plan",
    "Segment",
    "Stage",
    "TierMode",
    "compare_plans",
    "comparison_dict",
    "draw_outages",
    "dropout_costs",
    "evaluate_plan",
    "format_comparison",
    "format_plan",
    "load_devices",
    "load_model_config",
    "model_from_config",
    "pipeline_completions",
    "place_backups",
    "plan_partition",
    "proportional_partition",
    "resolve_devices",
    "shipped_configs",
    "uniform_partition",
]
