"""Export a trained SB3 PPO policy as a deployable artifact (:mod:`mllm_offload.artifact`).

Only the actor is exported (the value network is not needed to act): its weights go to
``policy.npz``, the normalisation statistics of ``VecNormalize`` to ``policy.json``, and an ONNX
graph with normalisation and action clipping folded in to ``policy.onnx`` (TorchScript-based
``torch.onnx.export``; the dynamo exporter fails on SB3's full policy and needs onnxscript).

Before anything is written, a parity check compares SB3's deterministic ``predict`` (on
normalised observations, clipped like :class:`~mllm_offload.agents.ppo.policy.SB3Policy`), the numpy
actor and onnxruntime on the same observations; the largest absolute action difference is
recorded in ``policy.json`` (``training.parity_max_abs_diff``) and export fails above
``tolerance`` (1e-3 by default, far below any threshold that matters, since actions are
thresholds in [0, 1]). The deployed actor normalises in float32, SB3 in float64; a feature that
was constant in training (the cost price, the edge capacity of a one-device edge) keeps a
variance near 1e-8, so float32 rounding of an observation near its mean moves its normalised
value by up to about 1e-3, and a network with larger weights (a warm-started actor,
:mod:`.ppo.warm_start`) turns that into action differences of a few 1e-4.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .._io import read_json_object
from ..artifact import MLPActor, Network, Normalization, write_artifact
from ..config import format_validation_error
from ..errors import UserInputError
from ..observation import OBSERVATION_SPEC
from ..tradeoff import TradeOffRange

__all__ = ["actor_layers", "check_observations", "export_model", "export_run", "onnx_bytes", "parity"]


def actor_layers(model: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """The actor's ``(w, b)`` pairs (``w`` shaped ``(out, in)``) and its activation name.

    Supports SB3 ``MlpPolicy`` with a Box action (diagonal Gaussian; the deterministic action is
    the mean) and Tanh or ReLU activations.
    """
    import torch.nn as nn
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.torch_layers import FlattenExtractor

    pol = model.policy
    if not isinstance(pol.action_dist, DiagGaussianDistribution):
        raise UserInputError(f"export: only Box actions (diagonal Gaussian) are supported, got {type(pol.action_dist).__name__}")
    if not isinstance(pol.pi_features_extractor, FlattenExtractor):
        raise UserInputError(f"export: only the flatten feature extractor is supported, got {type(pol.pi_features_extractor).__name__}")
    weights: list[tuple[np.ndarray, np.ndarray]] = []
    acts = set()
    for mod in [*pol.mlp_extractor.policy_net, pol.action_net]:
        if isinstance(mod, nn.Linear):
            weights.append((mod.weight.detach().cpu().numpy().copy(), mod.bias.detach().cpu().numpy().copy()))
        elif isinstance(mod, nn.Tanh):
            acts.add("tanh")
        elif isinstance(mod, nn.ReLU):
            acts.add("relu")
        else:
            raise UserInputError(f"export: unsupported layer {type(mod).__name__} in the actor")
    if len(acts) > 1:
        raise UserInputError(f"export: mixed activations {sorted(acts)} are not supported")
    return weights, (acts.pop() if acts else "tanh")


def onnx_bytes(model: Any, norm: Normalization | None, opset: int = 17) -> bytes:
    """ONNX graph of the actor: raw observation -> normalise -> MLP -> clip to [0, 1]."""
    import torch
    import torch.nn as nn

    pol = model.policy
    n = len(OBSERVATION_SPEC)
    mean = torch.tensor(norm.mean if norm else np.zeros(n), dtype=torch.float32)
    inv_std = torch.tensor(1.0 / np.sqrt(np.asarray(norm.var, np.float64) + norm.epsilon) if norm else np.ones(n), dtype=torch.float32)
    clip_obs = float(norm.clip_obs) if norm else 1e30

    class Actor(nn.Module):
        mean: torch.Tensor
        inv_std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.policy_net = pol.mlp_extractor.policy_net
            self.action_net = pol.action_net
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", inv_std)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            x = torch.clamp((obs - self.mean) * self.inv_std, -clip_obs, clip_obs)
            return torch.clamp(self.action_net(self.policy_net(x)), 0.0, 1.0)

    actor = Actor().cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            actor, (torch.zeros(1, n),), buf,  # type: ignore[arg-type]  # the TorchScript exporter takes a file-like object
            input_names=["obs"], output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, opset_version=opset, dynamo=False,
        )
    return buf.getvalue()


def check_observations(norm: Normalization | None, n: int = 512, seed: int = 0) -> np.ndarray:
    """Observations for the parity check: half uniform in the spec's bounds, half near the
    training distribution (normal with the recorded mean and variance), clipped to the bounds."""
    rng = np.random.default_rng(seed)
    lo, hi = OBSERVATION_SPEC.low.astype(np.float64), OBSERVATION_SPEC.high.astype(np.float64)
    span_hi = np.where(np.isfinite(hi), hi, lo + 100.0)
    uni = rng.uniform(lo, span_hi, size=(n // 2, len(lo)))
    if norm is not None:
        near = rng.normal(norm.mean, np.sqrt(norm.var), size=(n - n // 2, len(lo)))
    else:
        near = rng.uniform(lo, span_hi, size=(n - n // 2, len(lo)))
    return np.clip(np.vstack([uni, near]), lo, span_hi).astype(np.float32)


def parity(model: Any, norm: Normalization | None, actor: MLPActor, onnx: bytes | None, obs: np.ndarray) -> dict[str, float]:
    """Largest absolute action differences: SB3 ``predict`` vs numpy vs onnxruntime."""
    x = obs.astype(np.float32)
    xn = norm.apply(x) if norm is not None else x
    sb3, _ = model.predict(xn, deterministic=True)
    sb3 = np.clip(sb3, 0.0, 1.0)
    npy = actor.actions(x)
    out = {"sb3_vs_numpy": float(np.max(np.abs(sb3 - npy)))}
    if onnx is not None:
        import onnxruntime as ort

        sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        ox = sess.run(None, {"obs": x})[0]
        out["sb3_vs_onnx"] = float(np.max(np.abs(sb3 - ox)))
        out["numpy_vs_onnx"] = float(np.max(np.abs(npy - ox)))
    out["max"] = max(out.values())
    return out


def export_model(
    model: Any,
    out_dir: str | Path,
    obs_mean: np.ndarray | None = None,
    obs_var: np.ndarray | None = None,
    clip_obs: float = 10.0,
    epsilon: float = 1e-8,
    training: Mapping[str, Any] | None = None,
    name: str = "ppo",
    with_onnx: bool = True,
    tolerance: float = 1e-3,
    key: str | bytes | None = None,
    tradeoff_range: TradeOffRange | None = None,
) -> Path:
    """Export an SB3 PPO model (and its ``VecNormalize`` statistics) to an artifact directory
    (``key``: an HMAC key for ``policy.json``, see :func:`~mllm_offload.artifact.write_artifact`;
    ``tradeoff_range``: the trade-offs the policy was trained over, which it serves)."""
    norm = None
    if obs_mean is not None and obs_var is not None:
        n = len(OBSERVATION_SPEC)
        if np.shape(obs_mean) != (n,) or np.shape(obs_var) != (n,):
            raise UserInputError(f"export: normalisation statistics of shapes {np.shape(obs_mean)}/{np.shape(obs_var)}; this build needs {n} values each")
        try:
            norm = Normalization(mean=[float(v) for v in obs_mean], var=[float(v) for v in obs_var], epsilon=float(epsilon), clip_obs=float(clip_obs))
        except ValidationError as e:
            raise UserInputError(format_validation_error("export: normalisation statistics", e)) from None
    weights, act = actor_layers(model)
    layers = [weights[0][0].shape[1]] + [w.shape[0] for w, _ in weights]
    if layers[0] != len(OBSERVATION_SPEC) or layers[-1] not in (3, 6):
        raise UserInputError(f"export: the model maps {layers[0]} features to {layers[-1]} actions; this build needs {len(OBSERVATION_SPEC)} "
                             "-> 3 (thresholds) or 6 (thresholds and upload plan)")
    actor = MLPActor(weights, act, norm)
    onnx = onnx_bytes(model, norm) if with_onnx else None
    diffs = parity(model, norm, actor, onnx, check_observations(norm))
    if diffs["max"] > tolerance:
        raise RuntimeError(f"export: parity check failed: {diffs} (tolerance {tolerance})")
    arrays: dict[str, np.ndarray] = {}
    for i, (w, b) in enumerate(weights):
        arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
    meta = dict(training or {})
    meta["parity_max_abs_diff"] = diffs
    return write_artifact(
        out_dir, kind="mlp", name=name, arrays=arrays, onnx_bytes=onnx, normalization=norm,
        network=Network(layers=layers, activation=act), training=meta, key=key, tradeoff_range=tradeoff_range,
    )


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, which: str = "best", with_onnx: bool = True,
               key: str | bytes | None = None, step: int | None = None) -> Path:
    """Export a training run folder (``best/`` or ``final/`` model + ``VecNormalize`` statistics).

    ``which``: ``best`` (highest validation reward, the default; falls back to ``final`` when the
    run has no evaluation) or ``final``. ``step``: instead, the model validated at that step, kept
    in ``evals/STEP/`` by ``train --keep-evaluations`` (``which`` is then not used). ``out_dir``
    defaults to ``RUN_DIR/policy`` (with ``step``: ``RUN_DIR/evals/STEP/policy``). ``key``: sign
    ``policy.json`` with an HMAC (:func:`~mllm_offload.artifact.write_artifact`).

    This unpickles SB3's ``model.zip`` of the run folder: export only run folders you trust (the
    artifact written is pickle-free; the normalisation statistics come from ``vecnormalize.json``).
    """
    from stable_baselines3 import PPO

    from .ppo.policy import load_vecnormalize_stats

    run = Path(run_dir)
    if not run.is_dir():
        raise UserInputError(f"{run}: not a run directory")
    sub = run / which
    if step is not None:
        sub = run / "evals" / str(step)
        if not (sub / "model.zip").exists():
            kept = sorted(int(d.name) for d in (run / "evals").iterdir() if d.name.isdigit()) if (run / "evals").is_dir() else []
            listed = ", ".join(map(str, kept)) if len(kept) <= 12 else f"{len(kept)} models from {kept[0]} to {kept[-1]}"
            raise UserInputError(f"{run}: no model kept at step {step} "
                                 + (f"(kept: {listed})" if kept else "(the run was not trained with --keep-evaluations)"))
        which = f"evals/{step}"
    elif which == "best" and not (sub / "model.zip").exists():
        sub = run / "final"
    if not (sub / "model.zip").exists():
        raise UserInputError(f"{run}: no {which}/model.zip (did training finish? try --resume)")
    try:
        model = PPO.load(sub / "model.zip", device="cpu")
    except Exception as e:  # SB3 raises many types on corrupt zips
        text = str(e).strip()
        raise UserInputError(f"{sub / 'model.zip'}: cannot load: {text.splitlines()[0][:300] if text else type(e).__name__}") from None
    try:
        mean, var, clip_obs, eps = load_vecnormalize_stats(sub / "vecnormalize.json")
    except (AttributeError, RecursionError) as e:  # valid JSON, but not an object
        raise UserInputError(f"{sub / 'vecnormalize.json'}: bad normalisation statistics: {e}") from None
    meta: dict[str, Any] = {"run_dir": str(run.resolve()), "checkpoint": which if sub.name == which or step is not None else sub.name}
    run_json = run / "run.json"
    if run_json.exists():
        export_meta = read_json_object(run_json).get("export_meta", {})
        if not isinstance(export_meta, dict):
            raise UserInputError(f"{run_json}: export_meta: expected an object")
        meta.update(export_meta)
    info = sub / "info.json"
    if info.exists():
        meta["checkpoint_info"] = read_json_object(info)
    # what the policy serves: run.json's record, else what training stamped on the model folder
    raw_range = meta.pop("tradeoff_range", None) or meta.get("checkpoint_info", {}).get("tradeoff_range")
    if raw_range is None:
        raise UserInputError(f"{sub}: no trade-off range recorded (neither run.json nor {sub.name}/info.json): "
                             "a run of an older build; train it again")
    try:
        trange = TradeOffRange.model_validate(raw_range)
    except ValidationError as e:
        raise UserInputError(format_validation_error(f"{run}: tradeoff_range", e)) from None
    return export_model(model, out_dir or (sub / "policy" if step is not None else run / "policy"), mean, var, clip_obs, eps, training=meta, with_onnx=with_onnx, key=key,
                        tradeoff_range=trange)
