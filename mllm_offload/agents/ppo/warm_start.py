"""Warm start: PPO begins where TunedStatic, refitted at each price, already is.

On some scenarios the best fixed rule is a corner of the action box that PPO's default start
never finds. On ``msao-paper`` at latency price 0.2 TunedStatic sends *every* request
speculatively (``tau_low = 0``, ``tau_high = 1``) with images ``reduced``; PPO from SB3's
start (mean 0, std 1) settles on a mix of modes and plans 0.004-0.011 below it (19000 and 2000
test requests), while the same PPO started at TunedStatic's action goes on to beat it
(docs/training.md has the figures).

``warm_start: tuned`` (a hyperparameter) does that for any scenario and for a policy conditioned
on the latency price:

1. :func:`tuned_targets`: TunedStatic is fitted (its own grid search, training split) at
   ``warm_start_prices`` latency prices spread log-evenly over the training range (one price for
   a policy trained at one setting); its thresholds and plan become a target action per price.
2. :func:`behaviour_clone`: each target policy runs training episodes at its price (8 per price,
   more when fewer prices leave under 5000 observations; :func:`collect`); the observations seed ``VecNormalize``'s statistics, and the
   actor's mean (the deterministic action, clipped to ``[0, 1]`` when deployed) is fitted to the
   targets by least squares (3000 Adam steps on minibatches of 256); a target of 0 or 1 is
   aimed :data:`CORNER_MARGIN` past the edge, so that the clipped action meets it exactly.
   The Gaussian's spread stays ``log_std_init``; the critic is left untrained.

The warm-started actor is validated before the first update (step 0), so when PPO only loses
ground from there, the exported policy is the warm start itself: a network that reproduces
TunedStatic at the prices it was fitted at. Between two of them it interpolates each action
component, which for the image plan (one axis: ``full``, ``model_res``, ``reduced``) can pass
through a choice neither fit made (``model_res`` between a ``full`` and a ``reduced`` fit);
PPO's updates then decide. The targets maximise reward alone: with a budget or a score floor the
warm start may begin outside them, and the Lagrangian pulls it in. A warm start replaces
``policy_kwargs.action_bias_init``. A resumed run does not warm-start again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...decision import SEND_ALL
from ...splits import WARM_START_SEEDS
from ...tradeoff import TradeOff

__all__ = ["CORNER_MARGIN", "WarmStartTarget", "behaviour_clone", "tuned_targets"]

#: how far past 0 or 1 the actor's mean is fitted for a target on the box's edge (the deployed
#: action is clipped to [0, 1], so the corner is then met exactly)
CORNER_MARGIN = 0.1


@dataclass(frozen=True)
class WarmStartTarget:
    """The action to imitate (in ``[0, 1]^n_actions``) on episodes at ``tradeoff``."""

    tradeoff: TradeOff
    action: tuple[float, ...]
    label: str


def tuned_targets(scenario: Any, prices: Sequence[float], n_actions: int,
                  log: Callable[[str], None] = lambda s: None) -> list[WarmStartTarget]:
    """TunedStatic refitted on ``scenario``'s training split at each latency price, as target actions.

    ``scenario`` holds one fixed trade-off (its cost price, budgets and other weights are kept);
    ``n_actions`` is 3 (thresholds) or 6 (with upload plans: the fitted plan, or everything whole).
    """
    from ..baselines import TunedStatic

    out = []
    for p in prices:
        t = scenario.trade.model_copy(update={"latency_price": float(p)})
        fit = TunedStatic.fit_scenario(scenario.with_tradeoff(t, None))
        action = fit.th.to_action() + ((fit.plan or SEND_ALL).to_action() if n_actions == 6 else ())
        out.append(WarmStartTarget(t, tuple(float(a) for a in action), repr(fit)))
        log(f"warm start: latency price {p:g}: {fit!r} (training reward {fit.train_reward:.4f})")
    return out


#: observations the warm start aims for in all (more episodes per price when there are few prices)
MIN_OBSERVATIONS = 5000


def collect(make_env: Callable[[str], Any], targets: Sequence[WarmStartTarget]) -> tuple[np.ndarray, np.ndarray]:
    """Observations of each target policy on training episodes at its trade-off (the first
    ``k`` of :data:`WARM_START_SEEDS`: at least 8, more up to all 64 until about
    :data:`MIN_OBSERVATIONS` in all), and the target action of each (float32 arrays
    ``(n, n_features)``, ``(n, n_actions)``)."""
    env = make_env("train")
    per_price = min(len(WARM_START_SEEDS), max(8, math.ceil(MIN_OBSERVATIONS / (len(targets) * env.unwrapped.n_requests))))
    actions = np.asarray([tg.action for tg in targets], np.float32)
    obs_all: list[np.ndarray] = []
    counts = []
    for tg, a in zip(targets, actions):
        start = len(obs_all)
        for seed in WARM_START_SEEDS[:per_price]:
            obs, _ = env.reset(seed=seed, options={"tradeoff": tg.tradeoff})
            done = False
            while not done:
                obs_all.append(obs)
                obs, _r, term, trunc, _i = env.step(a)
                done = term or trunc
        counts.append(len(obs_all) - start)
    env.close()
    return np.asarray(obs_all, np.float32), np.repeat(actions, counts, axis=0)


def behaviour_clone(model: Any, venv: Any, make_env: Callable[[str], Any], targets: Sequence[WarmStartTarget],
                    steps: int = 3000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """Fit the actor mean of SB3 ``model`` to the targets on their observations (see the module
    docstring); ``venv``'s ``VecNormalize`` statistics (if any) are updated with them first.
    Returns ``{"observations": n, "mse": final mean squared error, "max_abs_error": ...}``."""
    import torch

    obs, act = collect(make_env, targets)
    rms = getattr(venv, "obs_rms", None)
    if rms is not None and getattr(venv, "norm_obs", False):
        rms.update(obs.astype(np.float64))
        x_np = venv.normalize_obs(obs)
    else:
        x_np = obs
    pol = model.policy
    x = torch.as_tensor(np.asarray(x_np, np.float32))
    y = torch.as_tensor(act)
    # a corner target is aimed past the box edge by CORNER_MARGIN, so that the clipped action meets it exactly
    y_fit = torch.where(y >= 1.0, 1.0 + CORNER_MARGIN, torch.where(y <= 0.0, -CORNER_MARGIN, y))
    params = [*pol.mlp_extractor.policy_net.parameters(), *pol.action_net.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def mean_action(xb: torch.Tensor) -> torch.Tensor:
        return pol.action_net(pol.mlp_extractor.policy_net(pol.extract_features(xb, pol.pi_features_extractor)))

    for _ in range(steps):  # minibatches drawn with replacement: the same work however many observations
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        loss = torch.mean((mean_action(x[idx]) - y_fit[idx]) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = torch.clamp(mean_action(x), 0.0, 1.0) - y
    return {"observations": float(len(x)), "mse": float(torch.mean(err ** 2)), "max_abs_error": float(torch.max(torch.abs(err)))}
