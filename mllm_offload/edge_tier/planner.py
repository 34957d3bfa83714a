"""Partition a model's blocks over an ordered list of devices; backups; what a dropout costs.

A **plan** gives each device, in the cluster's order, one contiguous range of blocks (a
*stage*); requests flow through the stages as a pipeline. Per request and stage:

==================  ======  ===================================================================
quantity            unit    definition
==================  ======  ===================================================================
compute             s       FLOPs of the stage's blocks / the device's ``flops_per_s``
transfer            s       link latency + activation bytes of the stage's last block / link
                            bandwidth, to the next stage's device (0 for the last stage)
stage time          s       compute + transfer (a device does not overlap them: conservative)
memory              bytes   weights of the stage (tied weights once) + one request's KV cache
occupancy           s       per device: the sum of the stage times it hosts (one stage, unless
                            it has taken over a dropped device's stage)
throughput          req/s   1 / the largest occupancy (the pipeline's steady state when full)
latency             s       the sum of the stage times (one request through an empty pipeline)
==================  ======  ===================================================================

Planners:

* :func:`plan_partition` (AdaptLink-style): minimises the slowest stage subject to every
  device's memory, by dynamic programming over split points, exact over contiguous splits
  (``O(devices x blocks^2)``); among the plans with that bottleneck it takes the one of least
  latency (a second exact pass). Every device gets at least one block.
* :func:`uniform_partition`: the baseline, an equal number of blocks per device (the first
  ``blocks mod devices`` devices one more), whatever their speed or memory.
* :func:`proportional_partition`: a stronger baseline, blocks in proportion to FLOP/s (largest
  remainder), blind to memory, links and unequal block sizes.

**Backups** (:func:`place_backups`): each stage gets a copy of its weights on another device with
enough spare memory (its memory less its own stage and the backups it already holds), largest
stages placed first, on the device whose pipeline would be fastest after taking the stage over.

**Dropout** (:func:`dropout_costs`), per device; times from the failure until the pipeline takes
work again (assumptions marked [?]):

==================  ===========================================================================
with a backup       ``detect_s`` (default :data:`DETECT_S`: 3 missed heartbeats at 100 ms [?]) +
(switch)            re-route: the upstream device re-sends the in-flight request's input
                    activations to the backup device (link latency + bytes / bandwidth). The
                    backup device then runs the stage beside its own (its occupancy adds up).
without a backup    ``detect_s`` + re-deploy: the survivors are re-planned (the same dynamic
(redeploy)          programme on one device fewer) and each loads the weights it lacks, in
                    parallel, at its ``load_mbps`` (default: its link rate, the weights fetched
                    from a peer [?]). No plan fits in the survivors' memory: no recovery.
==================  ===========================================================================
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserInputError
from .devices import EdgeCluster
from .model import BlockCosts

__all__ = [
    "DETECT_S",
    "Backup",
    "Comparison",
    "Dropout",
    "InfeasiblePlanError",
    "Plan",
    "Stage",
    "compare_plans",
    "dropout_costs",
    "evaluate_plan",
    "pipeline_completions",
    "place_backups",
    "plan_partition",
    "proportional_partition",
    "uniform_partition",
]

#: seconds to declare a device gone: 3 missed heartbeats at 100 ms [?]
DETECT_S = 0.3
_TOL = 1e-12


class InfeasiblePlanError(UserInputError):
    """No contiguous split of the model fits the devices' memory (or more devices than blocks)."""


@dataclass(frozen=True)
class Stage:
    """One contiguous range of blocks ``[start, stop)`` on one device."""

    device: str
    start: int
    stop: int
    first_block: str
    last_block: str
    compute_s: float
    transfer_s: float
    memory_bytes: float
    memory_available_bytes: float

    @property
    def stage_s(self) -> float:
        return self.compute_s + self.transfer_s

    @property
    def n_blocks(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Plan:
    """Stages in pipeline order, with the figures of the pipeline they make."""

    label: str
    stages: tuple[Stage, ...]
    hosts: tuple[int, ...]  #: device index of each stage (repeats after a takeover)
    occupancy_s: tuple[float, ...]  #: per device of the cluster (0 when it hosts nothing)
    bottleneck_s: float
    latency_s: float
    fits_memory: bool
    tokens: int

    @property
    def throughput_rps(self) -> float:
        return 1.0 / self.bottleneck_s if self.bottleneck_s > 0 else float("inf")

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return [(s.start, s.stop) for s in self.stages]

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "throughput_rps": self.throughput_rps, "bottleneck_s": self.bottleneck_s,
                "latency_s": self.latency_s, "fits_memory": self.fits_memory, "tokens_per_request": self.tokens,
                "stages": [{**asdict(s), "stage_s": s.stage_s, "n_blocks": s.n_blocks} for s in self.stages]}


