"""Stage 3: policies that need the simulator (tuned static thresholds, the hindsight and
expected-outcome oracles), PPO training and export.

Importing this package registers ``tuned``, ``oracle`` and ``oracle-expected`` in :data:`mllm_offload.policy.REGISTRY`
(next to the deployable rules ``edge``, ``cloud``, ``random``, ``static``, ``msao``). It needs
no torch: :mod:`.ppo` and :mod:`.export` load stable-baselines3 when called.

Public names: :class:`TunedStatic`, :func:`threshold_grid` (its candidates),
:class:`HindsightOracle`, :class:`ExpectedOracle`, the rules re-exported from :mod:`mllm_offload.rules`
(:class:`EdgeOnly`, :class:`CloudOnly`, :class:`RandomPolicy`, :class:`StaticThresholds`,
:class:`MSAORule`), and :mod:`.ppo` (``train``), :mod:`.export` (``export_run``).
"""

from .baselines import CloudOnly, EdgeOnly, MSAORule, RandomPolicy, StaticThresholds, TunedStatic, threshold_grid
from .oracle import ExpectedOracle, HindsightOracle

__all__ = ["CloudOnly", "EdgeOnly", "ExpectedOracle", "HindsightOracle", "MSAORule", "RandomPolicy", "StaticThresholds", "TunedStatic", "threshold_grid"]
