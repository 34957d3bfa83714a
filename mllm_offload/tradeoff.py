"""The user's trade-off between quality, latency and cost (a contract, imports only contracts).

A :class:`TradeOff` says what one SLO of latency and one dollar per 1k requests are worth, in
*score units* (the task score is in [0, 1], so 0.01 is one score point):

================  =============================  ===========================================
field             unit                           meaning
================  =============================  ===========================================
``latency_price`` score per SLO of latency       a request that takes one SLO loses this much
``cost_price``    score per (USD per 1k req.)    one dollar per thousand requests costs this
``budgets``       seconds, USD per 1k, MB        optional hard limits: p95 latency, cost, upload
================  =============================  ===========================================

The per-request reward is

    ``quality * score - latency_price * (latency / SLO + k * [latency > SLO]) - cost_price * 1000 * cost_usd
    - energy_per_kj * energy_kJ``

where ``k = slo_violation / latency`` of the base :class:`~mllm_offload.config.RewardWeights`
(2.5 with the defaults: an SLO miss costs as much as 2.5 SLOs of latency), so that the one
latency price moves every latency term together. The package's earlier fixed weights
(``latency: 0.2``, ``slo_violation: 0.5``, ``cost_per_usd: 100``) are the setting
``TradeOff(0.2, 0.1)``, named ``balanced``. Budgets are constraints: training holds them with a Lagrange multiplier each
(:mod:`mllm_offload.agents.ppo.constraints`); a p95 budget ``B`` is the constraint
``P(latency > B) <= 0.05``.

A policy trained over a :class:`TradeOffRange` takes the trade-off as input (the observation
features ``latency_price_log`` and ``cost_price_log``), so one exported artifact serves every
setting inside its range; :meth:`TradeOffRange.check` refuses one outside with a clear line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from .config import RewardWeights, StrictModel
from .errors import UserInputError

__all__ = [
    "BUDGETS",
    "DEFAULT_RANGE",
    "PRESETS",
    "TRAIN_MARGIN",
    "BudgetSpec",
    "Budgets",
    "TradeOff",
    "TradeOffRange",
    "parse_prices",
    "preset_price",
    "price_features",
]

#: USD per request -> USD per 1k requests
PER_1K = 1000.0
#: highest latency price a trade-off may name (score per SLO)
MAX_LATENCY_PRICE = 100.0
#: highest cost price (score per USD per 1k requests)
MAX_COST_PRICE = 1e4


@dataclass(frozen=True)
class BudgetSpec:
    """One budget: its :class:`Budgets` field, its ``train`` flag, the evaluation metric it limits
    (a key of :func:`~mllm_offload.evaluation.metrics.summarize`) and how the final comparison
    reports it (``line``, formatted with ``limit`` and ``value``)."""

    field: str
    flag: str
    metric: str
    line: str

    @property
    def arg(self) -> str:
        """The flag's argparse destination (``--p95-budget`` -> ``p95_budget``)."""
        return self.flag.removeprefix("--").replace("-", "_")


#: every budget, in the order the CLI reports them
BUDGETS: tuple[BudgetSpec, ...] = (
    BudgetSpec("p95_latency_s", "--p95-budget", "latency_p95_s",
               "p95 budget {limit:g} s: PPO's p95 on the test split is {value:.2f} s"),
    BudgetSpec("cost_usd_per_1k", "--cost-budget", "cloud_cost_usd_per_1k",
               "cost budget {limit:g} USD per 1k requests: PPO's cost on the test split is {value:.4f}"),
    BudgetSpec("upload_mb_per_request", "--upload-budget", "mb_uploaded_mean",
               "upload budget {limit:g} MB per request: PPO uploads {value:.4f} MB per request on the test split"),
)


class Budgets(StrictModel):
    """Optional hard limits a trained policy must hold (``None``: no limit); :data:`BUDGETS`
    names each one's flag and metric."""

    p95_latency_s: float | None = Field(None, gt=0.0, le=3600.0, description="95th-percentile latency, seconds")
    cost_usd_per_1k: float | None = Field(None, ge=0.0, le=1e6, description="mean cloud cost, USD per 1k requests")
    upload_mb_per_request: float | None = Field(None, ge=0.0, le=1e4,
                                                description="mean bytes uploaded per request, MB (1e6 bytes; a cancelled upload counts what was sent)")

    def limits(self) -> list[tuple[BudgetSpec, float]]:
        """The budgets that are set, each with its limit."""
        return [(b, v) for b in BUDGETS if (v := getattr(self, b.field)) is not None]

    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.limits())

    def met_by(self, metrics: dict[str, Any]) -> bool:
        """Whether evaluation ``metrics`` hold every limit (a metric they lack counts as not held)."""
        return all(metrics.get(b.metric, math.inf) <= v for b, v in self.limits())