def evaluate_plan(costs: BlockCosts, cluster: EdgeCluster, bounds: Sequence[tuple[int, int]], hosts: Sequence[int] | None = None,
                  label: str = "plan") -> Plan:
    """The figures of stages ``bounds`` (contiguous, covering every block) hosted on ``hosts`` (default: device k runs stage k)."""
    hosts = list(range(len(bounds))) if hosts is None else list(hosts)
    if len(hosts) != len(bounds):
        raise ValueError("one host per stage")
    if not bounds or bounds[0][0] != 0 or bounds[-1][1] != len(costs) or any(a[1] != b[0] for a, b in itertools.pairwise(bounds)):
        raise ValueError(f"stages {bounds} do not cover blocks 0..{len(costs)} contiguously")
    occupancy = [0.0] * len(cluster)
    memory = [0.0] * len(cluster)
    stages, latency = [], 0.0
    for k, ((i, j), h) in enumerate(zip(bounds, hosts)):
        dev = cluster.devices[h]
        compute = float(costs.flops[i:j].sum()) / dev.flops_per_s
        transfer = cluster.transfer_s(h, hosts[k + 1], float(costs.out_bytes[j - 1])) if k + 1 < len(bounds) else 0.0
        mem = costs.range_memory(i, j)
        occupancy[h] += compute + transfer
        memory[h] += mem
        latency += compute + transfer
        stages.append(Stage(dev.name, i, j, costs.names[i], costs.names[j - 1], compute, transfer, mem, dev.memory_bytes))
    fits = all(memory[h] <= cluster.devices[h].memory_bytes * (1 + _TOL) for h in set(hosts))
    return Plan(label, tuple(stages), tuple(hosts), tuple(occupancy), max(occupancy), latency, fits, costs.tokens)


def _stage_matrices(costs: BlockCosts, cluster: EdgeCluster) -> tuple[np.ndarray, np.ndarray]:
    """``cost[k, i, j]``: stage time of blocks [i, j) on device k (``inf`` where it does not fit); ``memory[i, j]``."""
    n, m = len(costs), len(cluster)
    cum = np.concatenate([[0.0], np.cumsum(costs.flops)])
    work = cum[None, :] - cum[:, None]  # [i, j]
    mem = costs.memory_matrix()
    cost = np.full((m, n + 1, n + 1), np.inf)
    for k, dev in enumerate(cluster.devices):
        transfer = np.zeros(n + 1)
        if k + 1 < m:
            bps, lat = cluster.link(k, k + 1)
            transfer[1:] = lat + costs.out_bytes / bps
        c = work / dev.flops_per_s + transfer[None, :]
        ok = mem <= dev.memory_bytes * (1 + _TOL)
        cost[k] = np.where(ok, c, np.inf)
    return cost, mem


def _infeasible(costs: BlockCosts, cluster: EdgeCluster) -> InfeasiblePlanError:
    need, have = costs.range_memory(0, len(costs)), sum(d.memory_bytes for d in cluster.devices)
    biggest = int(np.argmax(costs.param_bytes + costs.state_bytes))
    big = float(costs.param_bytes[biggest] + costs.state_bytes[biggest])
    if need > have:
        why = f"the model needs {need / 1e9:.2f} GB, the {len(cluster)} devices have {have / 1e9:.2f} GB in all"
    elif big > max(d.memory_bytes for d in cluster.devices):
        why = f"block {costs.names[biggest]} alone needs {big / 1e9:.2f} GB, more than any device has"
    else:
        why = (f"the model needs {need / 1e9:.2f} GB of the {have / 1e9:.2f} GB in all, but no split into contiguous ranges "
               "in this device order fits each device")
    return InfeasiblePlanError(f"no memory-feasible plan: {why}; add devices or memory, or quantize the weights (--dtype int8/int4)")


