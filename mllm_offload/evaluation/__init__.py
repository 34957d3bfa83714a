"""Stage 3: every policy on the same episodes, metrics, throughput, frontiers, tables and plots.

Public names: :class:`EpisodeLog`, :func:`run_episodes` (rollout), :func:`summarize` (metrics),
:func:`find_throughput`, :func:`evaluate` (policies side by side), :func:`markdown_table`,
:func:`write_json`, :func:`write_csv`, :func:`gap_summary` (report), :func:`write_plots`,
:func:`verdict` (the best deployable policy and whether its lead exceeds the spread), and the
frontiers over latency prices: :class:`Frontier`, :func:`frontier`, :func:`dominance`,
:func:`frontier_text`, :func:`reward_at` (frontier) and :func:`write_frontier_plot` (plots).
"""

from .compare import evaluate
from .frontier import Frontier, dominance, frontier, frontier_text, reward_at
from .metrics import summarize
from .plots import write_frontier_plot, write_plots
from .report import gap_summary, markdown_table, write_csv, write_json
from .rollout import EpisodeLog, run_episodes
from .throughput import find_throughput
from .verdict import verdict

__all__ = [
           "EpisodeLog",
           "Frontier",
           "dominance",
           "evaluate",
           "find_throughput",
           "frontier",
           "frontier_text",
           "gap_summary",
           "markdown_table",
           "reward_at",
           "run_episodes",
           "summarize",
           "verdict",
           "write_csv",
           "write_frontier_plot",
           "write_json",
           "write_plots",
]
