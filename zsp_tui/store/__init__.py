"""Persistent state behind a small interface (see :mod:`.base`); SQLite is the embedded default."""

from __future__ import annotations

from .base import AuditRow, Store, Tx
from .sqlite import SCHEMA_VERSION, SqliteStore

__all__ = ["SCHEMA_VERSION", "AuditRow", "SqliteStore", "Store", "Tx"]
