"""Stage 1: data. Synthetic request profiles, bandwidth traces, datasets, trace analysis, and the
embedded data (``traces/data/``). The trace *format* is a contract (:mod:`mllm_offload.trace_format`).

Public names: :class:`RequestTrace`, :func:`load_trace`, :class:`BandwidthTrace`,
:func:`load_bandwidth`, :func:`load_bandwidth_dir`, :func:`bandwidth_source`,
:class:`SynthProfile`, :data:`PROFILES`, :func:`get_profile`, :func:`generate`;
datasets: :class:`DatasetItem`, :func:`load_dataset`, :func:`normalize_answer`, :func:`score_answer`.
The recorder (:mod:`mllm_offload.recording`, stage 2: it runs backends) lives apart.
"""

from ..trace_format import TRACE_FORMAT, TRACE_VERSION, RequestTrace, TraceRecord, load_trace
from .bandwidth import (
    MARKOV_MODELS,
    BandwidthTrace,
    MarkovBandwidth,
    bandwidth_source,
    load_bandwidth,
    load_bandwidth_dir,
)
from .datasets import DatasetItem, load_dataset, normalize_answer, score_answer
from .synth import PROFILES, SynthProfile, generate, get_profile

__all__ = [
    "MARKOV_MODELS",
    "PROFILES",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "BandwidthTrace",
    "DatasetItem",
    "MarkovBandwidth",
    "RequestTrace",
    "SynthProfile",
    "TraceRecord",
    "bandwidth_source",
    "generate",
    "get_profile",
    "load_bandwidth",
    "load_bandwidth_dir",
    "load_dataset",
    "load_trace",
    "normalize_answer",
    "score_answer",
]
