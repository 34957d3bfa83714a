"""Stage 4: what runs on a deployed edge box (numpy, optionally onnxruntime; never torch,
stable-baselines3 or gymnasium).

Public names: :class:`OffloadPolicy` (an exported policy or a named heuristic: observations to
thresholds), :class:`RuntimeEstimators` (live system state), :class:`Router`,
:class:`RouterConfig`, :class:`RoutedAnswer`, :class:`RouterError` (routing with real
speculation and fallbacks), :class:`TraceLog` (deployment logs in the trace format) and
:func:`create_route_app` / :func:`run_route_server` (the OpenAI-compatible front; needs FastAPI).
The router and server are imported on first use, so the policy alone needs only numpy.
"""

from typing import Any

from .policy import BACKENDS, OffloadPolicy

__all__ = [
    "BACKENDS",
    "OffloadPolicy",
    "RoutedAnswer",
    "Router",
    "RouterConfig",
    "RouterError",
    "RuntimeEstimators",
    "TraceLog",
    "create_route_app",
    "run_route_server",
]

_LAZY = {"RuntimeEstimators": "estimators", "Router": "router", "RouterConfig": "router", "RoutedAnswer": "router",
         "RouterError": "router", "TraceLog": "tracelog", "create_route_app": "server", "run_route_server": "server"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
