"""A store connection of its own for a screen's periodic reads (Live every second, Requests every
two): what the bastion does for its grant watcher.

The context's service is one SQLite connection shared by the UI thread and every worker, one
transaction at a time (context.py). A reload that reads every request (two seconds with 100,000
of them) would hold it that long, and the UI thread's own writes (an audit event) would wait
behind it. Reads through a :class:`StoreReader` use a second connection instead, which SQLite's
WAL mode lets read while others write. Decisions (approve, deny, revoke) still go through the
context's service: the same calls as the CLI.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ...access import AccessService
from ...datadir import DataDir

__all__ = ["ReaderClosed", "StoreReader"]


class ReaderClosed(Exception):
    """The screen that owned the reader is gone; a worker that finishes late has nothing to do."""


class StoreReader:
    """One lazily opened service over its own connection, used by one thread at a time."""

    def __init__(self, data: DataDir) -> None:
        self._data = data
        self._service: AccessService | None = None
        self._closed = False
        self._lock = threading.Lock()

    @contextmanager
    def service(self) -> Iterator[AccessService]:
        """The reader's service, held for the block (a superseded worker still running waits)."""
        with self._lock:
            if self._closed:
                raise ReaderClosed
            if self._service is None:
                self._service = self._data.service()
            yield self._service

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._service is not None:
                self._service.store.close()
                self._service = None
