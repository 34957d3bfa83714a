"""Frontiers: every policy family over its knob, on the same test episodes, at a list of latency prices.

A *family* is a policy together with the knob that moves it along the quality/latency trade-off.
:func:`frontier` evaluates each family at every latency price ``p`` of a list (score per SLO of
latency; the cost price stays the scenario's), on the same test episodes as ``evaluate``:

=====================  ===============  ====================================================================
family                 knob             what runs at price ``p``
=====================  ===============  ====================================================================
learned, with a range  ``p``            the policy with ``p`` in its observation (the episode's trade-off);
                                        prices outside its ``tradeoff_range`` are skipped with a note
learned, no range      ``"fixed"``      one rollout; the points differ only in reward
``edge``, ``cloud``,   ``"fixed"``      one rollout (their decisions ignore the trade-off); the reward at
``static:...`` ...                      each price is recomputed from the log (:func:`reward_at`)
``tuned``              ``p``            TunedStatic refitted at ``p`` on the train split (below)
``msao``               ``p``            MSAO with its parameters refitted at ``p`` on the train split (below)
``msao-default``       ``"fixed"``      MSAO's hand-set default parameters (added whenever ``msao`` is asked)
``oracle`` and other   ``p``            one rollout per price (their decisions read the reward); every
hindsight names                         registered name with ``needs="simulator"`` is handled this way
=====================  ===============  ====================================================================

**Refits.** ``tuned`` and ``msao`` are refitted per price by grid search on the *train* split,
episodes :data:`~mllm_offload.splits.TUNING_SEEDS` (what :meth:`TunedStatic.fit_scenario
<mllm_offload.agents.baselines.TunedStatic.fit_scenario>` does at one price). A candidate's
decisions do not depend on the price, so each candidate runs once; its mean train reward at
every price is recomputed from that one log, and the best candidate per price (the first in grid
order on a tie, as in ``TunedStatic.fit``) is evaluated on the test episodes (once per distinct
candidate). ``tuned``'s candidates are ``TunedStatic``'s grid (``tuned_grid``: pass
:func:`mllm_offload.agents.threshold_grid`, which this stage cannot import); where the scenario's
policies choose upload plans, each price then gets TunedStatic's plan search (the best plan at its
best thresholds, then the best thresholds under that plan; ``params`` gains ``upload_plan``). ``msao``'s
candidates (:data:`MSAO_GRID`) shift ``base_low`` and ``base_high`` together by one of
``-0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3`` (a lower MAS band sends more requests to the cloud) and set
``base_conf`` to one of ``0, 0.2, 0.35, 0.5, 0.65, 0.75, 0.85, 0.95`` (a lower one accepts more edge
answers; without the values below 0.5, MSAO's refit on ``mobile-3g`` picked the same setting at
every price from 0.02 to 1); the other parameters keep their defaults (56 candidates). The grid holds MSAO's defaults (shift 0, ``base_conf`` 0.75), so on the train split
the refitted MSAO is never worse than ``msao-default``, which is reported as its own family.

**Dominance** (:func:`dominance`): for every deployable family other than the learned one, and
for each of its points, the learned policy's p95 latency at the baseline's score (as a ratio to
the baseline's p95) and its score at the baseline's p95 (minus the baseline's score), read off the
learned policy's frontier by linear interpolation. That frontier is the learned policy's
*non-dominated* points (a point is dropped when another point has a score at least as high and a
p95 at most as high): sorted by score, their p95 rises with the score, so one piecewise-linear
curve serves both readings. A value is ``None`` where the baseline's score (or p95) lies outside
the curve's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RewardWeights
from ..decision import SEND_ALL, Thresholds, UploadPlan
from ..errors import UserInputError
from ..policy import REGISTRY, Policy, split_names
from ..rules import MSAORule, StaticPlan, StaticThresholds
from ..splits import TUNING_SEEDS, evaluation_seeds
from ..tradeoff import MAX_LATENCY_PRICE, TradeOff
from .metrics import summarize
from .rollout import EpisodeLog, run_episodes

__all__ = [
    "MSAO_CONFS",
    "MSAO_GRID",
    "MSAO_SHIFTS",
    "Frontier",
    "dominance",
    "frontier",
    "frontier_text",
    "msao_candidates",
    "pareto_front",
    "reward_at",
]

#: Shifts of MSAO's ``(base_low, base_high)`` band (added to both) in its refit grid.
MSAO_SHIFTS: tuple[float, ...] = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3)
#: ``base_conf`` values of MSAO's refit grid.
MSAO_CONFS: tuple[float, ...] = (0.0, 0.2, 0.35, 0.5, 0.65, 0.75, 0.85, 0.95)
#: MSAO's refit grid: every shift with every ``base_conf`` (56 candidates).
MSAO_GRID: tuple[tuple[float, ...], tuple[float, ...]] = (MSAO_SHIFTS, MSAO_CONFS)

#: Families compared with the learned one by :func:`dominance`, in this order when present
#: (then every other deployable family).
BASELINES: tuple[str, ...] = ("msao", "msao-default", "tuned", "edge", "cloud")

#: Metrics of :func:`~mllm_offload.evaluation.metrics.summarize` kept in a point (beside
#: ``knob``, ``latency_price``, ``cost_price`` and, for refits, ``params`` and ``train_reward``).
POINT_METRICS: tuple[str, ...] = (
    "requests", "reward_mean", "score_mean", "latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_p99_s",
    "slo_attainment", "cloud_share", "edge_answer_share", "cancelled_share", "mb_uploaded_mean", "cloud_cost_usd_per_1k",
    "energy_j_mean",
)

FIXED = "fixed"


def reward_at(log: EpisodeLog, weights: RewardWeights, slo_s: float) -> np.ndarray:
    """Per-request rewards of ``log`` under ``weights`` (float64, one per request).

    The same formula and the same order of operations as ``OffloadEnv.step_thresholds``, so at
    the rollout's own trade-off the result equals ``log.reward`` exactly:
    ``quality*score - latency/SLO*lat - slo_violation*[lat > SLO] - cost_per_usd*cost - energy_per_kj*1e-3*energy_j``.
    """
    lat = np.asarray(log.latency_s, np.float64)
    w_l, w_e = weights.latency / slo_s, weights.energy_per_kj * 1e-3
    return (weights.quality * np.asarray(log.score, np.float64) - w_l * lat - np.where(lat > slo_s, weights.slo_violation, 0.0)
            - weights.cost_per_usd * np.asarray(log.cost_usd, np.float64) - w_e * np.asarray(log.energy_j, np.float64))


def msao_candidates(slo_s: float, grid: tuple[Sequence[float], Sequence[float]] = MSAO_GRID) -> list[tuple[dict[str, float], MSAORule]]:
    """MSAO's refit candidates: ``(params, rule)`` for every shift of ``(base_low, base_high)``
    and every ``base_conf`` of ``grid``, shifts outer, in grid order."""
    d = MSAORule(slo_s)
    out = []
    for shift in grid[0]:
        for conf in grid[1]:
            lo, hi = round(d.base_low + shift, 10), round(d.base_high + shift, 10)
            params = {"shift": float(shift), "base_low": lo, "base_high": hi, "base_conf": float(conf)}
            out.append((params, MSAORule(slo_s, base_low=lo, base_high=hi, base_conf=float(conf))))
    return out


@dataclass
class Frontier:
    """The points of every family; see the module docstring.

    ``families``: name -> points in price order, each a dict with ``knob`` (the price for
    per-price families, ``"fixed"`` otherwise), ``latency_price``, ``cost_price``, the metrics of
    :data:`POINT_METRICS` (``reward_mean`` at that price) and, for refits, ``params`` and
    ``train_reward``. ``kinds``: name -> ``conditioned``, ``fixed``, ``refit`` or ``per-price``.
    ``hindsight``: families that read realised outcomes (not deployable). ``learned``: the name
    of the learned family dominance is about, or ``None``. ``notes``: what was skipped and why.
    ``grids``: the refit grids (family -> their description and number of candidates).
    """

    prices: list[float]
    cost_price: float
    families: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    hindsight: list[str] = field(default_factory=list)
    learned: str | None = None
    notes: list[str] = field(default_factory=list)
    label: str = ""
    split: str = "test"
    slo_s: float = float("nan")
    requests: int = 0
    seconds: float = 0.0
    grids: dict[str, Any] = field(default_factory=dict)

    def at(self, price: float) -> dict[str, dict[str, Any]]:
        """The point of every family at ``price`` (families without one are left out)."""
        return {name: p for name, pts in self.families.items() for p in pts if _same(p["latency_price"], price)}

    def to_json(self) -> dict[str, Any]:
        """``{"frontier": {family: [points]}, "dominance": dominance(self), "frontier_meta": {...}}``."""
        return {
            "frontier": {k: [dict(p) for p in v] for k, v in self.families.items()},
            "dominance": dominance(self),
            "frontier_meta": {"latency_prices": list(self.prices), "cost_price": self.cost_price, "kinds": dict(self.kinds),
                              "hindsight": list(self.hindsight), "learned": self.learned, "notes": list(self.notes),
                              "split": self.split, "requests": self.requests, "slo_s": self.slo_s, "seconds": round(self.seconds, 2),
                              "grids": dict(self.grids)},
        }


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_prices(prices: Sequence[float]) -> list[float]:
    out = sorted({float(p) for p in prices})
    if not out:
        raise UserInputError("--latency-prices: no price given")
    for p in out:
        if not (math.isfinite(p) and 0.0 <= p <= MAX_LATENCY_PRICE):
            raise UserInputError(f"--latency-prices: {p} must be a number in [0, {MAX_LATENCY_PRICE:g}]")
    return out


def _point(knob: Any, t: TradeOff, log: EpisodeLog, w: RewardWeights, slo_s: float) -> dict[str, Any]:
    m = summarize(log, slo_s)
    m["reward_mean"] = float(np.mean(reward_at(log, w, slo_s)))
    return {"knob": knob, "latency_price": t.latency_price, "cost_price": t.cost_price, **{k: m[k] for k in POINT_METRICS}}


def _checked(log: EpisodeLog, w: RewardWeights, slo_s: float, what: str) -> EpisodeLog:
    """``log`` after checking that :func:`reward_at` reproduces the env's own rewards."""
    if not np.allclose(reward_at(log, w, slo_s), np.asarray(log.reward, np.float64), rtol=1e-9, atol=1e-9):
        raise RuntimeError(f"frontier: reward_at disagrees with the environment's reward for {what}; the reward formula changed")
    return log


