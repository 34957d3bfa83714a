"""Validated configuration: system parameters, reward weights, episodes (a contract).

Every model is a strict pydantic model (unknown fields are errors, non-finite numbers such as
``.inf`` or ``.nan`` are errors, and every number has a sane range, so an absurd value such as a
reward weight of ``1e300`` is refused with the field named). :func:`load_yaml` reads one from a
YAML file and turns any problem (unreadable or binary file, invalid YAML, a bad field) into a
one-line :class:`~mllm_offload.errors.UserInputError` naming the file and the field, e.g.
``ppo.yaml: reward.latency: Input should be >= 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from .errors import UserInputError

__all__ = [
    "EdgeTierConfig",
    "EpisodeConfig",
    "NormalizeConfig",
    "PPOHyperparams",
    "PolicyKwargs",
    "RewardWeights",
    "ScenarioOverrides",
    "StrictModel",
    "SystemConfig",
    "default_hyperparams_path",
    "format_validation_error",
    "load_hyperparams",
    "load_yaml",
]


class StrictModel(BaseModel):
    """Base for config models: unknown fields and non-finite numbers (``inf``, ``nan``, also inside
    lists, tuples and mappings) are rejected, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EdgeTierConfig(StrictModel):
    """The edge as several devices running one model as a pipeline (:mod:`mllm_offload.edge_tier`).

    Names are resolved when an environment is built (a bad one is one clear error then).
    ``mean_up_s`` and ``mean_down_s`` define each device's availability: up and down times are
    exponential (an alternating renewal process), independent across devices, so that episodes
    hold dropouts and recoveries; ``mean_down_s: 0`` keeps every device up.
    """

    devices: str = Field("home-4", min_length=1, max_length=4096,
                         description="cluster or device preset names (comma-separated) or a devices.yaml path")
    model: str = Field("qwen2-vl-2b", min_length=1, max_length=4096,
                       description="shipped model config name, a model folder or a config.json")
    weight_dtype: Literal["float32", "float16", "bfloat16", "float8", "int8", "int4"] | None = Field(
        None, description="override the config's weight dtype (quantized weights)")
    split: Literal["planner", "uniform", "proportional"] = Field("planner", description="how blocks are assigned to devices")
    backups: bool = Field(True, description="pre-load a backup of every stage on spare memory")
    mean_up_s: float = Field(600.0, gt=0.0, le=1e9, description="mean time a device stays up, seconds")
    mean_down_s: float = Field(60.0, ge=0.0, le=1e9, description="mean outage of a device, seconds (0: never drops)")
    detect_s: float = Field(0.3, ge=0.0, le=600.0, description="time to declare a device gone, seconds")


class SystemConfig(StrictModel):
    """The simulated edge/cloud system around a request trace.

    Service times of the edge and the cloud come from the request trace; this holds what the
    trace does not: network, cloud pool, power and prices, the SLO and the router's priors.
    """

    rtt_s: float = Field(0.05, ge=0.0, le=10.0, description="base round-trip time, seconds")
    rtt_jitter: float = Field(0.1, ge=0.0, le=2.0, description="lognormal sigma of RTT")
    cloud_servers: int = Field(1, ge=1, le=1024, description="cloud servers serving this device")
    cloud_background_load: float = Field(
        0.0, ge=0.0, le=0.95, description="utilisation of the cloud pool by other tenants"
    )
    cloud_speed: float = Field(1.0, ge=1e-3, le=1e3, description="divides trace cloud latencies")
    edge_power_w: float = Field(10.0, ge=0.0, le=1e4, description="edge accelerator power when busy, W")
    radio_power_w: float = Field(1.0, ge=0.0, le=1e3, description="radio power while uploading, W")
    price_in_usd_per_mtok: float = Field(0.2, ge=0.0, le=1e4, description="cloud input price, USD/1M tok")
    price_out_usd_per_mtok: float = Field(0.6, ge=0.0, le=1e4, description="cloud output price, USD/1M tok")
    slo_s: float = Field(2.0, ge=1e-3, le=3600.0, description="latency service-level objective, seconds")
    bw_prior_mbps: float = Field(
        10.0, ge=1e-3, le=1e6, description="bandwidth estimate before any upload was measured, Mbps"
    )
    bw_window: int = Field(5, ge=1, le=100, description="uploads in the harmonic-mean estimate")
    latency_ema: float = Field(0.2, gt=0.0, le=1.0, description="weight of the newest sample")
    edge_tier: EdgeTierConfig | None = Field(
        None, description="the edge as several devices (AdaptLink-style pipeline); None: one edge device")