class TradeOff(StrictModel):
    """What latency and cost are worth in score units; see the module docstring."""

    latency_price: float = Field(0.2, ge=0.0, le=MAX_LATENCY_PRICE, description="score per SLO of latency")
    cost_price: float = Field(0.1, ge=0.0, le=MAX_COST_PRICE, description="score per USD per 1k requests")
    budgets: Budgets = Budgets()

    def weights(self, base: RewardWeights) -> RewardWeights:
        """``base`` with its latency, SLO-miss and cost weights set from this trade-off (the SLO-miss
        penalty keeps its ratio to the latency weight; unchanged when ``base.latency`` is 0)."""
        miss = base.slo_violation * self.latency_price / base.latency if base.latency > 0 else base.slo_violation
        return base.model_copy(update={"latency": self.latency_price, "slo_violation": miss, "cost_per_usd": self.cost_price * PER_1K})

    @classmethod
    def from_weights(cls, w: RewardWeights, budgets: Budgets | None = None) -> TradeOff:
        """The trade-off that :class:`RewardWeights` ``w`` express (``latency``, ``cost_per_usd / 1000``);
        a weight beyond a price's range is a one-line :class:`UserInputError` naming it."""
        if not 0.0 <= w.latency <= MAX_LATENCY_PRICE:
            raise UserInputError(f"reward.latency: {w.latency:g} is the latency price, which must be in [0, {MAX_LATENCY_PRICE:g}]")
        if not 0.0 <= w.cost_per_usd <= MAX_COST_PRICE * PER_1K:
            raise UserInputError(f"reward.cost_per_usd: {w.cost_per_usd:g} / 1000 is the cost price, which must be in [0, {MAX_COST_PRICE:g}]")
        return cls(latency_price=w.latency, cost_price=w.cost_per_usd / PER_1K, budgets=budgets or Budgets())

    def features(self) -> tuple[float, float]:
        """The observation features ``(latency_price_log, cost_price_log)``: natural logs, a
        price of 0 counting as ``1e-3`` (clipped into the observation range by the caller)."""
        return price_features(self.latency_price, self.cost_price)

    def label(self) -> str:
        """Short text such as ``latency 0.2/SLO, cost 0.1 per $/1k``."""
        return f"latency {self.latency_price:g}/SLO, cost {self.cost_price:g} per $/1k"


