"""Set-up shared by every worker of one `lb serve --workers N` instance."""

from __future__ import annotations


def prepare_multiprocess() -> None:
    """Prepare process-shared state before the workers start (metrics directory, ...)."""
