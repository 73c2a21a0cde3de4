"""Errors of the zsp application. The CLI prints each as one line and exits non-zero.

::

    ZspError
     ├── DataDirError       the data directory is missing, unreadable or not initialised
     └── UsageError         the user asked for something that cannot be done as asked
"""

from __future__ import annotations

from pathlib import Path


class ZspError(Exception):
    """Base class of application errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class DataDirError(ZspError):
    def __init__(self, *, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"data directory {path}: {reason}")


class UsageError(ZspError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
