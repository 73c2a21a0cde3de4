"""The search index in PostgreSQL: :class:`replay.SearchIndex` for a deployment whose store is
PostgreSQL (several bastions indexing into, and reviewers searching, one database).

Same observable behaviour as :class:`replay.SqliteSearchIndex`, by construction rather than by
approximation: the same keys and row ids (a session's ``key`` is its start in milliseconds, moved
up while taken; its rows are ``key << 22 | n``, so ``ORDER BY id DESC`` is newest first and
``--since`` is an id lower bound), the same caps and chunks, the same :func:`replay.parse_query`,
and the same two-step match:

1. **Narrowing** in PostgreSQL: each needle (lower-cased) must be a substring of the row's text,
   ``lower LIKE '%needle%'`` with ``%``, ``_`` and ``\\`` escaped, answered by a pg_trgm GIN
   index. ``lower`` is Python's ``str.lower()`` of the text, stored (NULL when the text is
   already lower case: the index is on ``coalesce(low, text)``): PostgreSQL's ``lower()`` and
   ``ILIKE`` follow the database's locale (ASCII only under ``C``), Python's do not.
2. **Checking** in Python, the rows PostgreSQL returns, newest first: SQLite's FTS5 (unicode61)
   only finds a word at the start of a token (``app`` finds ``application``, not ``webapp``);
   here a row of ASCII text is checked with the equivalent regular expression, and any other row
   with the very tokenizer SqliteSearchIndex uses (an in-memory FTS5 table per thread), so
   Unicode folding, diacritics and token characters agree exactly. Then the substring spans and
   the overlap rule of chunked lines, as SqliteSearchIndex does.

PostgreSQL text cannot hold NUL: a value with a NUL (or starting with the marker below) is stored
as the marker followed by its JSON string, and read back exactly; its ``low`` holds U+FFFD for
each NUL, and so does a needle's LIKE pattern (narrowing only: the check uses the real text).

Writers: each ``replace``/``append``/``remove`` takes a transaction-scoped advisory lock on its
path (the same recording is indexed by one writer at a time) and, for a new session, a try-lock
on the key it takes (two bastions indexing sessions started in the same millisecond move apart
as SQLite's single writer would). Recordings of different sessions are indexed in parallel. A
search runs in one read-only REPEATABLE READ transaction and never waits for an indexing one.

Derived data: tables ``search_meta``, ``search_sessions``, ``search_lines`` of another layout
version are dropped and rebuilt (``zsp index``), never migrated.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from replay import Hit, HitKind, IndexedSession, Query, Row, SearchIndexError, parse_query

# The layout and the checks SqliteSearchIndex uses (caps, chunks, row ids, spans): one definition.
from replay._search import _OVERLAP, _ROW_BITS, MAX_LINE_CHARS, MAX_ROWS_PER_SESSION, Update, _spans, chunks

from ..config import redact_url, scrub_secrets

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["SCHEMA_VERSION", "PostgresSearchIndex"]

SCHEMA_VERSION = 1
"""Version of the ``search_*`` tables' layout. Tables of another version are rebuilt, never migrated."""

_LOCK_CLASS = 0x7A73_7369  # "zssi": advisory locks of the search index (two-int form: its own space)
_LOCK_SCHEMA = 0
_LOCK_PATH = 1
_LOCK_KEY = 2
_KEY_MAX = (1 << (63 - _ROW_BITS)) - 2

_MARK = "\ufdd0"
"""Starts a stored value that is JSON (a noncharacter: never in text a terminal showed)."""

_SCHEMA = """
CREATE TABLE search_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE search_sessions (
    key BIGINT PRIMARY KEY,           -- start in ms, moved up while taken: rows are key << 22 | n
    path TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    "user" TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    grant_id TEXT,
    started_us BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    problem TEXT,
    bad_frame BIGINT,
    head TEXT,
    indexed_bytes BIGINT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    truncated BOOLEAN NOT NULL
);
CREATE INDEX search_sessions_user ON search_sessions("user");
CREATE INDEX search_sessions_target ON search_sessions(target);
CREATE INDEX search_sessions_id ON search_sessions(session_id);
CREATE INDEX search_sessions_started ON search_sessions(started_us);
CREATE TABLE search_lines (
    id BIGINT PRIMARY KEY,            -- key << 22 | n: id order is start order, then position
    text TEXT NOT NULL,
    low TEXT,                         -- Python's lower() of text; NULL when text is already lower case
    command BOOLEAN NOT NULL,
    t_us BIGINT NOT NULL,
    frame BIGINT NOT NULL,
    blind BOOLEAN NOT NULL,
    part INTEGER NOT NULL
);
CREATE INDEX search_lines_low ON search_lines USING gin ((coalesce(low, text)) gin_trgm_ops);
"""

