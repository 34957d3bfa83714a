"""``Scenario``: what an experiment runs on, built once and validated up front.

A scenario is a synthetic profile (which also supplies the system defaults), a bandwidth source,
optionally a recorded request trace, the system, reward and episode configuration, and the
splits and seeds of :mod:`mllm_offload.splits`. The CLI, the examples, the tests and the
benchmarks all build their environments and policies through it:

>>> import mllm_offload.agents                       # registers tuned and oracle
>>> scn = Scenario.build(profile="mobile-3g", bandwidth="markov:mobile-3g")
>>> env = scn.make_env("test")                       # an OffloadEnv on the test split
>>> policies = scn.policies("edge,msao,tuned")       # the one registry, tuned fitted on "train"
>>> seeds = scn.evaluation_seeds(2000)               # the episodes every policy runs

=================  =========================================================================
field              meaning
=================  =========================================================================
``profile``        synthetic profile name (``mllm-offload profiles``)
``trace``          recorded request trace, or ``None`` for the profile's synthetic requests
``trace_source``   what the trace was loaded from (file or embedded name), for reports
``bandwidth``      bandwidth spec: a folder of Pensieve/Mahimahi traces, ``constant:MBPS,...``
                   or ``markov:NAME``
``system``         :class:`~mllm_offload.config.SystemConfig` (SLO in seconds, links, servers,
                   and ``edge_tier``: the edge as several devices, or one device)
``reward``         :class:`~mllm_offload.config.RewardWeights`
``episode``        :class:`~mllm_offload.config.EpisodeConfig` (requests per episode, ...)
``synthetic_...``  ``synthetic_requests``: size of each split's synthetic request trace (no ``trace``)
``tradeoff``       :class:`~mllm_offload.tradeoff.TradeOff` of every episode (default: the one
                   ``reward`` expresses) and its budgets
``tradeoff_range`` :class:`~mllm_offload.tradeoff.TradeOffRange` to draw one trade-off per
                   episode from (training a conditioned policy), or ``None``
``upload_plans``   policies choose per modality what an offload sends (``None``: when the
                   trace has variant outcomes; ``False``: everything whole)
=================  =========================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import EdgeTierConfig, EpisodeConfig, RewardWeights, ScenarioOverrides, SystemConfig, load_yaml
from .decision import UploadPlan, distinct_plans
from .edge_tier.tier import EdgeTier
from .envs.offload_env import OffloadEnv
from .errors import UserInputError
from .policy import Policy, PolicyContext, resolve, resolve_many
from .splits import check_split, evaluation_seeds
from .trace_format import RequestTrace, load_trace
from .traces.bandwidth import bandwidth_source
from .traces.synth import get_profile
from .tradeoff import TradeOff, TradeOffRange

__all__ = ["Scenario"]


@dataclass(frozen=True)
class Scenario:
    """A validated experiment setting; see the module docstring for the fields."""

    profile: str
    bandwidth: str
    system: SystemConfig
    reward: RewardWeights
    episode: EpisodeConfig
    trace: RequestTrace | None = None
    trace_source: str | None = None
    synthetic_requests: int = 20_000
    tradeoff: TradeOff | None = None
    tradeoff_range: TradeOffRange | None = None
    upload_plans: bool | None = None

    def __post_init__(self) -> None:
        if self.tradeoff is None:
            object.__setattr__(self, "tradeoff", TradeOff.from_weights(self.reward))

    @property
    def trade(self) -> TradeOff:
        """The fixed trade-off (never ``None`` after construction)."""
        assert self.tradeoff is not None
        return self.tradeoff

    def with_tradeoff(self, tradeoff: TradeOff | None = None, tradeoff_range: TradeOffRange | None = None) -> Scenario:
        """The same scenario with another fixed trade-off and/or a range to draw from per episode."""
        return dataclasses.replace(self, tradeoff=tradeoff or self.trade, tradeoff_range=tradeoff_range)

    @classmethod
    def build(
        cls,
        profile: str = "mobile-3g",
        trace: str | Path | RequestTrace | None = None,
        bandwidth: str | None = None,
        config: str | Path | None = None,
        episode_len: int = 100,
        requests: int | None = None,
        synthetic_requests: int = 20_000,
        edge_tier: str | None = None,
        upload_plans: bool | None = None,
    ) -> Scenario:
        """Validate everything once: the profile, the trace, every bandwidth file, the YAML overrides.

        ``config`` is a YAML file with sections ``system``, ``reward``, ``episode``; an
        ``episode.n_requests`` there wins over ``episode_len``. Episodes are never longer than
        ``requests`` (when given). ``edge_tier`` names the devices of an edge tier (a cluster or
        device presets, or a ``devices.yaml``): the edge becomes several devices
        (:class:`~mllm_offload.config.EdgeTierConfig`, its other fields from ``system.edge_tier``
        of the config, else their defaults). Errors are :class:`~mllm_offload.errors.UserInputError`.
        """
        prof = get_profile(profile)
        ep_len = min(episode_len, requests) if requests is not None else episode_len
        system, reward, episode = prof.system, RewardWeights(), EpisodeConfig(n_requests=ep_len)
        if config is not None:
            ov = load_yaml(config, ScenarioOverrides)
            system, reward, episode = ov.apply(str(config), system, reward, episode)
            if "n_requests" not in ov.episode:
                episode = episode.model_copy(update={"n_requests": ep_len})
        if edge_tier is not None:
            base = system.edge_tier.model_dump() if system.edge_tier is not None else {}
            system = system.model_copy(update={"edge_tier": EdgeTierConfig.model_validate({**base, "devices": edge_tier})})
        if system.edge_tier is not None:
            EdgeTier.from_config(system.edge_tier)  # the names resolve and the split fits, once, up front
        tr = load_trace(trace) if isinstance(trace, (str, Path)) else trace
        bw = bandwidth or prof.bandwidth
        if bw.startswith(("constant:", "markov:")):
            bandwidth_source(bw, "train", n_synthetic=1, duration_s=60.0)  # the spec parses and names a model
        else:
            bandwidth_source(bw, "all")  # validate every file once, up front
        source = str(trace) if isinstance(trace, (str, Path)) else (None if trace is None else "in-memory trace")
        if synthetic_requests < 1:
            raise UserInputError(f"synthetic_requests: must be >= 1, got {synthetic_requests}")
        scn = cls(prof.name, bw, system, reward, episode, tr, source, synthetic_requests, upload_plans=upload_plans)
        if upload_plans and tr is not None and tr.plans is None:
            scn.make_env("all")  # the one clear error: the trace has no variant outcomes
        return scn

    @property
    def plans_on(self) -> bool:
        """Whether policies choose upload plans here (``upload_plans``, else: the requests have variants)."""
        if self.upload_plans is not None:
            return self.upload_plans
        return self.trace is None or self.trace.plans is not None

    def static_plans(self) -> list[UploadPlan] | None:
        """The upload plans a fixed-plan policy (TunedStatic's search) may use here: ``None`` when
        policies choose no plans; else the distinct plans of the requests' modalities
        (:func:`~mllm_offload.decision.distinct_plans`, ``SEND_ALL`` first) that every request of
        the trace, in every split, has an outcome for."""
        if not self.plans_on:
            return None
        trace = self.trace if self.trace is not None else self.make_env("train").trace
        table = trace.plans
        if table is None:
            return None
        return [p for p in distinct_plans([bool(table.present[:, k].any()) for k in range(3)]) if table.complete(p)]

    @property
    def slo_s(self) -> float:
        """The latency SLO, seconds."""
        return self.system.slo_s

    def make_env(self, split: str) -> OffloadEnv:
        """An :class:`~mllm_offload.envs.OffloadEnv` on ``split`` (``train``, ``val``, ``test``, ``all``)."""
        return OffloadEnv(profile=self.profile, trace=self.trace, bandwidth=self.bandwidth, split=check_split(split),
                          system=self.system, reward=self.reward, episode=self.episode, synthetic_requests=self.synthetic_requests,
                          tradeoff=self.tradeoff, tradeoff_range=self.tradeoff_range, upload_plans=self.upload_plans)

    def evaluation_seeds(self, requests: int, seed: int = 0) -> list[int]:
        """The episodes every policy is evaluated on (:func:`mllm_offload.splits.evaluation_seeds`)."""
        return evaluation_seeds(requests, self.episode.n_requests, seed)

    def policy_context(self, seed: int = 0, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
                       backend: str = "numpy") -> PolicyContext:
        """What the registry's factories need: this scenario's SLO, a seed, and the scenario itself."""
        return PolicyContext(slo_s=self.slo_s, seed=seed, backend=backend, scenario=self, progress=progress)

    def policies(self, names: str, seed: int = 0, progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> list[Policy]:
        """Policies by comma-separated names through the one registry (``tuned`` fitted on ``train``).

        ``tuned`` and ``oracle`` are registered when :mod:`mllm_offload.agents` is imported
        (a stage above this one): import it first to use them.
        """
        return resolve_many(names, self.policy_context(seed, progress))

    def policy(self, spec: str | Path, name: str | None = None, seed: int = 0) -> Policy:
        """One policy by name or exported folder, relabelled ``name``."""
        return resolve(spec, self.policy_context(seed), name=name)

    def label(self, split: str) -> str:
        """One line naming the scenario, for plot titles and reports."""
        data = f"trace {self.trace_source}" if self.trace_source else f"profile {self.profile}"
        return f"{data} | bandwidth {self.bandwidth} | split {split} | SLO {self.slo_s:g} s"

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for run records and reports."""
        return {"profile": self.profile, "trace": self.trace_source, "bandwidth": self.bandwidth,
                "system": self.system.model_dump(), "reward": self.reward.model_dump(), "episode": self.episode.model_dump(),
                "tradeoff": self.trade.model_dump(),
                "tradeoff_range": None if self.tradeoff_range is None else self.tradeoff_range.describe(),
                "upload_plans": self.upload_plans}
