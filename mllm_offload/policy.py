"""The Policy protocol and THE registry of named policies (a contract).

A policy maps an observation (:data:`~mllm_offload.observation.OBSERVATION_SPEC` order) to
:class:`~mllm_offload.decision.Thresholds`; one that also chooses what an offload sends has a
``decide(obs)`` returning the thresholds and an :class:`~mllm_offload.decision.UploadPlan`
(:func:`decide` calls it, or falls back to ``thresholds`` and no plan: everything sent whole). The simulator's rollouts, the deployed router,
``evaluate``, ``route``, the examples, the benchmarks and the tests all build policies through
:func:`resolve`, from a name or from an exported policy directory.

=============  =========================================================  ================
name           what it builds                                             needs
=============  =========================================================  ================
``edge``       always the edge answer (never escalates)                   --
``cloud``      always the cloud                                           --
``random``     uniformly random raw actions                               --
``static``     fixed thresholds ``static:LOW,HIGH,CONF``                  --
``msao``       the MSAO heuristic (:class:`~mllm_offload.rules.MSAORule`)  the SLO
``msao-``      MSAO, sending images at the cloud model's resolution       the SLO
``model-res``
``moaoff``     MSAO's routing with MoA-Off-style per-modality plans       the SLO
               (:class:`~mllm_offload.rules.MoAOffRule`)
``tuned``      best fixed thresholds and plan, grid search on training    a scenario
``oracle``     per request the best mode in hindsight (an upper bound)    the simulator
``oracle-``    per request the best mode by expected score given the      the simulator
``expected``   latent difficulty (synthetic profiles; a fairer ceiling)
a folder       an exported policy (``policy.json`` + ``.npz`` / ``.onnx``)   --
=============  =========================================================  ================

``edge``, ``cloud``, ``random``, ``static`` and ``msao`` are registered by
:mod:`mllm_offload.rules` (deployable, no simulator); ``tuned``, ``oracle`` and ``oracle-expected`` by
:mod:`mllm_offload.agents` when it is imported (they need episodes to fit on or realised
outcomes, so a deployed router never has them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .config import SystemConfig
from .decision import Thresholds, UploadPlan
from .errors import UserInputError

__all__ = ["NEEDS", "REGISTRY", "Policy", "PolicyContext", "PolicyEntry", "check_names", "decide", "describe_policies", "policy_names",
           "register", "resolve", "resolve_many", "split_names"]


@runtime_checkable
class Policy(Protocol):
    """What every policy is: a ``name``, a per-episode ``reset`` and ``thresholds(obs)``.

    ``reset(seed, env=...)`` is called at the start of every episode. ``env`` is the simulated
    environment (``None`` in deployment): hindsight policies (the oracle) read realised
    outcomes from it, causal ones ignore it.
    """

    name: str

    def reset(self, seed: int | None = None, *, env: Any = None) -> None: ...

    def thresholds(self, obs: np.ndarray) -> Thresholds: ...


def decide(policy: Policy, obs: np.ndarray) -> tuple[Thresholds, UploadPlan | None]:
    """The policy's thresholds and upload plan for ``obs`` (``None``: it does not choose one)."""
    f = getattr(policy, "decide", None)
    if f is not None:
        th, plan = f(obs)
        return th, plan
    return policy.thresholds(obs), None


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory may need.

    Attributes:
        slo_s: the latency SLO, seconds (MSAO's thresholds move with it).
        seed: seed of randomised policies.
        backend: inference backend of exported policies, ``numpy`` or ``onnx``.
        threads: onnxruntime intra-op threads.
        scenario: a :class:`~mllm_offload.scenario.Scenario`, for policies fitted on its training
            episodes (``tuned``); ``None`` in deployment.
        progress: wraps an iterable in a progress bar (or ``None``).
    """

    slo_s: float = SystemConfig.model_fields["slo_s"].default
    seed: int = 0
    backend: str = "numpy"
    threads: int = 1
    scenario: Any = None
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None


@dataclass(frozen=True)
class PolicyEntry:
    """One registered name.

    ``build(ctx, arg)`` makes the policy (``arg``: the text after ``:``). ``from_params(**p)``,
    for rules only, rebuilds it from keyword parameters (what a ``heuristic`` artifact records
    in ``policy.json``). ``needs``: ``""`` (deployable), ``"scenario"`` or ``"simulator"``.
    """

    name: str
    help: str
    build: Callable[[PolicyContext, str | None], Policy]
    needs: str = ""
    from_params: Callable[..., Policy] | None = None


#: Every named policy, by name (filled by :func:`register`).
REGISTRY: dict[str, PolicyEntry] = {}
#: What a ``needs`` value means, for error messages.
NEEDS = {"scenario": "fitted on a scenario's training episodes", "simulator": "reads realised outcomes from the simulator"}
_MANIFEST = "policy.json"


def register(name: str, help: str, build: Callable[[PolicyContext, str | None], Policy], needs: str = "",
             from_params: Callable[..., Policy] | None = None) -> None:
    """Add ``name`` to the registry (re-registering the same name replaces it)."""
    if needs and needs not in NEEDS:
        raise ValueError(f"register {name}: needs must be '' or one of {sorted(NEEDS)}, got {needs!r}")
    REGISTRY[name] = PolicyEntry(name, help, build, needs, from_params)


def policy_names(deployable: bool = False) -> list[str]:
    """Registered names, in registration order (``deployable``: only those a router can run)."""
    return [n for n, e in REGISTRY.items() if not (deployable and e.needs)]


def describe_policies() -> str:
    """One line per registered name with its help (for ``--help`` texts)."""
    return "; ".join(f"{e.name}: {e.help}" for e in REGISTRY.values())


def _is_artifact(text: str) -> bool:
    return (Path(text) / _MANIFEST).is_file()


def _unknown(what: str, text: str, deployable: bool) -> UserInputError:
    import difflib

    names = policy_names(deployable)
    close = difflib.get_close_matches(text.partition(":")[0], names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UserInputError(f"{what}: unknown policy {text!r}{hint} (known: {', '.join(names)}, or an exported policy folder)")


def resolve(spec: str | Path, ctx: PolicyContext | None = None, name: str | None = None, deployable: bool = False) -> Policy:
    """A policy from an exported policy folder or a registered name (``msao``, ``static:0.3,0.7,0.6`` ...).

    A folder holding ``policy.json`` wins over a registered name. ``name`` relabels the policy in
    reports. ``deployable`` refuses names that need a scenario or the simulator (a router's
    case). Unknown names and bad folders raise :class:`UserInputError` with one line that lists
    the known names.
    """
    ctx = ctx or PolicyContext()
    text = str(spec)
    key, _, arg = text.partition(":")
    looks_like_path = "/" in text or "\\" in text or Path(text).exists()
    if _is_artifact(text) or (looks_like_path and key not in REGISTRY):
        from .artifact import ArtifactPolicy

        pol: Policy = ArtifactPolicy.load(Path(text), backend=ctx.backend, threads=ctx.threads)
    elif key in REGISTRY:
        entry = REGISTRY[key]
        if deployable and entry.needs:
            raise UserInputError(f"policy {key!r} {NEEDS[entry.needs]}: not deployable "
                                 f"(deployable: {', '.join(policy_names(True))}, or an exported policy folder)")
        pol = entry.build(ctx, arg or None)
    else:
        raise _unknown("policy", text, deployable)
    if name is not None:
        pol.name = name
    return pol


def split_names(text: str) -> list[str]:
    """Names of a comma-separated list; numbers continue the previous name's parameters, so
    ``edge,static:0.2,0.6,0.7,msao`` is ``["edge", "static:0.2,0.6,0.7", "msao"]``."""
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if names and ":" in names[-1] and _is_number(part):
            names[-1] += "," + part
        else:
            names.append(part)
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_names(text: str, what: str = "policies") -> list[str]:
    """The names of a comma-separated list (:func:`split_names`), each a registered name or a
    path, none twice, without building any policy: a bad list fails before long work starts.
    ``what`` names the option in the error line."""
    names = split_names(text)
    if not names:
        raise UserInputError(f"{what}: empty list")
    for n in names:
        if n.partition(":")[0] not in REGISTRY and not (Path(n).exists() or "/" in n):
            raise _unknown(what, n, False)
    if len(set(names)) != len(names):
        raise UserInputError(f"{what}: a name is given twice in {text!r}")
    return names


def resolve_many(text: str, ctx: PolicyContext | None = None) -> list[Policy]:
    """Policies from a comma-separated list of names (:func:`check_names`); an empty list is a user error."""
    return [resolve(n, ctx) for n in check_names(text)]


def _needs_agents(name: str) -> Callable[[PolicyContext, str | None], Policy]:
    def build(ctx: PolicyContext, arg: str | None) -> Policy:
        raise UserInputError(f"policy {name!r} is built by the simulator's agents: import mllm_offload.agents first")

    return build


from . import rules as _rules  # noqa: E402,F401  (registers the deployable rules)

# Placeholders, replaced when mllm_offload.agents is imported: the registry always lists every name.
register("tuned", "TunedStatic: best fixed thresholds (and fixed upload plan) by grid search on the training split", _needs_agents("tuned"), needs="scenario")
register("oracle", "HindsightOracle: best mode per request in hindsight (an upper bound)", _needs_agents("oracle"), needs="simulator")
register("oracle-expected", "ExpectedOracle: best mode per request by expected score given the latent difficulty "
         "(synthetic profiles; a more honest ceiling than oracle)", _needs_agents("oracle-expected"), needs="simulator")
