"""Stage 1: request traces (schema, synthetic profiles) and bandwidth traces.

Public names: :class:`RequestTrace`, :func:`load_trace`, :class:`BandwidthTrace`,
:func:`load_bandwidth`, :func:`load_bandwidth_dir`, :func:`bandwidth_source`,
:class:`SynthProfile`, :data:`PROFILES`, :func:`get_profile`, :func:`generate`.
"""

from .bandwidth import (
    MARKOV_MODELS,
    BandwidthTrace,
    MarkovBandwidth,
    bandwidth_source,
    load_bandwidth,
    load_bandwidth_dir,
    split_of,
)
from .schema import TRACE_FORMAT, TRACE_VERSION, RequestTrace, TraceRecord, load_trace
from .synth import PROFILES, SynthProfile, generate, get_profile

__all__ = [
    "BandwidthTrace", "MarkovBandwidth", "MARKOV_MODELS", "bandwidth_source", "load_bandwidth",
    "load_bandwidth_dir", "split_of", "RequestTrace", "TraceRecord", "load_trace", "TRACE_FORMAT",
    "TRACE_VERSION", "PROFILES", "SynthProfile", "generate", "get_profile",
]
