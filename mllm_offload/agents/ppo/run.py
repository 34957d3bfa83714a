"""A training run folder: what was asked (``run.json``), resume, the score floor, hyperparameters.

``RUN_DIR/run.json`` records the scenario arguments, the hyperparameters and the seed, so that
``train --resume RUN_DIR`` rebuilds exactly the same scenario, and export can stamp the policy
with where it came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..._io import atomic_write_json, read_json_object
from ...config import PPOHyperparams, default_hyperparams_path, format_validation_error, load_hyperparams
from ...errors import UserInputError
from ...observation import OBSERVATION_SPEC
from ...splits import SCORE_FLOOR_SEEDS
from ...trace_format import embedded_trace_name
from ...tradeoff import BUDGETS, DEFAULT_RANGE, TRAIN_MARGIN, Budgets, TradeOffRange, parse_prices

__all__ = ["RUN_ARGS", "TrainingRun", "TrainingTradeOffs", "final_comparison", "hyperparams", "parse_range", "read_run_args", "resumed_hyperparams", "score_floor",
           "train_and_export", "training_tradeoffs", "write_run_record"]

#: The arguments that define a run's scenario and training (restored by ``--resume``).
RUN_ARGS = ("profile", "trace", "bandwidth", "config", "seed", "episode_len", "score_floor", "hyperparams",
            "latency_price", "cost_price", "latency_price_range", "p95_budget", "cost_budget", "upload_budget", "edge_tier",
            "upload_plans")
_PATH_ARGS = ("trace", "config", "hyperparams")


def hyperparams(path: Path | None, section: str, timesteps: int | None = None, n_envs: int | None = None,
                trace: str | Path | None = None) -> tuple[PPOHyperparams, str]:
    """Hyperparameters of ``section`` (a profile name) from ``path`` or the shipped file, with the
    section of ``trace`` over it when that is an embedded trace's name (``shapes-real``; pass it
    only when its section applies), and ``--timesteps``/``--n-envs`` overrides; returns them and
    where they came from (the file and the sections merged)."""
    src = path if path is not None else default_hyperparams_path()
    embedded = embedded_trace_name(trace) if trace is not None else None
    sections = [section, *([embedded] if embedded else [])]
    hp = load_hyperparams(src, *sections) if src.is_file() or path is not None else PPOHyperparams()
    return _override(hp, timesteps, n_envs), f"{src} [{' < '.join(['default', *sections])}]" if src.is_file() else "built-in defaults"


def _override(hp: PPOHyperparams, timesteps: int | None, n_envs: int | None) -> PPOHyperparams:
    upd = {k: v for k, v in (("n_timesteps", timesteps), ("n_envs", n_envs)) if v is not None}
    if not upd:
        return hp
    try:
        return PPOHyperparams.model_validate({**hp.model_dump(), **upd})
    except ValidationError as e:
        raise UserInputError(format_validation_error("train: --timesteps/--n-envs", e)) from None


def resumed_hyperparams(run: Path, timesteps: int | None = None, n_envs: int | None = None) -> tuple[PPOHyperparams, str] | None:
    """The hyperparameters ``run`` was trained with (``run/run.json``), not today's file: a resumed
    run keeps them, with only ``--timesteps``/``--n-envs`` overridden. ``None`` when the record
    has none (a run folder written before they were recorded)."""
    rj = run / "run.json"
    record = read_json_object(rj, "run record")
    if record.get("hyperparams") is None:
        return None
    try:
        hp = PPOHyperparams.model_validate(record["hyperparams"])
    except ValidationError as e:
        raise UserInputError(format_validation_error(f"{rj}: hyperparams", e).replace("hyperparams: ", "hyperparams.", 1)) from None
    return _override(hp, timesteps, n_envs), str(record.get("hyperparams_source") or rj)


def read_run_args(run: Path) -> dict[str, Any]:
    """The arguments saved in ``run/run.json`` (paths as :class:`Path`), plus ``timesteps``."""
    rj = run / "run.json"
    if not rj.is_file():
        raise UserInputError(f"{run}: not a run directory (no run.json)")
    try:
        saved = json.loads(rj.read_text(encoding="utf-8"))["args"]
        if not isinstance(saved, dict):
            raise TypeError("args is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # ValueError: bad JSON or not UTF-8
        raise UserInputError(f"{rj}: unreadable: {e}") from None
    try:
        names = json.loads(rj.read_text(encoding="utf-8")).get("observation")
    except (OSError, ValueError, AttributeError):
        names = None
    if names != list(OBSERVATION_SPEC.names):
        n = len(names) if isinstance(names, list) else (19 if "latency_price" in saved else 17)
        raise UserInputError(f"{rj}: this run's policy reads {n} observation features, this build has {len(OBSERVATION_SPEC)}; "
                             "it cannot be resumed: start a new run (its exported policy still loads and deploys)")
    out: dict[str, Any] = {}
    for k in (*RUN_ARGS, "timesteps"):
        v = saved.get(k)
        if v is None:
            ok = k not in _REQUIRED_ARGS
        elif isinstance(v, bool) or not isinstance(v, _ARG_TYPES[k]):
            ok = False
        elif isinstance(v, int) and k in ("seed", "episode_len", "timesteps"):
            ok = (-(2**63) if k == "seed" else 1) <= v < 2**63
        else:
            ok = True
        if not ok:
            raise UserInputError(f"{rj}: args.{k}: unexpected value {str(v)[:40]!r}")
        out[k] = Path(v) if k in _PATH_ARGS and v is not None else v
    return out


#: JSON types of the saved arguments (``None`` allowed except for :data:`_REQUIRED_ARGS`)
_ARG_TYPES: dict[str, type | tuple[type, ...]] = {
    "profile": str, "trace": str, "bandwidth": str, "config": str, "seed": int, "episode_len": int,
    "score_floor": (str, int, float), "hyperparams": str, "timesteps": int,
    "latency_price": (int, float), "cost_price": (int, float), "latency_price_range": str,
    "p95_budget": (int, float), "cost_budget": (int, float), "upload_budget": (int, float), "edge_tier": str, "upload_plans": str,
}
_REQUIRED_ARGS = ("profile", "seed", "episode_len")


def write_run_record(run: Path, args: dict[str, Any], hp: PPOHyperparams, hp_source: str, floor: float | None,
                     export_meta: dict[str, Any]) -> None:
    """``run/run.json`` (atomically): the arguments, the hyperparameters and export metadata."""
    run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    record = {"args": run_args, "observation": list(OBSERVATION_SPEC.names), "hyperparams": hp.model_dump(), "hyperparams_source": hp_source,
              "score_floor_value": floor, "export_meta": export_meta}
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / "run.json", record)


def score_floor(text: str, scenario: Any) -> float | None:
    """``none`` -> None; ``msao`` -> MSAO's mean score on training episodes
    (:data:`~mllm_offload.splits.SCORE_FLOOR_SEEDS`); else a number in [0, 1]."""
    if text == "none":
        return None
    if text == "msao":
        from .training import msao_reference

        return msao_reference(scenario.make_env("train"), list(SCORE_FLOOR_SEEDS))["score_mean"]
    try:
        v = float(text)
    except ValueError:
        raise UserInputError(f"--score-floor: expected 'msao', 'none' or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise UserInputError(f"--score-floor: must be in [0, 1], got {v}")
    return v


def parse_range(text: str | None, flag: str = "--latency-price-range") -> tuple[float, float]:
    """``LO,HI`` (or preset names) -> a latency-price range with ``0 < LO <= HI``."""
    if text is None:
        return DEFAULT_RANGE.latency_price
    values = parse_prices(text, flag)
    if len([p for p in text.split(",") if p.strip()]) != 2:
        raise UserInputError(f"{flag}: expected two prices LO,HI, got {text!r}")
    lo, hi = min(values), max(values)
    if lo <= 0:
        raise UserInputError(f"{flag}: prices must be > 0 (a log-uniform range), got {lo:g}")
    return lo, hi


@dataclass(frozen=True)
class TrainingTradeOffs:
    """Where a run's trade-offs come from.

    ``train``: the scenario training episodes come from (a conditioned policy: prices drawn per
    episode from the served range widened by :data:`~mllm_offload.tradeoff.TRAIN_MARGIN` on each
    side, so that the ends of the served range are not the edges of training); ``val``: the
    validation scenario (the served range itself); ``fixed``: one fixed trade-off inside the
    served range, with the budgets (the final comparison, the score floor, TunedStatic);
    ``served``: the range the exported policy serves (recorded in ``policy.json``).
    """

    train: Any
    val: Any
    fixed: Any
    served: TradeOffRange

    def make_env(self, split: str) -> Any:
        """The training environment for ``train``, the validation one for any other split."""
        return (self.train if split == "train" else self.val).make_env(split)


def training_tradeoffs(scenario: Any, args: dict[str, Any]) -> TrainingTradeOffs:
    """The run's :class:`TrainingTradeOffs`. Without ``latency_price`` the policy is conditioned
    on the latency price over ``latency_price_range``; with it, trained at that one setting.
    ``p95_budget``/``cost_budget``/``upload_budget`` become the trade-off's budgets: they need one setting (a
    single multiplier cannot hold a budget at every price of a range)."""
    t = scenario.trade
    try:
        budgets = Budgets(**{b.field: args.get(b.arg) for b in BUDGETS})
    except ValidationError as e:
        msg = format_validation_error("budgets", e)
        for b in BUDGETS:
            msg = msg.replace(b.field, b.flag)
        raise UserInputError(msg) from None
    fixed = scenario.with_tradeoff(t.model_copy(update={"budgets": budgets}), None)
    if args.get("latency_price") is not None:
        if args.get("latency_price_range") is not None:
            raise UserInputError("--latency-price-range: trains a policy over a range of prices; --latency-price trains at one: give one of them")
        return TrainingTradeOffs(fixed, fixed, fixed, TradeOffRange.single(fixed.trade))
    if budgets.active():
        raise UserInputError(f"{'/'.join(b.flag for b in BUDGETS)}: a budget is held at one trade-off; add --latency-price X "
                             "(a policy conditioned over a range would hold it only on average over prices)")
    cp = max(t.cost_price, 1e-3)
    try:
        rng = TradeOffRange(latency_price=parse_range(args.get("latency_price_range")), cost_price=(cp, cp))
    except ValidationError as e:
        raise UserInputError(format_validation_error("--latency-price-range", e)) from None
    if not rng.contains(fixed.trade):  # the final comparison runs at a setting the policy serves
        d = rng.default()
        fixed = fixed.with_tradeoff(fixed.trade.model_copy(update={"latency_price": d.latency_price}), None)
    return TrainingTradeOffs(fixed.with_tradeoff(fixed.trade, rng.widened(TRAIN_MARGIN)), fixed.with_tradeoff(fixed.trade, rng), fixed, rng)


def warm_start_prices(tt: TrainingTradeOffs, n: int) -> list[float]:
    """``n`` latency prices log-evenly over the range training draws from (ends included), or the
    one fixed price."""
    rng = tt.train.tradeoff_range
    return [float(tt.fixed.trade.latency_price)] if rng is None else rng.latency_prices(n)


@dataclass
class TrainingRun:
    """What :func:`train_and_export` did: the training result, the exported folder, the floor."""

    result: Any
    policy_dir: Path
    floor: float | None
    scenario: Any = None


def train_and_export(scenario: Any, args: dict[str, Any], hp: PPOHyperparams, hp_source: str, run_dir: Path, *, floor_spec: str,
                     resume: bool, progress_bar: bool, log: Callable[[str], None], replace: bool = False,
                     keep_evaluations: bool = False) -> TrainingRun:
    """The training half of ``train``: resolve the score floor, record ``run.json``, train PPO on
    ``scenario`` (:func:`~.training.train`) and export the best validated model to
    ``run_dir/policy``. ``args`` are the :data:`RUN_ARGS` values (what ``--resume`` restores).

    ``run.json`` is written only once the scenario's training and validation environments have
    been built, so a bad scenario leaves no run folder behind. With ``replace`` (``--overwrite``)
    the run already in ``run_dir`` is deleted at that point too, not before: a bad setting leaves
    it whole.
    """
    from ..export import export_run
    from .training import train

    tt = training_tradeoffs(scenario, args)
    fixed, trange = tt.fixed, tt.served
    floor = score_floor(floor_spec, fixed)
    n_actions = int(tt.make_env("train").action_space.shape[0])
    val_env = tt.make_env("val")
    hp.policy_kwargs.action_bias(n_actions)  # before run.json: a bad setting leaves no run folder
    try:
        hp.expected_scores(val_env.unwrapped.has_expected_scores, scenario.trace_source or "this trace")
    except UserInputError as e:
        raise UserInputError(f"{hp_source}: {e}") from None
    budgets = fixed.trade.budgets
    export_meta = {"profile": scenario.profile, "bandwidth": scenario.bandwidth, "trace": scenario.trace_source,
                   "seed": args["seed"], "timesteps": hp.n_timesteps, "score_floor": floor,
                   "hyperparams": hp.model_dump(), "slo_s": scenario.slo_s, "system": scenario.system.model_dump(),
                   "reward": scenario.reward.model_dump(), "tradeoff_range": trange.describe(),
                   "budgets": budgets.model_dump()}
    if replace and run_dir.exists():
        try:
            shutil.rmtree(run_dir)
        except OSError as e:
            raise UserInputError(f"--out {run_dir}: cannot replace it ({e.strerror or e}); pick another folder") from None
    write_run_record(run_dir, {**args, "timesteps": hp.n_timesteps}, hp, hp_source, floor, export_meta)
    (lo, hi) = trange.latency_price
    prices = f"latency price {lo:g}" if lo == hi else f"latency price drawn per episode in [{lo:g}, {hi:g}] (conditioned)"
    limits = ", ".join(f"{k} {v:g}" for k, v in budgets.model_dump().items() if v is not None) or "none"
    log(f"training PPO on {scenario.profile} | bandwidth {scenario.bandwidth} | {hp.n_timesteps} steps, {hp.n_envs} envs | "
        f"{prices} | budgets: {limits} | hyperparameters: {hp_source} | score floor: {'none' if floor is None else f'{floor:.3f}'} | run: {run_dir}")
    targets = None
    if hp.warm_start == "tuned" and not resume:
        from .warm_start import tuned_targets

        ws_prices = warm_start_prices(tt, hp.warm_start_prices)
        log(f"warm start: fitting TunedStatic at {len(ws_prices)} latency price(s) on the training split (a few seconds each)")
        targets = tuned_targets(fixed, ws_prices, n_actions, log)
    res = train(tt.make_env, hp, run_dir, seed=args["seed"], resume=resume, progress_bar=progress_bar, score_floor=floor,
                floor_from_msao=floor_spec == "msao", log=log, budgets=budgets if budgets.active() else None, warm_start=targets,
                keep_evaluations=keep_evaluations)
    from ...evaluation.plots import write_validation_curve

    write_validation_curve(run_dir / "validation.png", res.history, res.msao_validation, scenario.label("val"))
    return TrainingRun(res, export_run(run_dir, run_dir / "policy"), floor, fixed)


def final_comparison(scenario: Any, policy_dir: Path, baselines: str, requests: int, *, seed: int, throughput: bool,
                     tuning_progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
                     progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None) -> tuple[dict[str, dict[str, float]], dict[str, Any], Any]:
    """The exported policy (as ``ppo``) next to ``baselines`` on the test split, episodes of seed 0.

    Returns (metrics per policy, rollout logs per policy, the test environment).
    """
    from ... import agents  # noqa: F401  (registers tuned and oracle)
    from ...evaluation import evaluate

    env = scenario.make_env("test")
    pols = scenario.policies(baselines, seed=seed, progress=tuning_progress)
    pols.append(scenario.policy(policy_dir, "ppo"))
    results, logs = evaluate(env, pols, requests, seed=0, throughput=throughput, progress=progress)
    return results, logs, env
