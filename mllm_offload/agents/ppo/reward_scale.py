"""The reward PPO trains on: the same optimum at every trade-off, less noise, even weight.

Two changes to the per-request reward ``r``, both in training environments only (validation,
tests and every reported figure use ``r`` itself):

**A baseline for the score's noise.** The task score of one answer is mostly a coin flip (VQA
answers are right or wrong), so the reward's spread is about 0.4 per request even for a fixed
policy, and the quality signal PPO must find (a few hundredths between a confident edge answer
and waiting for the cloud) drowns in it. Training uses ``r - quality * edge_score(request)``,
the recorded score the edge model gets on this request. The requests of an episode arrive
whatever the policy does, so this subtracts the same total from every policy's return: the best
policy is unchanged, and what is left is the score *gained over the edge's answer* (zero when the
edge answers), a control variate of the kind policy-gradient baselines are.

**Expected scores** (hyperparameter ``training_scores``: ``expected``, or ``auto`` where the
trace has them). Even after the baseline, a request the cloud answers carries the difference of
two coin flips. A synthetic trace knows each answer's probability of being right given the
request's latent difficulty and the edge's confidence (for the cloud, for the upload plan sent;
the models' coins are correlated, so the edge's confidence moves the cloud's too:
:mod:`mllm_offload.traces.synth`). Training can then score an answer by that expectation instead
of its coin flip: ``r - quality * (score - expected_score) - quality * expected_edge_score``.
Given the difficulty and the confidence, the coins are independent of everything else the episode
draws (what the policy observes, the bandwidth, the timing that decides which model answers), so
every policy keeps its expected return (the same best policy at each price); only the noise goes. Validation then ranks checkpoints
by the same expected reward. A recorded trace (or a synthetic one read back from a file, which
does not keep these columns) has no expected scores: ``expected`` is refused there with one line,
``auto`` falls back to the realised scores. The score floor and the budgets stay on the realised
scores.

**Even weight across trade-offs.** The spread of the reward grows with the latency price:
measured on ``mobile-3g`` training episodes (random, CloudOnly and MSAO policies), its standard
deviation is about 0.4 at prices up to 0.05, 0.6 at 0.2, 1.1 at 0.5, 2.2 at 1 and 4.3 at 2, i.e.
about ``0.4 * (1 + 5 * price)``. PPO normalises advantages per minibatch, and a minibatch mixes
episodes of different prices, so the high-price episodes would dominate every gradient. For a
conditioned policy the training reward is divided by ``1 + 5 * latency_price`` of its episode: a
positive constant per episode, which leaves the best policy *at each price* unchanged.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["PRICE_SCALE", "TrainingReward", "reward_scale"]

#: reward std grows by about this factor per unit of latency price (see the module docstring)
PRICE_SCALE = 5.0


def reward_scale(latency_price: float) -> float:
    """The divisor of a reward at ``latency_price``: ``1 + 5 * latency_price``."""
    return 1.0 + PRICE_SCALE * latency_price


class TrainingReward(gym.Wrapper):
    """``(r - quality * edge_score(request)) / scale``: ``scale`` is :func:`reward_scale` of the
    episode's latency price when ``per_price`` (a conditioned policy), else 1. With ``expected``,
    the expected-score form above (the env must have expected scores)."""

    def __init__(self, env: gym.Env, per_price: bool = False, expected: bool = False) -> None:
        super().__init__(env)
        self.per_price, self.expected = per_price, expected
        if expected and not getattr(env.unwrapped, "has_expected_scores", False):
            raise ValueError("expected scores asked for, but the trace has none")

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        base = self.env.unwrapped
        q = base.episode_weights.quality  # type: ignore[attr-defined]
        edge = base.current_expected_edge_score() if self.expected else base.current_edge_score()  # type: ignore[attr-defined]
        obs, r, term, trunc, info = self.env.step(action)
        r = float(r) - q * edge
        if self.expected:
            r -= q * (info["outcome"].score - info["expected_score"])
        if self.per_price:
            r /= reward_scale(base.episode_tradeoff.latency_price)  # type: ignore[attr-defined]
        return obs, r, term, trunc, info
