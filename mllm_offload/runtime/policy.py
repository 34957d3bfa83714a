"""``OffloadPolicy``: load the policy a deployed router runs (an exported folder or a named rule).

>>> policy = OffloadPolicy.load("runs/ppo/policy")            # numpy backend (default)
>>> policy = OffloadPolicy.load("runs/ppo/policy", backend="onnx")   # onnxruntime
>>> policy = OffloadPolicy.heuristic("msao", slo_s=2.0)      # start with MSAO ...
>>> policy = OffloadPolicy.load("msao")                      # ... or by name, like a path
>>> th = policy.thresholds(obs)   # obs: float32 vector in OBSERVATION_SPEC order

What comes back is a :class:`~mllm_offload.policy.Policy` resolved through the one registry
(:func:`mllm_offload.policy.resolve`): an :class:`~mllm_offload.artifact.ArtifactPolicy` for a
folder, a rule of :mod:`mllm_offload.rules` for a name. Loading validates the artifact (format
version, feature names and order, the digest of ``policy.json`` and, with a policy key, its HMAC,
sha256 of each file, shapes) and fails with one clear line.
Both backends apply the same normalisation, clip actions to ``[0, 1]^3`` and map them with
:meth:`Thresholds.from_action`, exactly as in training. Only deployable names resolve here
(``tuned`` and ``oracle`` need the simulator).
"""

from __future__ import annotations

from pathlib import Path

from ..artifact import BACKENDS, ArtifactPolicy
from ..config import SystemConfig
from ..errors import UserInputError
from ..policy import Policy, PolicyContext, resolve
from ..rules import make_rule

__all__ = ["BACKENDS", "OffloadPolicy"]


class OffloadPolicy:
    """Loaders of deployable policies (each returns a :class:`~mllm_offload.policy.Policy`)."""

    @staticmethod
    def load(path: str | Path, backend: str = "numpy", threads: int = 1, slo_s: float | None = None,
             key: str | bytes | None = None) -> Policy:
        """An exported folder, or a deployable name (``msao`` with ``slo_s``, ``edge``, ``cloud``,
        ``static:LOW,HIGH,CONF``); ``slo_s`` defaults to :class:`~mllm_offload.config.SystemConfig`'s.
        ``backend``: ``numpy`` (default) or ``onnx`` (onnxruntime with ``threads`` intra-op
        threads); a rule ignores it. Names that need the simulator (``tuned``, ``oracle``) are refused.
        ``key``: the HMAC key an exported folder's ``policy.json`` must carry (default: the
        environment variable ``MLLM_OFFLOAD_POLICY_KEY``, when set); a rule ignores it."""
        if backend not in BACKENDS:
            raise UserInputError(f"policy backend: unknown {backend!r} (known: {', '.join(BACKENDS)})")
        if key is not None and (Path(path) / "policy.json").is_file():
            return ArtifactPolicy.load(path, backend=backend, threads=threads, key=key)
        ctx = PolicyContext(backend=backend, threads=threads) if slo_s is None else PolicyContext(slo_s=slo_s, backend=backend, threads=threads)
        return resolve(path, ctx, deployable=True)

    @staticmethod
    def heuristic(name: str = "msao", **params: float) -> Policy:
        """A rule of :mod:`mllm_offload.rules` with keyword parameters (``msao``: ``slo_s`` defaults to
        :class:`~mllm_offload.config.SystemConfig`'s, 2 s)."""
        if name == "msao":
            params.setdefault("slo_s", SystemConfig.model_fields["slo_s"].default)
        pol: Policy = make_rule(name, params)
        return pol
