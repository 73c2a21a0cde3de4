"""The PostgreSQL store: several bastions (and ``zsp serve --workers N``) sharing one database.

Same tables, columns and behaviour as :mod:`.sqlite` (``tests/test_store_conformance.py`` runs
one set of behaviours against both). What SQLite's ``BEGIN IMMEDIATE`` gives, PostgreSQL gets
from one advisory lock: every write transaction first takes ``pg_advisory_xact_lock(_WRITE_LOCK)``,
so writers from every process on every host run one at a time, each seeing all that committed
before it. Grant decisions, approvals (counted once), hold decisions and audit appends (read the
chain's tail, append, commit) therefore stay exactly as correct as on one SQLite file. Reads take
no lock: ``REPEATABLE READ READ ONLY``, one snapshot per transaction as SQLite's read transaction
is, never waiting for a writer.

Connections come from a :class:`psycopg_pool.ConnectionPool` per store (1 to 8). A connection
that died with the server is found when its ``BEGIN`` fails and replaced; nothing has happened in
it yet, so the transaction is simply retried on another. Every psycopg error that escapes is a
:class:`~zsp_tui.exceptions.StoreError` naming the store with its password redacted (a unique
violation: :class:`~zsp_tui.exceptions.Conflict`, with SQLite's message), never a traceback.

A write that changes a request's state sends ``NOTIFY zsp_grants`` with its commit, so bastions
that ``LISTEN`` re-check their live sessions at once rather than at their next poll.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg import sql

from ..clock import rfc3339
from ..config import redact_url, scrub_secrets
from ..exceptions import Conflict, StoreError
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
from .base import ID_TABLES, TABLES, AuditRow, SessionQuery, SessionRow, SessionSort
from .pg_schema import BASE, FIRST_VERSION, MIGRATIONS
from .rows import (
    HOLD_COLUMNS,
    REQUEST_COLUMNS,
    SESSION_COLUMNS,
    SEVERITY_RANK,
    TIME_COLUMNS,
    WATCH_COLUMNS,
    flag_from_row,
    hold_from_row,
    like_pattern,
    request_from_row,
    session_from_row,
    session_where,
    target_from_row,
    time_text,
    user_from_row,
    watch_from_row,
)
from .sqlite import SCHEMA_VERSION

__all__ = ["NOTIFY_CHANNEL", "PostgresStore", "close_at_exit", "empty_problem"]

# A library's warnings go to the application's logging if it has any, never straight to stderr
# (logging's last resort would print psycopg_pool's reconnect warnings under a CLI's one line).
logging.getLogger("psycopg").addHandler(logging.NullHandler())

NOTIFY_CHANNEL = "zsp_grants"
"""Notified (no payload) by every commit that changed a request's state."""

_WRITE_LOCK = 0x7A73_705F_7374_6F72  # "zsp_stor": one key for every writer of every zsp
_CONNECT_TIMEOUT = 5
_STATEMENT_TIMEOUT_MS = 30_000  # as SQLite's busy_timeout: a writer waits this long for the lock
_POOL_MAX = 8
_AUDIT_BATCH = 2000

_BEGIN_WRITE = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({_WRITE_LOCK})"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

_SELECT_REQUESTS = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests"  # noqa: S608 - fixed column names

_SESSION_COLUMNS = ['"user"' if c == "user" else c for c in SESSION_COLUMNS]
_SELECT_SESSIONS = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - fixed column names

_HOLD_COLUMNS = ['"user"' if c == "user" else c for c in HOLD_COLUMNS]
_SELECT_HOLDS = f"SELECT {', '.join(_HOLD_COLUMNS)} FROM holds"  # noqa: S608 - fixed column names

_WATCH_COLUMNS = ['"user"' if c == "user" else c for c in WATCH_COLUMNS]
_SELECT_WATCHES = f"SELECT {', '.join(_WATCH_COLUMNS)} FROM watches"  # noqa: S608 - fixed column names

