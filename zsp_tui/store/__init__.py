"""Persistent state behind a small interface (see :mod:`.base`); SQLite is the embedded default."""

from __future__ import annotations

from .base import AuditRow, SessionQuery, SessionRow, SessionSort, SessionState, Store, Tx
from .factory import open_store
from .sqlite import SCHEMA_VERSION, SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "AuditRow",
    "SessionQuery",
    "SessionRow",
    "SessionSort",
    "SessionState",
    "SqliteStore",
    "Store",
    "Tx",
    "open_store",
]
