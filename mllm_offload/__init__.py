"""mllm-offload: decide per request whether a multimodal LLM request runs on the edge, in the
cloud, or speculatively on both, with thresholds learned by PPO.

Contracts at the top level: :mod:`~mllm_offload.observation`, :mod:`~mllm_offload.decision`,
:mod:`~mllm_offload.config`, :mod:`~mllm_offload.artifact`, :mod:`~mllm_offload.rules`.
Stages: ``traces`` -> ``envs`` -> ``agents`` -> (artifact on disk) -> ``runtime``.
"""

from ._version import __version__
from .decision import Mode, Thresholds
from .errors import UserInputError
from .observation import OBSERVATION_SPEC, build_observation

__all__ = ["OBSERVATION_SPEC", "Mode", "Thresholds", "UserInputError", "__version__", "build_observation"]
