"""The hindsight oracle: per request, the mode whose *realised* outcome earns the most reward.

It is an upper bound, not a deployable policy: it reads the simulator's counterfactual outcomes
(``env.counterfactual_rewards``), which it is handed by ``reset(seed, env=...)`` at the start of
every episode. Importing this module registers ``oracle`` in
:data:`mllm_offload.policy.REGISTRY`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..decision import Thresholds
from ..errors import UserInputError
from ..policy import PolicyContext, register

__all__ = ["HindsightOracle"]


class HindsightOracle:
    """Per request, the best of: edge only, cloud only, speculative waiting for the cloud,
    edge-first always escalating (by realised reward)."""

    CANDIDATES = (
        Thresholds(1.0, 1.0, 0.0),  # edge only
        Thresholds(0.0, 0.0, 1.0),  # cloud only
        Thresholds(0.0, 1.0, 1.0),  # speculative, never accept the edge
        Thresholds(1.0, 1.0, 1.0),  # edge first, always escalate
    )

    def __init__(self, name: str = "oracle") -> None:
        self.name = name
        self._env: Any = None

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        """Bind the episode's environment (the oracle reads realised outcomes from it)."""
        self._env = env

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        if self._env is None:
            raise TypeError("HindsightOracle needs realised outcomes: reset(seed, env=env) binds the simulator first")
        rewards = self._env.counterfactual_rewards(self.CANDIDATES)
        return self.CANDIDATES[int(np.argmax(rewards))]


def _oracle(ctx: PolicyContext, arg: str | None) -> HindsightOracle:
    if arg is not None:
        raise UserInputError(f"oracle: takes no parameter, got oracle:{arg}")
    return HindsightOracle()


register("oracle", "HindsightOracle: best mode per request in hindsight (an upper bound)", _oracle, needs="simulator")
