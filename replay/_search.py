"""The search index: every session's output lines and commands, searchable across sessions.

Derived data, never evidence: everything here is rebuilt from the recordings (``zsp index
--rebuild``), and a hit only says where to look; the recording, verified, is what proves it.

:class:`SearchIndex` is the seam (as the store's ``Store``/``Tx``): :class:`SqliteSearchIndex`
(SQLite FTS5, one file ``DATA/search.db``) is the embedded implementation; PostgreSQL full text
can implement the same protocol later. This module takes paths and values only; it knows nothing
of the data dir, the store or the CLI.

Queries are what people type, never FTS5 syntax (:func:`parse_query`). Each word (or quoted
phrase) becomes a quoted FTS5 string (its last word a prefix), so ``AND``, ``*``, ``-x``, ``(``
and quotes are plain text; FTS5 narrows the candidates on word tokens (a word matches at the
start of a word: ``app`` finds ``application``, not ``webapp``), and every hit is then checked
to contain each word or phrase as a case-insensitive substring, so punctuation counts:
``rm -rf /srv/app`` does not match ``rm rf srv app``.

Layout, and why it is fast newest-first: each session gets an integer ``key`` (its start in
milliseconds, moved up by one while taken), and its rows get FTS5 rowids ``key << 22 | n``. Rowid
order is then start order, so ``ORDER BY rowid DESC`` (which FTS5 walks natively, without sorting)
yields the newest hits first and a query stops as soon as it has ``limit`` hits; ``--since`` is a
rowid lower bound; replacing a session is one rowid range delete.
"""

from __future__ import annotations

import enum
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, NamedTuple, Protocol

import msgpack

from ._exceptions import QueryError, SearchIndexError

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_ROWS_PER_SESSION",
    "SCHEMA_VERSION",
    "Hit",
    "HitKind",
    "IndexedSession",
    "Query",
    "Row",
    "SearchIndex",
    "SqliteSearchIndex",
    "Update",
    "chunks",
    "parse_query",
]

SCHEMA_VERSION = 1
"""Version of ``search.db``'s layout. An index of another version is rebuilt, never migrated."""

_ROW_BITS = 22
MAX_ROWS_PER_SESSION = (1 << _ROW_BITS) - 1
"""Rows one session can hold (4,194,303 lines and commands); the rest of a longer session is not
indexed, and its :attr:`IndexedSession.truncated` says so."""

MAX_LINE_CHARS = 4096
"""Longest text of one row. A longer line (10 MB printed without a newline) is indexed as several
rows of this size overlapping by :data:`_OVERLAP` characters, so a match across a cut is found."""
_OVERLAP = 256


class HitKind(enum.Enum):
    OUTPUT = "output"
    """A line of output, as the terminal showed it."""
    COMMAND = "command"
    """A command line, as the screen showed it when Enter was typed."""


class Row(NamedTuple):
    """One indexed line or command of a session. A NamedTuple: indexing makes millions."""

    t_us: int
    """Offset from the session's start, microseconds."""
    frame: int
    """Index of the recording frame it belongs to (``zsp play --from`` opens that moment)."""
    kind: HitKind
    text: str
    blind: bool = False
    """A command whose typed text never showed on screen: ``text`` is what the keys spelled."""