def frontier(
    scenario: Any,
    learned: Policy | None,
    families: Sequence[str] | str,
    prices: Sequence[float],
    requests: int,
    seed: int = 0,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    *,
    split: str = "test",
    tuned_grid: Sequence[Thresholds] | None = None,
    msao_grid: tuple[Sequence[float], Sequence[float]] = MSAO_GRID,
    others: Sequence[Policy] = (),
) -> Frontier:
    """Evaluate every family at every latency price on the same ``split`` episodes.

    Args:
        scenario: a :class:`~mllm_offload.scenario.Scenario`; its cost price, budgets and the
            other reward weights hold at every point.
        learned: the trained policy (family named by its ``name``, e.g. ``ppo``), or ``None``;
            with a ``tradeoff_range`` it runs at each price inside the range (others are skipped
            with a note; none inside is a :class:`UserInputError`), without one it runs once.
        families: registered names or exported folders (a list or a comma-separated string):
            ``tuned`` and ``msao`` are refitted per price, ``msao`` adds ``msao-default``; names
            registered with ``needs="simulator"`` (``oracle``, ...) run once per price; anything
            else runs once. Unknown names are a :class:`UserInputError`.
        prices: latency prices (score per SLO), each in ``[0, 100]``; sorted, duplicates dropped.
        requests: test requests per point (``ceil(requests / episode length)`` episodes, the
            episodes of :func:`mllm_offload.splits.evaluation_seeds` with ``seed``).
        progress: wraps an iterable in a progress bar (used twice: the rollouts, then the test
            rollouts of refitted candidates), or ``None``.
        split: the split evaluated on; refits always use the train split.
        tuned_grid: ``tuned``'s candidates, required when ``tuned`` is asked for: pass
            ``mllm_offload.agents.threshold_grid()`` (TunedStatic's own grid).
        msao_grid: ``(shifts, base_confs)`` of MSAO's refit (:data:`MSAO_GRID`).
        others: more built policies, each its own family under its ``name`` (classified like
            ``learned``: per price with a range, once without).
    """
    import time

    t0 = time.perf_counter()
    prices = _check_prices(prices)
    base = scenario.with_tradeoff(scenario.trade, None)
    trade: TradeOff = base.trade
    trades = [TradeOff(latency_price=p, cost_price=trade.cost_price, budgets=trade.budgets) for p in prices]
    env = base.make_env(split)
    slo = float(env.slo_s)
    weights = [t.weights(env.weights) for t in trades]
    own_w = trade.weights(env.weights)
    seeds = evaluation_seeds(requests, env.n_requests, seed)
    fr = Frontier(prices=prices, cost_price=trade.cost_price, label=base.label(split), split=split, slo_s=slo,
                  requests=len(seeds) * env.n_requests)
    wrap = progress or (lambda it: it)

    # -- plan: what runs, and how ---------------------------------------------------------------
    names = split_names(families) if isinstance(families, str) else [n for n in families if n]
    built: list[Policy] = ([learned] if learned is not None else []) + list(others)
    taken = [p.name for p in built] + names + (["msao-default"] if "msao" in names else [])
    dup = sorted({n for n in taken if taken.count(n) > 1})
    if dup:
        raise UserInputError(f"frontier: a family is named twice: {', '.join(dup)}")
    fixed: list[Policy] = []
    per_price: list[tuple[Policy, list[int]]] = []
    refits: list[tuple[str, list[tuple[dict[str, Any], Policy]]]] = []

    def add(pol: Policy) -> None:  # a policy that reads the trade-off runs per price inside its range, any other once
        rng = getattr(pol, "tradeoff_range", None)
        if rng is None:
            fixed.append(pol)
            fr.kinds[pol.name] = "fixed"
            return
        inside = [j for j, t in enumerate(trades) if rng.contains(t)]
        outside = [prices[j] for j in range(len(prices)) if j not in inside]
        span = f"latency price [{rng.latency_price[0]:g}, {rng.latency_price[1]:g}], cost price [{rng.cost_price[0]:g}, {rng.cost_price[1]:g}]"
        if not inside:
            raise UserInputError(f"--latency-prices: none of {', '.join(f'{p:g}' for p in prices)} (cost price {trade.cost_price:g}) "
                                 f"lies inside policy {pol.name!r}'s trained range ({span})")
        if outside:
            fr.notes.append(f"{pol.name}: latency price{'s' if len(outside) > 1 else ''} {', '.join(f'{p:g}' for p in outside)} "
                            f"outside its trained range ({span}): skipped")
        per_price.append((pol, inside))
        fr.kinds[pol.name] = "conditioned"

    for pol in built:
        add(pol)
    for name in names:
        entry = REGISTRY.get(name.partition(":")[0])
        if name == "tuned":
            if tuned_grid is None:
                raise ValueError("frontier: the tuned family needs tuned_grid (pass mllm_offload.agents.threshold_grid())")
            refits.append(("tuned", [({"tau_low": th.tau_low, "tau_high": th.tau_high, "tau_conf": th.tau_conf}, StaticThresholds(th, "tuned"))
                                     for th in tuned_grid]))
            fr.kinds["tuned"] = "refit"
            fr.grids["tuned"] = {"candidates": len(tuned_grid), "train_seeds": list(TUNING_SEEDS)}
        elif name == "msao":
            refits.append(("msao", [(p, r) for p, r in msao_candidates(slo, msao_grid)]))
            fr.kinds["msao"] = "refit"
            fr.grids["msao"] = {"shift": [float(x) for x in msao_grid[0]], "base_conf": [float(x) for x in msao_grid[1]],
                                "candidates": len(refits[-1][1]), "train_seeds": list(TUNING_SEEDS)}
            add(MSAORule(slo, name="msao-default"))
        else:
            pol = base.policy(name, name, seed=seed)
            if entry is not None and entry.needs == "simulator" and not (Path(name) / "policy.json").is_file():
                per_price.append((pol, list(range(len(prices)))))
                fr.kinds[name] = "per-price"
                fr.hindsight.append(name)
            else:
                add(pol)
    fr.learned = learned.name if learned is not None else None

    # -- rollouts: fixed families once, per-price families per price, refit candidates once on train
    logs: dict[str, list[tuple[int, Any, EpisodeLog]]] = {}
    train_env = base.make_env("train") if refits else None
    tuning = list(TUNING_SEEDS)
    train_r: dict[str, np.ndarray] = {}
    jobs: list[tuple[str, Any, Any]] = [("fixed", p, None) for p in fixed]
    jobs += [("price", pol, j) for pol, js in per_price for j in js]
    jobs += [("cand", (fam, c, pol), None) for fam, cands in refits for c, (_, pol) in enumerate(cands)]
    for fam, cands in refits:
        train_r[fam] = np.full((len(cands), len(prices)), -math.inf)
    for kind, what, j in wrap(jobs):
        if kind == "fixed":
            log = _checked(run_episodes(env, what, seeds), own_w, slo, what.name)
            logs[what.name] = [(k, FIXED, log) for k in range(len(prices))]
        elif kind == "price":
            log = _checked(run_episodes(env, what, seeds, {"tradeoff": trades[j]}), weights[j], slo, what.name)
            logs.setdefault(what.name, []).append((j, prices[j], log))
        else:
            fam, c, pol = what
            assert train_env is not None
            log = _checked(run_episodes(train_env, pol, tuning), own_w, slo, f"{fam} candidate {c}")
            n = len(tuning) * train_env.n_requests
            for k, w in enumerate(weights):  # the sum TunedStatic.fit_scenario takes, in the same order
                train_r[fam][c, k] = sum(reward_at(log, w, slo).tolist()) / n

    # -- refits: the best candidate per price on train, each distinct one evaluated on the test split once
    chosen = {fam: [int(np.argmax(train_r[fam][:, k])) for k in range(len(prices))] for fam, _ in refits}
    static_plans = base.static_plans() if "tuned" in chosen else None
    if static_plans and train_env is not None:
        n_grid = len(dict(refits)["tuned"])
        chosen["tuned"] = _tuned_plans(dict(refits)["tuned"], train_r, chosen["tuned"], static_plans, train_env, tuning, weights, own_w,
                                       slo, wrap)
        fr.grids["tuned"]["plans"] = [p.variant() or "whole" for p in static_plans]
        fr.grids["tuned"]["plan_candidates_run"] = len(dict(refits)["tuned"]) - n_grid
    test_jobs = sorted({(fam, c) for fam, cs in chosen.items() for c in cs})
    cand_of = dict(refits)
    test_logs: dict[tuple[str, int], EpisodeLog] = {}
    for fam, c in wrap(test_jobs):
        test_logs[fam, c] = _checked(run_episodes(env, cand_of[fam][c][1], seeds), own_w, slo, f"{fam} candidate {c}")
    for fam, cs in chosen.items():
        logs[fam] = [(k, prices[k], test_logs[fam, c]) for k, c in enumerate(cs)]

    # -- points, in the order: learned, others, then the families as named (msao-default after msao)
    order = [p.name for p in built]
    for name in names:
        order += [name] + (["msao-default"] if name == "msao" else [])
    for name in order:
        pts = []
        for k, knob, log in sorted(logs[name], key=lambda x: x[0]):
            pt = _point(knob, trades[k], log, weights[k], slo)
            if fr.kinds[name] == "refit":
                c = chosen[name][k]
                pt["params"] = dict(cand_of[name][c][0])
                pt["train_reward"] = float(train_r[name][c, k])
            pts.append(pt)
        fr.families[name] = pts
    fr.seconds = time.perf_counter() - t0
    return fr


