"""The store interface: everything zsp keeps, behind one small seam.

SQLite (:mod:`zsp_tui.store.sqlite`) is the embedded default; a PostgreSQL implementation for
multi-bastion deployments implements the same two protocols. All writes happen inside
``store.transaction()``, which serialises writers (SQLite ``BEGIN IMMEDIATE``, PostgreSQL one
advisory lock every writer takes first) so that every state change and its audit events commit
together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from ..models import (
    AccessRequest,
    Flag,
    Hold,
    HoldState,
    RequestState,
    Role,
    SessionRecord,
    Target,
    User,
    Watch,
    WatchEnd,
)

__all__ = [
    "ID_TABLES",
    "TABLES",
    "AuditRow",
    "SessionQuery",
    "SessionRow",
    "SessionSort",
    "SessionState",
    "Store",
    "Tx",
]

TABLES = (
    "meta",
    "users",
    "user_keys",
    "targets",
    "requests",
    "approvals",
    "sessions",
    "flags",
    "holds",
    "watches",
    "audit",
)
"""Every table of the store, each after the tables it refers to (the order ``zsp migrate`` copies in)."""
ID_TABLES = ("users", "flags")
"""Tables whose ``id`` the store gives out (an integer sequence; the others' ids come from zsp)."""

AuditRow = tuple[int, bytes, bytes]
"""``(seq, body, head)`` of one audit frame, exactly as the chain produced it."""


class SessionSort(StrEnum):
    """What :meth:`Tx.page_sessions` can order by (ties broken by session id, same direction)."""

    STARTED = "started"
    USER = "user"
    TARGET = "target"
    LOGIN = "login"
    DURATION = "duration"
    """Ended minus started; a live session's runs to now."""
    END_REASON = "end_reason"
    STATUS = "status"
    """What the store knows of it: live, interrupted, sealed (has a final head), incomplete."""


class SessionState(StrEnum):
    """The one status the store can filter by itself: still running or not."""

    LIVE = "live"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """One page request of the session list: a filter and an order, nothing backend-specific.

    The review app pages through 100,000 sessions with it without ever loading them all."""

    text: str = ""
    """Matched case-insensitively as a substring of the session id, user, target, login, command,
    grant id and the grant's reason; empty matches every session."""
    state: SessionState | None = None
    flagged: bool = False
    """Only sessions in which a real-time rule fired (``SessionRecord.flags > 0``)."""
    sort: SessionSort = SessionSort.STARTED
    descending: bool = True
    """Newest (largest) first by default: what a reviewer opens the list for."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One line of the session list: the session and the reason its grant was asked for."""

    session: SessionRecord
    reason: str | None
    """The grant's reason (None without a grant, or if the request is gone)."""


class Tx(Protocol):
    """One transaction. Methods raise :class:`zsp_tui.exceptions.Conflict` on duplicates."""

    # meta
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...

    # users and keys
    def add_user(self, name: str, roles: frozenset[Role], at: datetime) -> User: ...
    def get_user(self, name: str) -> User | None: ...
    def get_user_by_id(self, user_id: int) -> User | None: ...
    def list_users(self) -> list[User]: ...
    def remove_user(self, name: str) -> bool: ...
    def set_roles(self, user_id: int, roles: frozenset[Role]) -> None: ...
    def add_key(self, user_id: int, key: str, fingerprint: str, comment: str, at: datetime) -> None: ...
    def remove_key(self, user_id: int, fingerprint: str) -> bool: ...
    def user_by_key(self, fingerprint: str) -> User | None: ...

    # targets
    def add_target(self, target: Target, at: datetime) -> None: ...
    def get_target(self, name: str) -> Target | None: ...
    def list_targets(self) -> list[Target]: ...
    def remove_target(self, name: str) -> bool: ...

    # requests, approvals, grants
    def insert_request(self, request: AccessRequest) -> None: ...
    def get_request(self, request_id: str) -> AccessRequest | None: ...
    def list_requests(self, states: tuple[RequestState, ...] | None = None) -> list[AccessRequest]: ...
    def update_request(self, request_id: str, expect: RequestState, **changes: Any) -> bool:
        """Change a request only if it is still in state ``expect`` (compare-and-set)."""
        ...

    def add_approval(self, request_id: str, approver: str, at: datetime) -> bool:
        """Record an approval; False if this approver already approved this request."""
        ...

    def due_requests(self, now: datetime) -> list[AccessRequest]:
        """Approved grants past their end and pending requests past their lapse time."""
        ...

    # sessions
    def session_start(self, session: SessionRecord) -> None: ...
    def session_end(
        self, session_id: str, at: datetime, exit_status: int | None, reason: str, head: str | None
    ) -> None: ...
    def get_session(self, session_id: str) -> SessionRecord | None: ...
    def list_sessions(
        self, *, user: str | None = None, target: str | None = None, since: datetime | None = None
    ) -> list[SessionRecord]:
        """Sessions oldest first; only those of ``user``, on ``target``, started at or after ``since``."""
        ...

    def unended_sessions(self) -> list[SessionRecord]: ...

    def count_sessions(self, q: SessionQuery) -> int:
        """How many sessions match ``q`` (its sort does not matter)."""
        ...

    def page_sessions(self, q: SessionQuery, offset: int, limit: int) -> list[SessionRow]:
        """Rows ``offset`` to ``offset + limit`` of the sessions matching ``q``, in its order."""
        ...

    # object storage (schema 6)
    def set_upload(
        self, session_id: str, state: str | None, *, object_key: str | None = None, sha256: str | None = None
    ) -> bool:
        """Set where the session's recording is (``SessionRecord.upload``, ``object_key``,
        ``sha256``); False if there is no such session."""
        ...

    def pending_uploads(self, limit: int = 100) -> list[SessionRecord]:
        """Sessions whose recording waits in scratch for upload, oldest first."""
        ...

    def live_sessions(self, user: str | None = None) -> int:
        """Sessions not yet ended (of ``user``, or of everyone), across every bastion sharing the
        store: the per-user session cap counts these."""
        ...

    # real-time rules
    def add_flag(self, flag: Flag) -> None:
        """Keep one rule match for listing, and count it (with its severity) on its session."""
        ...

    def list_flags(
        self, *, session_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Flag]:
        """Rule matches oldest first, only those of ``session_id`` / at or after ``since``."""
        ...

    def insert_hold(self, hold: Hold) -> None: ...
    def get_hold(self, hold_id: str) -> Hold | None: ...
    def list_holds(self, states: tuple[HoldState, ...] | None = None) -> list[Hold]:
        """Holds oldest first, only those in ``states`` if given."""
        ...

    def decide_hold(self, hold_id: str, state: HoldState, by: str, at: datetime, note: str = "") -> bool:
        """Move a pending hold to ``state``; False if it was no longer pending (compare-and-set)."""
        ...

    # moderated sessions' watches (schema 7)
    def insert_watch(self, watch: Watch) -> None:
        """Keep a moderator's watch that starts (open: no ``left_at``)."""
        ...

    def get_watch(self, watch_id: str) -> Watch | None: ...

    def beat_watch(self, watch_id: str, at: datetime) -> bool:
        """The watcher is still there (its heartbeat); False if the watch is no longer open."""
        ...

    def leave_watch(self, watch_id: str, at: datetime, how: WatchEnd) -> bool:
        """End an open watch ``how``; False if it had ended already (compare-and-set)."""
        ...

    def list_watches(self, session_ids: Sequence[str], *, open_only: bool = True) -> list[Watch]:
        """The watches of ``session_ids`` (only the open ones with ``open_only``), oldest first:
        the one query the owning bastion's watcher makes four times a second."""
        ...

    # audit chain
    def audit_tail(self) -> AuditRow | None: ...
    def audit_append(self, rows: list[tuple[int, bytes, bytes, str, str]]) -> None:
        """Append ``(seq, body, head, time, event)`` rows."""
        ...

    def audit_rows(self, since_seq: int = 0) -> Iterator[AuditRow]: ...

    # whole tables, as they are (``zsp migrate`` copies a store with these)
    def table_columns(self, table: str) -> list[str]:
        """The columns of ``table`` (one of :data:`TABLES`), in the table's order."""
        ...

    def dump_rows(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        """Every row of ``table`` exactly as stored (ids, bytes): its columns and the rows."""
        ...

    def load_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Insert ``rows`` (values for ``columns``) into ``table`` as they are; how many."""
        ...

    def count_rows(self, table: str) -> int: ...

    def id_high_water(self, table: str) -> int:
        """The highest id ``table`` (one of :data:`ID_TABLES`) ever gave out, deleted rows' too; 0 if none."""
        ...

    def raise_id_floor(self, table: str, floor: int) -> None:
        """Make the next id ``table`` gives out larger than ``floor`` and than every id in it."""
        ...

    def audit_page(
        self, before: int | None, limit: int, *, event_prefix: str = "", since: datetime | None = None
    ) -> list[AuditRow]:
        """Up to ``limit`` frames with seq below ``before`` (from the newest if None), newest first,
        whose event name starts with ``event_prefix`` and that were written at or after ``since``."""
        ...


class Store(Protocol):
    def transaction(self, write: bool = True) -> AbstractContextManager[Tx]:
        """A transaction; ``write=False`` for reads, which then do not wait for writers."""
        ...

    def close(self) -> None: ...
