"""The search index on PostgreSQL answers exactly as the SQLite one: every behaviour here runs
against both :class:`replay.SqliteSearchIndex` and :class:`PostgresSearchIndex` (a real PostgreSQL
from ``tests/servers.py``, a fresh database per test), plus what only a shared server has:
several writers, a server that goes away and comes back, a role without pg_trgm, a password that
must never be printed.

The index tests of ``tests/test_search.py`` are imported and collected here a second time, so
they run with this module's ``index`` fixture: the very same assertions, on both backends.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import replay._search as sqlite_search
import zsp_tui.store.pg_search as pg_search
from recorder import SigningKey
from replay import (
    HitKind,
    IndexedSession,
    QueryError,
    Row,
    SearchIndex,
    SearchIndexError,
    SqliteSearchIndex,
    parse_query,
)
from replay._search import MAX_LINE_CHARS
from tests.search_helpers import WALL_START_NS, Script
from tests.servers import PostgresCluster, free_port
from tests.test_search import (  # noqa: F401 - collected here again, with `index` over both backends
    _rows,
    _session,
    test_a_huge_line_is_found_at_both_ends_and_across_a_cut,
    test_a_quoted_part_is_a_phrase,
    test_a_transferred_file_path_is_found_at_the_moment_it_was_closed,
    test_corrupt_recording_is_indexed_up_to_its_break_and_marked,
    test_fts5_syntax_never_reaches_the_user,
    test_hits_land_on_the_right_second_and_frame,
    test_hostile_output_is_indexed_as_the_screen_showed_it,
    test_newest_first_filters_and_commands_only,
    test_no_pty_session_lines_are_split_on_newlines,
    test_punctuation_counts,
    test_reindexing_a_recording_does_not_duplicate_hits,
    test_replacing_a_session_never_duplicates_and_is_atomic,
    test_ten_megabytes_without_a_newline_and_many_lines,
    test_untrusted_signer_indexes_nothing,
    texts,
)
from zsp_tui.store.pg_search import PostgresSearchIndex

Opener = Callable[[], SearchIndex]


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (another handle on) one index: the same SQLite file, or the same PostgreSQL database."""
    if request.param == "sqlite":
        where = tmp_path / "search.db"

        def make() -> SearchIndex:
            return SqliteSearchIndex(where)
    else:
        url = request.getfixturevalue("postgres_url")

        def make() -> SearchIndex:
            return PostgresSearchIndex(url)

    opened: list[SearchIndex] = []

    def tracked() -> SearchIndex:
        ix = make()
        opened.append(ix)
        return ix

    yield tracked
    for ix in opened:
        ix.close()


@pytest.fixture
def index(opener: Opener) -> SearchIndex:
    return opener()


# --- the same answers ---------------------------------------------------------------------------


def hit_view(hits) -> list[tuple]:
    return [(h.path, h.session_id, h.t_us, h.frame, h.kind, h.text, h.spans, h.blind, h.user, h.outcome) for h in hits]


_ALPHABET = (
    "abcdefgh ABC 0123 _-/.:%\\'\"*()\t\x00"  # ASCII words, punctuation that is LIKE and FTS5 syntax
    "éÉèüÜßẞİıǖ\u0301\u0307"  # folding: diacritics, combining marks, multi-character lower()
    "日本€—\ue000😀\ufdd0"  # CJK, a symbol, private use, outside the BMP, the stored-as-JSON marker
)


_ASCII = "abcab c ABC 01 _-/.:%\\'\"*()\t"


def _random_text(rng: random.Random) -> str:
    """Half ASCII (checked by the regular expression), half not (checked by the FTS5 tokenizer)."""
    alphabet = _ASCII if rng.random() < 0.5 else _ALPHABET
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))