@dataclass(frozen=True, slots=True)
class IndexedSession:
    """What the index knows about one recording (the unit of indexing is one file)."""

    path: str
    """The recording file: the index's identity for the session (re-indexing replaces by path)."""
    session_id: str
    """From the header; the file name's stem when the header could not be read."""
    user: str
    target: str
    login: str
    grant_id: str | None
    started_us: int
    """Wall-clock start, microseconds since the epoch (header)."""
    outcome: str
    """VALID, INCOMPLETE or CORRUPT (verification, as far as indexed), or LIVE while being recorded."""
    problem: str | None = None
    bad_frame: int | None = None
    head: str | None = None
    """Chain head (hex) of the last frame indexed."""
    indexed_bytes: int = 0
    """Bytes of the recording read when it was indexed: a file that grew since is stale."""
    size: int = 0
    """Size of the recording file when it was indexed."""
    mtime_ns: int = 0
    """Its modification time then: with ``size``, how a changed recording is noticed."""
    rows: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result."""

    session_id: str
    t_us: int
    frame: int
    kind: HitKind
    text: str
    user: str
    target: str
    login: str
    outcome: str
    started_us: int
    spans: tuple[tuple[int, int], ...]
    """``(start, end)`` character offsets in ``text`` of every match, for highlighting."""
    blind: bool = False
    path: str = ""


@dataclass(frozen=True, slots=True)
class Query:
    """A query as typed, turned into an FTS5 expression and the substrings each hit must hold."""

    text: str
    needles: tuple[str, ...]
    """Lower-cased words and phrases; a hit contains every one as a substring."""
    match: str
    """The FTS5 MATCH expression (only quoted strings): narrows the candidates."""


def _split_words(text: str) -> list[str]:
    """Words and ``"quoted phrases"`` of a search box string; an unclosed quote runs to the end."""
    out: list[str] = []
    for m in re.finditer(r'"([^"]*)"?|(\S+?)(?=\s|"|$)', text):
        phrase, word = m.group(1), m.group(2)
        if phrase is not None:
            if phrase.strip():
                out.append(" ".join(phrase.split()))
        elif word:
            out.append(word)
    return out


def parse_query(query: str | Sequence[str]) -> Query:
    """A query typed by a person. ``str``: a search box (words; ``"..."`` a phrase). A sequence:
    command-line words (each is one word, or a phrase if it holds spaces: the shell already
    removed the quotes; quotes left inside one are parsed as in a search box).

    Raises :class:`QueryError` for a query with no letter or digit at all (nothing to look up).
    """
    if isinstance(query, str):
        shown = query
        terms = _split_words(query)
    else:
        shown = " ".join(query)
        terms = []
        for word in query:
            if '"' in word:
                terms += _split_words(word)
            elif word.strip():
                terms.append(" ".join(word.split()))
    needles = tuple(dict.fromkeys(t.lower() for t in terms))
    if not needles:
        raise QueryError(query=shown, reason="empty query: give a word to search for")
    # FTS5 finds candidates by word tokens; terms without any (only punctuation) are checked by
    # the substring filter alone. Each term is one FTS5 string (its tokens adjacent), its last
    # token a prefix: ``/srv/app`` finds ``/srv/application`` as a substring search would.
    tokened = [t for t in needles if any(c.isalnum() for c in t)]
    if not tokened:
        raise QueryError(query=shown, reason="only punctuation: give at least one word with a letter or digit")
    # A NUL ends FTS5's query string early ("unterminated string"); to the tokenizer it is a
    # separator like a space, and the substring check still holds the needle as typed.
    match = " AND ".join('"' + t.replace('"', '""').replace("\x00", " ") + '" *' for t in tokened)
    return Query(text=shown, needles=needles, match=f"text : ({match})")


def _spans(low: str, needles: Sequence[str]) -> tuple[tuple[int, int], ...] | None:
    """Where each needle occurs in ``low`` (merged); None if one does not occur at all."""
    found: list[tuple[int, int]] = []
    for n in needles:
        i = low.find(n)
        if i < 0:
            return None
        while i >= 0:
            found.append((i, i + len(n)))
            i = low.find(n, i + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for a, b in found:
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return tuple(merged)


def chunks(text: str) -> list[str]:
    """``text`` cut into rows of at most :data:`MAX_LINE_CHARS`, overlapping by :data:`_OVERLAP`."""
    if len(text) <= MAX_LINE_CHARS:
        return [text]
    step = MAX_LINE_CHARS - _OVERLAP
    return [text[i : i + MAX_LINE_CHARS] for i in range(0, len(text) - _OVERLAP, step)]


Update = Callable[[IndexedSession], IndexedSession]


class SearchIndex(Protocol):
    """Where the searchable text of sessions is kept. Implementations are thread-safe."""

    def sessions(self) -> dict[str, IndexedSession]:
        """Every indexed recording, by path."""
        ...

    def replace(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        """Index a recording anew: its old rows and these go in one transaction (all or nothing).
        ``update(session)``, called once ``rows`` is exhausted, gives the entry to store (the
        verification outcome of a recording read in one pass is known only at its end). Returns
        the session as stored (its row count, truncated flag)."""
        ...

    def append(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        """Add rows to a recording being indexed as it grows (a live session); creates it if new."""
        ...

    def remove(self, path: str) -> bool: ...

    def clear(self) -> None:
        """Drop everything (``zsp index --rebuild``)."""
        ...

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
        """Hits newest first (session start, then position in the session, latest first);
        ``session_id``: within that session only; ``session_ids``: within these sessions only
        (``zsp search --flagged``)."""
        ...

    def close(self) -> None: ...


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    key INTEGER PRIMARY KEY,          -- start in ms, moved up while taken: rows are key << {_ROW_BITS} | n
    path TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    user TEXT NOT NULL,
    target TEXT NOT NULL,
    login TEXT NOT NULL,
    grant_id TEXT,
    started_us INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    problem TEXT,
    bad_frame INTEGER,
    head TEXT,
    indexed_bytes INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    truncated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
CREATE INDEX IF NOT EXISTS sessions_target ON sessions(target);
CREATE INDEX IF NOT EXISTS sessions_id ON sessions(session_id);
CREATE VIRTUAL TABLE IF NOT EXISTS lines USING fts5(
    text, kind, t_us UNINDEXED, frame UNINDEXED, blind UNINDEXED, part UNINDEXED,
    tokenize = 'unicode61', columnsize = 0  -- no ranking: the per-row token counts are not kept
);
"""