# Sort keys of page_sessions: SQLite's (sqlite._SORT_KEYS) in PostgreSQL. Fixed expressions only.
_SORT_KEYS: dict[SessionSort, str] = {
    SessionSort.STARTED: "s.started_at",
    SessionSort.USER: 's."user"',
    SessionSort.TARGET: "s.target",
    SessionSort.LOGIN: "s.login",
    # Whole milliseconds, as SQLite's: equal durations compare equal.
    SessionSort.DURATION: (
        "round(extract(epoch FROM coalesce(s.ended_at::timestamptz, statement_timestamp())"
        " - s.started_at::timestamptz) * 1000)"
    ),
    SessionSort.END_REASON: "coalesce(s.end_reason, '')",
    SessionSort.STATUS: (
        "(CASE WHEN s.ended_at IS NULL THEN 0 WHEN s.end_reason = 'interrupted' THEN 1 "
        "WHEN s.head IS NOT NULL THEN 2 ELSE 3 END)"
    ),
}
_FLIP_AFTER = 2000
"""page_sessions reads pages past this offset from the other end if that end is nearer."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Closable(Protocol):
    def close(self) -> None: ...


_OPEN: weakref.WeakSet[_Closable] = weakref.WeakSet()
"""Stores and search indexes (anything holding a pool) not yet closed. A command that opens the
store and exits without closing it (most CLI commands do: SQLite needs no closing) would leave the
pool to be collected late, maybe in one of its own worker threads, which prints "cannot join
current thread" on the user's terminal. They are closed at exit, from the main thread, instead."""


def close_at_exit(holder: _Closable) -> None:
    """Close ``holder`` (which holds a connection pool) at exit if nobody did before."""
    _OPEN.add(holder)


@atexit.register
def _close_open_stores() -> None:
    for store in list(_OPEN):
        with contextlib.suppress(psycopg_pool.PoolTimeout, RuntimeError):
            store.close()