def test_random_text_and_queries_give_the_same_hits_on_both_backends(tmp_path: Path, postgres_url: str) -> None:
    """The word check (FTS5 token starts, Unicode folding) and the substring spans agree hit for hit."""
    rng = random.Random(12)
    lite = SqliteSearchIndex(tmp_path / "search.db")
    pg = PostgresSearchIndex(postgres_url)
    try:
        texts_ = [_random_text(rng) for _ in range(400)]
        for n in range(4):
            rows = [Row(i * 10, i, HitKind.COMMAND if i % 3 == 0 else HitKind.OUTPUT, t)
                    for i, t in enumerate(texts_[n * 100:(n + 1) * 100])]
            for ix in (lite, pg):
                ix.replace(_session(f"/r/{n}", started_s=1_000 + n), rows)
        queries: list[str | list[str]] = []
        for _ in range(300):
            t = rng.choice(texts_)
            a = rng.randrange(len(t))
            piece = t[a : a + rng.randint(1, 6)]
            queries.append([piece] if rng.random() < 0.5 else piece)  # one word, or a search box
        queries += ["a", "é", "e", "ss", "i", "日本", "😀", "%", "a_b", "\\", "\x00a", "ab*", '"a b"']
        compared = 0
        for q in queries:
            try:
                parse_query(q)
            except QueryError:  # a query with no word: a usage error on both
                continue
            for commands_only in (False, True):
                want = lite.search(q, limit=1000, commands_only=commands_only)
                assert hit_view(pg.search(q, limit=1000, commands_only=commands_only)) == hit_view(want), repr(q)
            compared += 1
        assert compared > 200
    finally:
        lite.close()
        pg.close()


# --- hostile text ----------------------------------------------------------------------------------


def test_nul_bytes_are_stored_and_found_exactly(index: SearchIndex) -> None:
    """PostgreSQL text cannot hold NUL: it is stored escaped and comes back as it went in."""
    s = IndexedSession(path="/r/nul", session_id="id\x00x", user="eve\x00root", target="t\x00", login="l",
                       grant_id="g\x00", started_us=10**15, outcome="VALID", problem="p\x00", head="\ufdd0h")
    index.replace(s, [Row(0, 1, HitKind.OUTPUT, "foo\x00bar baz"), Row(1, 2, HitKind.COMMAND, "\ufdd0{marker}"),
                      Row(2, 3, HitKind.OUTPUT, "nul\x00 x")])
    assert index.sessions()["/r/nul"] == s.__class__(**{**_fields(s), "rows": 3})
    (hit,) = index.search("baz")
    assert hit.text == "foo\x00bar baz" and hit.session_id == "id\x00x" and hit.user == "eve\x00root"
    assert texts(index.search(["foo\x00bar"])) == ["foo\x00bar baz"]
    assert index.search(["o\x00b"]) == []  # `o` is not where a word starts
    assert texts(index.search("marker")) == ["\ufdd0{marker}"]
    assert texts(index.search("baz", user="eve\x00root")) == ["foo\x00bar baz"]
    assert index.search("baz", user="eve") == []
    assert index.remove("/r/nul") and index.sessions() == {}


def _fields(s: IndexedSession) -> dict:
    return {f: getattr(s, f) for f in s.__slots__}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("100%", ["100% done"]),
        ("a_b", ["a_b"]),
        ("c:\\temp", ["c:\\temp\\x"]),
        ("x\\%", ["x\\% y"]),
        ("_b", ["a_b"]),  # `_` separates words for FTS5: `b` starts one; `axb` is no match of `_`
    ],
)
def test_percent_underscore_and_backslash_in_a_query_are_literal(index: SearchIndex, query: str,
                                                                  expected: list[str]) -> None:
    index.replace(_session("/r/a"), _rows("100% done", "1000 done", "a_b", "axb", "c:\\temp\\x", "c:temp",
                                          "x\\% y", "x% y", "xx y"))
    assert texts(index.search([query])) == expected


def test_a_word_is_found_where_a_word_starts_not_inside_one(index: SearchIndex) -> None:
    index.replace(_session("/r/a"), _rows("application start", "webapp start", "Äpplication", "my-app", "APP_X"))
    assert texts(index.search("app")) == ["APP_X", "my-app", "application start"]
    assert texts(index.search("äpp")) == ["Äpplication"]
    assert texts(index.search("start")) == ["webapp start", "application start"]


