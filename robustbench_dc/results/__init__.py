"""Results store and leaderboard.

- :class:`ResultsStore` -- the SQLite database of protocol runs (WAL mode, one transaction per
  write, safe for concurrent writer processes); ``ingest_summary``, ``runs``, ``entries``.
- :class:`LeaderboardEntry` and :func:`rank_entries` -- RobustBench-like entries and their ranking.
- :func:`render_leaderboard` / :func:`write_leaderboard` -- Markdown, CSV, JSON and static HTML.
- :func:`find_db` -- the database to read: the one given, else the run made last under ``runs/``.
"""

from robustbench_dc.results.leaderboard import DEFAULT_METRIC, LeaderboardEntry, available_metrics, metric_value, rank_entries
from robustbench_dc.results.render import FORMATS, render_leaderboard, write_leaderboard
from robustbench_dc.results.robustbench import model_info, write_model_info
from robustbench_dc.results.schema import DEFAULT_DB, SCHEMA_VERSION, find_db
from robustbench_dc.results.store import ResultsStore, ResultsStoreError

__all__ = ["model_info", "write_model_info", "ResultsStore", "LeaderboardEntry", "rank_entries", "available_metrics",
           "metric_value",
           "render_leaderboard", "write_leaderboard", "FORMATS", "DEFAULT_METRIC", "DEFAULT_DB", "SCHEMA_VERSION",
           "ResultsStoreError", "find_db"]
