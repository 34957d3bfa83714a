"""Stage 3: policies (heuristics, tuned static thresholds, the hindsight oracle, PPO), evaluation
and export.

Public names: :class:`Policy`, :class:`EdgeOnly`, :class:`CloudOnly`, :class:`RandomPolicy`,
:class:`StaticThresholds`, :class:`MSAOHeuristic`, :class:`TunedStatic`,
:class:`HindsightOracle`, :func:`threshold_grid` (TunedStatic's candidates), :func:`evaluate`,
:func:`episode_seeds` (the episodes it runs), :func:`run_episodes`, :func:`summarize`,
:func:`train` (PPO; needs the ``train`` extra when called), :func:`export_run`,
:func:`export_model`, :class:`ArtifactPolicy` (an exported artifact evaluated in simulation).
"""

from .evaluation import episode_seeds, evaluate, markdown_table, run_episodes, summarize
from .export import ArtifactPolicy, export_model, export_run
from .baselines import (
    POLICY_NAMES,
    CloudOnly,
    EdgeOnly,
    HindsightOracle,
    MSAOHeuristic,
    Policy,
    RandomPolicy,
    StaticThresholds,
    TunedStatic,
    threshold_grid,
)
from .ppo import train

__all__ = [
    "Policy", "EdgeOnly", "CloudOnly", "RandomPolicy", "StaticThresholds", "MSAOHeuristic",
    "TunedStatic", "HindsightOracle", "POLICY_NAMES", "threshold_grid", "evaluate", "episode_seeds",
    "run_episodes", "summarize",
    "markdown_table", "train", "export_run", "export_model", "ArtifactPolicy",
]
