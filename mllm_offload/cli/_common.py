"""What the simulation commands share: the scenario options and progress bars."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._parser import positive_int

if TYPE_CHECKING:  # the simulator loads only for the commands that use it
    from ..scenario import Scenario


def add_scenario_args(p: argparse.ArgumentParser, seed_help: str = "seed of the evaluation episodes [0]") -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--profile", default="mobile-3g", help="synthetic profile (see `mllm-offload profiles`); also the system defaults [mobile-3g]")
    g.add_argument("--trace", type=Path, help="recorded request trace (JSONL, .jsonl.gz) instead of synthetic requests")
    g.add_argument("--bandwidth", help="folder of Pensieve/Mahimahi traces, an embedded set (pensieve-sample: 24 real 3G/broadband traces), "
                   "'markov:NAME' or 'constant:MBPS,...' [the profile's default]")
    g.add_argument("--config", type=Path, help="YAML overrides with sections system, reward, episode")
    g.add_argument("--seed", type=int, default=0, help=seed_help)
    g.add_argument("--episode-len", type=positive_int, default=100, help="requests per episode [100]")
    g.add_argument("--edge-tier", metavar="DEVICES",
                   help="the edge as several devices running the model as a pipeline, with dropouts: a cluster preset (home-4, jetson-3), "
                   "device presets PRESET[,PRESET...] or a devices.yaml (see `mllm-offload edge-plan --list-presets`); model, split, "
                   "backups and availability from system.edge_tier of --config [one edge device]")
    g.add_argument("--upload-plans", choices=("auto", "on", "off"), default="auto",
                   help="policies choose per modality what an offload sends (image at the cloud model's resolution or reduced, "
                   "video keyframes, audio dropped): on needs a trace with variant outcomes; off sends everything whole, "
                   "for side-by-side runs [auto: on when the trace has variants, as synthetic profiles do]")
    g.add_argument("--latency-price", type=price, metavar="X",
                   help="score lost per SLO of latency (or quality-first, balanced, latency-first) [the config's reward.latency: 0.2]")
    g.add_argument("--cost-price", type=cost_price, metavar="Y",
                   help="score lost per USD per 1k requests [the config's reward.cost_per_usd / 1000: 0.1]")


def price(text: str) -> float:
    """A trade-off price: a number in [0, 100] or a preset name of :data:`~mllm_offload.tradeoff.PRESETS`."""
    from ..tradeoff import parse_prices, preset_price

    named = preset_price(text)
    if named is not None:
        return named
    if "," in text:
        raise argparse.ArgumentTypeError(f"one price, got {text!r}")
    try:
        values = parse_prices(text, "price")
    except Exception as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("price: ")) from None
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"one price, got {text!r}")
    return values[0]


def cost_price(text: str) -> float:
    """A cost price: a finite number in [0, 10000] (score per USD per 1k requests)."""
    import math

    from ..tradeoff import MAX_COST_PRICE

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and 0.0 <= v <= MAX_COST_PRICE):
        raise argparse.ArgumentTypeError(f"{text} must be a number in [0, {MAX_COST_PRICE:g}]")
    return v


def scenario(args: argparse.Namespace) -> Scenario:
    """The validated :class:`Scenario` of the scenario options (episodes no longer than ``--requests``)."""
    from ..scenario import Scenario

    scn = Scenario.build(profile=args.profile, trace=args.trace, bandwidth=args.bandwidth, config=args.config,
                         episode_len=args.episode_len, requests=getattr(args, "requests", None),
                         edge_tier=getattr(args, "edge_tier", None),
                         upload_plans={"on": True, "off": False}.get(getattr(args, "upload_plans", "auto") or "auto"))
    lp, cp = getattr(args, "latency_price", None), getattr(args, "cost_price", None)
    if lp is None and cp is None:
        return scn
    from ..tradeoff import TradeOff

    t = scn.trade
    return scn.with_tradeoff(TradeOff(latency_price=t.latency_price if lp is None else lp,
                                      cost_price=t.cost_price if cp is None else cp, budgets=t.budgets))


def progress(desc: str, quiet: bool) -> Callable[[Iterable[Any]], Iterable[Any]] | None:
    """A tqdm wrapper on stderr, or None when quiet (or tqdm is missing)."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with the train extra
        return None
    return lambda it: tqdm(it, desc=desc, file=sys.stderr, leave=False)
