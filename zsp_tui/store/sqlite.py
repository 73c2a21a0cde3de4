"""The embedded store: one SQLite file in the data directory.

Writers take ``BEGIN IMMEDIATE`` so concurrent processes (two approvers at once, the bastion
and an admin's CLI) serialise instead of failing half-way; WAL mode lets readers go on meanwhile.
Times are stored as RFC 3339 UTC text, which sorts as it should.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..clock import rfc3339
from ..exceptions import Conflict, DataDirError
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

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 7

# Forward migrations: MIGRATIONS[n] takes a database at schema n to n + 1. A fresh database is
# created at SCHEMA_VERSION by _SCHEMA directly.
_HOLDS_TABLE = """CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    grant_id TEXT,
    user TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    note TEXT NOT NULL DEFAULT ''
)"""
_FLAGS_TABLE = """CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    at TEXT NOT NULL,
    t_us INTEGER NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    trigger TEXT NOT NULL,
    actions TEXT NOT NULL,
    text TEXT NOT NULL
)"""

_WATCHES_TABLE = """CREATE TABLE IF NOT EXISTS watches (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    user TEXT NOT NULL,
    client TEXT NOT NULL,
    via TEXT NOT NULL,
    since TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    left_at TEXT,
    how TEXT
)"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT ''",),
    2: (
        "CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at)",
        "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user, started_at)",
    ),
    # The review app pages the session list in any column's order (page_sessions).
    3: (
        "CREATE INDEX IF NOT EXISTS sessions_target ON sessions(target, id)",
        "CREATE INDEX IF NOT EXISTS sessions_login ON sessions(login, id)",
        "CREATE INDEX IF NOT EXISTS sessions_end_reason ON sessions(end_reason, id)",
        "CREATE INDEX IF NOT EXISTS sessions_live ON sessions(started_at) WHERE ended_at IS NULL",
        "CREATE INDEX IF NOT EXISTS audit_event ON audit(event, seq)",
    ),
    # Real-time rules: held commands, the moments rules fired, a flag count per session.
    4: (
        "ALTER TABLE sessions ADD COLUMN flags INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sessions ADD COLUMN flag_severity TEXT",
        _HOLDS_TABLE,
        "CREATE INDEX IF NOT EXISTS holds_pending ON holds(created_at) WHERE state = 'pending'",
        _FLAGS_TABLE,
        "CREATE INDEX IF NOT EXISTS flags_session ON flags(session_id, id)",
        "CREATE INDEX IF NOT EXISTS flags_at ON flags(at)",
        "CREATE INDEX IF NOT EXISTS sessions_flagged ON sessions(started_at) WHERE flags > 0",
    ),
    # Scale-out: recordings uploaded to object storage (None: local only; pending; uploaded).
    5: (
        "ALTER TABLE sessions ADD COLUMN upload TEXT",
        "ALTER TABLE sessions ADD COLUMN object_key TEXT",
        "ALTER TABLE sessions ADD COLUMN sha256 TEXT",
        "CREATE INDEX IF NOT EXISTS sessions_upload_pending ON sessions(started_at) WHERE upload = 'pending'",
    ),
    # Moderated sessions across processes: who watches which session, with a heartbeat.
    6: (
        _WATCHES_TABLE,
        "CREATE INDEX IF NOT EXISTS watches_session ON watches(session_id, since)",
    ),
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: grants name their requester by id
    name TEXT NOT NULL UNIQUE,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_keys (
    fingerprint TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    comment TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    logins TEXT NOT NULL,
    host_key TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at TEXT NOT NULL,
    client_key TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    requester_id INTEGER NOT NULL,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    duration_s INTEGER NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    approvals_needed INTEGER NOT NULL,
    approver_patterns TEXT NOT NULL,
    rule TEXT NOT NULL,
    break_glass INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    lapses_at TEXT NOT NULL,
    decided_at TEXT,
    starts_at TEXT,
    ends_at TEXT,
    ended_at TEXT,
    ended_by TEXT,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE TABLE IF NOT EXISTS approvals (
    request_id TEXT NOT NULL REFERENCES requests(id),
    approver TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (request_id, approver)
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    head BLOB NOT NULL,
    time TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    grant_id TEXT,
    command TEXT,
    client TEXT NOT NULL,
    path TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    exit_status INTEGER,
    end_reason TEXT,
    head TEXT,
    owner TEXT NOT NULL DEFAULT '',  -- the process that records it: serve:HOST:PID or record:HOST:PID
    flags INTEGER NOT NULL DEFAULT 0,  -- rule.match events in it
    flag_severity TEXT,                -- the highest of their severities
    upload TEXT,                       -- NULL: local only, or 'pending', 'uploaded' (object storage)
    object_key TEXT,                   -- s3://bucket/key once uploaded
    sha256 TEXT                        -- of the whole recording file as uploaded
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions(started_at);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user, started_at);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions(target, id);
CREATE INDEX IF NOT EXISTS sessions_login ON sessions(login, id);
CREATE INDEX IF NOT EXISTS sessions_end_reason ON sessions(end_reason, id);
CREATE INDEX IF NOT EXISTS sessions_live ON sessions(started_at) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS audit_event ON audit(event, seq);
""" + ";\n".join((*MIGRATIONS[4][2:], MIGRATIONS[5][3], *MIGRATIONS[6]))  # schema 5-7's tables and indexes

_SELECT_REQUESTS = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests"  # noqa: S608 - fixed column names


_SELECT_SESSIONS = f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - fixed column names


_INSERT_HOLD = f"INSERT INTO holds({', '.join(HOLD_COLUMNS)}) VALUES ({', '.join('?' * len(HOLD_COLUMNS))})"  # noqa: S608
_SELECT_WATCHES = "SELECT " + ", ".join(WATCH_COLUMNS) + " FROM watches"  # noqa: S608 - fixed names
_SELECT_HOLDS = "SELECT " + ", ".join(HOLD_COLUMNS) + " FROM holds"  # noqa: S608 - fixed names


# Sort keys of page_sessions. Fixed expressions only: never text from the query.
_SORT_KEYS: dict[SessionSort, str] = {
    SessionSort.STARTED: "s.started_at",
    SessionSort.USER: "s.user",
    SessionSort.TARGET: "s.target",
    SessionSort.LOGIN: "s.login",
    # Whole milliseconds: julianday's float differences would split equal durations.
    SessionSort.DURATION: (
        "round((julianday(coalesce(s.ended_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))) - julianday(s.started_at))"
        " * 86400000)"
    ),
    SessionSort.END_REASON: "coalesce(s.end_reason, '')",
    # live, interrupted, sealed, incomplete: the order session_status() tells them apart in.
    SessionSort.STATUS: (
        "(CASE WHEN s.ended_at IS NULL THEN 0 WHEN s.end_reason = 'interrupted' THEN 1 "
        "WHEN s.head IS NOT NULL THEN 2 ELSE 3 END)"
    ),
}
_FLIP_AFTER = 2000
"""page_sessions reads pages past this offset from the other end if that end is nearer."""


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # One connection, shared by the threads of one process (the review app's workers): a
        # transaction holds it to itself, or two threads' BEGINs would interleave on it.
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA busy_timeout = 30000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise DataDirError(path=path.parent, reason=f"cannot use WAL journal mode on {path}")
            self._db.execute("PRAGMA synchronous = FULL")
            with self.transaction() as tx:
                # One write transaction: concurrent openers wait, so a migration runs exactly once.
                fresh = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is None
                if fresh:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    tx.set_meta("schema_version", str(SCHEMA_VERSION))
                version = int(tx.get_meta("schema_version") or SCHEMA_VERSION)
                if version > SCHEMA_VERSION:
                    raise DataDirError(
                        path=path.parent,
                        reason=f"database schema {version} is newer than this zsp understands ({SCHEMA_VERSION})",
                    )
                while version < SCHEMA_VERSION:
                    for statement in MIGRATIONS[version]:
                        self._db.execute(statement)
                    version += 1
                    tx.set_meta("schema_version", str(version))
        except sqlite3.Error as exc:
            raise DataDirError(path=path.parent, reason=f"database {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[_SqliteTx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


class _SqliteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # --- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- users ----------------------------------------------------------------------------

    def _user(self, row: sqlite3.Row | tuple[Any, ...] | None) -> User | None:
        if row is None:
            return None
        keys = self._db.execute(
            "SELECT fingerprint, key, comment, added_at FROM user_keys WHERE user_id = ? ORDER BY added_at", (row[0],)
        )
        return user_from_row(row, keys)

    def add_user(self, name: str, roles: frozenset[Role], at: datetime) -> User:
        try:
            cur = self._db.execute(
                "INSERT INTO users(name, roles, created_at) VALUES (?, ?, ?)",
                (name, json.dumps(sorted(r.value for r in roles)), rfc3339(at)),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"user {name} already exists") from None
        user = self.get_user_by_id(int(cur.lastrowid or 0))
        if user is None:  # pragma: no cover - the row was just inserted in this transaction
            raise Conflict(f"user {name} vanished")
        return user

    def get_user(self, name: str) -> User | None:
        return self._user(
            self._db.execute("SELECT id, name, roles, created_at FROM users WHERE name = ?", (name,)).fetchone()
        )

    def get_user_by_id(self, user_id: int) -> User | None:
        return self._user(
            self._db.execute("SELECT id, name, roles, created_at FROM users WHERE id = ?", (user_id,)).fetchone()
        )

    def list_users(self) -> list[User]:
        rows = self._db.execute("SELECT id, name, roles, created_at FROM users ORDER BY name").fetchall()
        return [u for u in (self._user(r) for r in rows) if u is not None]

    def remove_user(self, name: str) -> bool:
        return self._db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def set_roles(self, user_id: int, roles: frozenset[Role]) -> None:
        self._db.execute(
            "UPDATE users SET roles = ? WHERE id = ?", (json.dumps(sorted(r.value for r in roles)), user_id)
        )

    def add_key(self, user_id: int, key: str, fingerprint: str, comment: str, at: datetime) -> None:
        try:
            self._db.execute(
                "INSERT INTO user_keys(fingerprint, user_id, key, comment, added_at) VALUES (?, ?, ?, ?, ?)",
                (fingerprint, user_id, key, comment, rfc3339(at)),
            )
        except sqlite3.IntegrityError:
            owner = self.user_by_key(fingerprint)
            raise Conflict(f"key {fingerprint} already belongs to {owner.name if owner else 'someone'}") from None

    def remove_key(self, user_id: int, fingerprint: str) -> bool:
        return (
            self._db.execute(
                "DELETE FROM user_keys WHERE user_id = ? AND fingerprint = ?", (user_id, fingerprint)
            ).rowcount
            > 0
        )

    def user_by_key(self, fingerprint: str) -> User | None:
        row = self._db.execute(
            "SELECT u.id, u.name, u.roles, u.created_at FROM users u JOIN user_keys k ON k.user_id = u.id "
            "WHERE k.fingerprint = ?",
            (fingerprint,),
        ).fetchone()
        return self._user(row)

    # --- targets --------------------------------------------------------------------------

    def add_target(self, target: Target, at: datetime) -> None:
        try:
            self._db.execute(
                "INSERT INTO targets(name, host, port, logins, host_key, labels, created_at, client_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        except sqlite3.IntegrityError:
            raise Conflict(f"target {target.name} already exists") from None

    def get_target(self, name: str) -> Target | None:
        return target_from_row(
            self._db.execute(
                "SELECT name, host, port, logins, host_key, labels, client_key FROM targets WHERE name = ?", (name,)
            ).fetchone()
        )

    def list_targets(self) -> list[Target]:
        rows = self._db.execute(
            "SELECT name, host, port, logins, host_key, labels, client_key FROM targets ORDER BY name"
        )
        return [t for t in (target_from_row(r) for r in rows) if t is not None]

    def remove_target(self, name: str) -> bool:
        return self._db.execute("DELETE FROM targets WHERE name = ?", (name,)).rowcount > 0

    # --- requests -------------------------------------------------------------------------

    def _request(self, row: tuple[Any, ...] | None) -> AccessRequest | None:
        if row is None:
            return None
        approvals = self._db.execute(
            "SELECT approver FROM approvals WHERE request_id = ? ORDER BY at, approver", (row[0],)
        )
        return request_from_row(row, (a for (a,) in approvals))

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
        try:
            self._db.execute(
                f"INSERT INTO requests({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608 - fixed column names
                tuple(values.values()),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"request {request.id} already exists") from None

    def get_request(self, request_id: str) -> AccessRequest | None:
        return self._request(self._db.execute(_SELECT_REQUESTS + " WHERE id = ?", (request_id,)).fetchone())

    def list_requests(self, states: tuple[RequestState, ...] | None = None) -> list[AccessRequest]:
        sql = _SELECT_REQUESTS
        args: tuple[str, ...] = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = tuple(s.value for s in states)
        rows = self._db.execute(sql + " ORDER BY created_at, id", args).fetchall()
        return [r for r in (self._request(row) for row in rows) if r is not None]

    def update_request(self, request_id: str, expect: RequestState, **changes: Any) -> bool:
        cols = []
        args: list[Any] = []
        for col, value in changes.items():
            if col not in REQUEST_COLUMNS or col in ("id", "requester_id", "requester"):
                raise ValueError(f"cannot update column {col}")
            cols.append(f"{col} = ?")
            if col in TIME_COLUMNS and isinstance(value, datetime):
                value = rfc3339(value)
            elif isinstance(value, RequestState):
                value = value.value
            args.append(value)
        cur = self._db.execute(
            f"UPDATE requests SET {', '.join(cols)} WHERE id = ? AND state = ?",  # noqa: S608
            (*args, request_id, expect.value),
        )
        return cur.rowcount == 1

    def add_approval(self, request_id: str, approver: str, at: datetime) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO approvals(request_id, approver, at) VALUES (?, ?, ?)",
            (request_id, approver, rfc3339(at)),
        )
        return cur.rowcount == 1

    def due_requests(self, now: datetime) -> list[AccessRequest]:
        t = rfc3339(now)
        rows = self._db.execute(
            _SELECT_REQUESTS + " "
            "WHERE (state = 'approved' AND ends_at <= ?) OR (state = 'pending' AND lapses_at <= ?) "
            "ORDER BY coalesce(ends_at, lapses_at), id",
            (t, t),
        ).fetchall()
        return [r for r in (self._request(row) for row in rows) if r is not None]

    # --- sessions -------------------------------------------------------------------------

    def session_start(self, s: SessionRecord) -> None:
        self._db.execute(
            "INSERT INTO sessions(id, user, target, login, grant_id, command, client, path, started_at, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (s.id, s.user, s.target, s.login, s.grant_id, s.command, s.client, s.path, rfc3339(s.started_at), s.owner),
        )

    def session_end(
        self, session_id: str, at: datetime, exit_status: int | None, reason: str, head: str | None
    ) -> None:
        self._db.execute(
            "UPDATE sessions SET ended_at = ?, exit_status = ?, end_reason = ?, head = ? WHERE id = ?",
            (rfc3339(at), exit_status, reason, head, session_id),
        )

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self._db.execute(_SELECT_SESSIONS + " WHERE id = ?", (session_id,)).fetchone()
        return None if row is None else session_from_row(row)

    def set_upload(
        self, session_id: str, state: str | None, *, object_key: str | None = None, sha256: str | None = None
    ) -> bool:
        cur = self._db.execute(
            "UPDATE sessions SET upload = ?, object_key = ?, sha256 = ? WHERE id = ?",
            (state, object_key, sha256, session_id),
        )
        return cur.rowcount == 1

    def pending_uploads(self, limit: int = 100) -> list[SessionRecord]:
        rows = self._db.execute(
            _SELECT_SESSIONS + " WHERE upload = 'pending' ORDER BY started_at, id LIMIT ?", (max(0, limit),)
        )
        return [session_from_row(r) for r in rows]

    def live_sessions(self, user: str | None = None) -> int:
        if user is None:
            row = self._db.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM sessions WHERE ended_at IS NULL AND user = ?", (user,)
            ).fetchone()
        return int(row[0])

    # --- real-time rules: flags and holds -----------------------------------------------------

    def add_flag(self, flag: Flag) -> None:
        self._db.execute(
            "INSERT INTO flags(session_id, at, t_us, rule, severity, trigger, actions, text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        self._db.execute(
            "UPDATE sessions SET flags = flags + 1, flag_severity = CASE WHEN "  # noqa: S608 - fixed text
            + rank.format("?")
            + " > "
            + rank.format("flag_severity")
            + " THEN ? ELSE flag_severity END WHERE id = ?",
            (flag.severity, flag.severity, flag.session_id),
        )

    def list_flags(
        self, *, session_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Flag]:
        where: list[str] = []
        args: list[Any] = []
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        if since is not None:
            where.append("at >= ?")
            args.append(rfc3339(since))
        sql = "SELECT session_id, at, t_us, rule, severity, trigger, actions, text FROM flags"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(0, limit))
        return [flag_from_row(r) for r in self._db.execute(sql, args)]

    def insert_hold(self, hold: Hold) -> None:
        try:
            self._db.execute(
                _INSERT_HOLD,
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
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"hold {hold.id} already exists") from exc

    def get_hold(self, hold_id: str) -> Hold | None:
        row = self._db.execute(_SELECT_HOLDS + " WHERE id = ?", (hold_id,)).fetchone()
        return None if row is None else hold_from_row(row)

    def list_holds(self, states: tuple[HoldState, ...] | None = None) -> list[Hold]:
        sql = _SELECT_HOLDS
        args: list[str] = []
        if states is not None:
            sql += " WHERE state IN (" + ", ".join("?" * len(states)) + ")"
            args = [st.value for st in states]
        return [hold_from_row(r) for r in self._db.execute(sql + " ORDER BY created_at, id", args)]

    def decide_hold(self, hold_id: str, state: HoldState, by: str, at: datetime, note: str = "") -> bool:
        cur = self._db.execute(
            "UPDATE holds SET state = ?, decided_by = ?, decided_at = ?, note = ? WHERE id = ? AND state = 'pending'",
            (state.value, by, rfc3339(at), note, hold_id),
        )
        return cur.rowcount == 1

    # --- moderated sessions' watches ------------------------------------------------------------

    def insert_watch(self, watch: Watch) -> None:
        try:
            self._db.execute(
                f"INSERT INTO watches({', '.join(WATCH_COLUMNS)}) VALUES ({', '.join('?' * len(WATCH_COLUMNS))})",  # noqa: S608 - fixed names
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
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"watch {watch.id} already exists") from exc

    def get_watch(self, watch_id: str) -> Watch | None:
        row = self._db.execute(_SELECT_WATCHES + " WHERE id = ?", (watch_id,)).fetchone()
        return None if row is None else watch_from_row(row)

    def beat_watch(self, watch_id: str, at: datetime) -> bool:
        cur = self._db.execute(
            "UPDATE watches SET seen_at = ? WHERE id = ? AND left_at IS NULL", (rfc3339(at), watch_id)
        )
        return cur.rowcount == 1

    def leave_watch(self, watch_id: str, at: datetime, how: WatchEnd) -> bool:
        cur = self._db.execute(
            "UPDATE watches SET left_at = ?, how = ? WHERE id = ? AND left_at IS NULL",
            (rfc3339(at), how.value, watch_id),
        )
        return cur.rowcount == 1

    def list_watches(self, session_ids: Sequence[str], *, open_only: bool = True) -> list[Watch]:
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return []
        sql = _SELECT_WATCHES + " WHERE session_id IN (" + ", ".join("?" * len(ids)) + ")"
        if open_only:
            sql += " AND left_at IS NULL"
        return [watch_from_row(r) for r in self._db.execute(sql + " ORDER BY since, id", ids)]

    def list_sessions(
        self, *, user: str | None = None, target: str | None = None, since: datetime | None = None
    ) -> list[SessionRecord]:
        where: list[str] = []
        args: list[str] = []
        for column, value in (("user", user), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started_at >= ?")
            args.append(rfc3339(since))
        sql = _SELECT_SESSIONS + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started_at, id"
        return [session_from_row(r) for r in self._db.execute(sql, args)]

    def unended_sessions(self) -> list[SessionRecord]:
        rows = self._db.execute(_SELECT_SESSIONS + " WHERE ended_at IS NULL ORDER BY started_at")
        return [session_from_row(r) for r in rows]

    def count_sessions(self, q: SessionQuery) -> int:
        where, args = session_where(q, param="?", like="LIKE", user="user")
        sql = "SELECT count(*) FROM sessions s" + where  # noqa: S608 - fixed clauses, values bound
        return int(self._db.execute(sql, args).fetchone()[0])

    def page_sessions(self, q: SessionQuery, offset: int, limit: int) -> list[SessionRow]:
        if offset < 0 or limit < 0:
            raise ValueError(f"page_sessions: offset {offset} and limit {limit} must not be negative")
        where, args = session_where(q, param="?", like="LIKE", user="user")
        descending = q.descending
        flipped = False
        if offset > _FLIP_AFTER:
            # OFFSET walks every row it skips: the far end of the list is read backwards instead,
            # so End costs what Home does.
            total = self.count_sessions(q)
            if offset > total // 2:
                flipped, descending = True, not descending
                limit = max(0, min(limit, total - offset))
                offset = max(0, total - offset - limit)
        direction = "DESC" if descending else "ASC"
        columns = _SELECT_SESSIONS.removeprefix("SELECT ").removesuffix(" FROM sessions")
        sql = (
            "SELECT " + ", ".join(f"s.{c.strip()}" for c in columns.split(",")) + ", r.reason "
            "FROM sessions s LEFT JOIN requests r ON r.id = s.grant_id"
            + where
            + f" ORDER BY {_SORT_KEYS[q.sort]} {direction}, s.id {direction} LIMIT ? OFFSET ?"
        )
        rows = self._db.execute(sql, [*args, limit, offset]).fetchall()
        if flipped:
            rows.reverse()
        return [SessionRow(session_from_row(row[:-1]), row[-1]) for row in rows]

    # --- audit ----------------------------------------------------------------------------

    def audit_tail(self) -> AuditRow | None:
        row = self._db.execute("SELECT seq, body, head FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def audit_append(self, rows: list[tuple[int, bytes, bytes, str, str]]) -> None:
        self._db.executemany("INSERT INTO audit(seq, body, head, time, event) VALUES (?, ?, ?, ?, ?)", rows)

    def audit_page(
        self, before: int | None, limit: int, *, event_prefix: str = "", since: datetime | None = None
    ) -> list[AuditRow]:
        where = ["seq < ?"]
        args: list[Any] = [before if before is not None else 2**62]
        if event_prefix:
            where.append("event LIKE ? ESCAPE '\\'")
            args.append(like_pattern(event_prefix)[1:])  # anchored at the start: a prefix
        if since is not None:
            where.append("time >= ?")
            args.append(rfc3339(since))
        sql = f"SELECT seq, body, head FROM audit WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"  # noqa: S608 - fixed clauses
        return [(int(a), bytes(b), bytes(c)) for a, b, c in self._db.execute(sql, [*args, limit])]

    def audit_rows(self, since_seq: int = 0) -> Iterator[AuditRow]:
        for seq, body, head in self._db.execute(
            "SELECT seq, body, head FROM audit WHERE seq >= ? ORDER BY seq", (since_seq,)
        ):
            yield int(seq), bytes(body), bytes(head)

    # --- whole tables (zsp migrate) -------------------------------------------------------

    def table_columns(self, table: str) -> list[str]:
        if table not in TABLES:
            raise ValueError(f"not a store table: {table}")
        return [str(r[1]) for r in self._db.execute(f"PRAGMA table_info({table})")]

    def dump_rows(self, table: str) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
        columns = self.table_columns(table)
        names = ", ".join(f'"{c}"' for c in columns)
        return columns, iter(self._db.execute(f"SELECT {names} FROM {table} ORDER BY rowid"))  # noqa: S608 - a known table

    def load_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        known = self.table_columns(table)
        if any(c not in known for c in columns):
            raise ValueError(f"{table} has no column {[c for c in columns if c not in known]}")
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        before = self._db.total_changes
        self._db.executemany(f"INSERT INTO {table}({names}) VALUES ({marks})", rows)  # noqa: S608 - checked names
        return self._db.total_changes - before

    def count_rows(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"not a store table: {table}")
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - a known table

    def id_high_water(self, table: str) -> int:
        if table not in ID_TABLES:
            raise ValueError(f"{table} has no id sequence")
        # users is AUTOINCREMENT: sqlite_sequence remembers ids of users since removed.
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        top = self._db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()  # noqa: S608 - a known table
        return max(int(seq[0]) if seq else 0, int(top[0]))

    def raise_id_floor(self, table: str, floor: int) -> None:
        value = max(floor, self.id_high_water(table))
        if table == "users" and value > 0:
            self._db.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            self._db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (table, value))