class PostgresStore:
    """The store in the PostgreSQL database at ``url`` (``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB``).

    Opening it creates the schema in an empty database, or migrates an older one forward, under
    the writers' lock: bastions starting at once migrate once. Raises StoreError if the server
    cannot be reached or refuses us, with the reason PostgreSQL gave."""

    def __init__(self, url: str, *, max_connections: int = _POOL_MAX) -> None:
        self.url = url
        self.where = redact_url(url)
        self._kwargs: dict[str, Any] = {
            "autocommit": True,  # transactions are begun and ended here, explicitly
            "connect_timeout": _CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={_STATEMENT_TIMEOUT_MS}",
            "application_name": "zsp",
            # A server that vanished without closing the socket is noticed within ~20 s.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
        }
        try:
            with psycopg.connect(url, **self._kwargs) as conn:
                self._prepare(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from None
        self._suspect = False
        """A connection died lately: probe the server before taking one from the pool."""
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
            url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=max_connections,
            open=False,
            name="zsp-store",
            timeout=_CONNECT_TIMEOUT,
            # Give up a failed reconnect soon: the next transaction then starts a fresh attempt at
            # once instead of waiting out a long back-off after the server is back.
            reconnect_timeout=_CONNECT_TIMEOUT,
        )
        self._pool.open(wait=False)
        self._max = max_connections
        close_at_exit(self)

    def __del__(self) -> None:  # a store nobody closed: its pool's threads go with it, quietly
        pool = getattr(self, "_pool", None)
        if pool is not None and not pool.closed:
            with contextlib.suppress(psycopg_pool.PoolTimeout, RuntimeError):
                pool.close(timeout=0)

    # --- errors ---------------------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        return scrub_secrets(_one_line(str(exc)) or type(exc).__name__, self.url)

    def _error(self, exc: BaseException) -> StoreError:
        return StoreError(where=self.where, reason=self._reason(exc))

    def _probe(self) -> StoreError | None:
        """Ask the server directly whether it takes connections: its own words if not."""
        try:
            with psycopg.connect(self.url, **{**self._kwargs, "connect_timeout": 2}):
                pass
        except psycopg.Error as exc:
            return self._error(exc)
        return None

    # --- schema ---------------------------------------------------------------------------

    @staticmethod
    def _prepare(conn: psycopg.Connection[Any]) -> None:
        """Create or migrate the schema, under the writers' lock (one opener at a time does it)."""
        with conn.transaction():
            conn.execute(f"SELECT pg_advisory_xact_lock({_WRITE_LOCK})")
            row = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                for statement in BASE:
                    conn.execute(statement)
                _set_meta(conn, "schema_version", str(FIRST_VERSION))
            got = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(got[0]) if got else FIRST_VERSION
            if version > SCHEMA_VERSION:
                raise psycopg.errors.FeatureNotSupported(
                    f"database schema {version} is newer than this zsp understands ({SCHEMA_VERSION})"
                )
            while version < SCHEMA_VERSION:
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
                _set_meta(conn, "schema_version", str(version))

    # --- transactions ---------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close(timeout=5)
        _OPEN.discard(self)

    def _begin(self, write: bool) -> psycopg.Connection[Any]:
        """A pooled connection inside a fresh transaction (holding the writers' lock if ``write``).

        A pooled connection may have died with the server (a restart, a failover): its BEGIN
        fails before anything happened, so it is dropped and the next one tried. Once one has
        died, the server is asked directly first, so that while it is down every transaction
        fails at once with its reason (the bastion fails closed) instead of waiting on the pool."""
        if self._suspect:
            down = self._probe()
            if down is not None:
                raise down
            self._suspect = False
        last: psycopg.Error | None = None
        for _ in range(self._max + 1):
            try:
                conn = self._pool.getconn(timeout=_CONNECT_TIMEOUT)
            except psycopg_pool.PoolTimeout:
                self._suspect = True
                raise self._probe() or StoreError(
                    where=self.where, reason=f"no connection free within {_CONNECT_TIMEOUT} s"
                ) from None
            except psycopg.Error as exc:
                raise self._error(exc) from None
            try:
                conn.execute(_BEGIN_WRITE if write else _BEGIN_READ)
            except psycopg.OperationalError as exc:
                last = exc
                self._discard(conn)
                down = self._probe()
                if down is not None:
                    self._suspect = True
                    raise down from None
                continue
            except psycopg.Error as exc:
                self._discard(conn)
                raise self._error(exc) from None
            return conn
        raise self._error(last or RuntimeError("no working connection"))

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed:
            conn.close()
        self._pool.putconn(conn)

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_PostgresTx]:
        conn = self._begin(write)
        tx = _PostgresTx(conn, self)
        try:
            try:
                yield tx
            except BaseException:
                if not conn.broken:
                    try:
                        conn.execute("ROLLBACK")
                    except psycopg.Error:
                        conn.close()  # the pool replaces it
                raise
            try:
                conn.execute(f"NOTIFY {NOTIFY_CHANNEL}; COMMIT" if tx.notify else "COMMIT")
            except psycopg.Error as exc:
                conn.close()
                raise self._error(exc) from None
        except psycopg.Error as exc:  # one escaped a Tx method's wrapper (a generator's late fetch)
            raise self._error(exc) from None
        finally:
            self._pool.putconn(conn)


