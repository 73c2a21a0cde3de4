"""Which store a deployment uses: the embedded SQLite file, or PostgreSQL named by a URL."""

from __future__ import annotations

from pathlib import Path

from .base import Store

__all__ = ["open_store"]


def open_store(url: str | None, sqlite_path: Path) -> Store:
    """The store at ``url`` (``postgresql://...``), or the SQLite file ``sqlite_path`` when None.

    PostgreSQL support is imported only when asked for, so the embedded default needs no driver;
    a missing driver is a :class:`~zsp_tui.exceptions.StoreError` saying what to install."""
    if url is None:
        from .sqlite import SqliteStore

        return SqliteStore(sqlite_path)
    from .postgres import PostgresStore

    return PostgresStore(url)
