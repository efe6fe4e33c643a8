"""Batch jobs over the event log: ``recluster`` (rebuild profiles with the service's own core
code, fit HDBSCAN, publish a model), ``export-events`` (event log → Parquet) and reports.

Errors a user can fix (a missing log, an empty window, an unreadable file) are ``JobError``:
the command line prints its one-line message and exits with its ``exit_code``.
"""

from __future__ import annotations


class JobError(Exception):
    """A problem with the job's input or settings, worded for the person who ran it."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