def plan_partition(costs: BlockCosts, cluster: EdgeCluster, label: str = "planner") -> Plan:
    """The memory-feasible contiguous split minimising the slowest stage (then the latency); exact.

    Raises :class:`InfeasiblePlanError` when no split fits (or there are more devices than blocks).
    """
    n, m = len(costs), len(cluster)
    if m > n:
        raise InfeasiblePlanError(f"no plan: {m} devices for {n} blocks (every device takes at least one block)")
    cost, _ = _stage_matrices(costs, cluster)
    # pass 1: least bottleneck. best[j] = least max stage time covering blocks [0, j) with devices 0..k
    best = cost[0, 0, :].copy()
    for k in range(1, m):
        best = np.min(np.maximum(best[:, None], cost[k]), axis=0)
    t_star = float(best[n])
    if not np.isfinite(t_star):
        raise _infeasible(costs, cluster)
    # pass 2: least latency among plans whose every stage is within the bottleneck
    limit = t_star * (1 + 1e-9) + 1e-15
    capped = np.where(cost <= limit, cost, np.inf)
    total = capped[0, 0, :].copy()
    arg = np.zeros((m, n + 1), dtype=int)
    for k in range(1, m):
        cand = total[:, None] + capped[k]
        arg[k] = np.argmin(cand, axis=0)
        total = np.min(cand, axis=0)
    bounds, j = [], n
    for k in range(m - 1, 0, -1):
        i = int(arg[k, j])
        bounds.append((i, j))
        j = i
    bounds.append((0, j))
    return evaluate_plan(costs, cluster, bounds[::-1], label=label)