def _set_meta(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any], store: PostgresStore) -> None:
        self._conn = conn
        self._store = store
        self.notify = False
        """Set when this transaction changed a request's state: its commit notifies the bastions."""

    def _x(self, query: str, args: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        try:
            return self._conn.execute(query, args)
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(self._store._reason(exc)) from None
        except psycopg.Error as exc:
            raise self._store._error(exc) from None

    def _one(self, query: str, args: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._x(query, args).fetchone()
        return row

    def _all(self, query: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self._x(query, args).fetchall()

    # --- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._x(
            "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- users ----------------------------------------------------------------------------

    def _users(self, rows: list[tuple[Any, ...]]) -> list[User]:
        """Users of ``rows`` (id, name, roles, created_at) with their keys, in one more query."""
        if not rows:
            return []
        keys: dict[int, list[tuple[Any, ...]]] = {}
        for uid, f, k, c, a in self._all(
            "SELECT user_id, fingerprint, key, comment, added_at FROM user_keys WHERE user_id = ANY(%s) "
            "ORDER BY added_at",
            ([r[0] for r in rows],),
        ):
            keys.setdefault(uid, []).append((f, k, c, a))
        return [user_from_row(row, keys.get(row[0], ())) for row in rows]

    def _user(self, where: str, args: Sequence[Any]) -> User | None:
        query = "SELECT u.id, u.name, u.roles, u.created_at FROM users u " + where  # noqa: S608 - fixed clauses
        got = self._users(self._all(query, args))
        return got[0] if got else None

    def add_user(self, name: str, roles: frozenset[Role], at: datetime) -> User:
        row = self._one(
            "INSERT INTO users(name, roles, created_at) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, json.dumps(sorted(r.value for r in roles)), rfc3339(at)),
        )
        if row is None:
            raise Conflict(f"user {name} already exists")
        user = self.get_user_by_id(int(row[0]))
        if user is None:  # pragma: no cover - the row was just inserted in this transaction
            raise Conflict(f"user {name} vanished")
        return user

    def get_user(self, name: str) -> User | None:
        return self._user("WHERE u.name = %s", (name,))

    def get_user_by_id(self, user_id: int) -> User | None:
        return self._user("WHERE u.id = %s", (user_id,))

    def list_users(self) -> list[User]:
        return self._users(self._all("SELECT id, name, roles, created_at FROM users ORDER BY name"))

    def remove_user(self, name: str) -> bool:
        return self._x("DELETE FROM users WHERE name = %s", (name,)).rowcount > 0

    def set_roles(self, user_id: int, roles: frozenset[Role]) -> None:
        self._x("UPDATE users SET roles = %s WHERE id = %s", (json.dumps(sorted(r.value for r in roles)), user_id))

    def add_key(self, user_id: int, key: str, fingerprint: str, comment: str, at: datetime) -> None:
        try:
            cur = self._x(
                "INSERT INTO user_keys(fingerprint, user_id, key, comment, added_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (fingerprint, user_id, key, comment, rfc3339(at)),
            )
        except StoreError as exc:  # no such user (a foreign key): SQLite's IntegrityError, a Conflict
            raise Conflict(f"key {fingerprint} already belongs to someone ({exc.reason})") from None
        if cur.rowcount == 0:
            owner = self.user_by_key(fingerprint)
            raise Conflict(f"key {fingerprint} already belongs to {owner.name if owner else 'someone'}")

    def remove_key(self, user_id: int, fingerprint: str) -> bool:
        cur = self._x("DELETE FROM user_keys WHERE user_id = %s AND fingerprint = %s", (user_id, fingerprint))
        return cur.rowcount > 0

    def user_by_key(self, fingerprint: str) -> User | None:
        return self._user("JOIN user_keys k ON k.user_id = u.id WHERE k.fingerprint = %s", (fingerprint,))

    # --- targets --------------------------------------------------------------------------

    def add_target(self, target: Target, at: datetime) -> None:
        cur = self._x(
            "INSERT INTO targets(name, host, port, logins, host_key, labels, created_at, client_key) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (
                target.name,
                target.host,
                target.port,
                json.dumps(list(target.logins)),
                target.host_key,
                json.dumps(sorted(target.labels)),
                rfc3339(at),
                target.client_key,
            ),
        )
        if cur.rowcount == 0:
            raise Conflict(f"target {target.name} already exists")

    def get_target(self, name: str) -> Target | None:
        return target_from_row(
            self._one(
                "SELECT name, host, port, logins, host_key, labels, client_key FROM targets WHERE name = %s", (name,)
            )
        )

    def list_targets(self) -> list[Target]:
        rows = self._all("SELECT name, host, port, logins, host_key, labels, client_key FROM targets ORDER BY name")
        return [t for t in (target_from_row(r) for r in rows) if t is not None]

    def remove_target(self, name: str) -> bool:
        return self._x("DELETE FROM targets WHERE name = %s", (name,)).rowcount > 0

    # --- requests -------------------------------------------------------------------------

    def _requests(self, rows: list[tuple[Any, ...]]) -> list[AccessRequest]:
        """Requests of ``rows`` with their approvals, in one more query."""
        if not rows:
            return []
        approvals: dict[str, list[str]] = {}
        for rid, approver in self._all(
            "SELECT request_id, approver FROM approvals WHERE request_id = ANY(%s) ORDER BY at, approver",
            ([r[0] for r in rows],),
        ):
            approvals.setdefault(rid, []).append(approver)
        return [request_from_row(row, approvals.get(row[0], ())) for row in rows]

    def insert_request(self, request: AccessRequest) -> None:
        values = {
            "id": request.id,
            "requester_id": request.requester_id,
            "requester": request.requester,
            "target": request.target,
            "login": request.login,
            "duration_s": int(request.duration.total_seconds()),
            "reason": request.reason,
            "state": request.state.value,
            "approvals_needed": request.approvals_needed,
            "approver_patterns": json.dumps(list(request.approver_patterns)),
            "rule": request.rule,
            "break_glass": int(request.break_glass),
            "created_at": time_text(request.created_at),
            "lapses_at": time_text(request.lapses_at),
            "decided_at": time_text(request.decided_at),
            "starts_at": time_text(request.starts_at),
            "ends_at": time_text(request.ends_at),
            "ended_at": time_text(request.ended_at),
            "ended_by": request.ended_by,
            "note": request.note,
        }
        cur = self._x(
            f"INSERT INTO requests({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) "  # noqa: S608 - fixed column names
            "ON CONFLICT (id) DO NOTHING",
            tuple(values.values()),
        )
        if cur.rowcount == 0:
            raise Conflict(f"request {request.id} already exists")

    def get_request(self, request_id: str) -> AccessRequest | None:
        got = self._requests(self._all(_SELECT_REQUESTS + " WHERE id = %s", (request_id,)))
        return got[0] if got else None

    def list_requests(self, states: tuple[RequestState, ...] | None = None) -> list[AccessRequest]:
        if states:
            rows = self._all(
                _SELECT_REQUESTS + " WHERE state = ANY(%s) ORDER BY created_at, id", ([s.value for s in states],)
            )
        else:
            rows = self._all(_SELECT_REQUESTS + " ORDER BY created_at, id")
        return self._requests(rows)

    def update_request(self, request_id: str, expect: RequestState, **changes: Any) -> bool:
        cols = []
        args: list[Any] = []
        for col, value in changes.items():
            if col not in REQUEST_COLUMNS or col in ("id", "requester_id", "requester"):
                raise ValueError(f"cannot update column {col}")
            cols.append(f"{col} = %s")
            if col in TIME_COLUMNS and isinstance(value, datetime):
                value = rfc3339(value)
            elif isinstance(value, RequestState):
                value = value.value
            args.append(value)
        cur = self._x(
            f"UPDATE requests SET {', '.join(cols)} WHERE id = %s AND state = %s",  # noqa: S608 - fixed names
            (*args, request_id, expect.value),
        )
        changed = cur.rowcount == 1
        if changed and "state" in changes:
            self.notify = True
        return changed

    def add_approval(self, request_id: str, approver: str, at: datetime) -> bool:
        cur = self._x(
            "INSERT INTO approvals(request_id, approver, at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (request_id, approver, rfc3339(at)),
        )
        return cur.rowcount == 1

    def due_requests(self, now: datetime) -> list[AccessRequest]:
        t = rfc3339(now)
        rows = self._all(
            _SELECT_REQUESTS + " "
            "WHERE (state = 'approved' AND ends_at <= %s) OR (state = 'pending' AND lapses_at <= %s) "
            "ORDER BY coalesce(ends_at, lapses_at), id",
            (t, t),
        )
        return self._requests(rows)

    # --- sessions -------------------------------------------------------------------------

    def session_start(self, s: SessionRecord) -> None:
        self._x(
            'INSERT INTO sessions(id, "user", target, login, grant_id, command, client, path, started_at, owner) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (s.id, s.user, s.target, s.login, s.grant_id, s.command, s.client, s.path, rfc3339(s.started_at), s.owner),
        )

    def session_end(
        self, session_id: str, at: datetime, exit_status: int | None, reason: str, head: str | None
    ) -> None:
        self._x(
            "UPDATE sessions SET ended_at = %s, exit_status = %s, end_reason = %s, head = %s WHERE id = %s",
            (rfc3339(at), exit_status, reason, head, session_id),
        )

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self._one(_SELECT_SESSIONS + " WHERE id = %s", (session_id,))
        return None if row is None else session_from_row(row)

    def list_sessions(
        self, *, user: str | None = None, target: str | None = None, since: datetime | None = None
    ) -> list[SessionRecord]:
        where: list[str] = []
        args: list[str] = []
        for column, value in (('"user"', user), ("target", target)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        if since is not None:
            where.append("started_at >= %s")
            args.append(rfc3339(since))
        query = _SELECT_SESSIONS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started_at, id"
        return [session_from_row(r) for r in self._all(query, args)]

    def unended_sessions(self) -> list[SessionRecord]:
        rows = self._all(_SELECT_SESSIONS + " WHERE ended_at IS NULL ORDER BY started_at, id")
        return [session_from_row(r) for r in rows]

    def count_sessions(self, q: SessionQuery) -> int:
        where, args = session_where(q, param="%s", like="ILIKE", user='"user"')
        row = self._one("SELECT count(*) FROM sessions s" + where, args)  # noqa: S608 - fixed clauses
        return int(row[0]) if row else 0

    def page_sessions(self, q: SessionQuery, offset: int, limit: int) -> list[SessionRow]:
        if offset < 0 or limit < 0:
            raise ValueError(f"page_sessions: offset {offset} and limit {limit} must not be negative")
        where, args = session_where(q, param="%s", like="ILIKE", user='"user"')
        descending = q.descending
        flipped = False
        if offset > _FLIP_AFTER:
            # OFFSET walks every row it skips: the far end is read backwards instead (as SQLite).
            total = self.count_sessions(q)
            if offset > total // 2:
                flipped, descending = True, not descending
                limit = max(0, min(limit, total - offset))
                offset = max(0, total - offset - limit)
        direction = "DESC" if descending else "ASC"
        query = (
            "SELECT " + ", ".join(f"s.{c}" for c in _SESSION_COLUMNS) + ", r.reason "
            "FROM sessions s LEFT JOIN requests r ON r.id = s.grant_id"
            + where
            + f" ORDER BY {_SORT_KEYS[q.sort]} {direction}, s.id {direction} LIMIT %s OFFSET %s"
        )
        rows = self._all(query, [*args, limit, offset])
        if flipped:
            rows.reverse()
        return [SessionRow(session_from_row(row[:-1]), row[-1]) for row in rows]

    # --- object storage -------------------------------------------------------------------

    def set_upload(
        self, session_id: str, state: str | None, *, object_key: str | None = None, sha256: str | None = None
    ) -> bool:
        cur = self._x(
            "UPDATE sessions SET upload = %s, object_key = %s, sha256 = %s WHERE id = %s",
            (state, object_key, sha256, session_id),
        )
        return cur.rowcount == 1

    def pending_uploads(self, limit: int = 100) -> list[SessionRecord]:
        rows = self._all(
            _SELECT_SESSIONS + " WHERE upload = 'pending' ORDER BY started_at, id LIMIT %s", (max(0, limit),)
        )
        return [session_from_row(r) for r in rows]

    def live_sessions(self, user: str | None = None) -> int:
        if user is None:
            row = self._one("SELECT count(*) FROM sessions WHERE ended_at IS NULL")
        else:
            row = self._one('SELECT count(*) FROM sessions WHERE ended_at IS NULL AND "user" = %s', (user,))
        return int(row[0]) if row else 0

    # --- real-time rules: flags and holds -------------------------------------------------

    def add_flag(self, flag: Flag) -> None:
        self._x(
            "INSERT INTO flags(session_id, at, t_us, rule, severity, trigger, actions, text) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                flag.session_id,
                rfc3339(flag.at),
                flag.t_us,
                flag.rule,
                flag.severity,
                flag.trigger,
                flag.actions,
                flag.text,
            ),
        )
        rank = SEVERITY_RANK
        self._x(
            "UPDATE sessions SET flags = flags + 1, flag_severity = CASE WHEN "  # noqa: S608 - fixed text
            + rank.format("%s::text")
            + " > "
            + rank.format("flag_severity")
            + " THEN %s ELSE flag_severity END WHERE id = %s",
            (flag.severity, flag.severity, flag.session_id),
        )

    def list_flags(
        self, *, session_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Flag]:
        where: list[str] = []
        args: list[Any] = []
        if session_id is not None:
            where.append("session_id = %s")
            args.append(session_id)
        if since is not None:
            where.append("at >= %s")
            args.append(rfc3339(since))
        query = "SELECT session_id, at, t_us, rule, severity, trigger, actions, text FROM flags"
        query += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        if limit is not None:
            query += " LIMIT %s"
            args.append(max(0, limit))
        return [flag_from_row(r) for r in self._all(query, args)]

    def insert_hold(self, hold: Hold) -> None:
        cur = self._x(
            f"INSERT INTO holds({', '.join(_HOLD_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_HOLD_COLUMNS))}) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING",
            (
                hold.id,
                hold.session_id,
                hold.grant_id,
                hold.user,
                hold.target,
                hold.login,
                hold.rule,
                hold.severity,
                hold.command,
                hold.state.value,
                rfc3339(hold.created_at),
                rfc3339(hold.expires_at),
                time_text(hold.decided_at),
                hold.decided_by,
                hold.note,
            ),
        )
        if cur.rowcount == 0:
            raise Conflict(f"hold {hold.id} already exists")

    def get_hold(self, hold_id: str) -> Hold | None:
        row = self._one(_SELECT_HOLDS + " WHERE id = %s", (hold_id,))
        return None if row is None else hold_from_row(row)

    def list_holds(self, states: tuple[HoldState, ...] | None = None) -> list[Hold]:
        if states is not None:
            rows = self._all(
                _SELECT_HOLDS + " WHERE state = ANY(%s) ORDER BY created_at, id", ([st.value for st in states],)
            )
        else:
            rows = self._all(_SELECT_HOLDS + " ORDER BY created_at, id")
        return [hold_from_row(r) for r in rows]

    def decide_hold(self, hold_id: str, state: HoldState, by: str, at: datetime, note: str = "") -> bool:
        cur = self._x(
            "UPDATE holds SET state = %s, decided_by = %s, decided_at = %s, note = %s "
            "WHERE id = %s AND state = 'pending'",
            (state.value, by, rfc3339(at), note, hold_id),
        )
        return cur.rowcount == 1

    # --- moderated sessions' watches --------------------------------------------------------
    # A watch that starts or ends notifies like a grant change: the owning bastion reads at once.

    def insert_watch(self, watch: Watch) -> None:
        cur = self._x(
            f"INSERT INTO watches({', '.join(_WATCH_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_WATCH_COLUMNS))}) "  # noqa: S608
            "ON CONFLICT (id) DO NOTHING",
            (
                watch.id,
                watch.session_id,
                watch.user,
                watch.client,
                watch.via,
                rfc3339(watch.since),
                rfc3339(watch.seen_at),
                time_text(watch.left_at),
                None if watch.how is None else watch.how.value,
            ),
        )
        if cur.rowcount == 0:
            raise Conflict(f"watch {watch.id} already exists")
        self.notify = True

    def get_watch(self, watch_id: str) -> Watch | None:
        row = self._one(_SELECT_WATCHES + " WHERE id = %s", (watch_id,))
        return None if row is None else watch_from_row(row)

    def beat_watch(self, watch_id: str, at: datetime) -> bool:
        cur = self._x("UPDATE watches SET seen_at = %s WHERE id = %s AND left_at IS NULL", (rfc3339(at), watch_id))
        return cur.rowcount == 1

    def leave_watch(self, watch_id: str, at: datetime, how: WatchEnd) -> bool:
        cur = self._x(
            "UPDATE watches SET left_at = %s, how = %s WHERE id = %s AND left_at IS NULL",
            (rfc3339(at), how.value, watch_id),
        )
        if cur.rowcount == 1:
            self.notify = True
            return True
        return False

    def list_watches(self, session_ids: Sequence[str], *, open_only: bool = True) -> list[Watch]:
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return []
        query = _SELECT_WATCHES + " WHERE session_id = ANY(%s)" + (" AND left_at IS NULL" if open_only else "")
        return [watch_from_row(r) for r in self._all(query + " ORDER BY since, id", (ids,))]

    # --- audit ----------------------------------------------------------------------------

    def audit_tail(self) -> AuditRow | None:
        row = self._one("SELECT seq, body, head FROM audit ORDER BY seq DESC LIMIT 1")
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def audit_append(self, rows: list[tuple[int, bytes, bytes, str, str]]) -> None:
        if not rows:
            return
        try:
            with self._conn.cursor() as cur:
                cur.executemany('INSERT INTO audit(seq, body, head, "time", event) VALUES (%s, %s, %s, %s, %s)', rows)
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(self._store._reason(exc)) from None
        except psycopg.Error as exc:
            raise self._store._error(exc) from None

    def audit_page(
        self, before: int | None, limit: int, *, event_prefix: str = "", since: datetime | None = None
    ) -> list[AuditRow]:
        where = ["seq < %s"]
        args: list[Any] = [before if before is not None else 2**62]
        if event_prefix:
            where.append("event ILIKE %s ESCAPE '\\'")  # SQLite's LIKE: ASCII case folded
            args.append(like_pattern(event_prefix)[1:])  # anchored at the start: a prefix
        if since is not None:
            where.append('"time" >= %s')
            args.append(rfc3339(since))
        query = f"SELECT seq, body, head FROM audit WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s"  # noqa: S608 - fixed clauses
        return [(int(a), bytes(b), bytes(c)) for a, b, c in self._all(query, [*args, limit])]

    def audit_rows(self, since_seq: int = 0) -> Iterator[AuditRow]:
        # In batches by seq: the whole log is never held in memory, and no server-side cursor
        # outlives its transaction if the reader stops early.
        seq = since_seq
        while True:
            rows = self._all(
                "SELECT seq, body, head FROM audit WHERE seq >= %s ORDER BY seq LIMIT %s", (seq, _AUDIT_BATCH)
            )
            for s, body, head in rows:
                yield int(s), bytes(body), bytes(head)
            if len(rows) < _AUDIT_BATCH:
                return
            seq = int(rows[-1][0]) + 1

    # --- whole tables (zsp migrate) -------------------------------------------------------

    def table_columns(self, table: str) -> list[str]:
        _check_table(table)
        rows = self._all(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [str(r[0]) for r in rows]

    def dump_rows(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        columns = self.table_columns(table)
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(table)
        )
        return columns, iter(self._x(query.as_string(self._conn)).fetchall())

    def load_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        # COPY: one stream, not a statement per row (an audit log of a million frames).
        _check_table(table)
        n = 0
        query = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        try:
            with self._conn.cursor() as cur, cur.copy(query) as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        except psycopg.Error as exc:
            raise self._store._error(exc) from None
        return n

    def count_rows(self, table: str) -> int:
        _check_table(table)
        row = self._one(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)).as_string(self._conn))
        return int(row[0]) if row else 0

    def id_high_water(self, table: str) -> int:
        if table not in ID_TABLES:
            raise ValueError(f"{table} has no id sequence")
        # pg_sequence_last_value: NULL until the sequence first gives one out.
        row = self._one("SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))", (table,))
        query = sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(table))
        top = self._one(query.as_string(self._conn))
        return max(int(row[0]) if row and row[0] is not None else 0, int(top[0]) if top else 0)

    def raise_id_floor(self, table: str, floor: int) -> None:
        value = max(floor, self.id_high_water(table))
        if value > 0:
            self._x("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, true)", (table, value))


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"not a store table: {table}")


def empty_problem(url: str) -> str | None:
    """Why the database at ``url`` is not empty enough to migrate into (None if it is): any table
    with a row in it, other than a zsp ``meta`` holding only its schema version. Writes nothing."""
    where = redact_url(url)
    try:
        with psycopg.connect(url, connect_timeout=_CONNECT_TIMEOUT, autocommit=True) as conn:
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
                )
            ]
            full = []
            for table in tables:
                ident = sql.Identifier(table)
                if table == "meta":
                    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE key <> 'schema_version')").format(ident)
                else:
                    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)
                row = conn.execute(query).fetchone()
                if row and row[0]:
                    full.append(table)
    except psycopg.Error as exc:
        raise StoreError(where=where, reason=scrub_secrets(_one_line(str(exc)), url)) from None
    if full:
        return f"it is not empty (tables with rows: {', '.join(full)}); migrate needs an empty database"
    return None