_SESSION_COLUMNS = (
    "path session_id user target login grant_id started_us outcome problem bad_frame head "
    "indexed_bytes size mtime_ns rows truncated"
).split()
_SELECT_SESSIONS = f"SELECT key, {', '.join(_SESSION_COLUMNS)} FROM sessions"  # noqa: S608 - fixed names
_INSERT_ROWS = "INSERT INTO lines(rowid, text, kind, t_us, frame, blind, part) VALUES (?, ?, ?, ?, ?, ?, ?)"
_TOKEN_KIND = {"o": HitKind.OUTPUT, "c": HitKind.COMMAND}
"""How a row's kind is stored: an indexed one-letter column, so ``--commands-only`` is part of the MATCH."""
_BATCH = 2000
_PER_SESSION = 200
"""With a user/target filter matching at most this many sessions, each is searched on its own
rowid range (newest first) instead of filtering one scan over every session's hits."""


def _rowids(key: int) -> tuple[int, int]:
    """First and last rowid of the session with ``key``."""
    return key << _ROW_BITS, (key << _ROW_BITS) | MAX_ROWS_PER_SESSION


def _session(row: tuple[object, ...]) -> tuple[int, IndexedSession]:
    values = dict(zip(_SESSION_COLUMNS, row[1:], strict=True))
    values["truncated"] = bool(values["truncated"])
    return int(str(row[0])), IndexedSession(**values)  # type: ignore[arg-type]


def spooled(rows: Iterable[Row], where: Path | str | None = None) -> Iterator[Row]:
    """``rows``, all made now and given back from a temporary file.

    The rows of a recording come from emulating it, which hostile output can stretch to minutes;
    SQLite has one writer per database, so a writer that made its rows inside its transaction held
    every other process's indexing (the bastion's two indexing lanes, ``zsp index``) for that
    long. Spooled first, the write lock is held only while the rows are stored. Memory stays flat
    (rows go to disk as msgpack, not into a list: a session may have millions). ``where``: the
    directory of the temporary file (unlinked at once, mode 0600): the index's own, so that session
    text is never written where the index itself would not be."""
    f = tempfile.TemporaryFile(prefix="zsp-rows-", dir=where)
    try:
        pack = msgpack.Packer(unicode_errors="surrogatepass").pack
        write = f.write
        output = HitKind.OUTPUT
        for t_us, frame, kind, text, blind in rows:
            write(pack((t_us, frame, kind is output, text, blind)))
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return _unspooled(f)


def _unspooled(f: IO[bytes]) -> Iterator[Row]:
    with f:
        unpacker = msgpack.Unpacker(f, use_list=False, unicode_errors="surrogatepass", max_buffer_size=1 << 30)
        output, command = HitKind.OUTPUT, HitKind.COMMAND
        for t_us, frame, is_output, text, blind in unpacker:
            yield Row(t_us, frame, output if is_output else command, text, blind)