# --- caps, chunks, truncation ----------------------------------------------------------------------


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    """Sessions hold 10 rows (both backends), so the cap is reached without millions of lines."""
    for module in (sqlite_search, pg_search):
        monkeypatch.setattr(module, "MAX_ROWS_PER_SESSION", 10)
    return 10


def test_a_session_over_the_row_cap_is_truncated_and_says_so(index: SearchIndex, small_cap: int) -> None:
    s = _session("/r/long")
    stored = index.replace(s, _rows(*(f"line-{i:02d} cap" for i in range(25))))
    assert (stored.rows, stored.truncated) == (small_cap, True)
    assert index.sessions()["/r/long"].truncated
    assert len(index.search("cap", limit=100)) == small_cap
    assert index.search("line-10") == []  # the rest was never indexed
    more = index.append(s, [Row(99, 99, HitKind.OUTPUT, "appended later")])
    assert more.truncated and more.rows == small_cap and index.search("appended") == []
    again = index.replace(s, _rows("fits now"))
    assert (again.rows, again.truncated) == (1, False)


def test_a_long_line_is_cut_at_the_cap_of_its_session(index: SearchIndex, small_cap: int) -> None:
    line = "".join(f"w{i:05d} " for i in range(5000))  # 35,000 characters: 10 chunks
    stored = index.replace(_session("/r/a"), _rows("first", line))
    assert stored.truncated and stored.rows == small_cap
    hits = index.search("w00001")
    assert len(hits) == 1 and len(hits[0].text) <= MAX_LINE_CHARS


def test_a_match_inside_the_overlap_of_two_chunks_is_one_hit(index: SearchIndex) -> None:
    step = MAX_LINE_CHARS - 256
    line = "x" * (step + 10) + " overlapped " + "y" * 8000
    index.replace(_session("/r/a"), _rows(line))
    (hit,) = index.search("overlapped")
    assert "overlapped" in hit.text


# --- filters ----------------------------------------------------------------------------------------


def test_since_user_target_session_and_a_set_of_sessions(index: SearchIndex) -> None:
    for n in range(6):
        index.replace(_session(f"/r/s{n}", user="alice" if n % 2 else "bob", target=f"t{n % 3}",
                               started_s=1_000 * (n + 1)), _rows(f"deploy {n}"))
    index.append(_session("/r/s5", user="alice", target="t2", started_s=6_000),
                 [Row(5, 5, HitKind.COMMAND, "deploy --cmd")])
    assert texts(index.search("deploy")) == ["deploy --cmd", "deploy 5", "deploy 4", "deploy 3", "deploy 2",
                                             "deploy 1", "deploy 0"]
    assert texts(index.search("deploy", since_us=4_000 * 10**6)) == ["deploy --cmd", "deploy 5", "deploy 4",
                                                                      "deploy 3"]
    assert index.search("deploy", since_us=7_000 * 10**6) == []
    assert texts(index.search("deploy", user="bob")) == ["deploy 4", "deploy 2", "deploy 0"]
    assert texts(index.search("deploy", target="t0", user="alice")) == ["deploy 3"]
    assert texts(index.search("deploy", user="alice", since_us=5_000 * 10**6)) == ["deploy --cmd", "deploy 5"]
    assert texts(index.search("deploy", commands_only=True)) == ["deploy --cmd"]
    assert texts(index.search("deploy", session_id="s2")) == ["deploy 2"]
    assert texts(index.search("deploy", session_ids={"s1", "s4", "nope"})) == ["deploy 4", "deploy 1"]
    assert index.search("deploy", session_ids=set()) == []
    assert texts(index.search("deploy", limit=3)) == ["deploy --cmd", "deploy 5", "deploy 4"]
    assert index.search("deploy", limit=0) == []


