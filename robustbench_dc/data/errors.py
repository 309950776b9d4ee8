"""Errors raised by the dataset layer.

Every error here is a :class:`DataError`, so callers (the CLI, the planner) can
catch one class. Messages are written to be printed as a single line without a
traceback.
"""

from __future__ import annotations

from robustbench_dc.errors import UserError

__all__ = ["DataError", "DatasetNotFoundError", "DownloadError"]


class DataError(UserError, RuntimeError):
    """A dataset is unknown, corrupt, or could not be read."""


class DatasetNotFoundError(DataError):
    """The files of a dataset are not on disk and could not be downloaded."""


class DownloadError(DataError):
    """Every mirror for a file failed (network error or checksum mismatch)."""
