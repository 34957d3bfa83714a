"""Stage 2: the discrete-event system model and the Gymnasium environment.

Public names: :class:`OffloadEnv` (registered as ``mllm_offload/Offload-v0``),
:func:`reward_of`, :class:`EdgeCloudSystem`, :class:`Outcome`.
"""

import gymnasium as gym

from .offload_env import OffloadEnv, reward_of
from .system import EdgeCloudSystem, Outcome

ENV_ID = "mllm_offload/Offload-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="mllm_offload.envs.offload_env:OffloadEnv")

__all__ = ["ENV_ID", "EdgeCloudSystem", "OffloadEnv", "Outcome", "reward_of"]
