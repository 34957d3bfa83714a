"""Discrete-event model of one edge device, its uplink and a cloud pool.

Resources and how they are scheduled:

* **edge**: one compute FIFO; service time = the trace's edge latency / edge speed. Or, with
  ``SystemConfig.edge_tier``, several devices running the model as a pipeline with dropouts
  (:mod:`mllm_offload.envs.tier_edge`).
* **uplink**: one FIFO link over a :class:`~mllm_offload.traces.bandwidth.BandwidthTrace`; an
  upload of ``n`` bytes starting at ``t`` takes ``trace.transfer_time(t, n)``; the request reaches
  the cloud half an RTT after its last byte, and the answer comes back half an RTT after the
  cloud finishes.
* **cloud**: ``c`` servers; service time = the trace's cloud latency / cloud speed; other
  tenants' load ``rho`` adds an M/M/c queueing delay (probability of waiting from Erlang C, an
  exponential wait otherwise), drawn per request.

Jobs reserve time on a resource in the order decisions are made; each job takes the earliest
idle gap that fits at or after the moment it is ready (first fit). For requests decided in
arrival order this is the FIFO of a real device, except that an EDGE_FIRST escalation, which
becomes ready only when the edge finishes, keeps its place ahead of later requests' jobs unless
they fit before it.

Modes (see :mod:`mllm_offload.decision`):

==============  ============================================================================
EDGE_FIRST      edge runs; answer accepted if ``conf >= tau_conf``, else upload + cloud after it
SPECULATIVE     edge and upload start together; at edge completion the answer is accepted if
                ``conf >= tau_conf`` and the cloud call cancelled (bytes already sent and cloud
                compute already spent stay charged; the cancel reaches the cloud half an RTT
                later); otherwise wait for the cloud. A cloud answer arriving before the edge
                finishes is used at once and the edge job stopped.
CLOUD           upload + cloud only
==============  ============================================================================

The router-side estimates that go into observations (bandwidth, RTT, cloud latency, edge
service time) are built only from measurements that completed before the current arrival.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import SystemConfig
from ..decision import Mode, Thresholds
from ..observation import RunningEstimates, SystemState
from ..traces.bandwidth import BandwidthTrace

if TYPE_CHECKING:
    from .tier_edge import EdgeJobs, TierEdge

_EDGE_FIRST, _SPECULATIVE, _CLOUD = Mode.EDGE_FIRST, Mode.SPECULATIVE, Mode.CLOUD

__all__ = ["Backlog", "EdgeCloudSystem", "Outcome", "Plan", "SimRequests", "Timeline", "erlang_c"]


class Timeline:
    """Reservations of one server: disjoint busy intervals sorted by start (seconds)."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def prune(self, now: float) -> None:
        """Forget intervals that ended by ``now`` (no later job can be ready before ``now``)."""
        ends = self.ends
        if ends and ends[0] <= now:
            k = 0
            while k < len(ends) and ends[k] <= now:
                k += 1
            del self.starts[:k], ends[:k]

    def earliest(self, ready: float, duration: float) -> float:
        """Earliest start >= ``ready`` of a gap that holds ``duration`` seconds."""
        starts, ends = self.starts, self.ends
        if not ends or ready >= ends[-1]:
            return ready
        t = ready
        for s, e in zip(starts, ends):
            if t + duration <= s:
                return t
            if e > t:
                t = e
        return t

    def earliest_transfer(self, ready: float, n_bytes: float, bw: BandwidthTrace, offset: float = 0.0) -> tuple[float, float]:
        """(start, duration) of the earliest gap in which ``n_bytes`` fit on link ``bw``.

        Times are episode seconds; the link's own clock is ``offset`` seconds ahead.
        """
        starts, ends = self.starts, self.ends
        if not ends or ready >= ends[-1]:
            return ready, bw.transfer_time(ready + offset, n_bytes)
        t = ready
        min_s = n_bytes / bw.max_bps  # no gap shorter than this can hold the transfer
        for s, e in zip(starts, ends):
            if s - t >= min_s:
                d = bw.transfer_time(t + offset, n_bytes)
                if t + d <= s:
                    return t, d
            if e > t:
                t = e
        return t, bw.transfer_time(t + offset, n_bytes)

    def reserve(self, start: float, end: float) -> None:
        """Mark ``[start, end)`` busy; touching intervals are merged (back-to-back jobs)."""
        if end <= start:
            return
        starts, ends = self.starts, self.ends
        k = bisect.bisect_left(starts, start)
        if k > 0 and ends[k - 1] >= start:  # continues the previous interval
            k -= 1
            ends[k] = max(ends[k], end)
        else:
            starts.insert(k, start)
            ends.insert(k, end)
        while k + 1 < len(starts) and starts[k + 1] <= ends[k]:  # now touches the next one
            ends[k] = max(ends[k], ends[k + 1])
            del starts[k + 1], ends[k + 1]