_SESSION_COLUMNS = (
    "path session_id user target login grant_id started_us outcome problem bad_frame head "
    "indexed_bytes size mtime_ns rows truncated"
).split()
_TEXT_COLUMNS = frozenset("path session_id user target login grant_id outcome problem head".split())
_COLUMNS_SQL = ", ".join(f'"{c}"' for c in _SESSION_COLUMNS)
_SELECT_SESSIONS = f"SELECT key, {_COLUMNS_SQL} FROM search_sessions"  # noqa: S608 - fixed names
_UPSERT_SESSION = (
    f"INSERT INTO search_sessions(key, {_COLUMNS_SQL}) VALUES (%s{', %s' * len(_SESSION_COLUMNS)}) "  # noqa: S608
    f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in _COLUMNS_SQL.split(', '))}"
)
_COPY_LINES = "COPY search_lines (id, text, low, command, t_us, frame, blind, part) FROM STDIN"
_SELECT_LINES = "SELECT id, text, command, t_us, frame, blind, part FROM search_lines WHERE "
_PER_SESSION = 200
"""As SqliteSearchIndex: with filters matching at most this many sessions, each is searched on its
own id range (newest first) instead of filtering one scan over every session's hits."""
_FIRST_PAGE = 256
_MAX_PAGE = 8192


def _enc(value: str) -> str:
    """A str PostgreSQL can store (no NUL), read back exactly by :func:`_dec`."""
    if "\x00" in value or value.startswith(_MARK):
        return _MARK + json.dumps(value)
    return value


def _dec(value: str) -> str:
    return str(json.loads(value[1:])) if value.startswith(_MARK) else value