class RewardWeights(StrictModel):
    """Per-request reward ``quality*score - latency*lat/SLO - cost - energy - slo_violation*[lat>SLO]``.

    ``score`` is the task metric in [0, 1]; cost is in USD and energy in kJ before weighting.
    """

    quality: float = Field(1.0, ge=0.0, le=1e6, description="weight of the task score in [0, 1]")
    latency: float = Field(0.2, ge=0.0, le=1e6, description="weight of latency in SLO units")
    slo_violation: float = Field(0.5, ge=0.0, le=1e6, description="penalty when latency > SLO")
    cost_per_usd: float = Field(100.0, ge=0.0, le=1e6, description="penalty per USD of cloud cost")
    energy_per_kj: float = Field(1.0, ge=0.0, le=1e6, description="penalty per kJ of edge energy")


class EpisodeConfig(StrictModel):
    """How :class:`~mllm_offload.envs.OffloadEnv` samples an episode."""

    n_requests: int = Field(128, ge=1, le=1_000_000, description="steps (requests) per episode")
    rate_scale: tuple[float, float] = Field(
        (1.0, 1.0), description="arrival rate multiplied by U(lo, hi) per episode"
    )
    edge_speed: tuple[float, float] = Field(
        (1.0, 1.0), description="edge service time divided by U(lo, hi) per episode"
    )

    @field_validator("rate_scale", "edge_speed")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (_FACTOR_MIN <= lo <= hi <= _FACTOR_MAX):
            raise ValueError(f"must satisfy {_FACTOR_MIN:g} <= lo <= hi <= {_FACTOR_MAX:g}, got ({lo:g}, {hi:g})")
        return v


#: range of the per-episode factors of :class:`EpisodeConfig`
_FACTOR_MIN, _FACTOR_MAX = 1e-3, 1e3


#: largest YAML file :func:`load_yaml` reads (configs are a few hundred bytes)
MAX_YAML_BYTES = 1 << 20

M = TypeVar("M", bound=BaseModel)
_M = TypeVar("_M", bound="StrictModel")


