"""The simulator's edge when it is an edge tier: a pipeline over several devices, with dropouts.

A request's edge time in the trace (already divided by the episode's edge speed) is read as
what it would take on one *reference device* (:data:`~mllm_offload.edge_tier.REFERENCE_FLOPS_PER_S`)
running the whole model. In the tier, stage ``k`` of the running mode takes that time times
``stage_s[k] / reference_s`` (compute and the hand-over to the next device, both scaled with the
request's size), on its device. Each device is a FIFO (one :class:`~mllm_offload.envs.system.Timeline`):
stages of different requests overlap on different devices (a pipeline), two stages hosted by one
device (a takeover) share it.

==========================  ===================================================================
quantity                    rule
==========================  ===================================================================
start of a request's work   the first stage's start, in the mode of the segment its request is
                            ready in (a stall moves it to the next segment that runs)
end                         the last stage's end; each stage starts when the previous one ended
                            and its device is free (first fit, as the single edge)
a dropout before the end    the request restarts in the next mode that runs (its partial work
                            is not charged)
busy seconds (energy)       the sum of its stage times (device-seconds)
capacity a router sees      the segment's ``seen_capacity`` (0 while down or switching, once known)
==========================  ===================================================================
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from ..edge_tier.tier import EdgeTier, Segment
from .system import Timeline

__all__ = ["TierEdge"]

EdgeJobs = tuple[tuple[int, float, float], ...]  # (device, start, end) of each stage


class TierEdge:
    """Per-device timelines of one episode's edge tier over the given segments."""

    __slots__ = ("_fracs", "_hosts", "_segs", "_starts", "tier", "timelines")

    def __init__(self, tier: EdgeTier, segments: Sequence[Segment]) -> None:
        if not segments or segments[0].start > 0.0 or not math.isinf(segments[-1].end):
            raise ValueError("segments must cover [0, inf)")
        self.tier = tier
        self.timelines = [Timeline() for _ in range(len(tier))]
        self._segs = list(segments)
        self._starts = [s.start for s in segments]
        ref = tier.reference_s
        self._hosts = [() if s.mode is None else s.mode.hosts for s in segments]
        self._fracs = [() if s.mode is None else tuple(x / ref for x in s.mode.stage_s) for s in segments]

    @property
    def segments(self) -> list[Segment]:
        """The episode's segments (modes over time), in order."""
        return self._segs

    def _segment(self, t: float) -> int:
        return max(bisect.bisect_right(self._starts, t) - 1, 0)

    def seen_capacity(self, now: float) -> float:
        """The capacity a router knows of at ``now`` (over the healthy plan's throughput)."""
        return self._segs[self._segment(now)].seen_capacity

    def schedule(self, ready: float, service_s: float) -> tuple[float, float, EdgeJobs]:
        """``(start, end, stage jobs)`` of an edge job ready at ``ready`` needing ``service_s`` seconds
        on the reference device (no state changes)."""
        k = self._segment(ready)
        segs, tls = self._segs, self.timelines
        while True:
            seg, hosts = segs[k], self._hosts[k]
            if not hosts:  # switching or down: wait for the next segment
                k += 1
                ready = segs[k].start
                continue
            t = max(ready, seg.start)
            jobs = []
            for h, f in zip(hosts, self._fracs[k]):
                d = service_s * f
                s = tls[h].earliest(t, d)
                t = s + d
                jobs.append((h, s, t))
            if t > seg.end and seg.ends_by_dropout:  # a device it needs drops first: restart later
                k += 1
                ready = seg.end
                continue
            return jobs[0][1], t, tuple(jobs)

    def reserve(self, jobs: EdgeJobs, until: float = math.inf) -> float:
        """Reserve the stage jobs (cut at ``until``: the job was stopped); returns busy device-seconds."""
        busy = 0.0
        for h, s, e in jobs:
            e = min(e, until)
            if e > s:
                self.timelines[h].reserve(s, e)
                busy += e - s
        return busy

    @staticmethod
    def busy_s(jobs: EdgeJobs, until: float = math.inf) -> float:
        """Device-seconds of the stage jobs, cut at ``until``."""
        return sum(max(min(e, until) - s, 0.0) for _h, s, e in jobs)
