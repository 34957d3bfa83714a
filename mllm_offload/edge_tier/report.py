"""Text and JSON of a :class:`~.planner.Comparison` (what ``mllm-offload edge-plan`` prints and writes).

Units in the text: stage, compute and transfer times in ms, memory in GB (1e9 bytes), FLOP/s in
TFLOP/s, throughput in requests/s. The JSON keeps SI units with the unit in each key
(``_s``, ``_bytes``, ``_rps``, ``flops_per_s``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .devices import EdgeCluster
from .model import BlockCosts, ModelSpec
from .planner import Comparison, Plan

__all__ = ["comparison_dict", "format_comparison", "format_plan"]


def _request_line(model: ModelSpec, costs: BlockCosts) -> str:
    img = ""
    if costs.images:
        px = f"{model.image_px[0]} x {model.image_px[1]} px: " if model.image_px else ""
        each = " each" if costs.images > 1 else ""
        img = f"{costs.images} image{'s' if costs.images > 1 else ''} ({px}{model.vision_tokens} patches, {model.image_tokens} tokens{each}) + "
    return f"request: {img}{costs.tokens} LM tokens in all (image tokens included), {costs.flops.sum() / 1e12:.2f} TFLOP per request"


def format_plan(plan: Plan, title: str) -> list[str]:
    """A plan as a table: blocks per device, stage times, memory used / available."""
    lines = [title, f"  {'device':<24}{'blocks':<28}{'n':>4}{'compute ms':>12}{'transfer ms':>13}{'stage ms':>10}  memory GB used/avail"]
    for s in plan.stages:
        over = "  OVER" if s.memory_bytes > s.memory_available_bytes * (1 + 1e-12) else ""
        blocks = s.first_block if s.n_blocks == 1 else f"{s.first_block} .. {s.last_block}"
        lines.append(f"  {s.device:<24}{blocks:<28}{s.n_blocks:>4}{s.compute_s * 1e3:>12.1f}{s.transfer_s * 1e3:>13.1f}"
                     f"{s.stage_s * 1e3:>10.1f}  {s.memory_bytes / 1e9:.2f} / {s.memory_available_bytes / 1e9:.2f}{over}")
    fits = "" if plan.fits_memory else "; EXCEEDS a device's memory (would not run as is)"
    lines.append(f"  throughput {plan.throughput_rps:.3f} req/s (slowest stage {plan.bottleneck_s * 1e3:.1f} ms), "
                 f"latency {plan.latency_s * 1e3:.1f} ms{fits}")
    return lines


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.1f}"


def _rps(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_comparison(model: ModelSpec, costs: BlockCosts, cluster: EdgeCluster, comp: Comparison, detect_s: float) -> str:
    """The whole report of ``edge-plan``."""
    lines = [f"model {model.name} ({model.family}, {model.weight_dtype} weights): {len(model.blocks)} blocks, "
             f"{model.n_params / 1e9:.3f} B parameters, {model.weight_bytes / 1e9:.2f} GB",
             _request_line(model, costs), *(f"note: {n}" for n in model.notes), "devices (pipeline order):"]
    for d in cluster.devices:
        lines.append(f"  {d.name:<24}{d.flops_per_s / 1e12:>7.2f} TFLOP/s {d.memory_bytes / 1e9:>7.2f} GB {d.link_mbps:>7.0f} Mbps "
                     f"{d.link_latency_s * 1e3:>5.2f} ms  {d.description}")
    lines += ["", *format_plan(comp.planner, "planner: least slowest stage subject to memory (dynamic programming, exact)"), ""]
    lines += [*format_plan(comp.uniform, "uniform split: equal numbers of blocks per device (baseline)"), ""]
    p = comp.proportional
    lines.append(f"speed-proportional split (blocks in proportion to FLOP/s): {p.throughput_rps:.3f} req/s"
                 f"{'' if p.fits_memory else ', exceeds memory'}")
    lines.append(f"planner / uniform throughput: {comp.ratio:.2f}x (planner / proportional: "
                 f"{comp.planner.throughput_rps / p.throughput_rps:.2f}x)")
    lines += ["", f"dropout of one device (planner's plan; detection {detect_s * 1e3:.0f} ms assumed):",
              f"  {'device lost':<24}{'backup on':<24}{'switch ms':>10}{'req/s after':>12}{'redeploy ms':>13}{'req/s after':>12}"]
    for x in comp.dropouts:
        lines.append(f"  {x.device:<24}{x.backup_device or '(no spare memory)':<24}{_ms(x.switch_s):>10}"
                     f"{_rps(x.throughput_with_backup_rps):>12}{_ms(x.redeploy_s):>13}{_rps(x.throughput_after_redeploy_rps):>12}")
    return "\n".join(lines)


def comparison_dict(model: ModelSpec, costs: BlockCosts, cluster: EdgeCluster, comp: Comparison, detect_s: float) -> dict[str, Any]:
    """The report as JSON-ready data (SI units, unit in each key)."""
    return {
        "model": {"name": model.name, "family": model.family, "source": model.source, "weight_dtype": model.weight_dtype,
                  "activation_dtype": model.act_dtype, "n_blocks": len(model.blocks), "n_params": model.n_params,
                  "weight_bytes": model.weight_bytes, "vision_tokens_per_image": model.vision_tokens,
                  "image_tokens_per_image": model.image_tokens, "image_px": model.image_px, "notes": list(model.notes)},
        "request": {"tokens": costs.tokens, "images": costs.images, "flops": float(costs.flops.sum())},
        "blocks": [{"name": n, "flops": float(f), "param_bytes": float(p), "state_bytes": float(s), "out_bytes": float(o)}
                   for n, f, p, s, o in zip(costs.names, costs.flops, costs.param_bytes, costs.state_bytes, costs.out_bytes)],
        "devices": [d.model_dump() for d in cluster.devices],
        "planner": comp.planner.to_dict(),
        "uniform": comp.uniform.to_dict(),
        "proportional": comp.proportional.to_dict(),
        "throughput_ratio_planner_over_uniform": comp.ratio,
        "throughput_ratio_planner_over_proportional": comp.planner.throughput_rps / comp.proportional.throughput_rps,
        "detect_s": detect_s,
        "backups": [asdict(b) for b in comp.backups],
        "dropouts": [asdict(d) for d in comp.dropouts],
    }