class SqliteSearchIndex:
    """:class:`SearchIndex` on SQLite FTS5, in one file (WAL: searches run while indexing writes).

    One connection shared by threads under a lock (the bastion indexes from a worker thread while
    nothing else uses it; the CLI is single-threaded). Writers in other processes are serialised
    by SQLite (``BEGIN IMMEDIATE``, 30 s busy timeout).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        here = os.path.dirname(os.path.abspath(self.path))
        self._spool_dir = here if os.path.isdir(here) else None
        self._lock = threading.RLock()
        try:
            # Private like the recordings it is made of (commands and output): 0600 from its first
            # byte; SQLite gives its -wal and -shm files the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise SearchIndexError(path=self.path, reason=exc.strerror or str(exc)) from None
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 30000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise SearchIndexError(path=self.path, reason="cannot use WAL journal mode")
            self._db.execute("PRAGMA synchronous = NORMAL")  # derived data: a lost tail is re-indexed
            if self._version() != str(SCHEMA_VERSION):
                # Only a new or outdated index takes the write lock here: a search must not wait
                # for a long indexing transaction of the bastion's.
                with self._write():
                    version = self._version()
                    if version is not None and version != str(SCHEMA_VERSION):
                        # Derived data of another layout: dropped and rebuilt, never trusted or migrated.
                        self._drop_all()
                        version = None
                    if version is None:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                self._db.execute(statement)
                        self._db.execute(
                            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                            (str(SCHEMA_VERSION),),
                        )
        except sqlite3.Error as exc:
            raise SearchIndexError(path=self.path, reason=str(exc)) from None

    # --- plumbing ---------------------------------------------------------------------------

    def _version(self) -> str | None:
        if self._db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            return None
        got = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if got is None else str(got[0])

    @contextmanager
    def _write(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _drop_all(self) -> None:
        names = [r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
        for name in ("lines", "sessions", "meta"):
            if name in names:
                self._db.execute(f'DROP TABLE "{name}"')

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing ----------------------------------------------------------------------------

    def sessions(self) -> dict[str, IndexedSession]:
        with self._lock:
            try:
                return {s.path: s for _, s in map(_session, self._db.execute(_SELECT_SESSIONS))}
            except sqlite3.Error as exc:
                raise SearchIndexError(path=self.path, reason=str(exc)) from None

    def _key_for(self, session: IndexedSession) -> tuple[int, int]:
        """(key, rows) of the session's entry: its existing one, or a free key from its start."""
        row = self._db.execute("SELECT key, rows FROM sessions WHERE path = ?", (session.path,)).fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
        key = max(0, min(session.started_us // 1000, (1 << (63 - _ROW_BITS)) - 2))
        while self._db.execute("SELECT 1 FROM sessions WHERE key = ?", (key,)).fetchone() is not None:
            key += 1
        return key, 0

    def _store(
        self, key: int, session: IndexedSession, start: int, rows: Iterable[Row], update: Update | None
    ) -> IndexedSession:
        n = start
        truncated = session.truncated
        batch: list[tuple[object, ...]] = []
        base = key << _ROW_BITS
        output = HitKind.OUTPUT
        for t_us, frame, kind, text, blind in rows:
            if truncated:
                continue  # drain the source (its verification report comes at the end)
            token = "o" if kind is output else "c"
            if len(text) <= MAX_LINE_CHARS and n < MAX_ROWS_PER_SESSION:
                batch.append((base | n, text, token, t_us, frame, 1 if blind else 0, 0))
                n += 1
            else:
                for part, piece in enumerate(chunks(text)):
                    if n >= MAX_ROWS_PER_SESSION:
                        truncated = True
                        break
                    batch.append((base | n, piece, token, t_us, frame, 1 if blind else 0, part))
                    n += 1
            if len(batch) >= _BATCH:
                self._db.executemany(_INSERT_ROWS, batch)
                batch.clear()
        if batch:
            self._db.executemany(_INSERT_ROWS, batch)
        if update is not None:
            session = update(session)
        stored = replace(session, rows=n, truncated=truncated)
        values = tuple(int(v) if isinstance(v, bool) else v for v in (getattr(stored, c) for c in _SESSION_COLUMNS))
        self._db.execute(
            f"INSERT OR REPLACE INTO sessions(key, {', '.join(_SESSION_COLUMNS)}) "  # noqa: S608 - fixed names
            f"VALUES (?{', ?' * len(_SESSION_COLUMNS)})",
            (key, *values),
        )
        return stored

    def replace(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        rows = spooled(rows, self._spool_dir)  # made before the write lock is taken
        try:
            with self._write():
                key, _ = self._key_for(session)
                self._db.execute("DELETE FROM lines WHERE rowid BETWEEN ? AND ?", _rowids(key))
                return self._store(key, replace(session, rows=0, truncated=False), 0, rows, update)
        except sqlite3.Error as exc:
            raise SearchIndexError(path=self.path, reason=str(exc)) from None

    def append(
        self, session: IndexedSession, rows: Iterable[Row], *, update: Update | None = None
    ) -> IndexedSession:
        rows = spooled(rows, self._spool_dir)
        try:
            with self._write():
                key, have = self._key_for(session)
                old = self._db.execute("SELECT truncated FROM sessions WHERE key = ?", (key,)).fetchone()
                return self._store(key, replace(session, truncated=bool(old and old[0])), have, rows, update)
        except sqlite3.Error as exc:
            raise SearchIndexError(path=self.path, reason=str(exc)) from None

    def remove(self, path: str) -> bool:
        try:
            with self._write():
                row = self._db.execute("SELECT key FROM sessions WHERE path = ?", (path,)).fetchone()
                if row is None:
                    return False
                key = int(row[0])
                self._db.execute("DELETE FROM lines WHERE rowid BETWEEN ? AND ?", _rowids(key))
                self._db.execute("DELETE FROM sessions WHERE key = ?", (key,))
                return True
        except sqlite3.Error as exc:
            raise SearchIndexError(path=self.path, reason=str(exc)) from None

    def clear(self) -> None:
        try:
            with self._write():
                self._db.execute("DELETE FROM lines")
                self._db.execute("DELETE FROM sessions")
        except sqlite3.Error as exc:
            raise SearchIndexError(path=self.path, reason=str(exc)) from None

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
        match = q.match + (' AND kind : "c"' if commands_only else "")
        allowed = None if session_ids is None else frozenset(session_ids)
        with self._lock:
            try:
                return self._search(q, match, user, target, since_us, limit, session_id, allowed)
            except sqlite3.Error as exc:
                raise SearchIndexError(path=self.path, reason=str(exc)) from None

    def _search(
        self,
        q: Query,
        match: str,
        user: str | None,
        target: str | None,
        since_us: int | None,
        limit: int,
        session_id: str | None = None,
        allowed: frozenset[str] | None = None,
    ) -> list[Hit]:
        db = self._db
        low = 0
        if since_us is not None:
            # Keys follow start times (moved up only on a tie): the first key of a session started
            # since then is the scan's lower bound; the start itself is checked on each hit.
            row = db.execute("SELECT min(key) FROM sessions WHERE started_us >= ?", (since_us,)).fetchone()
            if row is None or row[0] is None:
                return []
            low = int(row[0])
        keys: list[int] | None = None  # sessions the filters allow (None: all)
        if user is not None or target is not None or session_id is not None or allowed is not None:
            where: list[str] = ["key >= ?"]
            args: list[object] = [low]
            for column, value in (("user", user), ("target", target), ("session_id", session_id)):
                if value is not None:
                    where.append(f"{column} = ?")
                    args.append(value)
            sql = f"SELECT key, session_id FROM sessions WHERE {' AND '.join(where)} ORDER BY key DESC"  # noqa: S608 - fixed names
            # A set of sessions is checked here rather than bound into the query: it may hold more
            # ids than SQLite takes parameters.
            keys = [int(k) for k, sid in db.execute(sql, args) if allowed is None or sid in allowed]
            if not keys:
                return []
        found = _Found(db, q, since_us, set(keys) if keys is not None else None, limit)
        select = "SELECT rowid, text, kind, t_us, frame, blind, part FROM lines WHERE lines MATCH ?"
        if keys is not None and len(keys) <= _PER_SESSION:
            for key in keys:  # newest first, each session on its own rowid range
                sql = select + " AND rowid BETWEEN ? AND ? ORDER BY rowid DESC"
                found.take(db.execute(sql, (match, *_rowids(key))))
                if found.full:
                    break
        else:
            # One scan of every match, newest first (FTS5 walks rowids backwards), stopped when full.
            found.take(db.execute(select + " AND rowid >= ? ORDER BY rowid DESC", (match, low << _ROW_BITS)))
        return found.hits


class _Found:
    """Hits of one search: rows checked against the needles and the filters, sessions looked up once."""

    def __init__(
        self, db: sqlite3.Connection, q: Query, since_us: int | None, keys: set[int] | None, limit: int
    ) -> None:
        self._db = db
        self._q = q
        self._since = since_us
        self._keys = keys
        self._limit = limit
        self._sessions: dict[int, IndexedSession | None] = {}
        self.hits: list[Hit] = []
        self.full = False

    def _session(self, key: int) -> IndexedSession | None:
        if key not in self._sessions:
            row = self._db.execute(_SELECT_SESSIONS + " WHERE key = ?", (key,)).fetchone()
            s = None if row is None else _session(row)[1]
            if s is not None and self._since is not None and s.started_us < self._since:
                s = None
            self._sessions[key] = s
        return self._sessions[key]

    def take(self, cursor: sqlite3.Cursor) -> None:
        """Add the rows of ``cursor`` that hold every needle, of an allowed session."""
        needles = self._q.needles
        for rowid, text, kind, t_us, frame, blind, part in cursor:
            key = rowid >> _ROW_BITS
            if self._keys is not None and key not in self._keys:
                continue
            low = text.lower()
            spans = _spans(low, needles)
            if spans is None:
                continue
            if part and all(low.find(n) + len(n) <= _OVERLAP for n in needles):
                continue  # found whole in the overlap with the previous part of the line: a repeat
            s = self._session(key)
            if s is None:
                continue
            self.hits.append(
                Hit(
                    session_id=s.session_id,
                    t_us=int(t_us),
                    frame=int(frame),
                    kind=_TOKEN_KIND[kind],
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
                cursor.close()
                return