def _tuned_plans(cands: list[tuple[dict[str, Any], Policy]], train_r: dict[str, np.ndarray], first: list[int],
                 static_plans: Sequence[UploadPlan], train_env: Any, tuning: list[int], weights: Sequence[RewardWeights],
                 own_w: RewardWeights, slo: float, wrap: Callable[[Iterable[Any]], Iterable[Any]]) -> list[int]:
    """TunedStatic's plan search (:meth:`~mllm_offload.agents.TunedStatic.fit`) at every price at
    once: (2) each price's best plan at its best thresholds, (3) the best thresholds under that
    plan. New candidates are appended to ``cands`` and ``train_r["tuned"]``; returns the chosen
    candidate per price."""
    grid: list[Thresholds] = [pol.th for _, pol in cands]  # type: ignore[attr-defined]  # StaticThresholds
    n = len(tuning) * train_env.n_requests
    plans = [p for p in static_plans if p != SEND_ALL]
    index: dict[tuple[Thresholds, UploadPlan | None], int] = {(th, None): c for c, th in enumerate(grid)}

    def run(pairs: list[tuple[Thresholds, UploadPlan]]) -> None:
        rows = []
        for th, plan in wrap([q for q in dict.fromkeys(pairs) if q not in index]):
            try:
                log = _checked(run_episodes(train_env, StaticPlan(th, plan, "tuned"), tuning), own_w, slo, f"tuned candidate {plan.variant()}")
                row = [sum(reward_at(log, w, slo).tolist()) / n for w in weights]
            except UserInputError:  # the trace lacks this plan's variant for one of the episodes' requests: never chosen
                row = [-math.inf] * len(weights)
            index[th, plan] = len(cands)
            cands.append(({"tau_low": th.tau_low, "tau_high": th.tau_high, "tau_conf": th.tau_conf, "upload_plan": plan.variant()},
                          StaticPlan(th, plan, "tuned")))
            rows.append(row)
        if rows:
            train_r["tuned"] = np.vstack([train_r["tuned"], np.asarray(rows)])

    run([(grid[c], p) for c in sorted(set(first)) for p in plans])
    best_plan: list[UploadPlan | None] = []
    for k, c in enumerate(first):  # stage 2: the first plan that beats the best so far, in plan order (as fit)
        bp, br = None, train_r["tuned"][c, k]
        for p in plans:
            rp = train_r["tuned"][index[grid[c], p], k]
            if rp > br:
                bp, br = p, rp
        best_plan.append(bp)
    run([(th, q) for q in sorted({q for q in best_plan if q is not None}, key=lambda q: q.index) for th in grid])
    r = train_r["tuned"]
    out = []
    for k, (c, bq) in enumerate(zip(first, best_plan)):  # stage 3: the best thresholds under that plan, if strictly better
        if bq is None:
            out.append(c)
            continue
        rows = [index[th, bq] for th in grid]
        c3 = rows[int(np.argmax(r[rows, k]))]
        out.append(c3 if r[c3, k] > r[index[grid[c], bq], k] else index[grid[c], bq])
    return out