def test_a_filter_matching_hundreds_of_sessions_scans_once_and_keeps_the_order(index: SearchIndex) -> None:
    """Over 200 sessions a filter is checked on one newest-first scan instead of per session."""
    for n in range(230):
        index.replace(_session(f"/r/{n:03d}", user="many" if n % 10 else "few", started_s=10_000 + n),
                      _rows(f"needle {n:03d}", "other"))
    many = index.search("needle", user="many", limit=1000)
    assert len(many) == 207 and texts(many)[:2] == ["needle 229", "needle 228"]
    assert texts(index.search("needle", user="few", limit=3)) == ["needle 220", "needle 210", "needle 200"]
    chosen = {f"{n:03d}" for n in range(0, 230, 7)}
    got = index.search("needle", session_ids=chosen, limit=1000)
    assert [h.session_id for h in got] == sorted(chosen, reverse=True)


def test_many_hits_are_returned_newest_first_across_pages(index: SearchIndex) -> None:
    index.replace(_session("/r/old", started_s=100), _rows(*(f"row {i} common" for i in range(3000))))
    index.replace(_session("/r/new", started_s=200), _rows(*(f"row {i} common" for i in range(3000))))
    hits = index.search("common", limit=10_000)
    assert len(hits) == 6000
    assert [h.path for h in hits[:3000]] == ["/r/new"] * 3000
    assert [h.t_us for h in hits[:3]] == [2999_000_000, 2998_000_000, 2997_000_000]


# --- writing: update, atomicity, remove, clear ------------------------------------------------------


def test_update_is_called_once_the_rows_are_read_and_its_entry_is_stored(index: SearchIndex) -> None:
    read: list[int] = []

    def rows():
        for i in range(3):
            read.append(i)
            yield Row(i, i, HitKind.OUTPUT, f"line {i}")

    def update(s: IndexedSession) -> IndexedSession:
        assert read == [0, 1, 2], "update before the rows were all read"
        return IndexedSession(**{**_fields(s), "outcome": "CORRUPT", "problem": "hash-mismatch", "bad_frame": 7,
                                 "rows": 999})

    stored = index.replace(_session("/r/a"), rows(), update=update)
    assert (stored.outcome, stored.problem, stored.bad_frame, stored.rows) == ("CORRUPT", "hash-mismatch", 7, 3)
    assert index.sessions()["/r/a"] == stored
    assert index.search("line 1")[0].outcome == "CORRUPT"


class Boom(Exception):
    pass


def _failing(*texts_: str):
    for i, t in enumerate(texts_):
        yield Row(i, i, HitKind.OUTPUT, t)
    raise Boom("the recording could not be read")


def test_a_failing_rows_iterator_leaves_the_old_rows_and_entry(index: SearchIndex) -> None:
    s = _session("/r/a")
    before = index.replace(s, _rows("kept one", "kept two"))
    for write in (index.replace, index.append):
        with pytest.raises(Boom):
            write(s, _failing("lost three", "lost four"))
        assert sorted(texts(index.search("kept"))) == ["kept one", "kept two"]
        assert index.search("lost") == [] and index.sessions() == {"/r/a": before}
    with pytest.raises(Boom):
        index.replace(_session("/r/new"), _failing("never"))
    assert set(index.sessions()) == {"/r/a"}

    def bad_update(_: IndexedSession) -> IndexedSession:
        raise Boom("verification crashed")

    with pytest.raises(Boom):
        index.replace(s, _rows("lost again"), update=bad_update)
    assert sorted(texts(index.search("kept"))) == ["kept one", "kept two"]


def test_remove_and_clear(index: SearchIndex) -> None:
    index.replace(_session("/r/a"), _rows("alpha"))
    index.replace(_session("/r/b", started_s=5), _rows("alpha beta"))
    assert index.remove("/r/a") and not index.remove("/r/a") and not index.remove("/r/never")
    assert texts(index.search("alpha")) == ["alpha beta"]
    index.clear()
    assert index.sessions() == {} and index.search("alpha") == []
    index.replace(_session("/r/a"), _rows("alpha again"))  # usable after clear
    assert texts(index.search("alpha")) == ["alpha again"]