class Backlog:
    """Jobs a router knows are outstanding: enqueued at or before ``now`` and not yet finished.

    Jobs may be registered before they are enqueued (an escalation decided now is enqueued when
    the edge finishes); ``advance(now)`` moves them in and drops finished ones, in O(log n).
    """

    __slots__ = ("_pending", "active", "total")

    def __init__(self) -> None:
        self._pending: list[tuple[float, float, float, float]] = []  # (enqueue, end, start, amount)
        self.active: list[tuple[float, float, float]] = []  # heap of (end, start, amount)
        self.total = 0.0  # sum of ``amount`` over active jobs

    def add(self, enqueue: float, start: float, end: float, amount: float = 0.0, now: float = -math.inf) -> None:
        """Register a job; ``now`` (if known) lets one already enqueued skip the pending heap."""
        if enqueue <= now:
            if end > now:
                heapq.heappush(self.active, (end, start, amount))
                self.total += amount
        else:
            heapq.heappush(self._pending, (enqueue, end, start, amount))

    def advance(self, now: float) -> None:
        pend, act = self._pending, self.active
        while pend and pend[0][0] <= now:
            _, e, s, amt = heapq.heappop(pend)
            if e > now:
                heapq.heappush(act, (e, s, amt))
                self.total += amt
        while act and act[0][0] <= now:
            self.total -= heapq.heappop(act)[2]
        if not act:
            self.total = 0.0

    def __len__(self) -> int:
        return len(self.active)


@dataclass(slots=True)
class Outcome:
    """What happened to one request (seconds, bytes, USD, joules)."""

    mode: Mode
    answered_by: str  # "edge" or "cloud"
    latency_s: float
    score: float
    bytes_sent: float
    cloud_called: bool
    cancelled: bool
    cloud_tokens: float  # input + output tokens charged by the cloud
    cloud_cost_usd: float
    edge_busy_s: float
    upload_s: float
    energy_j: float
    edge_confidence: float
    upload_plan: int = 0  # UploadPlan.index of what an offload sends (0: every modality whole)


