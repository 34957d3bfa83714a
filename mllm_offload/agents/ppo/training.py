"""PPO on ``Offload-v0`` with stable-baselines3: training, validation against MSAO, checkpoints.

A run directory holds::

    RUN_DIR/run.json          what was asked (scenario, hyperparameters, seed), for --resume
    RUN_DIR/tb/               TensorBoard scalars (SB3's train/rollout ones and eval/*)
    RUN_DIR/checkpoint/       latest checkpoint: model.zip, vecnormalize.pkl (+ .json), info.json
    RUN_DIR/best/             best model on validation episodes (+ vecnormalize.json, info.json)
    RUN_DIR/final/            model at the end of training
    RUN_DIR/validation.jsonl  every evaluation's metrics, one JSON object per line
    RUN_DIR/evals/STEPS/      every evaluated model, with keep_evaluations (train --keep-evaluations)
    RUN_DIR/policy/           the exported artifact (written by the CLI after training)

Training uses the *training* split (requests and bandwidth traces); :class:`ValidationCallback`
evaluates on the *validation* split with fixed seeds and logs the MSAO heuristic's metrics on the
same episodes for reference.

**Score floor (constrained PPO).** With ``score_floor`` set, training maximises the reward subject
to a mean score >= floor with a Lagrange multiplier (:mod:`.constraints`). ``--score-floor msao``
sets the floor to MSAO's mean score on training episodes, so the learned policy is held to
MSAO's quality and competes on latency, cost and energy; the default is no floor.

The loop itself is SB3's ``PPO.learn`` with three callbacks: :class:`.callbacks.ValidationCallback`,
:class:`.callbacks.RunCheckpointCallback` and :class:`.constraints.DualAscentCallback`.

**Warm start** (``hp.warm_start == "tuned"``, :mod:`.warm_start`): the actor first imitates
TunedStatic's actions (``warm_start`` targets), is validated before any update (step 0), and
``best/info.json`` records the targets and the fit (``warm_start``).

**Resume unpickles.** ``model.zip`` and ``vecnormalize.pkl`` are SB3's own formats, which hold
pickles: resume only run folders you trust. A damaged checkpoint (unreadable zip or pickle, an
``info.json`` that is not the expected object) is a one-line :class:`UserInputError`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._io import read_json_object
from ...config import PPOHyperparams
from ...errors import UserInputError
from ...rules import MSAORule
from ...splits import validation_seeds, vec_env_seed
from ...tradeoff import Budgets, TradeOff, TradeOffRange

__all__ = ["TrainResult", "msao_reference", "train", "validation_tradeoffs"]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    timesteps: int
    seconds: float
    best: dict[str, Any]
    msao_validation: dict[str, float]
    score_floor: float | None
    history: list[dict[str, float]] = field(default_factory=list)


def msao_reference(env: Any, seeds: Sequence[int], options: Sequence[dict[str, Any]] | None = None) -> dict[str, float]:
    """MSAO's metrics on ``env`` for ``seeds`` (the reference of validation and the score floor)."""
    from .callbacks import eval_metrics

    return eval_metrics(env, MSAORule(env.unwrapped.slo_s), seeds, options)


def validation_tradeoffs(trange: Any, base: TradeOff, n: int) -> list[dict[str, Any]]:
    """Reset options giving ``n`` validation episodes latency prices spread log-evenly over the
    range a conditioned policy serves (ends included), cost price and budgets of ``base``."""
    return [{"tradeoff": base.model_copy(update={"latency_price": p})} for p in trange.latency_prices(n)]


def _forget_after(run: Path, steps: int) -> None:
    """On ``--resume`` from ``steps``: drop what a killed run recorded past its checkpoint (lines of
    ``validation.jsonl``, kept models in ``evals/``); the resumed run evaluates those steps again."""
    import shutil

    from ..._io import atomic_write_text, json_text, read_jsonl

    log = run / "validation.jsonl"
    if log.is_file():
        rows, _ = read_jsonl(log)
        atomic_write_text(log, "".join(json_text(r) + "\n" for r in rows if float(r.get("timesteps", 0)) <= steps))
    if (run / "evals").is_dir():
        for d in (run / "evals").iterdir():
            if d.name.isdigit() and int(d.name) > steps:
                shutil.rmtree(d)


