"""``OffloadEnv``: one step = one request routed by a policy's thresholds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..config import EpisodeConfig, RewardWeights, SystemConfig
from ..decision import SEND_ALL, Thresholds, UploadPlan, all_plans
from ..edge_tier.tier import EdgeTier, draw_outages
from ..errors import UserInputError
from ..observation import OBSERVATION_SPEC, build_observation
from ..splits import SYNTHETIC_TRACE_SEED, check_split
from ..trace_format import RequestTrace, load_trace
from ..traces.bandwidth import BandwidthTrace, bandwidth_source
from ..traces.synth import generate, get_profile
from ..tradeoff import TradeOff, TradeOffRange
from .system import EdgeCloudSystem, Outcome, SimRequests, erlang_c
from .tier_edge import TierEdge

__all__ = ["OffloadEnv", "reward_of"]



def reward_of(o: Outcome, w: RewardWeights, slo_s: float) -> float:
    """Per-request reward: ``quality*score - latency*lat/SLO - slo_violation*[lat > SLO] - cost - energy``."""
    return (
        w.quality * o.score
        - w.latency * o.latency_s / slo_s
        - (w.slo_violation if o.latency_s > slo_s else 0.0)
        - w.cost_per_usd * o.cloud_cost_usd
        - w.energy_per_kj * o.energy_j * 1e-3
    )


@lru_cache(maxsize=16)
def _bandwidth(spec: str, split: str) -> tuple[BandwidthTrace, ...]:
    return tuple(bandwidth_source(spec, split))


@lru_cache(maxsize=8)
def _synthetic(profile: str, n: int, seed: int) -> RequestTrace:
    return generate(profile, n, seed)


def _mean_capacity(segments: Sequence[Any], horizon_s: float) -> float:
    """Time-average capacity of the tier over ``[0, horizon_s]`` (1 when the horizon is 0)."""
    if horizon_s <= 0.0:
        return 1.0
    total = sum((min(s.end, horizon_s) - s.start) * (s.mode.capacity if s.mode is not None else 0.0)
                for s in segments if s.start < horizon_s)
    return total / horizon_s


class OffloadEnv(gym.Env):
    """Route a stream of multimodal requests between an edge and a cloud MLLM.

    ## Description
    Each step is one request from a request trace (recorded or synthetic), replayed against a
    discrete-event model of the device (:mod:`mllm_offload.envs.system`) whose uplink follows a
    real or synthetic bandwidth trace. The agent sets three thresholds; the fixed rule of
    :mod:`mllm_offload.decision` turns them into EDGE_FIRST, SPECULATIVE or CLOUD.

    ## Action Space
    ``Box(0, 1, (6,), float32)`` with upload plans (``upload_plans``), else ``Box(0, 1, (3,),
    float32)``; the first three are mapped by :meth:`Thresholds.from_action`, the last three by
    :meth:`UploadPlan.from_action` (what an offload sends; without plans, everything whole):

    | Num | Action  | Meaning                                                              |
    |-----|---------|----------------------------------------------------------------------|
    | 0   | a0      | ``tau_low = a0 * tau_high``                                          |
    | 1   | a1      | ``tau_high = a1`` (MAS score threshold to cloud)                     |
    | 2   | a2      | ``tau_conf = a2`` (edge confidence to accept)                        |
    | 3   | a3      | image: ``full`` if a3 < 1/3, ``model_res`` if < 2/3, else ``reduced`` |
    | 4   | a4      | video: ``all`` if a4 < 0.5, else ``keyframes``                       |
    | 5   | a5      | audio: ``keep`` if a5 < 0.5, else ``drop``                           |

    A plan changes only the modalities a request has. The bytes uploaded, the cloud's input
    tokens (cost), its service time and its score are the trace's for that variant
    (:class:`~mllm_offload.trace_format.PlanTable`); a plan the trace has no outcome for is an
    error naming the request and the variant, never a guess.

    ## Observation Space
    ``Box(low, high, (20,), float32)`` in the order of
    :data:`mllm_offload.observation.OBSERVATION_SPEC` (its docstring has the table): MAS
    features and sizes of the request about to be routed, the estimated uplink bandwidth, last
    RTT, uplink backlog, edge queue and expected wait, cloud calls in flight and recent cloud
    latency, and the episode's trade-off (log latency and cost prices). Nothing the router could
    not measure (no true current bandwidth).

    ## Rewards
    Per request, with the episode's :class:`~mllm_offload.tradeoff.TradeOff` ``t``, the other
    :class:`~mllm_offload.config.RewardWeights` ``w`` and the SLO in seconds:
    ``w.quality*score - t.latency_price*(latency/SLO + k*[latency > SLO])
    - t.cost_price*1000*cloud_cost_usd - w.energy_per_kj*energy_kJ`` with ``k = w.slo_violation
    / w.latency`` (2.5 by default: an SLO miss costs 2.5 SLOs of latency; see
    :mod:`mllm_offload.tradeoff`).

    | trade-off of an episode           | when                                                |
    |-----------------------------------|-----------------------------------------------------|
    | ``options["tradeoff"]``           | given to ``reset`` (a ``TradeOff``)                 |
    | drawn from ``tradeoff_range``     | the env has a range (training a conditioned policy) |
    | ``tradeoff``                      | otherwise (default: the one ``reward`` expresses)   |

    ## Starting State
    Empty queues, the bandwidth prior of the system config, a window of ``n_requests`` requests
    starting at a uniformly drawn index, a uniformly drawn bandwidth trace and offset, and
    (optionally) an arrival-rate scale and edge speed drawn from ``EpisodeConfig`` ranges. The
    trade-off is drawn last, so the same seed gives the same requests at every trade-off.

    ## Episode End
    Terminates after ``n_requests`` requests; never truncated by the env itself.

    ## Arguments
    ``profile`` (synthetic profile name; also supplies the system config and default
    bandwidth), ``trace`` (a recorded trace or its path, used instead of synthetic requests),
    ``bandwidth`` (a spec for :func:`~mllm_offload.traces.bandwidth.bandwidth_source` or a list
    of traces), ``split`` (``train``/``val``/``test``/``all``: which part of the requests and of
    the bandwidth folder), ``system``, ``reward``, ``episode`` (configs or dicts),
    ``synthetic_requests`` (size of the synthetic request pool), ``tradeoff`` (the fixed
    trade-off, default ``TradeOff.from_weights(reward)``), ``tradeoff_range`` (draw one per
    episode instead), ``upload_plans`` (policies choose what is sent; default: when the trace
    has variant outcomes, as synthetic profiles do).

    ``reset(options=...)`` accepts ``rate_scale`` and ``edge_speed`` to fix those factors,
    ``bandwidth_index`` to fix the bandwidth trace, and ``tradeoff`` to fix the trade-off.

    ``info`` of each step holds ``outcome`` (:class:`~mllm_offload.envs.system.Outcome`),
    ``thresholds``, ``upload_plan`` (the plan as applied to the request's modalities) and
    ``expected_score``: on a synthetic trace the answer's probability of being right (the
    cloud's given the request's difficulty and the plan, the edge's given its difficulty and
    confidence; what ``training_scores: expected`` trains on), ``None`` on a recording.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  (gymnasium declares it as a plain attribute)

    def __init__(
        self,
        profile: str = "mobile-3g",
        trace: RequestTrace | str | Path | None = None,
        bandwidth: str | Sequence[BandwidthTrace] | None = None,
        split: str = "train",
        system: SystemConfig | dict | None = None,
        reward: RewardWeights | dict | None = None,
        episode: EpisodeConfig | dict | None = None,
        synthetic_requests: int = 20_000,
        render_mode: str | None = None,
        tradeoff: TradeOff | None = None,
        tradeoff_range: TradeOffRange | None = None,
        upload_plans: bool | None = None,
    ) -> None:
        super().__init__()
        check_split(split)
        prof = get_profile(profile)
        if trace is None:
            self.trace = _synthetic(prof.name, synthetic_requests, SYNTHETIC_TRACE_SEED[split])
        else:
            full = load_trace(trace) if isinstance(trace, (str, Path)) else trace
            self.trace = full.split(split)
        if len(self.trace) == 0:
            raise UserInputError(f"trace: split {split!r} holds no requests")
        self.system_cfg = SystemConfig.model_validate(system) if isinstance(system, dict) else (system or prof.system)
        self.weights = RewardWeights.model_validate(reward) if isinstance(reward, dict) else (reward or RewardWeights())
        self.episode_cfg = EpisodeConfig.model_validate(episode) if isinstance(episode, dict) else (episode or EpisodeConfig())
        if bandwidth is None:
            bandwidth = prof.bandwidth
        self.bandwidths: tuple[BandwidthTrace, ...] = (
            _bandwidth(bandwidth, split) if isinstance(bandwidth, str) else tuple(bandwidth)
        )
        if not self.bandwidths:
            raise UserInputError("bandwidth: no traces")
        self.profile = prof
        self.split = split
        self.render_mode = render_mode
        self.n_requests = min(self.episode_cfg.n_requests, len(self.trace))
        if upload_plans and self.trace.plans is None:
            name = self.trace.meta.get("path") or self.trace.meta.get("source") or "in memory"
            raise UserInputError(f"upload plans: trace {name} has no variant outcomes (record it with `mllm-offload record --variants "
                                 "model_res,reduced,keyframes,no_audio`), or turn upload plans off")
        #: whether policies choose what an offload sends (else every modality goes whole)
        self.upload_plans = self.trace.plans is not None if upload_plans is None else bool(upload_plans)
        self.observation_space = spaces.Box(OBSERVATION_SPEC.low, OBSERVATION_SPEC.high, dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape=(6 if self.upload_plans else 3,), dtype=np.float32)
        self.slo_s = self.system_cfg.slo_s
        self.tradeoff = tradeoff if tradeoff is not None else TradeOff.from_weights(self.weights)
        self.tradeoff_range = tradeoff_range
        self._set_episode_tradeoff(self.tradeoff)
        cloud_mean = float(np.mean(self.trace.cloud_latency_s)) / self.system_cfg.cloud_speed
        rho, c = self.system_cfg.cloud_background_load, self.system_cfg.cloud_servers
        self._bg_wait_p = erlang_c(c, rho)
        self._bg_wait_mean = cloud_mean / (c * (1.0 - rho)) if rho > 0 else 0.0
        tier_cfg = self.system_cfg.edge_tier
        #: the edge as several devices (``system.edge_tier``), or ``None`` for one edge device
        self.edge_tier: EdgeTier | None = EdgeTier.from_config(tier_cfg) if tier_cfg is not None else None
        self.sim: EdgeCloudSystem | None = None
        self._i = 0
        t = self.trace
        # expected scores given the edge's confidence (a synthetic profile's in-memory trace; not a
        # recording, nor a synthetic trace read back from a file): edge (n,), cloud (n, plans)
        self._exp_edge = t.edge_score_expected_given_conf
        self._exp_cloud = t.extra.get("cloud_score_expected_given_conf") if t.plans is not None else None
        #: whether every step's ``info["expected_score"]`` is the answer's expected score (else ``None``)
        self.has_expected_scores = self._exp_edge is not None and self._exp_cloud is not None
        self._features: list = []
        self.episode_info: dict[str, Any] = {}

    # -- gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        opts = options or {}
        ep = self.episode_cfg
        n, N = self.n_requests, len(self.trace)
        start = int(rng.integers(0, N - n + 1))
        bw_idx = int(opts.get("bandwidth_index", rng.integers(0, len(self.bandwidths)))) % len(self.bandwidths)
        bw = self.bandwidths[bw_idx]
        offset = float(rng.uniform(0.0, bw.period_s))
        rate = float(opts.get("rate_scale", rng.uniform(*ep.rate_scale)))
        speed = float(opts.get("edge_speed", rng.uniform(*ep.edge_speed)))
        if not (rate > 0 and speed > 0):
            raise UserInputError("reset options: rate_scale and edge_speed must be > 0")
        cfg = self.system_cfg
        t = self.trace
        sl = slice(start, start + n)
        arrival = (t.arrival_s[sl] - t.arrival_s[start]) / rate
        rtt = cfg.rtt_s * np.exp(cfg.rtt_jitter * rng.standard_normal(n) - 0.5 * cfg.rtt_jitter**2)
        waits = rng.random(n) < self._bg_wait_p
        bg = np.where(waits, rng.exponential(self._bg_wait_mean or 1.0, n), 0.0) if self._bg_wait_mean else np.zeros(n)
        req = SimRequests(
            arrival=arrival.tolist(),
            payload=t.payload_bytes[sl].tolist(),
            edge_s=(t.edge_latency_s[sl] / speed).tolist(),
            cloud_s=(t.cloud_latency_s[sl] / cfg.cloud_speed).tolist(),
            conf=t.edge_confidence[sl].tolist(),
            edge_score=t.edge_score[sl].tolist(),
            cloud_score=t.cloud_score[sl].tolist(),
            in_tokens=t.input_tokens[sl].tolist(),
            out_tokens=t.cloud_out_tokens[sl].tolist(),
            mas_score=t.mas_score[sl].tolist(),
            rtt=rtt.tolist(),
            bg_delay=bg.tolist(),
        )
        if self.upload_plans:
            pt = t.plans
            assert pt is not None
            req.plans = np.stack([pt.payload_bytes[sl], pt.cloud_latency_s[sl] / cfg.cloud_speed, pt.input_tokens[sl],
                                  pt.cloud_out_tokens[sl], pt.cloud_score[sl]], axis=-1).tolist()
            self._present = pt.present[sl].tolist()
        tier = None
        if self.edge_tier is not None:  # the devices' outages over the episode (and 10 minutes beyond)
            tc = cfg.edge_tier
            assert tc is not None
            outages = draw_outages(rng, len(self.edge_tier), float(arrival[-1]) + 600.0, tc.mean_up_s, tc.mean_down_s)
            segments = self.edge_tier.schedule(outages)
            tier = TierEdge(self.edge_tier, segments)
            horizon = float(arrival[-1])
            tier_info = {"edge_dropouts": sum(1 for sp in outages for a, _ in sp if 0.0 < a <= horizon),
                         "edge_capacity_mean": _mean_capacity(segments, horizon)}
        self.sim = EdgeCloudSystem(cfg, bw, offset, req, tier)
        self._features = t.all_request_features()[start:start + n]
        self._i = 0
        trade = opts.get("tradeoff")
        if trade is None:  # drawn last: the requests of a seed do not depend on the trade-off
            trade = self.tradeoff_range.sample(rng, self.tradeoff.budgets) if self.tradeoff_range is not None else self.tradeoff
        elif not isinstance(trade, TradeOff):
            raise UserInputError(f"reset options: tradeoff must be a TradeOff, got {type(trade).__name__}")
        self._set_episode_tradeoff(trade)
        self.episode_info = {"start": start, "bandwidth": bw.name, "bandwidth_offset_s": offset,
                             "rate_scale": rate, "edge_speed": speed, "latency_price": trade.latency_price,
                             "cost_price": trade.cost_price}
        if tier is not None:
            self.episode_info.update(tier_info)
        return self._observe(), dict(self.episode_info)

    def set_tradeoff(self, tradeoff: TradeOff) -> None:
        """Fix the trade-off of the following episodes (and stop drawing one from a range)."""
        self.tradeoff, self.tradeoff_range = tradeoff, None

    def _set_episode_tradeoff(self, t: TradeOff) -> None:
        self.episode_tradeoff = t
        self.episode_weights = w = t.weights(self.weights)
        self._w = (w.quality, w.latency / self.slo_s, w.slo_violation, w.cost_per_usd, w.energy_per_kj * 1e-3)

    def _observe(self) -> np.ndarray:
        assert self.sim is not None
        i = min(self._i, self.n_requests - 1)
        return build_observation(self._features[i], self.sim.observe(i), self.episode_tradeoff)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if isinstance(action, Thresholds):
            return self.step_thresholds(action)
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape[0] not in (3, 6):
            raise ValueError(f"an action has 3 components (thresholds) or 6 (thresholds and upload plan), got {a.shape[0]}")
        return self.step_thresholds(Thresholds.from_action(a[:3]), UploadPlan.from_action(a[3:]) if a.shape[0] == 6 else None)

    def step_thresholds(self, th: Thresholds, plan: UploadPlan | None = None) -> tuple[np.ndarray, float, bool, bool, dict]:
        """``step`` with thresholds (and an upload plan) given directly (what heuristics and the
        oracle use). Without upload plans in this env, every offload sends everything whole."""
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        if self._i >= self.n_requests:
            raise RuntimeError("episode is over; call reset()")
        applied = self._applied(plan)
        try:
            outcome = self.sim.step(self._i, th, applied.index)
        except KeyError:
            raise self._missing(applied) from None
        w_q, w_l, w_v, w_c, w_e = self._w
        lat = outcome.latency_s
        r = (w_q * outcome.score - w_l * lat - (w_v if lat > self.slo_s else 0.0)
             - w_c * outcome.cloud_cost_usd - w_e * outcome.energy_j)  # = reward_of(...), inlined
        expected = self._expected_score(outcome) if self.has_expected_scores else None
        self._i += 1
        done = self._i >= self.n_requests
        return self._observe(), float(r), done, False, {"outcome": outcome, "thresholds": th, "upload_plan": applied,
                                                        "expected_score": expected}

    def _expected_score(self, o: Any) -> float:
        """The expected score of the answer ``o`` to the current request given the request's
        difficulty and the edge's confidence (drawn whatever the mode): the cloud's for the upload
        plan sent (the two models' coins are correlated, so the edge's confidence moves it too:
        :mod:`mllm_offload.traces.synth`), or the edge's."""
        k = self.episode_info["start"] + self._i
        if o.answered_by == "cloud":
            return float(self._exp_cloud[k, o.upload_plan])  # type: ignore[index]
        return float(self._exp_edge[k])  # type: ignore[index]

    def request_plans(self) -> list[UploadPlan]:
        """The distinct upload plans the current request can be sent with (its modalities' choices
        that the trace has outcomes for; ``[SEND_ALL]`` without plans). For the oracles."""
        if not self.upload_plans or self.sim is None or self._i >= self.n_requests:
            return [SEND_ALL]
        img, vid, aud = self._present[self._i]
        rows = self.sim.req.plans
        assert rows is not None
        seen: dict[UploadPlan, None] = {}
        for p in all_plans():
            e = p.effective(img, vid, aud)
            if e not in seen and rows[self._i][e.index][1] == rows[self._i][e.index][1]:  # not NaN
                seen[e] = None
        return list(seen)

    def _applied(self, plan: UploadPlan | None) -> UploadPlan:
        """``plan`` restricted to the current request's modalities (everything whole without plans)."""
        if plan is None or not self.upload_plans or plan == SEND_ALL:
            return SEND_ALL
        img, vid, aud = self._present[self._i]
        return plan.effective(img, vid, aud)

    def _missing(self, plan: UploadPlan) -> UserInputError:
        k = self.episode_info["start"] + self._i
        name = self.trace.meta.get("path") or self.trace.meta.get("source") or "in memory"
        return UserInputError(f"trace {name}: request {self.trace.ids[k]} has no outcome for upload-plan variant {plan.variant()!r} "
                              "(record it with `mllm-offload record --variants ...`, or turn upload plans off)")

    def current_edge_score(self) -> float:
        """The recorded edge score of the request about to be routed (a training-time baseline:
        :mod:`mllm_offload.agents.ppo.reward_scale`; never part of an observation)."""
        if self.sim is None or self._i >= self.n_requests:
            raise RuntimeError("no current request")
        return float(self.sim.req.edge_score[self._i])

    def current_expected_edge_score(self) -> float:
        """The edge's ``P(correct | difficulty, confidence)`` for the request about to be routed
        (synthetic traces; a training-time baseline like :meth:`current_edge_score`)."""
        if self.sim is None or self._i >= self.n_requests:
            raise RuntimeError("no current request")
        if not self.has_expected_scores:
            raise RuntimeError("this trace has no expected scores")
        return float(self._exp_edge[self.episode_info["start"] + self._i])  # type: ignore[index]

    # -- for the hindsight oracle (not for deployable policies) --------------------------------

    def counterfactual_rewards(self, candidates: Sequence[Thresholds | tuple[Thresholds, UploadPlan | None]],
                               expected: bool = False) -> list[float]:
        """Reward the current request would get under each candidate (state unchanged): thresholds,
        or thresholds and an upload plan.

        ``expected``: score each planned outcome with the *expected* score of whoever answers
        instead of the realised coin flip; latency, cost and energy stay the realised ones.
        Synthetic traces only (``UserInputError`` otherwise). On a profile's in-memory trace
        (:attr:`has_expected_scores`) that is the score every step reports,
        ``P(correct | difficulty, edge confidence)`` of the edge or of the cloud for the plan sent:
        one information set for every candidate, so a mode the edge's confidence gates is judged
        by the same numbers as one it does not (the two models' coins are correlated, and a cloud
        answer sent because the edge was unsure is right less often than ``P(cloud | difficulty)``).
        A synthetic trace read back from a file keeps only
        :data:`~mllm_offload.trace_format.EXPECTED_COLUMNS`: the cloud's
        ``P(correct | difficulty)`` and the edge's, given its confidence where ``tau_conf > 0``.
        """
        if self.sim is None or self._i >= self.n_requests:
            raise RuntimeError("no current request")
        pairs = [c if isinstance(c, tuple) else (c, None) for c in candidates]
        outs = []
        for th, plan in pairs:
            applied = self._applied(plan)
            try:
                outs.append(self.sim.plan(self._i, th, applied.index).outcome)
            except KeyError:
                raise self._missing(applied) from None
        if expected and self.has_expected_scores:
            outs = [dataclasses.replace(o, score=self._expected_score(o)) for o in outs]
        elif expected:
            edge, cloud, edge_conf = self.trace.expected_scores()
            k = self.episode_info["start"] + self._i
            pt = self.trace.plans
            cloud_by_plan = pt.cloud_score_expected if pt is not None else None
            outs = [dataclasses.replace(o, score=float(
                (cloud[k] if cloud_by_plan is None else cloud_by_plan[k, o.upload_plan]) if o.answered_by == "cloud"
                else edge_conf[k] if th.tau_conf > 0.0 else edge[k]))
                for (th, _), o in zip(pairs, outs)]
        return [reward_of(o, self.episode_weights, self.slo_s) for o in outs]
