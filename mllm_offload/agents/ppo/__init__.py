"""PPO (stable-baselines3) on ``Offload-v0``: :func:`train` (:mod:`.training`), the callbacks
(:mod:`.callbacks`), constraints as Lagrangians (:mod:`.constraints`) and the trained model as a
policy (:mod:`.policy`). Importing this package needs no torch; calling :func:`train` needs the
``train`` extra.
"""

from typing import Any

__all__ = ["SB3Policy", "TrainResult", "load_vecnormalize_stats", "msao_reference", "save_vecnormalize_stats", "train"]

_LAZY = {"train": "training", "msao_reference": "training", "TrainResult": "training", "SB3Policy": "policy",
         "load_vecnormalize_stats": "policy", "save_vecnormalize_stats": "policy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