def train(
    make_env: Callable[[str], Any],
    hp: PPOHyperparams,
    run_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    progress_bar: bool = True,
    score_floor: float | None = None,
    floor_from_msao: bool = False,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    budgets: Budgets | None = None,
    warm_start: Sequence[Any] | None = None,
    keep_evaluations: bool = False,
) -> TrainResult:
    """Train PPO for ``hp.n_timesteps`` env steps in total (``resume`` continues ``run_dir/checkpoint``).

    ``make_env(split)`` builds an :class:`~mllm_offload.envs.OffloadEnv` for a split (``train``
    or ``val``); it is called in worker processes when ``hp.n_envs > 1``, so it must be
    picklable by cloudpickle (closures are fine). ``score_floor``: see the module docstring;
    the best validated model must meet it too: the number itself, or, when ``floor_from_msao``
    (the floor is MSAO's training score), MSAO's score on the validation episodes minus 0.005.
    ``budgets`` (p95 latency, cost per 1k requests, MB uploaded per request) are held the same way: a Lagrange multiplier
    each in training (:mod:`.constraints`), and the best validated model must meet them.
    ``warm_start``: :class:`~.warm_start.WarmStartTarget` actions the actor imitates before the
    first update (a new run only; :mod:`.warm_start`), then validated at step 0.
    ``keep_evaluations``: keep every validated model in ``run_dir/evals/STEPS/``
    (:class:`~.callbacks.ValidationCallback`; every evaluation's metrics go to
    ``run_dir/validation.jsonl`` in any case).
    """
    import time

    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common import vec_env
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.logger import configure

        from .callbacks import RunCheckpointCallback, ValidationCallback, save_model_dir
        from .constraints import DualAscentCallback, Lagrangian, constraints_for
        from .reward_scale import TrainingReward
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UserInputError(f"train: needs the 'train' extra (pip install 'mllm-offload[train]'): {e}") from None

    if not resume and (hp.warm_start == "tuned") != bool(warm_start):
        raise UserInputError("train: the hyperparameters say warm_start: tuned but no targets were given (pass "
                             "warm_start=agents.ppo.warm_start.tuned_targets(...), as train_and_export does)"
                             if hp.warm_start == "tuned" else
                             "train: warm-start targets given, but the hyperparameters say warm_start: none (run.json would not say it)")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoint"
    state: dict[str, Any] = {"seed": seed, "lam": hp.lagrange_init, "num_timesteps": 0}
    if resume:
        if not (ckpt / "model.zip").exists():
            raise UserInputError(f"{run}: nothing to resume (no checkpoint/model.zip)")
        state.update(_checkpoint_state(ckpt / "info.json"))
        done = int(state["num_timesteps"])
        if done >= hp.n_timesteps:
            raise UserInputError(f"{run}: already trained {done} steps; continue with --timesteps N for a total N > {done}")
    torch.set_num_threads(1)  # small MLP: threads only add overhead; workers are processes
    val_env = make_env("val")
    seeds = validation_seeds(hp.eval_episodes)
    expected = hp.expected_scores(val_env.unwrapped.has_expected_scores)
    trange = getattr(val_env.unwrapped, "tradeoff_range", None)
    conditioned = trange is not None and trange.latency_price[0] < trange.latency_price[1]
    val_options = validation_tradeoffs(trange, val_env.unwrapped.tradeoff, len(seeds)) if conditioned else None
    served = trange if conditioned and trange is not None else TradeOffRange.single(val_env.unwrapped.tradeoff)
    info = {"tradeoff_range": served.describe(),  # what the exported policy serves
            "training_scores": "expected" if expected else "realised"}
    msao_val = msao_reference(val_env, seeds, val_options)
    venv = make_vec_env(
        lambda: make_env("train"), n_envs=hp.n_envs, seed=vec_env_seed(seed, int(state["num_timesteps"])),
        vec_env_cls=vec_env.SubprocVecEnv if hp.n_envs > 1 else vec_env.DummyVecEnv,
        wrapper_class=TrainingReward, wrapper_kwargs={"per_price": conditioned, "expected": expected},
    )
    saved_lams = dict(state.get("lams") or {})
    if "score_floor" not in saved_lams and resume:
        saved_lams["score_floor"] = float(state["lam"])
    cons = constraints_for(score_floor, budgets, hp.lagrange_init, saved_lams)
    if cons:
        venv = Lagrangian(venv, cons, hp.lagrange_lr)
    norm = hp.normalize
    if resume and (ckpt / "vecnormalize.pkl").exists():
        try:
            venv = vec_env.VecNormalize.load(str(ckpt / "vecnormalize.pkl"), venv)
        except Exception as e:  # a damaged pickle raises anything (UnpicklingError, EOFError, AssertionError ...)
            venv.close()
            raise UserInputError(f"{ckpt / 'vecnormalize.pkl'}: cannot load the checkpoint's normalisation statistics: {_first_line(e)}") from None
        venv.training = True
    elif norm.norm_obs or norm.norm_reward:
        venv = vec_env.VecNormalize(venv, norm_obs=norm.norm_obs, norm_reward=norm.norm_reward, clip_obs=norm.clip_obs, gamma=hp.gamma)
    pk = hp.policy_kwargs
    policy_kwargs = dict(net_arch=list(pk.net_arch), activation_fn={"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[pk.activation_fn], log_std_init=pk.log_std_init, ortho_init=pk.ortho_init)
    if resume:
        try:
            model = PPO.load(ckpt / "model.zip", env=venv, device="cpu")
        except Exception as e:  # SB3 raises many types on a corrupt zip
            venv.close()
            raise UserInputError(f"{ckpt / 'model.zip'}: cannot load the checkpoint: {_first_line(e)}") from None
    else:
        model = PPO(
            hp.policy, venv, seed=seed, device="cpu", verbose=0, policy_kwargs=policy_kwargs,
            n_steps=hp.n_steps, batch_size=hp.batch_size, n_epochs=hp.n_epochs, learning_rate=hp.learning_rate,
            gamma=hp.gamma, gae_lambda=hp.gae_lambda, clip_range=hp.clip_range, ent_coef=hp.ent_coef,
            vf_coef=hp.vf_coef, max_grad_norm=hp.max_grad_norm, target_kl=hp.target_kl,
        )
        start = pk.action_bias(int(venv.action_space.shape[0]))  # type: ignore[index]
        if start is not None:  # where the deterministic policy starts (not an SB3 policy_kwarg)
            bias: torch.Tensor = model.policy.action_net.bias  # type: ignore[assignment]
            with torch.no_grad():
                bias[: len(start)] = torch.as_tensor(start, dtype=torch.float32)
        if warm_start:
            from .warm_start import behaviour_clone

            bc = behaviour_clone(model, venv, make_env, warm_start, seed=seed)
            info["warm_start"] = {"targets": [{"latency_price": t.tradeoff.latency_price, "action": list(t.action), "fitted": t.label}
                                              for t in warm_start], **bc}
            log(f"warm start: actor fitted to TunedStatic at {len(warm_start)} prices on {bc['observations']:.0f} observations "
                f"(mean squared error {bc['mse']:.2e}, largest error {bc['max_abs_error']:.3f})")
    model.set_logger(configure(str(run / "tb"), ["tensorboard"]))
    val_floor = None if score_floor is None else (msao_val["score_mean"] - 0.005 if floor_from_msao else score_floor)
    best_prev: dict[str, Any] = {}
    if resume and (run / "best" / "info.json").exists():
        v = _best_validation(run / "best" / "info.json")
        ok = ValidationCallback.meets(v, val_floor, budgets)
        best_prev = {"feasible": ok, "reward_mean": v["reward_mean"], "selection_reward": v.get("selection_reward", v["reward_mean"]),
                     "score_mean": v["score_mean"], "timesteps": int(v["timesteps"])}
    if resume:
        _forget_after(run, int(state["num_timesteps"]))
    val_cb = ValidationCallback(val_env, seeds, hp.eval_freq, hp.n_envs, run, msao_val, val_floor, log, best_prev, budgets, val_options, info,
                                evaluate_at_start=bool(warm_start) and not resume, expected_scores=expected, keep_all=keep_evaluations)
    ck_cb = RunCheckpointCallback(run, hp.checkpoint_freq, hp.n_envs, state)
    remaining = hp.n_timesteps - int(model.num_timesteps)
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=[ck_cb, DualAscentCallback(state), val_cb], reset_num_timesteps=not resume, progress_bar=progress_bar)
    if not val_cb.history or val_cb.history[-1]["timesteps"] != model.num_timesteps:
        val_cb.evaluate()  # always judge the final weights too
    ck_cb.save()
    save_model_dir(model, run / "final", {"validation": val_cb.history[-1], "msao_validation": msao_val, **info})
    venv.close()
    return TrainResult(run, int(model.num_timesteps), time.perf_counter() - t0, val_cb.best, msao_val, score_floor, val_cb.history)


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _is_number(v: Any) -> bool:
    """A JSON number that is finite and of sane size (``abs`` compares a huge int without overflow)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1e300


def _checkpoint_state(path: Path) -> dict[str, Any]:
    """``checkpoint/info.json``: ``num_timesteps`` (an integer >= 0), ``lam`` (a number >= 0), ``seed``."""
    state = read_json_object(path, "checkpoint state")
    n = state.get("num_timesteps")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 10**12:
        raise UserInputError(f"{path}: num_timesteps: expected an integer >= 0, got {str(n)[:40]!r}")
    lam = state.get("lam", 0.0)
    if not _is_number(lam) or lam < 0:
        raise UserInputError(f"{path}: lam: expected a finite number >= 0, got {str(lam)[:40]!r}")
    lams = state.get("lams", {})
    if not isinstance(lams, dict) or not all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in lams.items()):
        raise UserInputError(f"{path}: lams: expected an object of finite numbers >= 0 by constraint name")
    return state


def _best_validation(path: Path) -> dict[str, Any]:
    """``best/info.json``'s ``validation`` metrics (``reward_mean``, ``score_mean``, ``timesteps`` numbers)."""
    v = read_json_object(path, "best-model record").get("validation")
    if not isinstance(v, dict) or not all(_is_number(v.get(k)) for k in ("reward_mean", "score_mean", "timesteps")):
        raise UserInputError(f"{path}: validation: expected an object with the numbers reward_mean, score_mean and timesteps")
    return v