def test_append_continues_a_session_and_creates_a_new_one(index: SearchIndex) -> None:
    s = _session("/r/live")
    first = index.append(s, _rows("part one"))
    second = index.append(IndexedSession(**{**_fields(s), "outcome": "LIVE"}), _rows("part two"))
    assert (first.rows, second.rows) == (1, 2) and index.sessions()["/r/live"].outcome == "LIVE"
    assert texts(index.search("part")) == ["part two", "part one"]


# --- concurrency ------------------------------------------------------------------------------------


def test_a_search_does_not_wait_for_an_indexing_transaction(opener: Opener) -> None:
    writer = opener()
    writer.replace(_session("/r/old"), _rows("already indexed"))
    inside, release = threading.Event(), threading.Event()

    def slow_rows():
        yield Row(0, 1, HitKind.OUTPUT, "being indexed")
        inside.set()
        release.wait(30)

    t = threading.Thread(target=lambda: writer.replace(_session("/r/new"), slow_rows()))
    t.start()
    try:
        assert inside.wait(10)
        handles = [opener()]
        if isinstance(writer, PostgresSearchIndex):
            handles.append(writer)  # its pool: another thread searches on the same object
        for ix in handles:
            result: list = []
            reader = threading.Thread(target=lambda ix=ix: result.append(ix.search("indexed")))
            reader.start()
            reader.join(10)
            assert result and texts(result[0]) == ["already indexed"], "the search waited for the writer"
    finally:
        release.set()
        t.join(30)
    assert sorted(texts(writer.search("indexed"))) == ["already indexed", "being indexed"]


def test_searches_while_another_thread_indexes_see_whole_sessions_only(opener: Opener) -> None:
    ix = opener()
    stop = threading.Event()
    errors: list[BaseException] = []

    def index_sessions() -> None:
        try:
            for n in range(40):
                ix.replace(_session(f"/r/{n}", started_s=1_000 + n), _rows(*(f"tick {n} {i}" for i in range(50))))
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=index_sessions)
    t.start()
    searches = 0
    while not stop.is_set() or searches == 0:
        hits = ix.search("tick", limit=100_000)
        per_session: dict[str, int] = {}
        for h in hits:
            per_session[h.path] = per_session.get(h.path, 0) + 1
        assert set(per_session.values()) <= {50}, "a search saw part of a session's rows"
        searches += 1
    t.join(60)
    assert not errors and searches >= 1
    assert len(ix.search("tick", limit=100_000)) == 40 * 50


