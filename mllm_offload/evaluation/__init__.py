"""Stage 3: every policy on the same episodes, metrics, throughput, tables and plots.

Public names: :class:`EpisodeLog`, :func:`run_episodes` (rollout), :func:`summarize` (metrics),
:func:`find_throughput`, :func:`evaluate` (policies side by side), :func:`markdown_table`,
:func:`write_json`, :func:`write_csv`, :func:`gap_summary` (report), :func:`write_plots`,
:func:`verdict` (the best deployable policy and whether its lead exceeds the spread).
"""

from .compare import evaluate
from .metrics import summarize
from .plots import write_plots
from .report import gap_summary, markdown_table, write_csv, write_json
from .rollout import EpisodeLog, run_episodes
from .throughput import find_throughput
from .verdict import verdict

__all__ = [
           "EpisodeLog",
           "evaluate",
           "find_throughput",
           "gap_summary",
           "markdown_table",
           "run_episodes",
           "summarize",
           "verdict",
           "write_csv",
           "write_json",
           "write_plots",
]