@dataclass(slots=True)
class Plan:
    """An outcome plus the reservations and measurements that committing it records."""

    outcome: Outcome
    now: float = 0.0  # the request's arrival, seconds
    edge: tuple[float, float, float] | None = None  # (enqueue, start, end)
    edge_service_s: float = 0.0
    edge_jobs: EdgeJobs | None = None  # an edge tier's stage jobs (device, start, end)
    upload: tuple[float, float, float, float] | None = None  # (enqueue, start, end, bytes)
    server: tuple[int, float, float] | None = None  # (index, start, end)
    call: tuple[float, float] | None = None  # cloud call (start, end) as the router sees it
    response: tuple[float, float, float] | None = None  # (time, response_s, rtt_s)


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``servers`` at utilisation ``load``."""
    if load <= 0.0:
        return 0.0
    a = servers * load
    term, total = 1.0, 1.0
    for k in range(1, servers):
        term *= a / k
        total += term
    last = term * a / servers / (1.0 - load)
    return last / (total + last)


@dataclass
class SimRequests:
    """Per-request inputs of the simulator (plain Python floats for speed)."""

    arrival: list[float]
    payload: list[float]
    edge_s: list[float]
    cloud_s: list[float]
    conf: list[float]
    edge_score: list[float]
    cloud_score: list[float]
    in_tokens: list[float]
    out_tokens: list[float]
    mas_score: list[float]
    rtt: list[float]
    bg_delay: list[float]
    #: per request and upload plan (UploadPlan.index): (payload bytes, cloud seconds, input tokens,
    #: output tokens, cloud score), NaN where the trace has no outcome; None: plans not simulated
    plans: list[list[tuple[float, float, float, float, float]]] | None = None


class EdgeCloudSystem:
    """Simulates requests one at a time, in arrival order.

    Args:
        cfg: system parameters.
        bandwidth: the uplink trace; ``bw_offset_s`` shifts where the episode starts in it.
        requests: per-request inputs (see :class:`SimRequests`), already scaled for speed factors.
        tier: the edge as an edge tier for this episode (``None``: one edge device).
    """

    def __init__(self, cfg: SystemConfig, bandwidth: BandwidthTrace, bw_offset_s: float, requests: SimRequests,
                 tier: TierEdge | None = None) -> None:
        self.cfg = cfg
        self.bw = bandwidth
        self.offset = bw_offset_s
        self.req = requests
        self.edge = Timeline()
        self.uplink = Timeline()
        self.servers = [Timeline() for _ in range(cfg.cloud_servers)]
        self.tier = tier
        self._timelines = [self.edge, self.uplink, *self.servers, *(tier.timelines if tier is not None else ())]
        self._events: list[tuple[float, int, float, float]] = []  # (time, kind, a, b)
        self._edge_jobs = Backlog()
        self._upload_jobs = Backlog()  # amount = bytes
        self._calls = Backlog()
        #: the router's running estimates (the same class the deployed router uses)
        self.estimates = RunningEstimates(cfg.bw_window, cfg.bw_prior_mbps, cfg.rtt_s, cfg.latency_ema)
        self._price_in = cfg.price_in_usd_per_mtok / 1e6
        self._price_out = cfg.price_out_usd_per_mtok / 1e6

    # -- observation side ----------------------------------------------------------------------

    def observe(self, i: int) -> SystemState:
        """Router-side state at request ``i``'s arrival (only measurements completed by then)."""
        now = self.req.arrival[i]
        ev = self._events
        est = self.estimates
        while ev and ev[0][0] <= now:
            _, kind, a, b = heapq.heappop(ev)
            if kind == 0:  # upload measured: a = Mbps
                est.upload(a)
            elif kind == 1:  # cloud response: a = response time, b = rtt
                est.cloud_response(a, b)
            else:  # edge job done: a = service time
                est.edge_done(a)
        for tl in self._timelines:
            if tl.ends and tl.ends[0] <= now:
                tl.prune(now)
        self._edge_jobs.advance(now)
        self._calls.advance(now)
        ups = self._upload_jobs
        ups.advance(now)
        queued = ups.total
        if ups.active:  # the upload in progress has already sent part of its bytes
            _e, s, _nb = ups.active[0]
            if s < now:
                queued -= self.bw.bytes_between(s + self.offset, now + self.offset)
        state = est.state(queued, len(self._edge_jobs), len(self._calls))
        if self.tier is not None:
            state.edge_capacity = self.tier.seen_capacity(now)
        return state

    # -- planning (pure) -----------------------------------------------------------------------

    def _cloud_path(self, i: int, ready: float, payload: float, svc: float) -> tuple[float, float, int, float, float, float]:
        """(upload start, upload end, server, compute start, compute end, answer time) of ``payload``
        bytes needing ``svc`` seconds of cloud compute."""
        r = self.req
        u0, du = self.uplink.earliest_transfer(ready, payload, self.bw, self.offset)
        u1 = u0 + du
        half = 0.5 * r.rtt[i]
        at_cloud = u1 + half + r.bg_delay[i]
        best_k, best_s = 0, math.inf
        for k, srv in enumerate(self.servers):
            ends = srv.ends
            s = at_cloud if not ends or at_cloud >= ends[-1] else srv.earliest(at_cloud, svc)
            if s < best_s:
                best_k, best_s = k, s
                if s == at_cloud:  # cannot start earlier than this
                    break
        return u0, u1, best_k, best_s, best_s + svc, best_s + svc + half

    def plan(self, i: int, th: Thresholds, upload_plan: int = 0) -> Plan:
        """What would happen to request ``i`` under ``th``, sending ``upload_plan``
        (:attr:`~mllm_offload.decision.UploadPlan.index`) on an offload (no state changes).

        Raises ``KeyError`` when the requests have no outcome for that plan (the caller names it)."""
        r = self.req
        if upload_plan:
            if r.plans is None:
                raise KeyError(upload_plan)
            payload, cloud_s, in_tok, out_tok, c_score = r.plans[i][upload_plan]
            if cloud_s != cloud_s:  # NaN: no outcome recorded for this variant
                raise KeyError(upload_plan)
        else:
            payload, cloud_s, in_tok, out_tok, c_score = r.payload[i], r.cloud_s[i], r.in_tokens[i], r.out_tokens[i], r.cloud_score[i]
        a = r.arrival[i]
        s_mas = r.mas_score[i]
        mode = _CLOUD if s_mas >= th.tau_high else _SPECULATIVE if s_mas >= th.tau_low else _EDGE_FIRST
        accept = r.conf[i] >= th.tau_conf
        e_svc = e_busy = r.edge_s[i]
        p = Plan(None, a)  # type: ignore[arg-type]
        edge_busy = upload_s = bytes_sent = tokens = cost = 0.0
        cloud_called = cancelled = False
        tier = self.tier
        if mode is not _CLOUD:
            if tier is None:
                es = self.edge.earliest(a, e_svc)
                te = es + e_svc
            else:  # a pipeline: the router measures start to end; the devices are busy for the stage times
                es, te, p.edge_jobs = tier.schedule(a, e_svc)
                e_busy = tier.busy_s(p.edge_jobs)
                e_svc = te - es
        if mode is _EDGE_FIRST and accept:
            p.edge = (a, es, te)
            p.edge_service_s = e_svc
            edge_busy = e_busy
            answered, latency, score = "edge", te - a, r.edge_score[i]
        else:
            ready = te if mode is _EDGE_FIRST else a
            u0, u1, k, c0, c1, resp = self._cloud_path(i, ready, payload, cloud_s)
            cloud_called = True
            half = 0.5 * r.rtt[i]
            if mode is _SPECULATIVE and resp < te:  # cloud first: stop the edge
                answered, latency, score = "cloud", resp - a, c_score
                if es < resp:
                    p.edge = (a, es, resp)
                    edge_busy = resp - es if tier is None else tier.busy_s(p.edge_jobs or (), resp)
            elif mode is _SPECULATIVE and accept:  # accept edge, cancel the cloud call
                answered, latency, score = "edge", te - a, r.edge_score[i]
                p.edge = (a, es, te)
                p.edge_service_s = e_svc
                edge_busy = e_busy
                cancelled = True
                if u0 < te:
                    ue = min(u1, te)
                    sent = payload if ue == u1 else self.bw.bytes_between(u0 + self.offset, ue + self.offset)
                    p.upload = (a, u0, ue, sent)
                    bytes_sent, upload_s = sent, ue - u0
                t_cancel = te + half
                if c0 < t_cancel:
                    ce = min(c1, t_cancel)
                    p.server = (k, c0, ce)
                    frac = (ce - c0) / (c1 - c0) if c1 > c0 else 1.0
                    tokens = in_tok + frac * out_tok
                    cost = in_tok * self._price_in + frac * out_tok * self._price_out
                p.call = (a, te)
            else:  # cloud answers (CLOUD, escalation, or speculation that was not accepted)
                answered, latency, score = "cloud", resp - a, c_score
                if mode is not _CLOUD:
                    p.edge = (a, es, te)
                    p.edge_service_s = e_svc
                    edge_busy = e_busy
            if not cancelled:
                p.upload = (ready, u0, u1, payload)
                bytes_sent, upload_s = payload, u1 - u0
                p.server = (k, c0, c1)
                tokens = in_tok + out_tok
                cost = in_tok * self._price_in + out_tok * self._price_out
                p.call = (ready, resp)
                p.response = (resp, resp - u1, r.rtt[i])
        cfg = self.cfg
        p.outcome = Outcome(
            mode=mode, answered_by=answered, latency_s=latency, score=score,
            bytes_sent=bytes_sent, cloud_called=cloud_called, cancelled=cancelled,
            cloud_tokens=tokens, cloud_cost_usd=cost, edge_busy_s=edge_busy, upload_s=upload_s,
            energy_j=edge_busy * cfg.edge_power_w + upload_s * cfg.radio_power_w,
            edge_confidence=r.conf[i], upload_plan=upload_plan if cloud_called else 0,
        )
        return p

    # -- committing ------------------------------------------------------------------------------

    def commit(self, p: Plan) -> Outcome:
        """Apply a plan's reservations and schedule its measurements; returns its outcome."""
        ev = self._events
        now = p.now
        if p.edge is not None:
            q, s, e = p.edge
            if p.edge_jobs is None:
                self.edge.reserve(s, e)
            else:
                self.tier.reserve(p.edge_jobs, e)  # type: ignore[union-attr]
            self._edge_jobs.add(q, s, e, 0.0, now)
            if p.edge_service_s > 0.0:
                heapq.heappush(ev, (e, 2, p.edge_service_s, 0.0))
        if p.upload is not None:
            q, s, e, nb = p.upload
            self.uplink.reserve(s, e)
            self._upload_jobs.add(q, s, e, nb, now)
            if e > s:
                heapq.heappush(ev, (e, 0, nb * 8e-6 / (e - s), 0.0))
        if p.server is not None:
            k, s, e = p.server
            self.servers[k].reserve(s, e)
        if p.call is not None:
            self._calls.add(p.call[0], p.call[0], p.call[1], 0.0, now)
        if p.response is not None:
            t, resp_s, rtt = p.response
            heapq.heappush(ev, (t, 1, resp_s, rtt))
        return p.outcome

    def step(self, i: int, th: Thresholds, upload_plan: int = 0) -> Outcome:
        """Plan and commit request ``i``."""
        return self.commit(self.plan(i, th, upload_plan))
