"""The PostgreSQL store: several bastions (and ``zsp serve --workers N``) sharing one database.

Skeleton (issue 12): built by the PostgreSQL helper. See /work/wt/COMMON12.md.
"""

from __future__ import annotations

from ..config import redact_url
from ..exceptions import StoreError

__all__ = ["PostgresStore"]


class PostgresStore:
    def __init__(self, url: str) -> None:
        raise StoreError(where=redact_url(url), reason="PostgreSQL store not built yet")
