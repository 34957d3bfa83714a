"""mllm-offload: decide per request whether a multimodal LLM request runs on the edge, in the
cloud, or speculatively on both, with thresholds learned by PPO.

Contracts at the top level (import nothing below them): :mod:`~mllm_offload.observation`,
:mod:`~mllm_offload.decision`, :mod:`~mllm_offload.policy` (the Policy protocol and the one
registry of names), :mod:`~mllm_offload.rules`, :mod:`~mllm_offload.artifact`,
:mod:`~mllm_offload.trace_format`, :mod:`~mllm_offload.scoring`, :mod:`~mllm_offload.config`,
:mod:`~mllm_offload.splits`. Stages, data flowing one way: 1 ``traces``, ``mas``,
``mllm_backends``; 2 ``envs``, ``recording``, ``scenario``; 3 ``evaluation``, ``agents``
(-> the exported artifact on disk); 4 ``runtime`` (numpy, optionally onnxruntime). Beside the
product: ``shapes`` (the demo workload) and ``cli``.
"""

from ._version import __version__
from .decision import Mode, Thresholds
from .errors import UserInputError
from .observation import OBSERVATION_SPEC, build_observation

__all__ = ["OBSERVATION_SPEC", "Mode", "Thresholds", "UserInputError", "__version__", "build_observation"]
