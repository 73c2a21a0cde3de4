"""The data dir's search index: which recordings it covers, keeping it current, and the bastion's
background indexer.

The index itself (:mod:`replay._search`) takes paths and values; this module knows the data dir:
the index file is ``DATA/search.db``; the recordings are the store's sessions plus the files in
``recordings/`` the store does not know; verification trusts the data dir's ``allowed_signers``.
A session uploaded to object storage is indexed under its download cache path
(``cache/recordings/<id>.zsprec``), downloaded and checked by hash when it is indexed.
A recording is *stale* in the index when it is missing from it or its size or mtime changed since.

Indexing never affects a session: the bastion hands a sealed session's path to
:class:`BackgroundIndexer` (its own thread, and the work in a child process, off the bastion's
interpreter and its GIL: :mod:`zsp_tui.index_process`) and goes on; a failure is one
escaped warning line on stderr, and ``zsp index`` repairs what was missed.

The same pass caches each finished recording's seek index (``DATA/cache/seek/<id>.seek``, the
file ``zsp play`` and the review app's replay read), so a searchable session opens at any hit at
once, played before or not. A cache that cannot be written is a warning, never a failed indexing.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from replay import (
    SUFFIX,
    IndexedSession,
    ReplayError,
    SearchIndex,
    SeekIndex,
    SqliteSearchIndex,
    index_recording,
    printable,
    save_index,
)

from .config import redact_url
from .datadir import DataDir
from .exceptions import ZspError
from .index_process import IndexProcess
from .models import SessionRecord
from .objstore.cache import CACHE_DIR

__all__ = [
    "INDEX_FILE",
    "LIVE_INTERVAL",
    "LIVE_MAX_BYTES",
    "SEEK_CACHE_DIR",
    "BackgroundIndexer",
    "Coverage",
    "coverage",
    "index_exists",
    "index_file",
    "index_location",
    "index_one",
    "index_quietly",
    "open_index",
    "recordings",
    "seek_cache",
    "verified_outcomes",
]

INDEX_FILE = "search.db"
SEEK_CACHE_DIR = Path("cache") / "seek"


def index_file(d: DataDir) -> Path:
    return d.root / INDEX_FILE


def open_index(d: DataDir) -> SearchIndex:
    """The data dir's search index: in the store's PostgreSQL database when the store is there
    (``[store] url`` / ``ZSP_DATABASE_URL``: every bastion indexes into it and every reviewer
    searches it), else the SQLite file ``DATA/search.db``."""
    url = d.settings().store_url
    if url is not None:
        from .store.pg_search import PostgresSearchIndex  # psycopg only when asked for

        return PostgresSearchIndex(url)
    return SqliteSearchIndex(index_file(d))


def index_exists(d: DataDir) -> bool:
    """Whether there is an index to ask: the SQLite file, or the PostgreSQL store's (its tables are
    made when it is first opened; an empty one answers with no hits)."""
    return d.settings().store_url is not None or index_file(d).exists()


def index_location(d: DataDir) -> str:
    """Where the index is, for people: the file, or the store's URL with its password hidden."""
    url = d.settings().store_url
    return str(index_file(d)) if url is None else redact_url(url)


def recordings(d: DataDir) -> tuple[dict[Path, bool], int]:
    """Every recording of the data dir -> True if its session is live (store: not ended); and
    how many store sessions name a file that is gone."""
    found: dict[Path, bool] = {}
    missing = 0
    for s in _sessions(d):
        p = d.recording_location(s)
        if p.exists() or s.upload == "uploaded":  # uploaded: its download cache, fetched when indexed
            found[p.absolute()] = s.ended_at is None
        else:
            missing += 1
    for stored in sorted(d.scratch().list(), key=lambda r: r.name):
        found.setdefault(Path(stored.location).absolute(), False)
    return found, missing


def _sessions(d: DataDir) -> list[SessionRecord]:
    if not d.has_store():
        return []
    svc = d.service()
    try:
        return svc.sessions()
    finally:
        svc.store.close()


