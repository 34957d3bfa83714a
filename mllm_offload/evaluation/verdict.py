"""The verdict of an evaluation: which deployable policy earns the most reward, and whether its
lead over each reference (EdgeOnly, CloudOnly, MSAO, TunedStatic) is larger than the
episode-to-episode spread.

Every policy runs the same episodes, so differences are *paired*: for each episode, the mean
reward per request of the best policy minus that of the reference. The lead "exceeds the spread"
when the mean of those paired differences is larger than twice its standard error over episodes
(about a 95 % interval); otherwise the two are within noise of each other on this data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .rollout import EpisodeLog

__all__ = ["REFERENCES", "episode_means", "verdict"]

#: The references every verdict compares with, by policy name, and how the sentence calls them.
REFERENCES: dict[str, str] = {"edge": "EdgeOnly", "cloud": "CloudOnly", "msao": "MSAO", "tuned": "TunedStatic"}
#: How the sentence calls the other policies it may name.
LABELS: dict[str, str] = {**REFERENCES, "ppo": "PPO (the trained policy)", "random": "RandomPolicy"}


def episode_means(log: EpisodeLog, episode_len: int) -> np.ndarray:
    """Mean reward per request of each episode of ``log`` (episodes of ``episode_len`` requests)."""
    r = np.asarray(log.reward, np.float64)
    k = len(r) // episode_len
    return r[: k * episode_len].reshape(k, episode_len).mean(axis=1)


def verdict(results: Mapping[str, Mapping[str, float]], logs: Mapping[str, EpisodeLog], episode_len: int,
            hindsight: Iterable[str] = ("oracle",)) -> dict[str, Any]:
    """The best deployable policy on mean reward and its paired lead over each reference.

    ``hindsight`` names the policies that are not deployable (they read realised outcomes).
    Returns a JSON-ready dict with ``best``, ``reward``, ``episodes``, ``comparisons`` (per
    reference: ``difference``, ``two_se``, ``exceeds_spread``) and ``sentence``.
    """
    skip = set(hindsight)
    names = [n for n in results if n not in skip]
    if not names:
        return {"best": None, "sentence": "Verdict: no deployable policy was evaluated."}
    best = max(names, key=lambda n: results[n]["reward_mean"])
    ep_best = episode_means(logs[best], episode_len)
    comps: dict[str, dict[str, Any]] = {}
    for ref in REFERENCES:
        if ref == best or ref not in results:
            continue
        d = ep_best - episode_means(logs[ref], episode_len)
        two_se = 2.0 * float(np.std(d, ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else float("inf")
        diff = float(results[best]["reward_mean"] - results[ref]["reward_mean"])
        comps[ref] = {"name": REFERENCES[ref], "difference": diff, "two_se": two_se, "exceeds_spread": bool(abs(float(d.mean())) > two_se)}
    label = LABELS.get(best, best)
    sentence = f"Verdict: {label} is the best deployable policy on reward ({results[best]['reward_mean']:.4f} per request, {len(ep_best)} paired episodes)"
    if comps:
        c = list(comps.values())
        beyond = [x["name"] for x in c if x["exceeds_spread"]]
        within = [x["name"] for x in c if not x["exceeds_spread"]]
        if not within:
            spread = "every lead is beyond the episode-to-episode spread"
        elif not beyond:
            spread = "no lead is beyond the episode-to-episode spread"
        else:
            spread = (f"the lead{'s' if len(beyond) > 1 else ''} over {_join(beyond)} {'are' if len(beyond) > 1 else 'is'} beyond the "
                      f"episode-to-episode spread, over {_join(within)} within it")
        leads = _join([f"{x['name']} by {x['difference']:+.4f}" for x in c])
        ses = ", ".join(f"{x['two_se']:.4f}" for x in c)
        sentence += f", ahead of {leads}; {spread} (2 SE {ses})"
    sentence += "."
    return {"best": best, "reward": float(results[best]["reward_mean"]), "episodes": len(ep_best), "comparisons": comps, "sentence": sentence}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
