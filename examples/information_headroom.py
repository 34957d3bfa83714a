"""How much of the expected-outcome oracle's reward can the information a router has reach?

The expected-outcome oracle (``oracle-expected``) picks, per request, the best of 14 modes by the
expected score *given the request's latent difficulty*, which no router observes. A router sees
the observation (MAS features, payload, queues, the link estimate). This example measures how
much of the oracle's lead over the best single setting survives when the choice may depend only
on what the router sees, on a synthetic profile at one latency price:

1. Along the oracle's own trajectory (its queues) on the ``train`` and the ``test`` split, every
   request's expected reward under each of the oracle's 14 candidates is recorded
   (``env.counterfactual_rewards(..., expected=True)``) with the observation.
2. Per cell of a grid over chosen observation features (quantile bins fitted on ``train``), the
   best candidate on average. Figures, per request, on ``test``:

   * ``per request (oracle)``: each request's best candidate: the oracle's value;
   * ``one candidate for all``: the best single candidate in hindsight on ``test``;
   * ``per cell, in hindsight``: the best candidate per cell chosen on ``test`` itself: no
     causal policy reading only those features can do better along this trajectory;
   * ``per cell, fitted on train``: the same table fitted on ``train`` and applied to ``test``;
   * ``table policy, rolled out``: that table run as a policy on the test episodes (its own
     queues, realised rewards, the episodes ``evaluate`` uses), next to ``oracle-expected``
     rolled out and, with ``--policy DIR``, a trained policy on the same episodes.

If the per-cell figures stay near "one candidate for all" while the oracle is far above, the
oracle's lead comes from the latent difficulty, which the observation does not carry: no
trained policy can recover it. Example (about 10 s)::

    python examples/information_headroom.py --profile msao-paper --latency-price 0.2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

import mllm_offload.agents  # noqa: F401  (registers oracle-expected)
from mllm_offload.agents.oracle import ExpectedOracle
from mllm_offload.decision import Thresholds
from mllm_offload.errors import UserInputError
from mllm_offload.evaluation import run_episodes
from mllm_offload.observation import OBSERVATION_SPEC
from mllm_offload.scenario import Scenario
from mllm_offload.splits import evaluation_seeds
from mllm_offload.tradeoff import TradeOff

CANDIDATES: tuple[Thresholds, ...] = ExpectedOracle.CANDIDATES


def record(env: Any, seeds: Sequence[int], desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Observations (n, features) and expected rewards (n, candidates) along the oracle's trajectory."""
    obs_rows, rew_rows = [], []
    for s in tqdm(seeds, desc=desc, unit="episode"):
        obs, _ = env.reset(seed=int(s))
        done = False
        while not done:
            r = env.counterfactual_rewards(CANDIDATES, expected=True)
            obs_rows.append(np.asarray(obs, np.float64))
            rew_rows.append(r)
            obs, _, done, trunc, _ = env.step_thresholds(CANDIDATES[int(np.argmax(r))])
            done = done or trunc
    return np.asarray(obs_rows), np.asarray(rew_rows)


class Cells:
    """Quantile bins per chosen feature (edges fitted on training observations) -> a cell index."""

    def __init__(self, x: np.ndarray, columns: Sequence[int], bins: int) -> None:
        self.columns = list(columns)
        self.edges = [np.unique(np.quantile(x[:, c], np.linspace(0, 1, bins + 1)[1:-1])) for c in self.columns]
        self.sizes = [len(e) + 1 for e in self.edges]

    @property
    def n(self) -> int:
        return int(np.prod(self.sizes))

    def index(self, x: np.ndarray) -> np.ndarray:
        """Cell of every row of ``x`` (n, features)."""
        idx = np.zeros(len(x), dtype=np.int64)
        for c, e, size in zip(self.columns, self.edges, self.sizes):
            idx = idx * size + np.searchsorted(e, x[:, c], side="left")  # x <= edge: the lower bin (ties at a mass point split off)
        return idx


def table(cells: np.ndarray, rewards: np.ndarray, n_cells: int, fallback: int) -> np.ndarray:
    """Best candidate per cell by mean reward (``fallback`` where a cell holds no request)."""
    best = np.full(n_cells, fallback, dtype=np.int64)
    for k in np.unique(cells):
        best[k] = int(np.argmax(rewards[cells == k].mean(axis=0)))
    return best


