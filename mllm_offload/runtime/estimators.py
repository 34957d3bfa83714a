"""Live estimates of the system state for the router (the inputs :class:`SystemState` names).

The arithmetic is :class:`~mllm_offload.observation.RunningEstimates`, the class the simulator
uses too, so the same measurements give the same observation vector. This module turns what a
deployed router can measure into those measurements:

==========================  =====================================================================
observation input           measured as
==========================  =====================================================================
``bw_est_mbps``             per streamed cloud call: ``bytes_sent * 8e-6 / (headers_s - rtt)``
                            (the request body's bytes over the time until the server's response
                            headers, less one RTT), harmonic mean of the last ``bw_window``
``rtt_s``                   TCP handshake time of calls that opened a connection
``uplink_queue_bytes``      request bytes of cloud calls whose answer has not started yet
``edge_queue_n``            edge jobs waiting or running
``edge_queue_s``            ``edge_queue_n`` x moving average of edge service times
``cloud_inflight_n``        cloud calls outstanding (speculative ones included)
``cloud_latency_recent_s``  moving average of cloud response times, upload time excluded
==========================  =====================================================================

A cloud backend without network measurements (a local model used as the "cloud") leaves the
bandwidth and RTT at their priors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import SystemConfig
from ..observation import RunningEstimates, SystemState

__all__ = ["RuntimeEstimators"]


class RuntimeEstimators:
    """Queue counters plus :class:`RunningEstimates`; single-threaded (one asyncio loop).

    Args:
        bw_window: uploads in the bandwidth harmonic mean.
        bw_prior_mbps: bandwidth assumed before the first measured upload, Mbps.
        rtt_prior_s: RTT assumed before the first measurement, seconds.
        latency_ema: weight of the newest latency sample.
        min_upload_s: floor of a measured upload time, seconds (keeps loopback rates finite).
    """

    def __init__(self, bw_window: int = 5, bw_prior_mbps: float = 10.0, rtt_prior_s: float = 0.05,
                 latency_ema: float = 0.2, min_upload_s: float = 1e-4) -> None:
        self.est = RunningEstimates(bw_window, bw_prior_mbps, rtt_prior_s, latency_ema)
        self.min_upload_s = float(min_upload_s)
        self.edge_queue_n = 0
        self.cloud_inflight_n = 0
        self.uplink_queue_bytes = 0.0

    @classmethod
    def from_config(cls, cfg: SystemConfig) -> RuntimeEstimators:
        """Priors and windows of a scenario's :class:`SystemConfig` (as in training)."""
        return cls(cfg.bw_window, cfg.bw_prior_mbps, cfg.rtt_s, cfg.latency_ema)

    def state(self) -> SystemState:
        """The current :class:`SystemState` (what :func:`build_observation` takes)."""
        return self.est.state(self.uplink_queue_bytes, self.edge_queue_n, self.cloud_inflight_n)

    # -- edge ----------------------------------------------------------------------------------

    def edge_enter(self) -> None:
        """An edge job was queued."""
        self.edge_queue_n += 1

    def edge_exit(self, service_s: float | None) -> None:
        """An edge job left; ``service_s`` is its compute time (``None``: failed or cancelled)."""
        self.edge_queue_n -= 1
        if service_s is not None:
            self.est.edge_done(service_s)

    # -- cloud ---------------------------------------------------------------------------------

    def cloud_enter(self, payload_bytes: float) -> None:
        """A cloud call started that will upload ``payload_bytes``."""
        self.cloud_inflight_n += 1
        self.uplink_queue_bytes += payload_bytes

    def cloud_answer_started(self, payload_bytes: float) -> None:
        """The call's answer began (its upload is over); call at most once per call."""
        self.uplink_queue_bytes = max(self.uplink_queue_bytes - payload_bytes, 0.0)

    def cloud_exit(self, payload_bytes: float, answer_started: bool, latency_s: float | None, net: Mapping[str, Any] | None,
                   completed: bool) -> float:
        """A cloud call ended. Feeds its measurements and returns the upload time it implies
        (seconds, 0 without network measurements).

        Args:
            payload_bytes: what :meth:`cloud_enter` was given.
            answer_started: whether :meth:`cloud_answer_started` was called for it.
            latency_s: the call's wall-clock time, seconds (``None`` if it failed).
            net: the backend's ``Generation.extra["net"]`` (see the OpenAI-compatible backend).
            completed: the answer arrived in full (not cancelled, not failed).
        """
        self.cloud_inflight_n -= 1
        if not answer_started:
            self.cloud_answer_started(payload_bytes)
        net = net or {}
        connect_s = net.get("connect_s")
        if connect_s is not None:
            self.est.rtt(float(connect_s))
        upload_s = 0.0
        headers_s, sent = net.get("headers_s"), net.get("bytes_sent")
        if net.get("streamed") and headers_s is not None and sent:
            upload_s = max(float(headers_s) - self.est.rtt_s, self.min_upload_s)
            self.record_upload(float(sent), upload_s)
        if completed and latency_s is not None:
            self.est.cloud_response(max(latency_s - upload_s, 0.0))
        return upload_s

    def record_upload(self, n_bytes: float, seconds: float) -> None:
        """One measured upload of ``n_bytes`` bytes that took ``seconds``."""
        self.est.upload(n_bytes * 8e-6 / max(seconds, self.min_upload_s))

    def snapshot(self) -> dict[str, float]:
        """The estimates and counters, for ``/metrics`` and logs."""
        s = self.state()
        return {"bw_est_mbps": s.bw_est_mbps, "rtt_s": s.rtt_s, "uplink_queue_bytes": s.uplink_queue_bytes,
                "edge_queue_n": float(s.edge_queue_n), "edge_queue_s": s.edge_queue_s,
                "cloud_inflight_n": float(s.cloud_inflight_n), "cloud_latency_recent_s": s.cloud_latency_recent_s}