def _like(needle: str) -> str:
    """A LIKE pattern finding ``needle`` anywhere, its ``%``, ``_`` and ``\\`` literal."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("\x00", "\ufffd")
    return f"%{escaped}%"


def _column(name: str, value: object) -> object:
    return _enc(value) if name in _TEXT_COLUMNS and isinstance(value, str) else value


def _rowids(key: int) -> tuple[int, int]:
    return key << _ROW_BITS, (key << _ROW_BITS) | MAX_ROWS_PER_SESSION


def _int4(n: int) -> int:
    """``n`` folded into a signed 32-bit advisory lock id (a collision only moves a key up one)."""
    n &= 0xFFFF_FFFF
    return n - (1 << 32) if n >= 1 << 31 else n


def _session(row: Sequence[Any]) -> tuple[int, IndexedSession]:
    values = {
        c: (_dec(v) if c in _TEXT_COLUMNS and v is not None else v)
        for c, v in zip(_SESSION_COLUMNS, row[1:], strict=True)
    }
    values["truncated"] = bool(values["truncated"])
    return int(row[0]), IndexedSession(**values)  # type: ignore[arg-type]


# --- the word check: what FTS5 (unicode61) would have matched ------------------------------------

_ASCII_WORD = r"[a-z0-9]"
_ASCII_SEP = r"[^a-z0-9]+"


def _ascii_pattern(needle: str) -> re.Pattern[str] | None:
    """For ASCII text: where FTS5 matches ``"needle" *`` (its tokens adjacent, the first at the start
    of a token, the last a prefix). Unicode61 tokens of ASCII text are runs of letters and digits."""
    tokens = re.findall(_ASCII_WORD + "+", needle)
    if not tokens:
        return None
    return re.compile(f"(?<!{_ASCII_WORD})" + _ASCII_SEP.join(re.escape(t) for t in tokens))


class _Fts5:
    """An in-memory FTS5 table with SqliteSearchIndex's tokenizer: the exact word check of rows
    that are not ASCII (one per thread: sqlite3 connections are not shared)."""

    _local = threading.local()

    @classmethod
    def matching(cls, match: str, texts: Sequence[str]) -> set[int]:
        """Indexes of ``texts`` that FTS5 matches with ``match`` (a :attr:`Query.match`)."""
        db: sqlite3.Connection | None = getattr(cls._local, "db", None)
        if db is None:
            db = sqlite3.connect(":memory:", isolation_level=None)
            db.execute("CREATE VIRTUAL TABLE lines USING fts5(text, tokenize = 'unicode61', columnsize = 0)")
            cls._local.db = db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO lines(rowid, text) VALUES (?, ?)", enumerate(texts))
            return {int(r[0]) for r in db.execute("SELECT rowid FROM lines WHERE lines MATCH ?", (match,))}
        finally:
            db.execute("ROLLBACK")


class PostgresSearchIndex:
    """:class:`replay.SearchIndex` in PostgreSQL (pg_trgm). Thread-safe: a small connection pool."""

    def __init__(self, url: str, *, max_connections: int = 4, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.path = redact_url(url)
        """Where the index is, for messages (``SearchIndexError.path``): the URL, password hidden."""
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise SearchIndexError(
                path=self.path, reason="PostgreSQL needs psycopg: pip install 'zsp[postgres]'"
            ) from None
        self._psycopg = psycopg
        # No server-side prepared statements: a generic plan cannot see a LIKE pattern, so it can
        # neither use the trigram index for a rare word nor walk the key backwards for a common one.
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout)),
            "prepare_threshold": None,
        }
        try:
            # The schema with a connection of its own first: a server that is down, a wrong password
            # or a missing pg_trgm is one clear error here, not a pool timeout later.
            with psycopg.connect(url, **kwargs) as conn:
                self._ensure_schema(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs=kwargs,
            check=ConnectionPool.check_connection,  # a restarted server: reconnect, not an error
            timeout=connect_timeout * 2,  # waiting for a free (or reconnected) connection
            name="zsp-search",
            open=True,
        )
        from .postgres import close_at_exit

        close_at_exit(self)  # a command that never closes it: closed at exit from the main thread

    # --- plumbing ---------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> SearchIndexError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return SearchIndexError(path=self.path, reason=scrub_secrets(reason, self.url))

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        if self._version(conn) == str(SCHEMA_VERSION):
            return
        with conn.transaction():
            # Two processes opening a new index at once: one creates it, the other finds it made.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _LOCK_SCHEMA))
            version = self._version(conn)
            if version == str(SCHEMA_VERSION):
                return
            self._trigram(conn)
            # Derived data of another layout (or a half-made one): dropped and rebuilt, never migrated.
            conn.execute("DROP TABLE IF EXISTS search_lines, search_sessions, search_meta")
            conn.execute(_SCHEMA)  # no parameters: one simple query, every statement
            conn.execute(
                "INSERT INTO search_meta(key, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
            )

    def _trigram(self, conn: psycopg.Connection[Any]) -> None:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() is not None:
            return
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except self._psycopg.Error as exc:
            raise SearchIndexError(
                path=self.path,
                reason=f"the search index needs PostgreSQL's pg_trgm extension ({self._error(exc).reason}); "
                "a superuser can run CREATE EXTENSION pg_trgm in this database",
            ) from None

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> str | None:
        got = conn.execute("SELECT to_regclass('search_meta') IS NOT NULL").fetchone()
        if not got or not got[0]:
            return None
        row = conn.execute("SELECT value FROM search_meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else str(row[0])

    @contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction (committed at the end, rolled back on any exception);
        psycopg errors become SearchIndexError."""
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                if read_only:
                    # One snapshot for every page and session lookup of a search.
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cur
        except self._psycopg.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self._pool.close()

    # --- writing ----------------------------------------------------------------------------

    def sessions(self) -> dict[str, IndexedSession]:
        with self._tx(read_only=True) as cur:
            return {s.path: s for _, s in map(_session, cur.execute(_SELECT_SESSIONS).fetchall())}

    def _entry(self, cur: psycopg.Cursor[Any], session: IndexedSession) -> tuple[int, int, bool]:
        """(key, rows, truncated) of the session's entry, its path locked for this transaction:
        its existing one, or a free key from its start (rows 0)."""
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS + _LOCK_PATH, _enc(session.path)))
        row = cur.execute(
            "SELECT key, rows, truncated FROM search_sessions WHERE path = %s", (_enc(session.path),)
        ).fetchone()
        if row is not None:
            return int(row[0]), int(row[1]), bool(row[2])
        key = max(0, min(session.started_us // 1000, _KEY_MAX))
        while True:
            # The lock first, then the look (a statement of its own, so its snapshot is later): a
            # key another writer holds, or one it committed meanwhile, is seen as taken.
            got = cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (_LOCK_CLASS + _LOCK_KEY, _int4(key)))
            if got.fetchone() == (True,):
                taken = cur.execute("SELECT 1 FROM search_sessions WHERE key = %s", (key,)).fetchone()
                if taken is None:
                    return key, 0, False
            key += 1

    def _store(
        self,
        cur: psycopg.Cursor[Any],
        key: int,
        session: IndexedSession,
        start: int,
        rows: Iterable[Row],
        update: Update | None,
    ) -> IndexedSession:
        n = start
        truncated = session.truncated
        base = key << _ROW_BITS
        command = HitKind.COMMAND
        with cur.copy(_COPY_LINES) as copy:
            write = copy.write_row
            for t_us, frame, kind, text, blind in rows:
                if truncated:
                    continue  # drain the source (its verification report comes at the end)
                is_command = kind is command
                rest = (t_us, frame, blind)
                pieces = [text] if len(text) <= MAX_LINE_CHARS else chunks(text)
                for part, piece in enumerate(pieces):
                    if n >= MAX_ROWS_PER_SESSION:
                        truncated = True
                        break
                    lowered = piece.lower()
                    if "\x00" in piece or piece.startswith(_MARK):
                        write((base | n, _enc(piece), lowered.replace("\x00", "\ufffd"), is_command, *rest, part))
                    else:
                        write((base | n, piece, None if lowered == piece else lowered, is_command, *rest, part))
                    n += 1
        if update is not None:
            session = update(session)
        stored = replace(session, rows=n, truncated=truncated)
        values = [_column(c, getattr(stored, c)) for c in _SESSION_COLUMNS]
        cur.execute(_UPSERT_SESSION, (key, *values))
        return stored

    def replace(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        with self._tx() as cur:
            key, _, _ = self._entry(cur, session)
            cur.execute("DELETE FROM search_lines WHERE id BETWEEN %s AND %s", _rowids(key))
            return self._store(cur, key, replace(session, rows=0, truncated=False), 0, rows, update)

    def append(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        with self._tx() as cur:
            key, have, truncated = self._entry(cur, session)
            return self._store(cur, key, replace(session, truncated=truncated), have, rows, update)

    def remove(self, path: str) -> bool:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS + _LOCK_PATH, _enc(path)))
            row = cur.execute("SELECT key FROM search_sessions WHERE path = %s", (_enc(path),)).fetchone()
            if row is None:
                return False
            key = int(row[0])
            cur.execute("DELETE FROM search_lines WHERE id BETWEEN %s AND %s", _rowids(key))
            cur.execute("DELETE FROM search_sessions WHERE key = %s", (key,))
            return True

    def clear(self) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM search_lines")
            cur.execute("DELETE FROM search_sessions")

    # --- searching --------------------------------------------------------------------------

    def search(
        self,
        query: str | Sequence[str] | Query,
        *,
        user: str | None = None,
        target: str | None = None,
        since_us: int | None = None,
        commands_only: bool = False,
        limit: int = 50,
        session_id: str | None = None,
        session_ids: Collection[str] | None = None,
    ) -> list[Hit]:
        q = query if isinstance(query, Query) else parse_query(query)
        if limit <= 0:
            return []
        allowed = None if session_ids is None else frozenset(session_ids)
        with self._tx(read_only=True) as cur:
            return self._search(cur, q, commands_only, user, target, since_us, limit, session_id, allowed)

    def _search(
        self,
        cur: psycopg.Cursor[Any],
        q: Query,
        commands_only: bool,
        user: str | None,
        target: str | None,
        since_us: int | None,
        limit: int,
        session_id: str | None,
        allowed: frozenset[str] | None,
    ) -> list[Hit]:
        low = 0
        if since_us is not None:
            row = cur.execute("SELECT min(key) FROM search_sessions WHERE started_us >= %s", (since_us,)).fetchone()
            if row is None or row[0] is None:
                return []
            low = int(row[0])
        keys: list[int] | None = None
        if user is not None or target is not None or session_id is not None or allowed is not None:
            where = ["key >= %s"]
            args: list[object] = [low]
            for column, value in (("user", user), ("target", target), ("session_id", session_id)):
                if value is not None:
                    where.append(f'"{column}" = %s')
                    args.append(_enc(value))
            sql = f"SELECT key, session_id FROM search_sessions WHERE {' AND '.join(where)} ORDER BY key DESC"  # noqa: S608
            keys = [int(k) for k, sid in cur.execute(sql, args).fetchall() if allowed is None or _dec(sid) in allowed]
            if not keys:
                return []
        found = _Found(cur, q, since_us, set(keys) if keys is not None else None, limit)
        conditions = ["coalesce(low, text) LIKE %s"] * len(q.needles)
        if commands_only:
            conditions.append("command")
        sql = _SELECT_LINES + " AND ".join([*conditions, "id BETWEEN %s AND %s"]) + " ORDER BY id DESC LIMIT %s"
        patterns = [_like(n) for n in q.needles]
        if keys is not None and len(keys) <= _PER_SESSION:
            for key in keys:  # newest first, each session on its own id range
                found.scan(sql, patterns, *_rowids(key))
                if found.full:
                    break
        else:
            found.scan(sql, patterns, low << _ROW_BITS, (1 << 63) - 1)
        return found.hits


class _Found:
    """Hits of one search: candidate rows (newest first, a page at a time) checked as FTS5 and the
    substring test of SqliteSearchIndex would, of an allowed session; sessions looked up once."""

    def __init__(
        self, cur: psycopg.Cursor[Any], q: Query, since_us: int | None, keys: set[int] | None, limit: int
    ) -> None:
        self._cur = cur
        self._q = q
        self._tokened = [n for n in q.needles if any(c.isalnum() for c in n)]
        self._ascii = [p for p in map(_ascii_pattern, self._tokened) if p is not None]
        self._since = since_us
        self._keys = keys
        self._limit = limit
        self._sessions: dict[int, IndexedSession | None] = {}
        self.hits: list[Hit] = []
        self.full = False

    def _session(self, key: int) -> IndexedSession | None:
        if key not in self._sessions:
            row = self._cur.execute(_SELECT_SESSIONS + " WHERE key = %s", (key,)).fetchone()
            s = None if row is None else _session(row)[1]
            if s is not None and self._since is not None and s.started_us < self._since:
                s = None
            self._sessions[key] = s
        return self._sessions[key]

    def scan(self, sql: str, patterns: list[str], first: int, last: int) -> None:
        """Take the hits among rows with ids in [first, last], newest first, until full.

        Pages by id (keyset) rather than a cursor: each page is planned with its LIMIT, so a
        common word walks the primary key backwards and a rare one uses the trigram index."""
        page = max(_FIRST_PAGE, 2 * self._limit)
        while not self.full and first <= last:
            rows = self._cur.execute(sql, (*patterns, first, last, page)).fetchall()
            self._take(rows)
            if len(rows) < page:
                return
            last = int(rows[-1][0]) - 1
            page = min(page * 4, _MAX_PAGE)

    def _take(self, rows: list[tuple[Any, ...]]) -> None:
        needles = self._q.needles
        candidates: list[tuple[tuple[Any, ...], str, str, tuple[tuple[int, int], ...]]] = []
        for row in rows:
            rowid, text, part = row[0], _dec(row[1]), row[6]
            if self._keys is not None and rowid >> _ROW_BITS not in self._keys:
                continue
            low = text.lower()
            spans = _spans(low, needles)
            if spans is None:
                continue  # a U+FFFD that stood for a NUL in the narrowing
            if part and all(low.find(n) + len(n) <= _OVERLAP for n in needles):
                continue  # found whole in the overlap with the previous part of the line: a repeat
            candidates.append((row, text, low, spans))
        others = [text for _, text, _, _ in candidates if not text.isascii()]
        fts_ok = _Fts5.matching(self._q.match, others) if others else set()
        other = 0
        for row, text, low, spans in candidates:
            if text.isascii():
                if not all(p.search(low) for p in self._ascii):
                    continue
            else:
                other += 1
                if other - 1 not in fts_ok:
                    continue
            s = self._session(int(row[0]) >> _ROW_BITS)
            if s is None:
                continue
            _, _, command, t_us, frame, blind, _ = row
            self.hits.append(
                Hit(
                    session_id=s.session_id,
                    t_us=int(t_us),
                    frame=int(frame),
                    kind=HitKind.COMMAND if command else HitKind.OUTPUT,
                    text=text,
                    user=s.user,
                    target=s.target,
                    login=s.login,
                    outcome=s.outcome,
                    started_us=s.started_us,
                    spans=spans,
                    blind=bool(blind),
                    path=s.path,
                )
            )
            if len(self.hits) >= self._limit:
                self.full = True
                return
