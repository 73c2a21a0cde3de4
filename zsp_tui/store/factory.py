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
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        from ..config import redact_url  # here: config imports the audit log, which imports the store
        from ..exceptions import StoreError

        raise StoreError(
            where=redact_url(url),
            reason=f"PostgreSQL support is not installed ({exc.name or exc}): pip install 'zsp[postgres]'",
        ) from None
    return PostgresStore(url)