def format_validation_error(source: str, err: ValidationError) -> str:
    """First error of ``err`` as ``source: field.path: message``."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
    return f"{source}: {loc}: {first.get('msg', 'invalid')}"


def load_yaml(path: str | Path, model: type[M]) -> M:
    """Load and validate ``model`` from a YAML file; raise ``UserInputError`` naming file and field."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise UserInputError(f"{p}: {size} bytes; a config file holds at most {MAX_YAML_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{p}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserInputError(f"{p}: not a YAML text file (not UTF-8: byte {e.start})") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise UserInputError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise UserInputError(f"{p}: invalid YAML: nested too deeply") from None
    except Exception as e:  # PyYAML's constructors fail on some tagged values with plain Python errors:
        # ValueError (the timestamp 2024-13-45), AttributeError (!!timestamp on a non-date) ...
        raise UserInputError(f"{p}: invalid YAML: {type(e).__name__}: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"{p}: (root): expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserInputError(format_validation_error(str(p), e)) from None


class ScenarioOverrides(StrictModel):
    """A YAML file of overrides (``--config``): any subset of the fields of each section.

    Example::

        system: {slo_s: 2.5, cloud_servers: 2}
        reward: {latency: 0.3}
        episode: {n_requests: 200}
    """

    system: dict[str, Any] = Field(default_factory=dict)
    reward: dict[str, Any] = Field(default_factory=dict)
    episode: dict[str, Any] = Field(default_factory=dict)

    def apply(self, source: str, system: SystemConfig, reward: RewardWeights, episode: EpisodeConfig) -> tuple[SystemConfig, RewardWeights, EpisodeConfig]:
        """Merge onto defaults; errors read ``source: section.field: problem``."""
        def merged(section: str, base: _M) -> _M:
            try:
                return type(base).model_validate({**base.model_dump(), **getattr(self, section)})
            except ValidationError as e:
                raise UserInputError(format_validation_error(f"{source}: {section}", e).replace(f"{section}: ", f"{section}.", 1)) from None

        return merged("system", system), merged("reward", reward), merged("episode", episode)


class PolicyKwargs(StrictModel):
    """Actor/critic network of SB3's ``MlpPolicy`` (a structured ``policy_kwargs``)."""

    net_arch: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [64, 64], min_length=1, max_length=16, description="hidden layer sizes (actor and critic)"
    )
    activation_fn: Literal["tanh", "relu"] = "tanh"
    log_std_init: float = Field(0.0, ge=-5.0, le=2.0, description="initial log std of the Gaussian actions")
    ortho_init: bool = True
    action_bias_init: float | list[float] | None = Field(
        None,
        description="initial bias of the action mean, each in [0, 1]: one number for every action, or a list from the "
                    "first action on (None: SB3's zeros: every threshold starts at 0, all CLOUD, and every upload plan "
                    "sends everything whole); e.g. 0.5 starts at the centre of the action box (with plans: images at "
                    "model_res, and video and audio on the boundary of their two choices)")

    @field_validator("action_bias_init")
    @classmethod
    def _bias_values(cls, v: float | list[float] | None) -> float | list[float] | None:
        # checked here rather than by a constrained type, so that the error names the value, not a union branch
        if isinstance(v, list) and not 1 <= len(v) <= 6:
            raise ValueError(f"a list of 1 to 6 values (one per action), got {len(v)}")
        bad = [x for x in (v if isinstance(v, list) else [v] if v is not None else []) if not 0.0 <= x <= 1.0]  # NaN too
        if bad:
            raise ValueError(f"every value must lie in [0, 1], got {bad[0]}")
        return v

    def action_bias(self, n_actions: int) -> list[float] | None:
        """The initial bias of the first actions (``None``: SB3's zeros). A number covers all
        ``n_actions``; a list longer than ``n_actions`` is a :class:`UserInputError`."""
        b = self.action_bias_init
        if b is None:
            return None
        if not isinstance(b, list):
            return [float(b)] * n_actions
        if len(b) > n_actions:
            raise UserInputError(f"policy_kwargs.action_bias_init: {len(b)} values for {n_actions} actions")
        return [float(x) for x in b]


class NormalizeConfig(StrictModel):
    """``VecNormalize`` options (observation statistics are exported with the policy)."""

    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: float = Field(10.0, gt=0.0, le=1e6)


class PPOHyperparams(StrictModel):
    """PPO hyperparameters, one section of ``configs/ppo.yaml`` (rl-zoo style, validated).

    Field names follow SB3's ``PPO`` arguments; ``n_timesteps``/``n_envs``/``normalize`` follow
    rl-baselines3-zoo. ``eval_freq`` and ``checkpoint_freq`` count environment steps (all envs).
    """

    n_timesteps: int = Field(100_000, ge=1, le=10**10, description="environment steps in total")
    n_envs: int = Field(1, ge=1, le=64, description="parallel envs (SubprocVecEnv when > 1)")
    policy: Literal["MlpPolicy"] = "MlpPolicy"
    n_steps: int = Field(512, ge=2, le=10**6, description="steps per env per rollout")
    batch_size: int = Field(128, ge=2, le=10**7)
    n_epochs: int = Field(10, ge=1, le=1000)
    learning_rate: float = Field(3e-4, gt=0.0, le=1.0)
    gamma: float = Field(0.9, ge=0.0, le=1.0)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_range: float = Field(0.2, gt=0.0, le=1.0)
    ent_coef: float = Field(0.0, ge=0.0, le=10.0)
    vf_coef: float = Field(0.5, ge=0.0, le=100.0)
    max_grad_norm: float = Field(0.5, gt=0.0, le=1e6)
    target_kl: float | None = Field(None, gt=0.0, le=10.0)
    normalize: NormalizeConfig = NormalizeConfig()
    policy_kwargs: PolicyKwargs = PolicyKwargs()
    eval_freq: int = Field(5_000, ge=1, le=10**10, description="validation every this many env steps")
    eval_episodes: int = Field(10, ge=1, le=10_000, description="validation episodes (same seeds every time)")
    checkpoint_freq: int = Field(25_000, ge=1, le=10**10, description="checkpoint every this many env steps")
    lagrange_init: float = Field(0.5, ge=0.0, le=1e6, description="initial multiplier of every constraint: the score floor and each budget")
    lagrange_lr: float = Field(10.0, ge=0.0, le=1e6, description="dual step per unit of score shortfall per rollout")
    warm_start: Literal["none", "tuned"] = Field(
        "none", description="none: SB3's start (action mean from policy_kwargs.action_bias_init, else 0); tuned: the actor "
                            "first imitates TunedStatic refitted at warm_start_prices latency prices (agents.ppo.warm_start; replaces "
                            "action_bias_init)")
    training_scores: Literal["realised", "expected", "auto"] = Field(
        "realised", description="what training and validation score an answer by: its realised score (the trace's coin flip), "
                                "its expected score (a synthetic profile's requests only: agents.ppo.reward_scale), or auto "
                                "(expected where the trace has them, else realised); every reported figure keeps the realised scores")

    warm_start_prices: int = Field(7, ge=1, le=50, description="latency prices TunedStatic is fitted at for a warm start "
                                                                  "(log-evenly over the training range; one for a fixed-price run)")

    def expected_scores(self, available: bool, where: str = "this trace") -> bool:
        """Whether to train on expected scores, given whether the trace has them (``available``);
        ``UserInputError`` for ``expected`` on a trace without them (``where`` names it)."""
        if self.training_scores == "expected" and not available:
            raise UserInputError(f"training_scores: expected needs a synthetic profile (a trace that knows each answer's "
                                 f"expected score, as a --profile without --trace has); {where} has none: use realised or auto")
        return self.training_scores == "expected" or (self.training_scores == "auto" and available)

    @model_validator(mode="after")
    def _batch(self) -> PPOHyperparams:
        if self.batch_size > self.n_steps * self.n_envs:
            raise ValueError(f"batch_size {self.batch_size} exceeds the rollout size n_steps*n_envs = {self.n_steps * self.n_envs}")
        return self


def default_hyperparams_path() -> Path:
    """The hyperparameter file shipped in the package (``mllm_offload/configs/ppo.yaml``)."""
    from importlib import resources

    return Path(str(resources.files("mllm_offload") / "configs" / "ppo.yaml"))


def load_hyperparams(path: str | Path, section: str, *more: str) -> PPOHyperparams:
    """Read ``section`` of an rl-zoo style YAML, merged over its ``default`` section (and each
    of ``more`` merged over that, in order).

    The file maps section names (``default``, profile names such as ``mobile-3g``, embedded trace
    names such as ``shapes-real``) to hyperparameters; a missing section adds nothing. Errors name
    the file, the section and the field: ``configs/ppo.yaml: mobile-3g.batch_size: Input should be ...``.
    """
    p = Path(path)
    raw = load_yaml(p, _HyperparamFile).root
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise UserInputError(f"{p}: {name}: expected a mapping of hyperparameters")
    merged: dict[str, Any] = {}
    for name in ("default", section, *more):
        body = raw.get(name) or {}
        for k, v in body.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        try:
            PPOHyperparams.model_validate(merged)
        except ValidationError as e:
            raise UserInputError(format_validation_error(f"{p}: {name}", e).replace(f"{name}: ", f"{name}.", 1)) from None
    return PPOHyperparams.model_validate(merged)


class _HyperparamFile(RootModel[dict[str, Any]]):
    pass