def test_writers_in_parallel_with_sessions_started_the_same_millisecond_keep_every_row(opener: Opener) -> None:
    """Several bastions (handles) indexing at once, all sessions in one millisecond: each gets a
    key of its own, none loses a row, and re-indexing one replaces only its own rows."""
    handles = [opener() for _ in range(4)]
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            for n in range(10):
                handles[w].replace(_session(f"/r/w{w}-{n}", started_s=7_000), _rows(f"twin w{w} n{n}", "twin again"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ix = handles[0]
    assert len(ix.sessions()) == 40 and len(ix.search("twin", limit=1000)) == 80
    ix.replace(_session("/r/w2-3", started_s=7_000), _rows("replaced"))
    assert len(ix.search("twin", limit=1000)) == 78 and texts(ix.search("replaced")) == ["replaced"]
    assert {h.path for h in ix.search("twin w2", limit=100)} == {f"/r/w2-{n}" for n in range(10)} - {"/r/w2-3"}


# --- PostgreSQL only: schema, errors, outages --------------------------------------------------------


def test_tables_of_another_schema_version_are_rebuilt_not_trusted(postgres_url: str) -> None:
    ix = PostgresSearchIndex(postgres_url)
    ix.replace(_session("/r/a"), _rows("needle"))
    ix.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE search_meta SET value = '999' WHERE key = 'schema_version'")
    ix = PostgresSearchIndex(postgres_url)
    try:
        assert ix.sessions() == {} and ix.search("needle") == []
        ix.replace(_session("/r/a"), _rows("needle"))
        assert texts(ix.search("needle")) == ["needle"]
    finally:
        ix.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE search_meta")  # half made: lines and sessions without a version
    ix = PostgresSearchIndex(postgres_url)
    try:
        assert ix.sessions() == {}
    finally:
        ix.close()


def test_two_processes_opening_a_new_index_at_once_make_it_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    opened: list[PostgresSearchIndex] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait(10)
        try:
            opened.append(PostgresSearchIndex(postgres_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert not errors, errors
        opened[0].replace(_session("/r/a"), _rows("made once"))
        assert all(texts(ix.search("made")) == ["made once"] for ix in opened)
    finally:
        for ix in opened:
            ix.close()


def test_an_unreachable_server_is_one_error_and_never_shows_the_password() -> None:
    url = f"postgresql://zsp:s3cret-pw@127.0.0.1:{free_port()}/zsp"
    with pytest.raises(SearchIndexError) as err:
        PostgresSearchIndex(url, connect_timeout=2)
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
    assert str(err.value).startswith("search index postgresql://zsp:***@127.0.0.1:") and "\n" not in str(err.value)


def test_a_missing_database_is_an_error_naming_it_without_the_password(postgres_cluster: PostgresCluster) -> None:
    url = f"postgresql://zsp:s3cret-pw@127.0.0.1:{postgres_cluster.port}/no_such_db"
    with pytest.raises(SearchIndexError) as err:
        PostgresSearchIndex(url)
    assert "s3cret-pw" not in str(err.value) and "no_such_db" in err.value.reason


def test_without_pg_trgm_the_error_says_what_is_missing(postgres_cluster: PostgresCluster) -> None:
    """A role that may not create the extension (nor has it): a clear error, not a crash."""
    url = postgres_cluster.database()
    role = "r_" + uuid.uuid4().hex[:12]
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_cluster.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
    limited = url.replace("postgresql://zsp@", f"postgresql://{role}:pw@")
    with pytest.raises(SearchIndexError) as err:
        PostgresSearchIndex(limited)
    assert "pg_trgm" in err.value.reason and "CREATE EXTENSION" in err.value.reason
    assert ":pw@" not in str(err.value)


def test_a_server_restart_is_an_error_while_down_and_works_again_after(postgres_cluster: PostgresCluster) -> None:
    ix = PostgresSearchIndex(postgres_cluster.database(), connect_timeout=1)
    try:
        ix.replace(_session("/r/a"), _rows("survives restarts"))
        postgres_cluster.stop()
        try:
            with pytest.raises(SearchIndexError):
                ix.search("survives")
            with pytest.raises(SearchIndexError):
                ix.replace(_session("/r/b"), _rows("while down"))
        finally:
            postgres_cluster.start()
        # The pool reconnects: within a few seconds (its reconnect back-off; the machine may be busy).
        deadline = time.monotonic() + 15
        while True:
            try:
                assert texts(ix.search("survives")) == ["survives restarts"]
                break
            except SearchIndexError:
                if time.monotonic() > deadline:
                    raise
    finally:
        ix.close()


def test_the_index_lives_beside_the_store_in_its_own_tables(postgres_url: str) -> None:
    ix = PostgresSearchIndex(postgres_url)
    ix.close()
    with psycopg.connect(postgres_url) as conn:
        names = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    assert names == {"search_meta", "search_sessions", "search_lines"}


def test_open_index_follows_the_store_url(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from zsp_tui.datadir import DataDir
    from zsp_tui.indexing import index_exists, index_location, open_index

    d = DataDir(tmp_path / "data")
    d.root.mkdir()
    monkeypatch.delenv("ZSP_DATABASE_URL", raising=False)
    ix = open_index(d)
    assert isinstance(ix, SqliteSearchIndex) and index_location(d).endswith("search.db")
    ix.close()
    url = postgres_url.replace("zsp@", "zsp:hidden@")
    monkeypatch.setenv("ZSP_DATABASE_URL", url)
    ix = open_index(d)
    try:
        assert isinstance(ix, PostgresSearchIndex) and index_exists(d)
        assert "hidden" not in index_location(d) and index_location(d).startswith("postgresql://")
    finally:
        ix.close()


# --- end to end: a data dir whose store is PostgreSQL ------------------------------------------------


def test_zsp_index_and_search_on_a_data_dir_whose_store_is_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """`[store] url` in zsp.toml: `zsp index` fills the search tables of that database (no
    search.db), `zsp search` answers from them, names them with the password hidden, and a
    rebuild gives the same answers as incremental indexing."""
    url = postgres_url.replace("postgresql://zsp@", "postgresql://zsp:db-pw-7@")  # trust auth ignores it
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "ZSP_DATABASE_URL"}

    def zsp(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True,
                              env={**env, "ZSP_DATA": str(data), **extra}, timeout=120)

    p = zsp("init", ZSP_DATABASE_URL=url)
    assert p.returncode == 0, p.stderr
    config = data / "zsp.toml"
    text = config.read_text()
    assert '# url = "postgresql://' in text
    config.write_text(text.replace('# url = "postgresql://zsp@db.internal:5432/zsp"', f'url = "{url}"', 1))
    key = SigningKey.load(data / "keys" / "recording_ed25519")
    ids = []
    for n, user in enumerate(("alice", "bob")):
        sid = uuid.uuid4()
        s = Script(data / "recordings" / f"{sid}.zsprec", key, user=user, session_id=sid,
                   wall_start_ns=WALL_START_NS + n * 10**9)
        s.at(1).out(b"$ ")
        s.at(2).key(b"rm -rf /srv/app_1%\r").out(b"rm -rf /srv/app_1%\r\nremoved \x1b[1m'/srv/app_1%'\x1b[0m\r\n$ ")
        s.close()
        ids.append(str(sid))

    p = zsp("search", "rm")
    assert p.returncode == 1 and "zsp index" in p.stderr  # nothing indexed yet: stale, said so
    p = zsp("index")
    assert p.returncode == 0 and "2 recording(s) indexed" in p.stderr, p.stderr
    assert "db-pw-7" not in p.stderr and "postgresql://zsp:***@" in p.stderr
    assert not (data / "search.db").exists() and not (data / "zsp.db").exists()

    p = zsp("search", "--json", "rm", "-rf", "/srv/app_1%")
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    assert {(h["kind"], h["user"]) for h in hits} == {(k, u) for k in ("command", "output") for u in ("alice", "bob")}
    assert hits[0]["session_id"] == ids[1]  # newest first
    cmd = next(h for h in hits if h["kind"] == "command")
    assert cmd["text"] == "rm -rf /srv/app_1%" and cmd["play"].startswith("zsp play ")
    p = zsp("search", "--json", "app_1%", "--user", "alice", "--commands-only")
    assert [(h["user"], h["kind"]) for h in json.loads(p.stdout)] == [("alice", "command")]
    assert zsp("search", "--json", "app_2%").returncode == 1  # `_` and `%` are literal
    p = zsp("search", "srv", "app")
    assert p.returncode == 0 and "\x1b" not in p.stdout and "zsp index" not in p.stderr

    incremental = zsp("search", "--json", "--limit", "100", "srv").stdout
    p = zsp("index", "--rebuild")
    assert p.returncode == 0 and "2 recording(s) indexed" in p.stderr
    assert zsp("search", "--json", "--limit", "100", "srv").stdout == incremental
    with psycopg.connect(postgres_url) as conn:
        got = conn.execute("SELECT count(*) FROM search_sessions").fetchone()
    assert got == (2,)

    (data / "recordings" / f"{ids[0]}.zsprec").unlink()
    p = zsp("index")
    assert "1 recording(s) no longer on disk" in p.stderr
    assert [h["user"] for h in json.loads(zsp("search", "--json", "rm").stdout)] == ["bob", "bob"]


def test_the_embedded_default_never_loads_the_postgresql_driver(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from zsp_tui.datadir import DataDir; "
        "from zsp_tui.indexing import open_index; import replay; "
        f"d = DataDir(Path({str(tmp_path)!r})); open_index(d).close(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ZSP_DATABASE_URL"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