def _uploaded(d: DataDir, path: Path) -> SessionRecord | None:
    """The uploaded session whose download cache file ``path`` is, or None."""
    if path.parent != (d.root / CACHE_DIR).absolute() or not path.name.endswith(SUFFIX):
        return None
    sid = path.name[: -len(SUFFIX)]
    if not d.has_store():
        return None
    svc = d.service()
    try:
        record = svc.session(sid)
    finally:
        svc.store.close()
    return record if record is not None and record.upload == "uploaded" else None


@dataclass(frozen=True, slots=True)
class Coverage:
    """How far the index covers the data dir's recordings."""

    total: int
    stale: tuple[Path, ...]
    """Recordings not indexed, or changed since (size or mtime), of sessions that ended."""
    live: tuple[Path, ...]
    """Live sessions whose recording grew since it was last indexed."""


def coverage(d: DataDir, index: SearchIndex) -> Coverage:
    files, _ = recordings(d)
    known = index.sessions()
    # An uploaded recording was indexed where it was recorded (a bastion's scratch, maybe another
    # host's): an entry for its session id covers it, whatever the path.
    sealed = {e.session_id for e in known.values() if e.outcome != "LIVE"}
    stale: list[Path] = []
    live: list[Path] = []
    cache = (d.root / CACHE_DIR).absolute()
    for path, is_live in files.items():
        entry = known.get(str(path))
        if entry is None and path.parent == cache and path.name.removesuffix(SUFFIX) in sealed:
            continue
        try:
            st = path.stat()
        except OSError:
            if entry is None and not is_live and path.parent == cache:
                stale.append(path)  # uploaded, never indexed: `zsp index` downloads it
            continue
        changed = entry is None or (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns)
        if changed or (entry is not None and entry.outcome == "LIVE" and not is_live):
            (live if is_live else stale).append(path)
    return Coverage(len(files), tuple(stale), tuple(live))


def verified_outcomes(d: DataDir) -> dict[str, str]:
    """Recording path -> VALID, INCOMPLETE or CORRUPT, as the index verified it, for the recordings
    unchanged (size and mtime) since they were indexed; empty without an index. Never raises:
    what a listing shows must not depend on the derived index being readable."""
    try:
        if not index_exists(d):
            return {}
        index = open_index(d)
    except (ReplayError, ZspError, OSError, sqlite3.Error):
        return {}
    try:
        known = index.sessions()
    except (ReplayError, sqlite3.Error):
        return {}
    finally:
        index.close()
    out: dict[str, str] = {}
    for path, entry in known.items():
        try:
            st = Path(path).stat()
        except OSError:
            continue
        if (entry.size, entry.mtime_ns) == (st.st_size, st.st_mtime_ns) and entry.outcome != "LIVE":
            out[path] = entry.outcome
    return out


def seek_cache(d: DataDir, session_id: str) -> Path:
    """Where the seek index of a session is cached: the file ``zsp play`` and the review app's
    replay read (derived data, used only while it matches the recording as verified)."""
    return d.root / SEEK_CACHE_DIR / f"{session_id}.seek"


def index_one(
    d: DataDir, path: Path, index: SearchIndex | None = None, *, live: bool = False
) -> IndexedSession:
    """Index one recording of the data dir (raises ReplayError/ZspError on failure).

    A recording that is not live also gets its seek index cached, made by the same emulation
    pass as its search rows: a search hit then opens at its moment at once, in ``zsp play
    --from`` and the review app, even if nobody played the session before. Failing to write
    it is a warning; the search indexing stands."""
    path = Path(path).absolute()
    uploaded = _uploaded(d, path)
    if uploaded is not None:  # a recording in object storage: its verified download
        path = d.recording_path(uploaded).absolute()
    own = index is None
    ix = index if index is not None else open_index(d)
    try:
        keep = None if live else (lambda seek: _save_seek(d, seek))
        return index_recording(ix, path, d.trusted_keys(), live=live, keyframes=keep)
    finally:
        if own:
            ix.close()