class TablePolicy:
    """A causal policy: the observation's cell -> one of the oracle's candidates."""

    name = "table"

    def __init__(self, cells: Cells, best: np.ndarray) -> None:
        self.cells, self.best = cells, best

    def reset(self, seed: int | None = None, *, env: Any = None) -> None:
        return None

    def thresholds(self, obs: np.ndarray) -> Thresholds:
        return CANDIDATES[int(self.best[self.cells.index(np.asarray(obs, np.float64)[None, :])[0]])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="msao-paper", help="synthetic profile (expected scores needed) [msao-paper]")
    ap.add_argument("--bandwidth", help="bandwidth spec [the profile's]")
    ap.add_argument("--latency-price", type=float, default=0.2, help="latency price, score per SLO [0.2]")
    ap.add_argument("--features", default="mas_score,edge_queue_s",
                    help="observation features the table may read, comma-separated [mas_score,edge_queue_s]")
    ap.add_argument("--bins", type=int, default=8, help="quantile bins per feature [8]")
    ap.add_argument("--train-requests", type=int, default=6000, help="training requests to fit the table on [6000]")
    ap.add_argument("--requests", type=int, default=2000, help="test requests, as evaluate.py [2000]")
    ap.add_argument("--policy", help="an exported policy folder to roll out on the same test episodes")
    a = ap.parse_args(argv)
    try:
        names = [f.strip() for f in a.features.split(",") if f.strip()]
        unknown = [f for f in names if f not in OBSERVATION_SPEC.names]
        if unknown or not names:
            raise UserInputError(f"--features: {', '.join(unknown) or 'none given'}: not observation features "
                                 f"({', '.join(OBSERVATION_SPEC.names)})")
        if not 1 <= a.bins <= 64 or a.train_requests < 100 or a.requests < 100:
            raise UserInputError("--bins must be in [1, 64], --train-requests and --requests >= 100")
        scn = Scenario.build(profile=a.profile, bandwidth=a.bandwidth, upload_plans=False)
        scn = scn.with_tradeoff(TradeOff(latency_price=a.latency_price, cost_price=scn.trade.cost_price))
        scn.make_env("test").trace.expected_scores(a.profile)
        trained = scn.policy(a.policy, "ppo") if a.policy else None
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ep = scn.episode.n_requests
    test_seeds = scn.evaluation_seeds(a.requests)
    train_seeds = evaluation_seeds(a.train_requests, ep, 1)
    x_tr, r_tr = record(scn.make_env("train"), train_seeds, "oracle trajectory, train")
    x_te, r_te = record(scn.make_env("test"), test_seeds, "oracle trajectory, test")
    cols = [OBSERVATION_SPEC.names.index(f) for f in names]
    cells = Cells(x_tr, cols, a.bins)
    static_tr = int(np.argmax(r_tr.mean(axis=0)))
    fitted = table(cells.index(x_tr), r_tr, cells.n, static_tr)
    c_te = cells.index(x_te)
    hind = table(c_te, r_te, cells.n, int(np.argmax(r_te.mean(axis=0))))
    rows = np.arange(len(r_te))
    print(f"\n{scn.label('test')} | latency price {a.latency_price:g} | {len(r_te)} test requests, {len(r_tr)} training requests | "
          f"cells: {' x '.join(f'{n} ({s} bins)' for n, s in zip(names, cells.sizes))}\n")
    print("Along the oracle's trajectory (expected reward per request, test):")
    print(f"  per request (oracle)          {r_te.max(axis=1).mean():.4f}")
    print(f"  per cell, in hindsight        {r_te[rows, hind[c_te]].mean():.4f}")
    print(f"  per cell, fitted on train     {r_te[rows, fitted[c_te]].mean():.4f}")
    print(f"  one candidate for all         {r_te.mean(axis=0).max():.4f}  ({CANDIDATES[int(np.argmax(r_te.mean(axis=0)))]})")
    env = scn.make_env("test")
    pols = [TablePolicy(cells, fitted), scn.policy("oracle-expected"), scn.policy("tuned")] + ([trained] if trained else [])
    print("\nRolled out on the test episodes (own queues, realised rewards, the episodes evaluate.py uses):")
    for p in pols:
        log = run_episodes(env, p, test_seeds)
        label = {"table": "table policy (fitted on train)"}.get(p.name, p.name)
        print(f"  {label:<30} reward {np.mean(log.reward):.4f}  score {np.mean(log.score):.3f}  "
              f"p95 {np.percentile(log.latency_s, 95):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