def _sizes_bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def uniform_partition(costs: BlockCosts, cluster: EdgeCluster, label: str = "uniform") -> Plan:
    """Equal numbers of blocks per device (the first ``n mod m`` devices one more); may exceed memory."""
    n, m = len(costs), len(cluster)
    if m > n:
        raise InfeasiblePlanError(f"no plan: {m} devices for {n} blocks")
    return evaluate_plan(costs, cluster, _sizes_bounds([n // m + (1 if k < n % m else 0) for k in range(m)]), label=label)


def proportional_partition(costs: BlockCosts, cluster: EdgeCluster, label: str = "proportional") -> Plan:
    """Block counts in proportion to each device's FLOP/s (largest remainder, at least one each); may exceed memory."""
    n, m = len(costs), len(cluster)
    if m > n:
        raise InfeasiblePlanError(f"no plan: {m} devices for {n} blocks")
    speed = np.array([d.flops_per_s for d in cluster.devices])
    share = 1 + (n - m) * speed / speed.sum()
    sizes = np.floor(share).astype(int)
    for k in np.argsort(-(share - sizes), kind="stable")[: n - int(sizes.sum())]:
        sizes[k] += 1
    return evaluate_plan(costs, cluster, _sizes_bounds(sizes.tolist()), label=label)


# ------------------------------------------------------------------------------------- backups, dropout


@dataclass(frozen=True)
class Backup:
    """A copy of stage ``stage``'s weights on ``device`` (None: no device had the memory)."""

    stage: int
    stage_device: str
    device: str | None
    bytes: float


@dataclass(frozen=True)
class Dropout:
    """What losing ``device`` costs, with its stage's backup and without one."""

    device: str
    backup_device: str | None
    switch_s: float | None  #: detection + re-route, with the backup (None: no backup)
    throughput_with_backup_rps: float | None
    redeploy_s: float | None  #: detection + loading on a re-planned pipeline (None: survivors lack memory)
    throughput_after_redeploy_rps: float | None
    redeploy_bytes: float | None  #: the largest amount one survivor loads


def _takeover(costs: BlockCosts, cluster: EdgeCluster, plan: Plan, stage: int, host: int) -> Plan:
    hosts = list(plan.hosts)
    hosts[stage] = host
    return evaluate_plan(costs, cluster, plan.bounds, hosts, label=f"{plan.label}, {plan.stages[stage].device} on {cluster.names[host]}")


def place_backups(plan: Plan, costs: BlockCosts, cluster: EdgeCluster) -> tuple[Backup, ...]:
    """One backup per stage on spare memory, largest stages first, on the device that would take over fastest."""
    spare = [d.memory_bytes for d in cluster.devices]
    for s, h in zip(plan.stages, plan.hosts):
        spare[h] -= s.memory_bytes
    chosen: dict[int, Backup] = {}
    for k in sorted(range(len(plan.stages)), key=lambda k: -plan.stages[k].memory_bytes):
        need = plan.stages[k].memory_bytes
        cands = [h for h in range(len(cluster)) if h != plan.hosts[k] and spare[h] >= need * (1 - _TOL)]
        best = None
        if cands:
            best = min(cands, key=lambda h: (_takeover(costs, cluster, plan, k, h).bottleneck_s, -spare[h]))
            spare[best] -= need
        chosen[k] = Backup(k, plan.stages[k].device, None if best is None else cluster.names[best], need)
    return tuple(chosen[k] for k in range(len(plan.stages)))


def _redeploy(plan: Plan, costs: BlockCosts, cluster: EdgeCluster, lost: int) -> tuple[Plan, float, float] | None:
    """Re-plan on the survivors; ``(plan, seconds to load, largest bytes one survivor loads)`` or None."""
    if len(cluster) < 2:
        return None
    survivors = cluster.without(lost)
    try:
        new = plan_partition(costs, survivors, label=f"{plan.label}, re-planned without {cluster.names[lost]}")
    except InfeasiblePlanError:
        return None
    old = {cluster.names[h]: (s.start, s.stop) for s, h in zip(plan.stages, plan.hosts)}
    load_s, most = 0.0, 0.0
    for s, dev in zip(new.stages, survivors.devices):
        held = old.get(dev.name)
        lo, hi = (max(s.start, held[0]), min(s.stop, held[1])) if held else (0, 0)
        n_bytes = costs.range_param_bytes(s.start, s.stop) - (costs.range_param_bytes(lo, hi) if lo < hi else 0.0)
        load_s = max(load_s, n_bytes / dev.load_bytes_per_s)
        most = max(most, n_bytes)
    return new, load_s, most


def dropout_costs(plan: Plan, costs: BlockCosts, cluster: EdgeCluster, backups: Sequence[Backup] | None = None,
                  detect_s: float = DETECT_S) -> tuple[Dropout, ...]:
    """Per device of ``plan``: recovery time and throughput after it drops out, with and without backups."""
    if backups is None:
        backups = place_backups(plan, costs, cluster)
    out = []
    for k, (stage, host) in enumerate(zip(plan.stages, plan.hosts)):
        b = backups[k]
        switch_s = tput_b = None
        if b.device is not None:
            bh = cluster.names.index(b.device)
            degraded = _takeover(costs, cluster, plan, k, bh)
            resend = cluster.transfer_s(plan.hosts[k - 1], bh, float(costs.out_bytes[stage.start - 1])) if k > 0 else 0.0
            switch_s, tput_b = detect_s + resend, degraded.throughput_rps
        red = _redeploy(plan, costs, cluster, host)
        out.append(Dropout(stage.device, b.device, switch_s, tput_b, None if red is None else detect_s + red[1],
                           None if red is None else red[0].throughput_rps, None if red is None else red[2]))
    return tuple(out)


def pipeline_completions(stage_s: Sequence[float], arrivals_s: Sequence[float]) -> np.ndarray:
    """Completion times of requests arriving at ``arrivals_s`` (sorted) through stages of fixed times, one request
    per stage at a time, first come first served (a flow shop: ``C[r, k] = max(C[r-1, k], C[r, k-1]) + s_k``)."""
    s = np.asarray(stage_s, dtype=float)
    done = np.zeros(len(s))
    out = np.empty(len(arrivals_s))
    for r, t in enumerate(arrivals_s):
        ready = float(t)
        for k in range(len(s)):
            ready = max(ready, done[k]) + s[k]
            done[k] = ready
        out[r] = ready
    return out


@dataclass(frozen=True)
class Comparison:
    """The planner against the baselines on one model and cluster, with backups and dropout costs."""

    planner: Plan
    uniform: Plan
    proportional: Plan
    backups: tuple[Backup, ...]
    dropouts: tuple[Dropout, ...]

    @property
    def ratio(self) -> float:
        """Planner throughput over the uniform split's."""
        return self.planner.throughput_rps / self.uniform.throughput_rps


def compare_plans(costs: BlockCosts, cluster: EdgeCluster, detect_s: float = DETECT_S) -> Comparison:
    """Plan, baselines, backups and dropout costs in one call."""
    planner = plan_partition(costs, cluster)
    backups = place_backups(planner, costs, cluster)
    return Comparison(planner, uniform_partition(costs, cluster), proportional_partition(costs, cluster), backups,
                      dropout_costs(planner, costs, cluster, backups, detect_s))
