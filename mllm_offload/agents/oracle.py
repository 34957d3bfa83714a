"""Oracles: per request, the mode whose outcome earns the most reward.

* :class:`HindsightOracle` (``oracle``) ranks the modes by their *realised* outcomes, coin flips of
  correctness included: an upper bound no causal policy can reach, since none can know whether
  this particular answer will be right.
* :class:`ExpectedOracle` (``oracle-expected``) ranks them by their *expected* score given the
  request's latent difficulty and the edge's confidence (the probability of a correct answer of
  each model, not the coin flip) and the realised system (latency, cost and energy of the
  simulator's plan for each mode): a more honest ceiling. It needs a synthetic trace (only a
  profile knows the difficulty).

With upload plans on (``env.upload_plans``), both also choose the plan: every mode that calls the
cloud is tried with each plan the request can be sent with (``env.request_plans()``).

Neither is a deployable policy: both read the simulator's counterfactual outcomes
(``env.counterfactual_rewards``), handed to them by ``reset(seed, env=...)`` at the start of every
episode. What they *earn* in an evaluation is, like every policy's, the realised outcome of the
mode they pick. Importing this module registers ``oracle`` and ``oracle-expected`` in
:data:`mllm_offload.policy.REGISTRY`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..decision import SEND_ALL, Thresholds, UploadPlan
from ..errors import UserInputError
from ..policy import PolicyContext, register

__all__ = ["ExpectedOracle", "HindsightOracle"]


class HindsightOracle:
    """Per request, the best of: edge only, cloud only, speculative waiting for the cloud,
    edge-first always escalating (by realised reward)."""

    CANDIDATES: tuple[Thresholds, ...] = (
        Thresholds(1.0, 1.0, 0.0),  # edge only
        Thresholds(0.0, 0.0, 1.0),  # cloud only
        Thresholds(0.0, 1.0, 1.0),  # speculative, never accept the edge
        Thresholds(1.0, 1.0, 1.0),  # edge first, always escalate
    )

    #: rank the candidates by expected instead of realised scores (see ``env.counterfactual_rewards``)
    expected = False

    def __init__(self, name: str = "oracle") -> None:
        self.name = name
        self._env: Any = None

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        """Bind the episode's environment (the oracle reads realised outcomes from it)."""
        self._env = env

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return self.decide(obs)[0]

    def decide(self, obs: np.ndarray) -> tuple[Thresholds, UploadPlan | None]:
        """The best candidate (thresholds and, with upload plans, the plan) for the current request."""
        if self._env is None:
            raise TypeError(f"{type(self).__name__} needs realised outcomes: reset(seed, env=env) binds the simulator first")
        plans = self._env.request_plans() if getattr(self._env, "upload_plans", False) else [SEND_ALL]
        cands: list[tuple[Thresholds, UploadPlan | None]] = [
            (th, p) for th in self.CANDIDATES for p in (plans if th.tau_conf > 0.0 or th.tau_high < 1.0 else [SEND_ALL])]
        rewards = self._env.counterfactual_rewards(cands, expected=self.expected)
        return cands[int(np.argmax(rewards))]


class ExpectedOracle(HindsightOracle):
    """Per request, the best candidate by *expected* reward: the expected score of whoever
    answers given the latent difficulty and the edge's confidence (not the coin flip; the cloud's
    too, since the two models' coins are correlated) with the realised latency, cost and energy.
    Synthetic traces only; one read back from a file keeps the cloud's score given the difficulty
    alone (``env.counterfactual_rewards``).

    Its candidates are :attr:`HindsightOracle.CANDIDATES` and the confidence-gated modes a causal
    policy can use (edge first and speculative, accepting the edge's answer when its confidence
    reaches 0.35, 0.5, 0.65, 0.8 or 0.9): without them, a policy that reads the edge's confidence
    could beat this ceiling where the confidence is informative."""

    CANDIDATES = HindsightOracle.CANDIDATES + tuple(
        Thresholds(lo, 1.0, c) for c in (0.35, 0.5, 0.65, 0.8, 0.9) for lo in (1.0, 0.0))
    expected = True

    def __init__(self, name: str = "oracle-expected") -> None:
        super().__init__(name)


def _oracle(ctx: PolicyContext, arg: str | None) -> HindsightOracle:
    if arg is not None:
        raise UserInputError(f"oracle: takes no parameter, got oracle:{arg}")
    return HindsightOracle()


def _oracle_expected(ctx: PolicyContext, arg: str | None) -> ExpectedOracle:
    if arg is not None:
        raise UserInputError(f"oracle-expected: takes no parameter, got oracle-expected:{arg}")
    scn = ctx.scenario
    if getattr(scn, "trace", None) is not None:  # a recording has no expected scores: fail before any episode runs
        scn.trace.expected_scores(scn.trace_source)
    return ExpectedOracle()


register("oracle", "HindsightOracle: best mode per request in hindsight (an upper bound)", _oracle, needs="simulator")
register("oracle-expected", "ExpectedOracle: best mode per request by expected score given the latent difficulty and the edge's confidence "
         "(synthetic profiles; a more honest ceiling than oracle)", _oracle_expected, needs="simulator")