# -- dominance ------------------------------------------------------------------------------------


def pareto_front(points: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, p95s)`` of the non-dominated points, sorted by score; both strictly increase.

    A point is dominated when another has a score at least as high and a p95 latency at most as
    high (of equal points, one is kept). Points with a missing score or p95 are ignored.
    """
    pts = [(float(p["score_mean"]), float(p["latency_p95_s"])) for p in points
           if p.get("score_mean") is not None and p.get("latency_p95_s") is not None
           and math.isfinite(float(p["score_mean"])) and math.isfinite(float(p["latency_p95_s"]))]
    pts.sort(key=lambda x: (-x[0], x[1]))
    front: list[tuple[float, float]] = []
    for s, q in pts:
        if not front or q < front[-1][1]:
            front.append((s, q))
    front.reverse()
    return np.array([s for s, _ in front], np.float64), np.array([q for _, q in front], np.float64)


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    """``ys`` at ``x`` along the piecewise-linear curve ``(xs, ys)`` (``xs`` increasing); ``None``
    outside ``[xs[0], xs[-1]]`` (a relative tolerance of 1e-9 lets a single point match itself)."""
    if len(xs) == 0 or not math.isfinite(x):
        return None
    tol = 1e-9 * max(1.0, abs(x))
    if x < xs[0] - tol or x > xs[-1] + tol:
        return None
    return float(np.interp(x, xs, ys))


def dominance(fr: Frontier, learned: str | None = None) -> dict[str, dict[str, list[Any]]]:
    """The learned family against every deployable baseline, per baseline point.

    For each baseline (``msao``, ``msao-default``, ``tuned``, ``edge``, ``cloud``, then any other
    deployable family present): lists aligned with the baseline's points, ``latency_price``,
    ``score_mean``, ``latency_p95_s``, ``ppo_p95_over_baseline_at_equal_score`` (the learned
    policy's p95 at the baseline's score divided by the baseline's p95: below 1 is faster at
    equal quality) and ``ppo_score_minus_baseline_at_equal_p95`` (its score at the baseline's
    p95 minus the baseline's score: above 0 is better at equal tail latency), each ``None``
    outside the learned policy's frontier (:func:`pareto_front`). ``{}`` without a learned family.
    """
    name = learned or fr.learned
    if name is None or name not in fr.families:
        return {}
    scores, p95s = pareto_front(fr.families[name])
    rest = [n for n in fr.families if n != name and n not in fr.hindsight]
    out: dict[str, dict[str, list[Any]]] = {}
    for b in [n for n in BASELINES if n in rest] + [n for n in rest if n not in BASELINES]:
        d: dict[str, list[Any]] = {"latency_price": [], "score_mean": [], "latency_p95_s": [],
                                   "ppo_p95_over_baseline_at_equal_score": [], "ppo_score_minus_baseline_at_equal_p95": []}
        for p in fr.families[b]:
            s, q = float(p["score_mean"]), float(p["latency_p95_s"])
            q_at = _interp(s, scores, p95s)
            s_at = _interp(q, p95s, scores)
            d["latency_price"].append(p["latency_price"])
            d["score_mean"].append(s)
            d["latency_p95_s"].append(q)
            d["ppo_p95_over_baseline_at_equal_score"].append(None if q_at is None or q <= 0 else q_at / q)
            d["ppo_score_minus_baseline_at_equal_p95"].append(None if s_at is None else s_at - s)
        out[b] = d
    return out


# -- text -------------------------------------------------------------------------------------------

_COLS = (
    ("reward_mean", "reward", "{:.4f}"),
    ("score_mean", "score", "{:.3f}"),
    ("latency_mean_s", "lat mean s", "{:.3f}"),
    ("latency_p95_s", "p95 s", "{:.3f}"),
    ("slo_attainment", "SLO att.", "{:.3f}"),
    ("cloud_share", "cloud share", "{:.3f}"),
    ("cloud_cost_usd_per_1k", "$/1k req", "{:.4f}"),
)


def _knob(p: Mapping[str, Any]) -> str:
    k = p["knob"]
    return f"{k:g}" if isinstance(k, (int, float)) else str(k)


def _params(p: Mapping[str, Any]) -> str:
    q = p.get("params")
    if not q:
        return ""
    if "tau_low" in q:
        plan = f", plan {q['upload_plan']}" if q.get("upload_plan") else ""
        return f"thresholds {q['tau_low']:g}/{q['tau_high']:g}/{q['tau_conf']:g}{plan}"
    return f"shift {q['shift']:+.1f}, base_conf {q['base_conf']:g}"


def price_table(fr: Frontier, price: float) -> str:
    """A markdown table of every family's point at ``price``."""
    rows = fr.at(price)
    lines = ["| family | knob | " + " | ".join(h for _, h, _ in _COLS) + " | fitted |", "|---" * (len(_COLS) + 3) + "|"]
    for name, p in rows.items():
        cells = ["" if p.get(k) is None else fmt.format(p[k]) for k, _, fmt in _COLS]
        lines.append(f"| {name} | {_knob(p)} | " + " | ".join(cells) + f" | {_params(p)} |")
    return "\n".join(lines)


def _winner(fr: Frontier, price: float) -> str:
    rows = {n: p for n, p in fr.at(price).items() if n not in fr.hindsight and p.get("reward_mean") is not None}
    if not rows:
        return "no deployable family at this price"
    best = max(rows, key=lambda n: rows[n]["reward_mean"])
    line = f"best deployable by reward: {best} ({rows[best]['reward_mean']:.4f} per request)"
    others = sorted(((p["reward_mean"], n) for n, p in rows.items() if n != best), reverse=True)
    if others:
        line += f", next {others[0][1]} ({others[0][0]:.4f})"
    return line


def _fmt(values: Sequence[Any], fmt: str) -> str:
    cells = ["n/a" if v is None else fmt.format(v) for v in values]
    return cells[0] if len(set(cells)) == 1 else " / ".join(cells)


def dominance_lines(fr: Frontier) -> list[str]:
    """One line per baseline of :func:`dominance` (values per baseline point, in price order;
    one value when all are equal; ``n/a`` outside the learned policy's frontier)."""
    dom = dominance(fr)
    if not dom:
        return []
    name = fr.learned
    lines = [f"{name} against each baseline, read off {name}'s frontier (non-dominated points, linear interpolation; "
             f"n/a: outside it); values per baseline point at latency prices {', '.join(f'{p:g}' for p in fr.prices)}:"]
    for b, d in dom.items():
        ratio = _fmt(d["ppo_p95_over_baseline_at_equal_score"], "{:.2f}x")
        diff = _fmt([None if v is None else 100 * v for v in d["ppo_score_minus_baseline_at_equal_p95"]], "{:+.1f}")
        lines.append(f"- vs {b}: {name}'s p95 at {b}'s score = {ratio} {b}'s p95; {name}'s score at {b}'s p95 = {diff} pts")
    return lines


def frontier_text(fr: Frontier, presets: Mapping[str, float] | None = None) -> str:
    """What ``evaluate --frontier`` (``presets=None``: a table per evaluated price) and ``train``
    (``presets=tradeoff.PRESETS``: a table per named preset that was evaluated) print: the tables,
    the best deployable family by reward at each, the notes and the dominance lines."""
    parts = []
    if presets is None:
        wanted = [(f"latency price {p:g}", p) for p in fr.prices]
    else:
        wanted = []
        for label, p in presets.items():
            if any(_same(p, q) for q in fr.prices):
                wanted.append((f"{label} (latency price {p:g})", p))
            else:
                parts.append(f"preset {label} (latency price {p:g}) was not evaluated")
    for label, p in wanted:
        parts.append(f"### {label}\n\n{price_table(fr, p)}\n\n{_winner(fr, p)}")
    parts += [f"note: {n}" for n in fr.notes]
    dom = dominance_lines(fr)
    if dom:
        parts.append("\n".join(dom))
    return "\n\n".join(parts)
