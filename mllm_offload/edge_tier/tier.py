"""An edge tier over time: the modes a cluster runs in as devices drop out and come back.

:class:`EdgeTier` holds one model's plan on one cluster (the planner's, or a baseline split),
its backups, and the **mode** the tier runs in for every set of devices that are down:

==================  ===========================================================================
devices down        mode
==================  ===========================================================================
none                the plan itself (*healthy*)
some, each stage    *takeover*: every lost stage runs on its backup device, beside that
has a live backup   device's own stage (their times add up on it); nothing to load. When a
                    re-plan on the survivors runs more than 5 % faster, the survivors load it
                    in the background and the tier switches to it once loaded (AdaptLink's
                    switch at once, re-plan later)
otherwise           *re-planned*: the same split method on the survivors; each survivor loads
                    the weights it lacks at its ``load_mbps``
no feasible split   *down*: the tier cannot run (capacity 0) until a device comes back
==================  ===========================================================================

A mode's **capacity** is its throughput over the healthy plan's (1 healthy, 0 down).

Over an episode, :meth:`EdgeTier.schedule` turns the devices' outages into **segments** of time
with one mode each (the simulator's edge: :mod:`mllm_offload.envs.tier_edge`):

==================  ===========================================================================
event               what the tier does (assumptions marked [?])
==================  ===========================================================================
a device the        the segment ends; requests in flight restart [?] (conservative: AdaptLink
running mode uses   re-sends only the lost stage's input). The tier stalls for ``detect_s`` +
drops             the time to load the new mode's missing weights + re-sending the lost stage's
                    input activations (the switch of :func:`~mllm_offload.edge_tier.planner.dropout_costs`);
                    a router learns of the loss only after ``detect_s``
another device      nothing changes (its weights stay loaded: it was a backup or idle)
drops
a device returns    after ``detect_s`` (it registers) + loading what the target mode's devices
                    lack, the tier switches to the mode of the devices now up; the old mode
                    serves until then and its requests in flight finish [?]. A returning device
                    kept the weights it held [?]
==================  ===========================================================================

Device availability (:func:`draw_outages`): each device alternates exponential up times (mean
``mean_up_s``) and down times (mean ``mean_down_s``), independently, starting from the
stationary state (down with probability ``mean_down / (mean_up + mean_down)``) [?]: phones and
tablets leave the Wi-Fi, sleep or run out of battery; no public trace of home edge devices'
availability was found, so the defaults (10 min up, 1 min down) are assumptions to vary.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..config import EdgeTierConfig
from .devices import REFERENCE_FLOPS_PER_S, EdgeCluster, resolve_devices
from .model import BlockCosts, load_model_config
from .planner import (
    DETECT_S,
    Backup,
    InfeasiblePlanError,
    Plan,
    evaluate_plan,
    place_backups,
    plan_partition,
    proportional_partition,
    uniform_partition,
)

__all__ = ["SPLITS", "EdgeTier", "Segment", "TierMode", "draw_outages"]

#: a takeover is followed by a background re-plan when that gains more than this much capacity
_REPLAN_GAIN = 0.05

#: split methods by name (the planner and the two baselines of :mod:`.planner`)
SPLITS: dict[str, Callable[[BlockCosts, EdgeCluster], Plan]] = {
    "planner": plan_partition,
    "uniform": uniform_partition,
    "proportional": proportional_partition,
}


@dataclass(frozen=True)
class TierMode:
    """How the tier runs while the devices ``down`` are gone (``hosts`` empty: it cannot run)."""

    down: frozenset[int]
    kind: str  #: ``healthy``, ``takeover``, ``re-planned`` or ``down``
    hosts: tuple[int, ...]  #: device index of each stage
    bounds: tuple[tuple[int, int], ...]  #: blocks ``[start, stop)`` of each stage
    stage_s: tuple[float, ...]  #: compute + transfer of each stage for the reference request, seconds
    bottleneck_s: float  #: the busiest device's seconds per reference request
    capacity: float  #: throughput over the healthy plan's, in [0, 1] (may exceed 1 only by rounding)

    @property
    def runs(self) -> bool:
        return bool(self.hosts)


@dataclass(frozen=True)
class Segment:
    """``[start, end)`` seconds of an episode in one mode (``None``: switching or down, no progress).

    ``seen_capacity`` is what a router knows then (a loss is known ``detect_s`` after it happens);
    ``ends_by_dropout``: the segment ends because a device its mode uses dropped, so the
    requests still in the tier at ``end`` restart in the next mode that runs.
    """

    start: float
    end: float
    mode: TierMode | None
    seen_capacity: float
    ends_by_dropout: bool = False


def draw_outages(rng: np.random.Generator, n_devices: int, horizon_s: float, mean_up_s: float,
                 mean_down_s: float) -> list[list[tuple[float, float]]]:
    """Per device, its outages ``(down_at, up_at)`` in seconds over ``[0, horizon_s)`` (the last one
    may end later; one starting at 0 means the device is down when the episode starts)."""
    if mean_up_s <= 0 or mean_down_s < 0 or horizon_s < 0:
        raise ValueError("draw_outages: need mean_up_s > 0, mean_down_s >= 0, horizon_s >= 0")
    out: list[list[tuple[float, float]]] = []
    for _ in range(n_devices):
        spans: list[tuple[float, float]] = []
        if mean_down_s > 0:
            t = 0.0
            if rng.random() < mean_down_s / (mean_up_s + mean_down_s):  # the stationary state at 0
                t = float(rng.exponential(mean_down_s))
                spans.append((0.0, t))
            while True:
                t += float(rng.exponential(mean_up_s))
                if t >= horizon_s:
                    break
                d = float(rng.exponential(mean_down_s))
                spans.append((t, t + d))
                t += d
        out.append(spans)
    return out


class EdgeTier:
    """One model's plan on one cluster, its backups, and its modes under dropouts.

    Args:
        costs: the model's per-block costs for the reference request (:meth:`ModelSpec.costs`).
        cluster: the devices in pipeline order.
        split: ``planner``, ``uniform`` or ``proportional`` (:data:`SPLITS`); a re-plan after a
            dropout uses the same method.
        backups: place a backup of every stage on spare memory (:func:`place_backups`).
        detect_s: seconds to declare a device gone.

    Raises :class:`InfeasiblePlanError` when the split does not fit the devices' memory.
    """

    def __init__(self, costs: BlockCosts, cluster: EdgeCluster, split: str = "planner", backups: bool = True,
                 detect_s: float = DETECT_S) -> None:
        if split not in SPLITS:
            raise ValueError(f"split: unknown {split!r} (known: {', '.join(SPLITS)})")
        self.costs, self.cluster, self.split, self.detect_s = costs, cluster, split, float(detect_s)
        self.plan = SPLITS[split](costs, cluster)
        if not self.plan.fits_memory:
            raise InfeasiblePlanError(f"the {split} split of the model does not fit the devices' memory; use the planner, "
                                      "more devices or quantized weights")
        self.backups: tuple[Backup, ...] = place_backups(self.plan, costs, cluster) if backups else ()
        #: seconds the whole model takes on one reference device (``REFERENCE_FLOPS_PER_S``) per
        #: reference request: a request's edge time in a trace is read as this, and each stage
        #: takes its share ``stage_s / reference_s`` of it
        self.reference_s = float(costs.flops.sum()) / REFERENCE_FLOPS_PER_S
        self._modes: dict[frozenset[int], TierMode] = {}
        self.healthy = self.mode(frozenset())

    @classmethod
    def from_config(cls, cfg: EdgeTierConfig) -> EdgeTier:
        """The tier a :class:`~mllm_offload.config.EdgeTierConfig` names (``UserInputError`` on a bad name)."""
        return _tier_from_config(cfg)

    def __len__(self) -> int:
        return len(self.cluster)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary: devices, split, stages, throughput and latency of the reference request."""
        return {"devices": self.cluster.names, "split": self.split, "backups": bool(self.backups),
                "stages": [{"device": s.device, "blocks": f"{s.first_block}..{s.last_block}", "stage_s": s.stage_s}
                           for s in self.plan.stages],
                "throughput_rps": self.plan.throughput_rps, "latency_s": self.plan.latency_s, "reference_s": self.reference_s}

    # -- modes -----------------------------------------------------------------------------------

    def _as_mode(self, down: frozenset[int], kind: str, plan: Plan, hosts: Sequence[int]) -> TierMode:
        base = self._modes[frozenset()].bottleneck_s if down else plan.bottleneck_s
        return TierMode(down, kind, tuple(hosts), tuple(plan.bounds), tuple(s.stage_s for s in plan.stages), plan.bottleneck_s,
                        base / plan.bottleneck_s)

    def mode(self, down: frozenset[int]) -> TierMode:
        """The mode while the devices ``down`` (indices) are gone (cached)."""
        m = self._modes.get(down)
        if m is None:
            m = self._modes[down] = self._mode_of(down)
        return m

    def _mode_of(self, down: frozenset[int]) -> TierMode:
        if not down:
            return self._as_mode(down, "healthy", self.plan, self.plan.hosts)
        names = self.cluster.names
        hosts = list(self.plan.hosts)
        for k, h in enumerate(hosts):
            if h in down:
                b = self.backups[k].device if self.backups else None
                if b is None or names.index(b) in down:
                    break
                hosts[k] = names.index(b)
        else:
            plan = evaluate_plan(self.costs, self.cluster, self.plan.bounds, hosts, label=f"{self.plan.label}, takeover")
            return self._as_mode(down, "takeover", plan, hosts)
        return self.replanned(down)

    def replanned(self, down: frozenset[int]) -> TierMode:
        """The mode of the same split method on the devices still up (``down`` kind if none fits)."""
        key = frozenset({-1, *down})  # cached beside the modes (-1 marks a re-plan)
        m = self._modes.get(key)
        if m is None:
            m = self._modes[key] = self._replanned(down)
        return m

    def _replanned(self, down: frozenset[int]) -> TierMode:
        if not down:
            return self.healthy
        survivors = [i for i in range(len(self.cluster)) if i not in down]
        if survivors and len(survivors) <= len(self.costs):
            sub = self.cluster
            for i in sorted(down, reverse=True):
                sub = sub.without(i)
            replan: Plan | None
            try:
                replan = SPLITS[self.split](self.costs, sub)
            except InfeasiblePlanError:
                replan = None
            if replan is not None and replan.fits_memory:
                plan = replan
                return self._as_mode(down, "re-planned", plan, [survivors[h] for h in plan.hosts])
        return TierMode(down, "down", (), (), (), math.inf, 0.0)

    # -- switching -------------------------------------------------------------------------------

    def _held_at_start(self, mode: TierMode) -> np.ndarray:
        held = np.zeros((len(self.cluster), len(self.costs)), dtype=bool)
        for k, h in enumerate(self.plan.hosts):  # every device holds its stage of the plan ...
            held[h, slice(*self.plan.bounds[k])] = True
        for b in self.backups:  # ... and its backups
            if b.device is not None:
                held[self.cluster.names.index(b.device), slice(*self.plan.bounds[b.stage])] = True
        for (i, j), h in zip(mode.bounds, mode.hosts):  # a re-planned start is deployed already
            held[h, i:j] = True
        return held

    def load_s(self, mode: TierMode, held: np.ndarray) -> float:
        """Seconds until every host of ``mode`` holds its blocks (in parallel, at ``load_mbps``)."""
        need = np.zeros_like(held)
        for (i, j), h in zip(mode.bounds, mode.hosts):
            need[h, i:j] = True
        lack = (need & ~held).astype(float) @ self.costs.param_bytes
        rates = np.array([d.load_bytes_per_s for d in self.cluster.devices])
        return float(np.max(lack / rates)) if len(lack) else 0.0

    def _resend_s(self, old: TierMode, new: TierMode, lost: int) -> float:
        """Re-sending the input activations of the stages the lost device ran to their new hosts."""
        if old.bounds != new.bounds:  # re-planned: requests restart from the first stage
            return 0.0
        out = 0.0
        for k, h in enumerate(old.hosts):
            if h == lost and k > 0:
                i = new.bounds[k][0]
                out = max(out, self.cluster.transfer_s(new.hosts[k - 1], new.hosts[k], float(self.costs.out_bytes[i - 1])))
        return out

    def schedule(self, outages: Sequence[Sequence[tuple[float, float]]]) -> list[Segment]:
        """The episode's segments (the last one ends at ``inf``) given each device's outages."""
        if len(outages) != len(self.cluster):
            raise ValueError(f"outages: one list per device ({len(self.cluster)}), got {len(outages)}")
        events: list[tuple[float, int, int]] = []  # (time, 0 down / 1 up / 2 detected, device)
        down: set[int] = set()
        for d, spans in enumerate(outages):
            for a, b in spans:
                if a <= 0.0:
                    down.add(d)
                else:
                    events.append((a, 0, d))
                if b > 0.0:
                    events.append((b, 1, d))
        heapq.heapify(events)
        mode = self.mode(frozenset(down))
        held = self._held_at_start(mode)
        segs: list[Segment] = []
        start, cur, seen = 0.0, (mode if mode.runs else None), mode.capacity
        pending: tuple[float, TierMode] | None = None  # a switch in progress: (when, to what)

        def close(t: float, by_dropout: bool) -> None:
            if t > start:
                segs.append(Segment(start, t, cur, seen, by_dropout))

        while events or pending is not None:
            if pending is not None and (not events or pending[0] <= events[0][0]):
                t, target = pending
                pending = None
                close(t, False)
                start, cur, seen = t, target, target.capacity
                for (i, j), h in zip(target.bounds, target.hosts):
                    held[h, i:j] = True
                if target.kind == "takeover":  # re-plan in the background when that is faster
                    alt = self.replanned(target.down)
                    if alt.runs and alt.capacity > target.capacity * (1.0 + _REPLAN_GAIN):
                        pending = (t + self.load_s(alt, held), alt)
                continue
            t, kind, d = heapq.heappop(events)
            if kind == 2:  # the router learns of a loss: a stall shows as capacity 0 from now on
                if cur is None and seen > 0.0:
                    close(t, False)
                    start, seen = t, 0.0
                continue
            if kind == 0:
                down.add(d)
            else:
                down.discard(d)
            target = self.mode(frozenset(down))
            if kind == 0 and cur is not None and d in cur.hosts:  # lost a device in use: stall, restart
                close(t, True)
                start, old, cur = t, cur, None
                heapq.heappush(events, (t + self.detect_s, 2, d))
                pending = (t + self.detect_s + self.load_s(target, held) + self._resend_s(old, target, d), target) if target.runs else None
            elif kind == 0 and cur is not None:  # an idle device dropped: the running mode goes on
                if pending is not None:
                    pending = (max(pending[0], t + self.detect_s + self.load_s(target, held)), target) if target.runs else None
            elif cur is not None and target.hosts == cur.hosts and target.bounds == cur.bounds:
                pending = None  # already running as the target mode
            elif target.runs:  # a switch to the target; one already under way is not hurried
                when = t + self.detect_s + self.load_s(target, held)
                pending = (when if pending is None else max(when, pending[0]), target)
            else:
                pending = None
        close(math.inf, False)
        return segs


@lru_cache(maxsize=8)
def _tier_from_config(cfg: EdgeTierConfig) -> EdgeTier:
    model = load_model_config(cfg.model, weight_dtype=cfg.weight_dtype)
    return EdgeTier(model.costs(), resolve_devices(cfg.devices), cfg.split, cfg.backups, cfg.detect_s)
