"""Stage 4: what runs on a deployed edge box (numpy, optionally onnxruntime; never torch,
stable-baselines3 or gymnasium).

Public names: :class:`OffloadPolicy` (load an exported policy or a named heuristic and map
observations to thresholds).
"""

from .policy import BACKENDS, OffloadPolicy

__all__ = ["BACKENDS", "OffloadPolicy"]