class TradeOffRange(StrictModel):
    """The trade-offs a conditioned policy was trained on (and so may be asked for at serve time).

    Training draws ``latency_price`` (and ``cost_price``) log-uniformly from ``[lo, hi]`` once
    per episode; ``lo == hi`` is a policy trained at one setting only.
    """

    latency_price: tuple[float, float] = (0.02, 1.0)
    cost_price: tuple[float, float] = (0.1, 0.1)

    @model_validator(mode="after")
    def _ordered(self) -> TradeOffRange:
        for name, (lo, hi), top in (("latency_price", self.latency_price, MAX_LATENCY_PRICE),
                                    ("cost_price", self.cost_price, MAX_COST_PRICE)):
            if not (0.0 < lo <= hi <= top):
                raise ValueError(f"{name}: need 0 < lo <= hi <= {top:g}, got ({lo:g}, {hi:g})")
        return self

    @classmethod
    def single(cls, t: TradeOff) -> TradeOffRange:
        """The range of a policy trained at ``t`` only (prices of 0 become 1e-3 for the log scale)."""
        lp, cp = max(t.latency_price, 1e-3), max(t.cost_price, 1e-3)
        return cls(latency_price=(lp, lp), cost_price=(cp, cp))

    def sample(self, rng: np.random.Generator, budgets: Budgets | None = None) -> TradeOff:
        """One trade-off, each price log-uniform in its range (one draw per price, always)."""
        u = rng.random(2)
        (a, b), (c, d) = self.latency_price, self.cost_price
        lp = math.exp(math.log(a) + u[0] * (math.log(b) - math.log(a)))
        cp = math.exp(math.log(c) + u[1] * (math.log(d) - math.log(c)))
        return TradeOff(latency_price=lp, cost_price=cp, budgets=budgets or Budgets())

    def latency_prices(self, n: int) -> list[float]:
        """``n`` latency prices spread log-evenly over the range, ends included (the geometric
        middle for ``n == 1``): the validation episodes' prices, and where a warm start fits
        TunedStatic."""
        lo, hi = self.latency_price
        return [float(p) for p in np.geomspace(lo, hi, n)] if n > 1 else [math.sqrt(lo * hi)]

    def widened(self, factor: float) -> TradeOffRange:
        """The latency-price range stretched by ``factor`` on each side, in log scale (bounded by
        1e-3, below which the observation feature no longer changes, and the price maximum); the
        cost-price range unchanged."""
        lo, hi = self.latency_price
        return self.model_copy(update={"latency_price": (max(lo / factor, 1e-3), min(hi * factor, MAX_LATENCY_PRICE))})

    def default(self) -> TradeOff:
        """The setting used when none is asked for: ``balanced`` (0.2) if inside the range, else
        the geometric middle of each price range."""
        def mid(r: tuple[float, float], pref: float) -> float:
            return pref if r[0] <= pref <= r[1] else math.sqrt(r[0] * r[1])

        return TradeOff(latency_price=mid(self.latency_price, 0.2), cost_price=mid(self.cost_price, 0.1))

    def contains(self, t: TradeOff, rtol: float = 1e-6) -> bool:
        """Whether ``t``'s prices lie in the range (with a relative tolerance)."""
        (a, b), (c, d) = self.latency_price, self.cost_price
        return a * (1 - rtol) <= t.latency_price <= b * (1 + rtol) and c * (1 - rtol) <= t.cost_price <= d * (1 + rtol)

    def check(self, t: TradeOff, source: str = "trade-off") -> TradeOff:
        """``t`` if inside the range, else a one-line :class:`UserInputError` naming the range."""
        if not self.contains(t):
            (a, b), (c, d) = self.latency_price, self.cost_price
            raise UserInputError(
                f"{source}: latency price {t.latency_price:g} / cost price {t.cost_price:g} lies outside the policy's "
                f"trained range (latency price {_span(a, b)}, cost price {_span(c, d)})")
        return t

    def describe(self) -> dict[str, Any]:
        """JSON-ready form (what ``policy.json`` records under ``tradeoff_range``)."""
        return {"latency_price": list(self.latency_price), "cost_price": list(self.cost_price)}


def price_features(latency_price: float, cost_price: float) -> tuple[float, float]:
    """:meth:`TradeOff.features` of two prices (natural logs; a price of 0 counts as 1e-3)."""
    return (math.log(max(latency_price, 1e-3)), math.log(max(cost_price, 1e-3)))


def _span(lo: float, hi: float) -> str:
    return f"{lo:g} only" if lo == hi else f"[{lo:g}, {hi:g}]"


#: Named settings of the latency price (score per SLO), from quality-first to latency-first.
PRESETS: dict[str, float] = {"quality-first": 0.05, "balanced": 0.2, "latency-first": 1.0}

#: What ``train`` conditions on by default: a 50x range of latency prices.
DEFAULT_RANGE = TradeOffRange()
#: Training draws latency prices from the served range widened by this factor on each side, so
#: that the ends of the range a policy serves are not the edges of what it was trained on.
TRAIN_MARGIN = 2.0


def preset_price(name: str) -> float | None:
    """The latency price of a preset name (any case, surrounding blanks ignored), ``None`` when
    ``name`` is not one of :data:`PRESETS`."""
    return PRESETS.get(name.strip().lower())


def parse_prices(text: str, flag: str = "--latency-prices") -> list[float]:
    """``0.05,0.2,1.0`` (or preset names) -> prices, each finite, >= 0 and <= the maximum."""
    out: list[float] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        named = preset_price(part)
        if named is not None:
            out.append(named)
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserInputError(f"{flag}: {part!r} is not a number (or one of {', '.join(PRESETS)})") from None
        if not (math.isfinite(v) and 0.0 <= v <= MAX_LATENCY_PRICE):
            raise UserInputError(f"{flag}: {part} must be a number in [0, {MAX_LATENCY_PRICE:g}]")
        out.append(v)
    if not out:
        raise UserInputError(f"{flag}: no price given")
    if len(out) > 64:
        raise UserInputError(f"{flag}: at most 64 prices, got {len(out)}")
    return sorted(set(out))
