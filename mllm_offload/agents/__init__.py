"""Stage 3: policies (heuristics, tuned static thresholds, the hindsight oracle, PPO) and evaluation.

Public names: :class:`Policy`, :class:`EdgeOnly`, :class:`CloudOnly`, :class:`RandomPolicy`,
:class:`StaticThresholds`, :class:`MSAOHeuristic`, :class:`TunedStatic`,
:class:`HindsightOracle`, :func:`evaluate`, :func:`run_episodes`, :func:`summarize`.
"""

from .evaluation import evaluate, markdown_table, run_episodes, summarize
from .heuristics import (
    POLICY_NAMES,
    CloudOnly,
    EdgeOnly,
    HindsightOracle,
    MSAOHeuristic,
    Policy,
    RandomPolicy,
    StaticThresholds,
    TunedStatic,
)

__all__ = [
    "Policy", "EdgeOnly", "CloudOnly", "RandomPolicy", "StaticThresholds", "MSAOHeuristic",
    "TunedStatic", "HindsightOracle", "POLICY_NAMES", "evaluate", "run_episodes", "summarize",
    "markdown_table",
]