def _save_seek(d: DataDir, seek: SeekIndex) -> None:
    """Cache a seek index made while indexing (atomically, mode 0600, as the players do)."""
    where = seek_cache(d, seek.session_id)
    if not save_index(seek, where):
        warn(f"could not cache the seek index {where}; a replay builds it when the session is opened")


def index_quietly(d: DataDir, path: Path) -> None:
    """Index one recording now; a failure is a warning (``zsp record``, after sealing)."""
    if not d.root.is_dir():
        return
    try:
        index_one(d, path)
    except (ReplayError, ZspError, OSError, sqlite3.Error) as exc:
        warn(f"could not index {path} for search ({exc}); `zsp index` retries")


def warn(message: str) -> None:
    print(f"zsp: warning: {printable(message)}", file=sys.stderr, flush=True)


LIVE_INTERVAL = 3.0
"""Seconds between two looks at the bastion's live sessions for search."""
LIVE_REST = 3.0
"""After re-indexing a live recording, live indexing pauses this many times as long (sealed
sessions are not held back): at most a quarter of a core, shared with the bastion's event loop."""
SLOW_AFTER = 10.0
"""Seconds a recording may take to index before it is moved to the slow lane (its work so far
is dropped, and redone there): costly output (a screen filled and erased over and over costs the
terminal emulator a millisecond per byte) must not hold back the indexing of everyone's next
sessions. A large binary ``cat`` lands there too; it is indexed all the same, a little later."""
LIVE_MAX_BYTES = 8 * 1024 * 1024
"""Live recordings up to this size are re-indexed as they grow (a whole pass each time, about a
second at most); a larger one is searchable from its seal on, or after ``zsp index``."""


