"""``OffloadPolicy``: the deployable policy (an exported artifact or a named heuristic rule).

>>> policy = OffloadPolicy.load("runs/ppo/policy")            # numpy backend (default)
>>> policy = OffloadPolicy.load("runs/ppo/policy", backend="onnx")   # onnxruntime
>>> policy = OffloadPolicy.heuristic("msao", slo_s=2.0)      # start with MSAO ...
>>> policy = OffloadPolicy.load("msao")                      # ... or by name, like a path
>>> th = policy.thresholds(obs)   # obs: float32 vector in OBSERVATION_SPEC order

Loading validates the artifact (:func:`mllm_offload.artifact.read_artifact`: format version,
feature names and order, sha256 of each file, shapes) and fails with one clear line. Both
backends apply the same normalisation, clip actions to ``[0, 1]^3`` and map them with
:meth:`Thresholds.from_action`, exactly as in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import MANIFEST, ONNX, Artifact, read_artifact
from ..decision import Thresholds
from ..errors import UserInputError
from ..observation import OBSERVATION_SPEC
from ..rules import RULES, make_rule

__all__ = ["BACKENDS", "OffloadPolicy"]

#: Inference backends of :meth:`OffloadPolicy.load`.
BACKENDS = ("numpy", "onnx")


class _OnnxActor:
    """onnxruntime session of ``policy.onnx`` (normalisation and clipping are in the graph)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserInputError("policy backend onnx: needs onnxruntime (pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise UserInputError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].shape[-1] != len(OBSERVATION_SPEC):
            raise UserInputError(f"{path}: expected one input of {len(OBSERVATION_SPEC)} features")
        self._input = inputs[0].name

    def actions(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, np.float32)
        single = x.ndim == 1
        out = self.session.run(None, {self._input: x[None, :] if single else x})[0]
        return out[0] if single else out


class OffloadPolicy:
    """Maps observations (:data:`~mllm_offload.observation.OBSERVATION_SPEC` order) to thresholds.

    Build it with :meth:`load` (an artifact directory, or a heuristic name) or :meth:`heuristic`.
    Attributes: ``name`` (``ppo``, ``msao`` ...), ``kind`` (``mlp`` or ``heuristic``),
    ``backend`` (``numpy``, ``onnx`` or ``rule``), ``manifest`` (the parsed ``policy.json`` or None).
    """

    def __init__(self, name: str, kind: str, backend: str, actor: Any = None, rule: Any = None, manifest: Any = None, path: Path | None = None) -> None:
        self.name, self.kind, self.backend = name, kind, backend
        self._actor, self._rule = actor, rule
        self.manifest, self.path = manifest, path

    @classmethod
    def load(cls, path: str | Path, backend: str = "numpy", threads: int = 1) -> OffloadPolicy:
        """Load an exported artifact directory, or a heuristic by name (``msao``, ``edge``, ``cloud``).

        ``backend``: ``numpy`` (default) or ``onnx`` (onnxruntime with ``threads`` intra-op
        threads). A heuristic artifact (kind ``heuristic``) ignores the backend.
        A bare heuristic name uses the rule's defaults (MSAO with a 2 s SLO); use
        :meth:`heuristic` to set parameters.
        """
        if backend not in BACKENDS:
            raise UserInputError(f"policy backend: unknown {backend!r} (known: {', '.join(BACKENDS)})")
        p = Path(path)
        if str(path) in RULES and not (p / MANIFEST).exists():
            return cls.heuristic(str(path))
        art: Artifact = read_artifact(p, require=(ONNX,) if backend == "onnx" else ())
        m = art.manifest
        if m.kind == "heuristic":
            assert m.heuristic is not None
            rule = make_rule(m.heuristic.rule, m.heuristic.params)
            return cls(m.name, "heuristic", "rule", rule=rule, manifest=m, path=p)
        actor = _OnnxActor(p / ONNX, threads) if backend == "onnx" else art.actor
        return cls(m.name, m.kind, backend, actor=actor, manifest=m, path=p)

    @classmethod
    def heuristic(cls, name: str = "msao", **params: float) -> OffloadPolicy:
        """A rule of :mod:`mllm_offload.rules` (``msao`` defaults to ``slo_s=2.0`` seconds)."""
        if name == "msao":
            params.setdefault("slo_s", 2.0)
        return cls(name, "heuristic", "rule", rule=make_rule(name, params))

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Raw actions in ``[0,1]^3`` (``(3,)`` or ``(batch, 3)``); learned policies only."""
        if self._actor is None:
            raise TypeError(f"policy {self.name!r} is a rule; use thresholds()")
        return self._actor.actions(obs)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        """Thresholds for one observation vector."""
        if self._rule is not None:
            return self._rule.thresholds(obs)
        return Thresholds.from_action(self._actor.actions(obs))

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"OffloadPolicy(name={self.name!r}, kind={self.kind!r}, backend={self.backend!r}{where})"
