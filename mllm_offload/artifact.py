"""The exported policy on disk (a contract, imports nothing below; needs only numpy + pydantic).

An artifact is a directory:

================  =================================================================================
file              content
================  =================================================================================
``policy.json``   manifest: format name and version, observation feature names in order,
                  normalisation statistics, network layout, action mapping, training metadata,
                  sha256 and size of every other file, the digest of its own content and
                  optionally an HMAC
``policy.npz``    actor weights ``w0, b0, w1, b1, ...`` (``w`` shaped ``(out, in)``), read with
                  ``allow_pickle=False``
``policy.onnx``   the same actor with normalisation folded in: input ``obs`` float32
                  ``(batch, n_features)`` (raw observation), output ``action`` float32
                  ``(batch, 3)`` (or ``(batch, 6)``, see below) already clipped to ``[0, 1]``
================  =================================================================================

A policy's forward pass is: ``x = clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``
(SB3's ``VecNormalize``), the MLP, clip the output to ``[0, 1]^3`` (what SB3's ``predict`` does
with a Box action), then :meth:`~mllm_offload.decision.Thresholds.from_action` (action mapping
``thresholds-v1``: ``tau_high = a1``, ``tau_low = a0 * a1``, ``tau_conf = a2``), exactly as in
training. A policy that also chooses the upload plan has six outputs (action mapping
``thresholds-plan-v1``): the last three go through
:meth:`~mllm_offload.decision.UploadPlan.from_action`. An artifact of kind ``heuristic`` holds only ``policy.json`` naming a rule of
:mod:`mllm_offload.rules` and its parameters.

**Integrity.** ``policy.json`` holds ``digest``: ``sha256:`` and the sha256 of its canonical
content (:func:`canonical_manifest`: the manifest without ``digest`` and ``hmac``, as JSON with
sorted keys, no spaces, ASCII only), and through the sha256 of every other file it lists, the
whole artifact. An edit, even one digit of ``normalization.mean``, fails at load with one line.
The digest catches accidents, not attackers (anyone can recompute it); against those, an
**HMAC** with a secret key: ``hmac`` is ``hmac-sha256:`` and the HMAC-SHA256 of the same
canonical content. It is written when a key is given (``key=``, or the environment variable
:data:`KEY_ENV`, ``MLLM_OFFLOAD_POLICY_KEY``) and verified at load whenever a key is configured
the same way; with a key configured, an artifact without an HMAC is refused. Artifacts written
before the digest existed (no ``digest`` field) still load as before, unless a key is
configured; exporting again adds the digest. Nothing in an artifact is a pickle.

:func:`read_artifact` validates everything and raises
:class:`~mllm_offload.errors.UserInputError` with one line naming the file and the problem.
:func:`write_artifact` writes into a temporary sibling directory and renames it into place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac as _hmac
import json
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from ._io import atomic_dir, json_safe
from .config import StrictModel, format_validation_error
from .decision import Thresholds, UploadPlan
from .errors import UserInputError
from .observation import N_FEATURES_V1, N_FEATURES_V2, OBSERVATION_SPEC
from .tradeoff import TradeOff, TradeOffRange

__all__ = [
    "ACTION_MAPPING",
    "BACKENDS",
    "FORMAT",
    "FORMAT_VERSION",
    "KEY_ENV",
    "Artifact",
    "ArtifactPolicy",
    "MLPActor",
    "Manifest",
    "Normalization",
    "canonical_manifest",
    "manifest_digest",
    "manifest_hmac",
    "read_artifact",
    "sha256_file",
    "write_artifact",
]

FORMAT = "mllm-offload-policy"
FORMAT_VERSION = 1
ACTION_MAPPING: Literal["thresholds-v1"] = "thresholds-v1"
#: outputs of the network per action mapping
ACTION_OUTPUTS: dict[str, int] = {"thresholds-v1": 3, "thresholds-plan-v1": 6}
MANIFEST = "policy.json"
NPZ = "policy.npz"
ONNX = "policy.onnx"
#: environment variable holding the HMAC key of ``policy.json`` (written at export, verified at load)
KEY_ENV = "MLLM_OFFLOAD_POLICY_KEY"
_SEAL_FIELDS = ("digest", "hmac")


class FileEntry(StrictModel):
    """Integrity record of one file of the artifact."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Normalization(StrictModel):
    """Observation normalisation (SB3 ``VecNormalize``): ``clip((x - mean)/sqrt(var + eps))``."""

    mean: list[float]
    var: list[float]
    epsilon: float = Field(1e-8, ge=0.0)
    clip_obs: float = Field(10.0, gt=0.0)

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` in float64, as float32:
        exactly what SB3's ``VecNormalize.normalize_obs`` feeds the network in training.
        (:class:`MLPActor` folds the same formula into float32 for speed; the ONNX graph too.)"""
        x = np.asarray(obs, np.float64)
        z = (x - np.asarray(self.mean, np.float64)) / np.sqrt(np.asarray(self.var, np.float64) + self.epsilon)
        return np.clip(z, -self.clip_obs, self.clip_obs).astype(np.float32)


class Network(StrictModel):
    """MLP layout: ``layers`` = feature sizes from input to output (e.g. ``[17, 64, 64, 3]``)."""

    layers: list[int] = Field(min_length=2)
    activation: Literal["tanh", "relu"] = "tanh"


class ActionSpec(StrictModel):
    """How the network output becomes thresholds."""

    mapping: Literal["thresholds-v1", "thresholds-plan-v1"] = ACTION_MAPPING
    low: float = 0.0
    high: float = 1.0


class HeuristicSpec(StrictModel):
    """A rule of :mod:`mllm_offload.rules` and its keyword parameters."""

    rule: str
    params: dict[str, float] = Field(default_factory=dict)


class Manifest(StrictModel):
    """``policy.json``."""

    format: Literal["mllm-offload-policy"]
    format_version: int
    kind: Literal["mlp", "heuristic"]
    name: str = "ppo"
    created: str = ""
    observation: list[str]
    action: ActionSpec = ActionSpec()
    normalization: Normalization | None = None
    network: Network | None = None
    heuristic: HeuristicSpec | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    tradeoff_range: TradeOffRange | None = Field(None, description="trade-offs the policy was trained over (None: it ignores them)")
    files: dict[str, FileEntry] = Field(default_factory=dict)
    digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of the canonical content")
    hmac: str | None = Field(None, pattern=r"^hmac-sha256:[0-9a-f]{64}$", description="HMAC-SHA256 of the canonical content")


def canonical_manifest(doc: Mapping[str, Any]) -> bytes:
    """What the digest and the HMAC cover: ``doc`` (a parsed ``policy.json``) without ``digest``
    and ``hmac``, as JSON with sorted keys, no whitespace, ASCII only (raises ``ValueError`` on a
    non-finite number)."""
    body = {k: v for k, v in doc.items() if k not in _SEAL_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def manifest_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:`` and the hex sha256 of :func:`canonical_manifest`."""
    return "sha256:" + hashlib.sha256(canonical_manifest(doc)).hexdigest()


def manifest_hmac(doc: Mapping[str, Any], key: bytes) -> str:
    """``hmac-sha256:`` and the hex HMAC-SHA256 of :func:`canonical_manifest` under ``key``."""
    return "hmac-sha256:" + _hmac.new(key, canonical_manifest(doc), hashlib.sha256).hexdigest()


def _policy_key(key: str | bytes | None) -> bytes | None:
    """``key``, else the value of :data:`KEY_ENV` (unset or empty: no key), as bytes."""
    if key is None:
        key = os.environ.get(KEY_ENV) or None
        if key is None:
            return None
    out = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not out:
        raise UserInputError("policy key: empty (give a non-empty key, or none)")
    return out


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class MLPActor:
    """The numpy forward pass of an exported actor: raw observations -> clipped actions.

    ``weights`` is a list of ``(w, b)`` with ``w`` shaped ``(out, in)``; the activation follows
    every layer but the last.
    """

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], activation: str, norm: Normalization | None) -> None:
        self._wt = [np.ascontiguousarray(np.asarray(w, np.float32).T) for w, _ in weights]
        self._b = [np.asarray(b, np.float32) for _, b in weights]
        self._relu = activation == "relu"
        n_in = self._wt[0].shape[0]
        if norm is None:
            self._mean = np.zeros(n_in, np.float32)
            self._inv_std = np.ones(n_in, np.float32)
            self._clip = np.float32(np.inf)
        else:
            self._mean = np.asarray(norm.mean, np.float32)
            self._inv_std = (1.0 / np.sqrt(np.asarray(norm.var, np.float64) + norm.epsilon)).astype(np.float32)
            self._clip = np.float32(norm.clip_obs)
        self.n_inputs = n_in

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Actions in ``[0,1]^3`` for ``obs`` shaped ``(n_features,)`` or ``(batch, n_features)``
        (features beyond the network's inputs, such as the trade-off for a version-1 policy, are
        not read)."""
        # np.maximum/np.minimum with out= instead of np.clip: several times faster at batch 1
        x = (np.asarray(obs, np.float32)[..., :self.n_inputs] - self._mean) * self._inv_std
        np.maximum(x, -self._clip, out=x)
        np.minimum(x, self._clip, out=x)
        last = len(self._wt) - 1
        for i in range(last):
            x = x @ self._wt[i]
            x += self._b[i]
            if self._relu:
                np.maximum(x, 0.0, out=x)
            else:
                np.tanh(x, out=x)
        x = x @ self._wt[last]
        x += self._b[last]
        np.maximum(x, 0.0, out=x)
        np.minimum(x, 1.0, out=x)
        return x


@dataclass
class Artifact:
    """A validated artifact: its manifest, and for kind ``mlp`` the numpy actor."""

    path: Path
    manifest: Manifest
    actor: MLPActor | None

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        """Thresholds for one observation (kind ``mlp``)."""
        if self.actor is None:
            raise TypeError(f"{self.path}: a {self.manifest.kind} artifact has no network")
        return Thresholds.from_action(self.actor.actions(obs)[:3])


# -- writing ---------------------------------------------------------------------------------------


def write_artifact(
    out_dir: str | Path,
    *,
    kind: Literal["mlp", "heuristic"],
    name: str,
    arrays: Mapping[str, np.ndarray] | None = None,
    onnx_bytes: bytes | None = None,
    normalization: Normalization | None = None,
    network: Network | None = None,
    heuristic: HeuristicSpec | None = None,
    training: Mapping[str, Any] | None = None,
    tradeoff_range: TradeOffRange | None = None,
    key: str | bytes | None = None,
) -> Path:
    """Write an artifact directory atomically (temporary sibling, then rename) and return it.

    ``policy.json`` gets its ``digest``, and an ``hmac`` when a key is given (``key``, else the
    environment variable :data:`KEY_ENV`). The result is read back with :func:`read_artifact`
    (with the same key) before it replaces ``out_dir``, so a written artifact is always a
    loadable one.
    """
    k = _policy_key(key)
    if kind == "mlp" and tradeoff_range is None:
        raise ValueError("write_artifact: an mlp artifact reads the trade-off features: give tradeoff_range "
                         "(TradeOffRange.single(t) for a policy trained at one trade-off t)")
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        files: dict[str, FileEntry] = {}
        if arrays is not None:
            with open(tmp / NPZ, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # numpy's stub types **kwds as its bool flag
        if onnx_bytes is not None:
            (tmp / ONNX).write_bytes(onnx_bytes)
        for fname in (NPZ, ONNX):
            if (tmp / fname).exists():
                files[fname] = FileEntry(sha256=sha256_file(tmp / fname), bytes=(tmp / fname).stat().st_size)
        manifest = Manifest(
            format=FORMAT, format_version=FORMAT_VERSION, kind=kind, name=name,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            observation=list(OBSERVATION_SPEC.names), normalization=normalization, network=network,
            heuristic=heuristic, training=dict(training or {}), tradeoff_range=tradeoff_range, files=files,
            action=ActionSpec(mapping="thresholds-plan-v1" if network is not None and network.layers[-1] == 6 else ACTION_MAPPING),
        )
        doc = json_safe(manifest.model_dump(mode="json"))  # never NaN or Infinity (not JSON)
        for f in _SEAL_FIELDS:
            doc.pop(f, None)
        doc["digest"] = manifest_digest(doc)
        if k is not None:
            doc["hmac"] = manifest_hmac(doc, k)
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        read_artifact(tmp, key=k)  # never publish something the reader rejects
    return out


# -- reading ---------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"{text[:40]} is out of range for a float")
    return v


def _load_manifest(d: Path) -> tuple[dict[str, Any], Manifest]:
    mpath = d / MANIFEST
    if not d.is_dir():
        raise UserInputError(f"{d}: not a policy directory (expected {MANIFEST}, {NPZ}, {ONNX})")
    if not mpath.is_file():
        raise UserInputError(f"{mpath}: missing (is {d} an exported policy?)")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, not UTF-8, NaN/Infinity
        raise UserInputError(f"{mpath}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{mpath}: expected a JSON object")
    if raw.get("format") != FORMAT:
        raise UserInputError(f"{mpath}: format: expected {FORMAT!r}, got {raw.get('format')!r}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise UserInputError(
            f"{mpath}: format_version: {raw.get('format_version')!r} is not supported (this build reads {FORMAT_VERSION})"
        )
    try:
        return raw, Manifest.model_validate(raw)
    except ValidationError as e:
        raise UserInputError(format_validation_error(str(mpath), e)) from None


def _check_seal(mpath: Path, raw: Mapping[str, Any], key: bytes | None) -> None:
    """The manifest's ``digest`` (when present) and, when a key is configured, its ``hmac``."""
    digest = raw.get("digest")
    if digest is not None and not _hmac.compare_digest(manifest_digest(raw), str(digest)):
        raise UserInputError(f"{mpath}: digest: the content does not match its digest (edited after export?); "
                             "restore the file or export the run again")
    if key is None:
        return
    mac = raw.get("hmac")
    if mac is None:
        raise UserInputError(f"{mpath}: hmac: missing, but a policy key is configured ({KEY_ENV} or key=); "
                             "export the policy again with that key")
    if not _hmac.compare_digest(manifest_hmac(raw, key), str(mac)):
        raise UserInputError(f"{mpath}: hmac: does not match the configured policy key (another key, or the file was modified)")


def _check_observation(mpath: Path, names: list[str]) -> None:
    want = list(OBSERVATION_SPEC.names)
    if names in (want, want[:N_FEATURES_V2], want[:N_FEATURES_V1]):  # versions 1 and 2 (fewer inputs) still load
        return
    if len(names) != len(want):
        raise UserInputError(f"{mpath}: observation: {len(names)} features, this build has {len(want)} ({', '.join(want)})")
    i = next(k for k, (a, b) in enumerate(zip(names, want)) if a != b)
    raise UserInputError(f"{mpath}: observation: feature {i} is {names[i]!r}, this build expects {want[i]!r} (feature order mismatch)")


def _load_weights(d: Path, m: Manifest) -> list[tuple[np.ndarray, np.ndarray]]:
    path = d / NPZ
    net = m.network
    if net is None:
        raise UserInputError(f"{d / MANIFEST}: network: required for kind 'mlp'")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserInputError(f"{path}: unreadable weights: {e}") from None
    layers = net.layers
    n_out = ACTION_OUTPUTS[m.action.mapping]
    if layers[0] != len(m.observation) or layers[-1] != n_out:
        raise UserInputError(f"{d / MANIFEST}: network.layers: must start with {len(m.observation)} (the observation features) and end with "
                             f"{n_out} (action mapping {m.action.mapping}), got {layers}")
    out = []
    for i in range(len(layers) - 1):
        w, b = arrays.get(f"w{i}"), arrays.get(f"b{i}")
        if w is None or b is None:
            raise UserInputError(f"{path}: missing array w{i} or b{i}")
        if w.shape != (layers[i + 1], layers[i]) or b.shape != (layers[i + 1],):
            raise UserInputError(f"{path}: w{i}/b{i}: shapes {w.shape}/{b.shape} do not match network.layers {layers}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise UserInputError(f"{path}: w{i}/b{i}: non-finite values")
        out.append((w, b))
    return out


def read_artifact(path: str | Path, require: tuple[str, ...] = (), key: str | bytes | None = None) -> Artifact:
    """Read and validate an artifact directory.

    Checks: the manifest's schema, format and version; the observation feature names and order
    against :data:`~mllm_offload.observation.OBSERVATION_SPEC`; the manifest's digest (when it
    has one) and, with a key (``key``, else the environment variable :data:`KEY_ENV`), its
    HMAC; the size and sha256 of every listed file (and that ``require`` files are listed);
    array shapes against the network layout; finite values. Raises :class:`UserInputError` with
    one line on the first problem.
    """
    k = _policy_key(key)
    d = Path(path)
    raw, m = _load_manifest(d)
    mpath = d / MANIFEST
    _check_observation(mpath, m.observation)
    _check_seal(mpath, raw, k)
    for fname, entry in m.files.items():
        if fname not in (NPZ, ONNX):
            raise UserInputError(f"{mpath}: files: unexpected entry {fname!r}")
        f = d / fname
        if not f.is_file():
            raise UserInputError(f"{f}: missing (listed in {MANIFEST})")
        if f.stat().st_size != entry.bytes:
            raise UserInputError(f"{f}: size {f.stat().st_size} bytes, {MANIFEST} says {entry.bytes} (truncated or replaced)")
        if sha256_file(f) != entry.sha256:
            raise UserInputError(f"{f}: sha256 does not match {MANIFEST} (file modified)")
    for fname in require:
        if fname not in m.files:
            raise UserInputError(f"{mpath}: files: {fname} is required here but not part of this artifact")
    if m.kind == "heuristic":
        if m.heuristic is None:
            raise UserInputError(f"{mpath}: heuristic: required for kind 'heuristic'")
        return Artifact(d, m, None)
    if NPZ not in m.files:
        raise UserInputError(f"{mpath}: files: {NPZ} is required for kind 'mlp'")
    reads_tradeoff = len(m.observation) > N_FEATURES_V1
    if reads_tradeoff and m.tradeoff_range is None:
        raise UserInputError(f"{mpath}: tradeoff_range: required for a policy that reads the trade-off (export it again)")
    if not reads_tradeoff and m.tradeoff_range is not None:
        raise UserInputError(f"{mpath}: tradeoff_range: this policy does not read the trade-off features; remove the field")
    norm = m.normalization
    n = len(m.observation)
    if norm is not None:
        if len(norm.mean) != n or len(norm.var) != n:
            raise UserInputError(f"{mpath}: normalization: mean and var need {n} values each")
        if not all(np.isfinite(norm.mean)) or not all(v >= 0 and np.isfinite(v) for v in norm.var):
            raise UserInputError(f"{mpath}: normalization: mean must be finite and var finite and >= 0")
    weights = _load_weights(d, m)
    return Artifact(d, m, MLPActor(weights, m.network.activation, norm))  # type: ignore[union-attr]


# -- the exported policy as a Policy ------------------------------------------------------------

#: Inference backends of :meth:`ArtifactPolicy.load`.
BACKENDS = ("numpy", "onnx")


class _OnnxActor:
    """onnxruntime session of ``policy.onnx`` (normalisation and clipping are in the graph)."""

    def __init__(self, path: Path, threads: int = 1, n_inputs: int = len(OBSERVATION_SPEC)) -> None:
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
        if len(inputs) != 1 or inputs[0].shape[-1] != n_inputs:
            raise UserInputError(f"{path}: expected one input of {n_inputs} features")
        self._input = inputs[0].name
        self.n_inputs = n_inputs

    def actions(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, np.float32)[..., :self.n_inputs]
        single = x.ndim == 1
        out = self.session.run(None, {self._input: x[None, :] if single else x})[0]
        return np.asarray(out[0] if single else out)


class ArtifactPolicy:
    """An exported policy folder as a :class:`~mllm_offload.policy.Policy`.

    The simulator evaluates it exactly as the router deploys it. Attributes: ``name`` (from the
    manifest), ``kind`` (``mlp`` or ``heuristic``), ``backend`` (``numpy``, ``onnx`` or
    ``rule``), ``manifest`` and ``path``. A ``heuristic`` artifact runs the rule it names.
    """

    def __init__(self, name: str, kind: str, backend: str, manifest: Manifest, path: Path,
                 actor: MLPActor | _OnnxActor | None = None, rule: Any = None) -> None:
        self.name, self.kind, self.backend = name, kind, backend
        self.manifest, self.path = manifest, path
        self._actor, self._rule = actor, rule

    @classmethod
    def load(cls, path: str | Path, backend: str = "numpy", threads: int = 1, key: str | bytes | None = None) -> ArtifactPolicy:
        """Read and validate ``path`` (:func:`read_artifact`, ``key`` for the HMAC, default the
        environment variable :data:`KEY_ENV`); ``backend`` ``numpy`` or ``onnx``."""
        if backend not in BACKENDS:
            raise UserInputError(f"policy backend: unknown {backend!r} (known: {', '.join(BACKENDS)})")
        p = Path(path)
        art = read_artifact(p, require=(ONNX,) if backend == "onnx" else (), key=key)
        m = art.manifest
        if m.kind == "heuristic":
            from .rules import make_rule

            assert m.heuristic is not None
            return cls(m.name, "heuristic", "rule", m, p, rule=make_rule(m.heuristic.rule, m.heuristic.params))
        actor: MLPActor | _OnnxActor | None = _OnnxActor(p / ONNX, threads, len(m.observation)) if backend == "onnx" else art.actor
        return cls(m.name, m.kind, backend, m, p, actor=actor)

    @property
    def tradeoff_range(self) -> TradeOffRange | None:
        """The trade-offs the policy was trained over (``None``: it does not read the trade-off)."""
        return self.manifest.tradeoff_range

    def check_tradeoff(self, t: TradeOff, source: str = "trade-off") -> TradeOff:
        """``t`` if this policy serves it (inside its trained range, or any for a policy that
        ignores the trade-off); else a one-line :class:`UserInputError`."""
        r = self.manifest.tradeoff_range
        return t if r is None else r.check(t, f"{source} (policy {self.path})")

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        """Stateless: nothing to do."""

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Raw actions in ``[0,1]^k`` (``(k,)`` or ``(batch, k)``, ``k`` 3 or 6); kind ``mlp`` only."""
        if self._actor is None:
            raise TypeError(f"policy {self.name!r} is a rule; use thresholds()")
        return self._actor.actions(obs)

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        """Thresholds for one observation vector."""
        if self._rule is not None:
            th: Thresholds = self._rule.thresholds(obs)
            return th
        return Thresholds.from_action(self.actions(obs)[:3])

    @property
    def chooses_plan(self) -> bool:
        """Whether the policy also chooses the upload plan: six outputs, or a rule that does
        (``msao-model-res``, ``moaoff``)."""
        if self._rule is not None:
            return callable(getattr(self._rule, "decide", None))
        return self.manifest.action.mapping == "thresholds-plan-v1"

    def decide(self, obs: np.ndarray) -> tuple[Thresholds, UploadPlan | None]:
        """Thresholds and upload plan (``None`` for a policy that does not choose one)."""
        if self._rule is not None:
            f = getattr(self._rule, "decide", None)
            return f(obs) if f is not None else (self.thresholds(obs), None)
        a = self.actions(obs)
        return Thresholds.from_action(a[:3]), (UploadPlan.from_action(a[3:6]) if a.shape[-1] == 6 else None)

    def __repr__(self) -> str:
        return f"ArtifactPolicy(name={self.name!r}, kind={self.kind!r}, backend={self.backend!r}, path={str(self.path)!r})"