class BackgroundIndexer:
    """Indexes recordings handed to it from its own thread, one at a time: sealed sessions
    (``submit``) in submission order and before any live one (``submit_live``); a path submitted
    again while queued is indexed once. A live recording is indexed again only when it grew,
    as far as a signature covers it, and stored as LIVE; its seal replaces all of that.

    A sealed recording that takes over :data:`SLOW_AFTER` seconds is handed to a second thread
    and child process, the slow lane, which indexes such recordings one after the other with no
    limit, while the first goes on with the next sessions. So one operator's costly output delays
    only other costly recordings (a live one over the limit is left to its seal).

    ``close`` finishes what is queued, waiting at most ``timeout`` seconds; the slow lane's queue
    is left to ``zsp index``. Failures are warnings: indexing never affects a session.
    """

    def __init__(self, data: DataDir, *, max_pending: int = 10_000) -> None:
        self.data = data
        self._max = max_pending
        self._final: OrderedDict[Path, None] = OrderedDict()
        self._live: OrderedDict[Path, None] = OrderedDict()
        self._live_sizes: dict[Path, int] = {}  # only touched by the thread
        self._live_rest_until = 0.0
        self._cond = threading.Condition()
        self._closing = False
        self.dropped = 0
        self._current: Path | None = None
        self.on_indexed: Callable[[Path], None] | None = None
        """Called (from the indexer's thread) once a sealed recording is indexed and no longer
        :meth:`busy`: the uploader runs a pass, removing a scratch copy it kept for the indexer."""
        self._child = IndexProcess(data.root)
        self._slow: OrderedDict[Path, None] = OrderedDict()
        self._slow_current: Path | None = None
        self._slow_child = IndexProcess(data.root)
        self._thread = threading.Thread(target=self._run, name="zsp-index", daemon=True)
        self._thread.start()
        self._slow_thread = threading.Thread(target=self._run_slow, name="zsp-index-slow", daemon=True)
        self._slow_thread.start()

    def submit(self, path: Path | str) -> None:
        """Index a sealed (or abandoned) recording."""
        with self._cond:
            p = Path(path)
            self._live.pop(p, None)
            if p in self._slow:  # queued in the slow lane already
                return
            if p not in self._final and len(self._final) >= self._max:
                self.dropped += 1
                if self.dropped == 1:
                    warn(f"search indexing is behind (over {self._max} recordings queued); `zsp index` catches up")
                return
            self._final[p] = None
            self._cond.notify_all()

    def submit_live(self, path: Path | str) -> None:
        """Index a live recording if it grew since it was last indexed (and is not too big)."""
        with self._cond:
            p = Path(path)
            if p in self._final or p in self._live or p in self._slow or len(self._live) >= self._max:
                return
            self._live[p] = None
            self._cond.notify_all()

    def busy(self, path: Path | str) -> bool:
        """Whether ``path`` is queued or being indexed: the uploader leaves such a scratch file
        in place until a later pass (it would otherwise vanish before its seal is searchable)."""
        p = Path(path)
        with self._cond:
            queued = p in self._final or p in self._live or p in self._slow
            return queued or p in (self._current, self._slow_current)

    def close(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._live.clear()
            self._slow.clear()  # left to `zsp index`: minutes each, possibly
            self._cond.notify_all()
        for thread, child in ((self._thread, self._child), (self._slow_thread, self._slow_child)):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # Still on a long recording: its child must not index on after the bastion is gone.
                child.kill()

    def _next(self) -> tuple[Path, bool] | None:
        with self._cond:
            while True:
                self._current = None
                if self._final:
                    self._current = self._final.popitem(last=False)[0]
                    return self._current, False
                if self._closing:
                    return None
                rest = self._live_rest_until - time.monotonic()
                if self._live and rest <= 0:
                    self._current = self._live.popitem(last=False)[0]
                    return self._current, True
                self._cond.wait(rest if self._live else None)

    def _run(self) -> None:
        # The work itself is done by a child process (index_process: why), this thread only waits.
        child = self._child
        try:
            while (job := self._next()) is not None:
                path, live = job
                started = time.monotonic()
                if live:
                    try:
                        size = path.stat().st_size
                    except OSError as exc:
                        warn(f"could not index {path} for search: {exc}")
                        continue
                    if size > LIVE_MAX_BYTES or self._live_sizes.get(path) == size:
                        continue
                    self._live_sizes[path] = size
                else:
                    self._live_sizes.pop(path, None)
                try:
                    error = child.index(path, live=live, timeout=SLOW_AFTER)
                except TimeoutError:
                    if live:  # left to its seal; and live indexing rests as after any pass
                        self._live_rest_until = time.monotonic() + LIVE_REST * SLOW_AFTER
                    else:
                        with self._cond:
                            if not self._closing:
                                self._slow[path] = None  # busy() all along: queued before _current moves on
                                self._cond.notify_all()
                        warn(f"indexing {path} for search takes over {SLOW_AFTER:g}s; it goes on in the slow lane")
                    continue
                if error is not None:
                    warn(f"could not index {path} for search: {error}")
                if not live:
                    self._indexed(path, slow=False)
                took = time.monotonic() - started
                if live:
                    # Live re-indexing rests three times as long as it worked (a 25% duty cycle):
                    # a core of the bastion's machine is not the indexer's to take.
                    self._live_rest_until = time.monotonic() + LIVE_REST * took
                if took > 30:
                    warn(f"indexing {path} for search took {took:.0f}s")
        finally:
            child.close()

    def _indexed(self, path: Path, *, slow: bool) -> None:
        with self._cond:  # no longer busy() before anyone is told
            if slow:
                self._slow_current = None
            else:
                self._current = None
        if (done := self.on_indexed) is not None:
            done(path)

    def _run_slow(self) -> None:
        """The slow lane: recordings that took over SLOW_AFTER in the first, indexed with no limit."""
        child = self._slow_child
        try:
            while True:
                with self._cond:
                    self._slow_current = None
                    while not self._slow and not self._closing:
                        self._cond.wait()
                    if self._closing:
                        return
                    path = self._slow_current = self._slow.popitem(last=False)[0]
                started = time.monotonic()
                error = child.index(path, live=False)
                if error is not None:
                    warn(f"could not index {path} for search: {error}")
                self._indexed(path, slow=True)
                took = time.monotonic() - started
                if took > 30:
                    warn(f"indexing {path} for search took {took:.0f}s (slow lane)")
        finally:
            child.close()
