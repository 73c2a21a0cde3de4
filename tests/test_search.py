"""Search: the index (real SQLite FTS5), queries as people type them, recordings written with the
real RecordingWriter, verified and scanned through the real emulator, and `zsp search`/`zsp index`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from recorder import SigningKey
from replay import (
    HitKind,
    IndexedSession,
    QueryError,
    Row,
    SqliteSearchIndex,
    index_recording,
    parse_query,
)
from tests.search_helpers import WALL_START_NS, Script

# --- the index and its queries ---------------------------------------------------------------


def _session(path: str, user: str = "alice", target: str = "db1", started_s: int = 1_790_000_000) -> IndexedSession:
    return IndexedSession(
        path=path,
        session_id=path.rsplit("/", 1)[-1],
        user=user,
        target=target,
        login="root",
        grant_id=None,
        started_us=started_s * 1_000_000,
        outcome="VALID",
    )


def _rows(*texts: str, kind: HitKind = HitKind.OUTPUT) -> list[Row]:
    return [Row(t_us=i * 1_000_000, frame=i + 1, kind=kind, text=t) for i, t in enumerate(texts)]


@pytest.fixture
def index(tmp_path: Path):
    ix = SqliteSearchIndex(tmp_path / "search.db")
    yield ix
    ix.close()


def texts(hits) -> list[str]:
    return [h.text for h in hits]


def test_rows_being_made_do_not_hold_the_write_lock_against_another_writer(tmp_path: Path) -> None:
    """Rows come from emulating a recording (minutes for hostile output). Made inside the write
    transaction, they held SQLite's one writer lock that long: the bastion's other indexing lane
    (another process) waited, then failed. They are spooled first (in the index's directory,
    unlinked at once), so another writer stores its rows while the first is still making its own."""
    import threading

    first, second = SqliteSearchIndex(tmp_path / "search.db"), SqliteSearchIndex(tmp_path / "search.db")
    made_one, stored_other = threading.Event(), threading.Event()

    def slow_rows():
        yield Row(0, 1, HitKind.OUTPUT, "first slow row")
        made_one.set()
        assert stored_other.wait(20), "the other writer never got the lock"
        yield Row(1, 2, HitKind.COMMAND, "second slow row", True)

    worker = threading.Thread(target=lambda: first.replace(_session("/r/slow"), slow_rows()))
    worker.start()
    try:
        assert made_one.wait(10)
        second.replace(_session("/r/quick"), _rows("quick needle"))  # waited 30 s, then failed
        stored_other.set()
    finally:
        stored_other.set()
        worker.join(30)
    assert texts(second.search("needle")) == ["quick needle"]
    hits = second.search("slow")
    assert sorted((h.text, h.kind) for h in hits) == [
        ("first slow row", HitKind.OUTPUT),
        ("second slow row", HitKind.COMMAND),
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("zsp-rows")] == []
    first.close()
    second.close()


def test_punctuation_counts(index: SqliteSearchIndex) -> None:
    index.replace(_session("/r/a"), _rows("rm -rf /srv/app", "rm rf srv app", "rm -rf /srv/application-x", "rm -rf /srv"))
    assert texts(index.search("rm -rf /srv/app")) == ["rm -rf /srv/application-x", "rm -rf /srv/app"]
    assert texts(index.search(["rm", "-rf", "/srv/app"])) == ["rm -rf /srv/application-x", "rm -rf /srv/app"]
    assert "rm rf srv app" not in texts(index.search("rm -rf"))
    assert texts(index.search("RM -RF /SRV/APP")) == texts(index.search("rm -rf /srv/app"))  # case-insensitive


def test_a_quoted_part_is_a_phrase(index: SqliteSearchIndex) -> None:
    index.replace(_session("/r/a"), _rows("DROP TABLE users;", "drop the table", "TABLE DROP", "drop  table x"))
    assert texts(index.search('"DROP TABLE"')) == ["DROP TABLE users;"]
    assert texts(index.search(["DROP TABLE"])) == ["DROP TABLE users;"]  # the shell removed the quotes
    assert set(texts(index.search("drop table"))) == {"DROP TABLE users;", "drop the table", "TABLE DROP", "drop  table x"}
    # spans for highlighting point at the match in the stored text
    (hit,) = index.search('"drop table" users')
    assert [hit.text[a:b] for a, b in hit.spans] == ["DROP TABLE", "users"]


@pytest.mark.parametrize(
    "query",
    ["a AND OR NOT (", "foo'bar", '"unclosed', "NEAR(a b)", "x:y", "^start", "a*", "col : x", '"" x', "{a b}: c",
     "-x", "+x", "a OR", "x)", "\\x", "NOT x"],
)
def test_fts5_syntax_never_reaches_the_user(index: SqliteSearchIndex, query: str) -> None:
    index.replace(_session("/r/a"), _rows("a AND OR NOT ( unclosed col foo'bar NEAR(a b) x:y ^start a* -x +x x) \\x NOT x {a b}: c"))
    hits = index.search(query)  # never an sqlite3 error
    assert len(hits) == 1


@pytest.mark.parametrize("query", ["", "   ", "*", "-", '""', "(", ["--", "*"], [], ['"', "'"]])
def test_a_query_without_a_word_is_a_usage_error(query) -> None:
    with pytest.raises(QueryError) as err:
        parse_query(query)
    assert err.value.reason


def test_replacing_a_session_never_duplicates_and_is_atomic(index: SqliteSearchIndex) -> None:
    s = _session("/r/a")
    index.replace(s, _rows("needle one", "needle two"))
    index.replace(s, _rows("needle one", "needle two"))
    assert len(index.search("needle")) == 2
    assert index.sessions()["/r/a"].rows == 2

    def broken():
        yield Row(0, 1, HitKind.OUTPUT, "needle three")
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(Exception):  # noqa: B017 - the error surfaces as SearchIndexError
        index.replace(s, broken())
    assert sorted(texts(index.search("needle"))) == ["needle one", "needle two"]  # the old rows stand


def test_newest_first_filters_and_commands_only(index: SqliteSearchIndex) -> None:
    index.replace(_session("/r/old", user="alice", started_s=1_000), _rows("deploy old"))
    index.replace(_session("/r/mid", user="bob", target="web", started_s=2_000), _rows("deploy mid"))
    index.replace(_session("/r/new", user="alice", started_s=3_000), _rows("deploy new"))
    index.append(_session("/r/new", user="alice", started_s=3_000), [Row(9, 9, HitKind.COMMAND, "deploy --now")])
    assert texts(index.search("deploy")) == ["deploy --now", "deploy new", "deploy mid", "deploy old"]
    assert texts(index.search("deploy", user="alice")) == ["deploy --now", "deploy new", "deploy old"]
    assert texts(index.search("deploy", target="web")) == ["deploy mid"]
    assert texts(index.search("deploy", since_us=2_000 * 10**6)) == ["deploy --now", "deploy new", "deploy mid"]
    assert texts(index.search("deploy", commands_only=True)) == ["deploy --now"]
    assert texts(index.search("deploy", limit=2)) == ["deploy --now", "deploy new"]
    assert index.search("deploy", user="nobody") == []
    # two sessions starting in the same millisecond both keep their rows
    index.replace(_session("/r/twin1", started_s=5_000), _rows("twin"))
    index.replace(_session("/r/twin2", started_s=5_000), _rows("twin"))
    assert sorted(h.path for h in index.search("twin")) == ["/r/twin1", "/r/twin2"]


def test_a_huge_line_is_found_at_both_ends_and_across_a_cut(index: SqliteSearchIndex) -> None:
    line = "a" * 5000 + " middle-needle " + "b" * 3_000_000 + " tail-needle"
    index.replace(_session("/r/a"), _rows(line))
    for q in ("middle-needle", "tail-needle"):
        (hit,) = index.search(q)
        assert len(hit.text) <= 4096 and q in hit.text
    index.replace(_session("/r/b"), _rows("x" * 4000 + " across-the-cut " + "y" * 200))
    assert len(index.search("across-the-cut")) == 1


def test_an_index_of_another_schema_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    p = tmp_path / "search.db"
    ix = SqliteSearchIndex(p)
    ix.replace(_session("/r/a"), _rows("needle"))
    ix.close()
    db = sqlite3.connect(p)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    ix = SqliteSearchIndex(p)
    assert ix.sessions() == {} and ix.search("needle") == []
    ix.close()


# --- recordings: verified, scanned, indexed ---------------------------------------------------


def shell_session(path: Path, key: SigningKey, **kw) -> tuple[Path, dict[str, int]]:
    """A bash-like session on a 40x5 screen; returns the frame index of each interesting moment."""
    s = Script(path, key, cols=40, rows=5, **kw)
    f = {}
    s.at(1).out(b"$ ")
    s.at(2).key(b"echo hel").out(b"echo hel")
    s.at(2.5).key(b"\t").out(b"lo ")
    f["enter1"] = s.frame()
    s.at(3).key(b"world\r")
    s.at(3.25).out(b"world\r\nhello world\r\n$ ")
    f["ls"] = s.frame()
    s.at(10).key(b"ls -l /srv/app\r")
    f["total"] = s.frame()
    s.at(10.5).out(b"ls -l /srv/app\r\ntotal 0\r\n")
    f["listing"] = s.frame()
    s.at(11).out(b"-rw-r--r-- 1 root root 0 app.conf\r\n$ ")
    for i in range(8):  # push everything above off the 5-row screen
        s.at(20 + i).key(b"true\r").out(b"true\r\n$ ")
    f["last"] = s.frame()
    s.at(40).out(b"final-line on screen\r\n$ ")
    s.close()
    return path, f


def test_hits_land_on_the_right_second_and_frame(tmp_path: Path, key: SigningKey, index: SqliteSearchIndex) -> None:
    path, f = shell_session(tmp_path / "s.zsprec", key)
    stored = index_recording(index, path, [key.public])
    assert stored.outcome == "VALID" and stored.rows > 0 and stored.indexed_bytes == path.stat().st_size

    (cmd,) = index.search("ls -l /srv/app", commands_only=True)
    assert (cmd.kind, cmd.text, cmd.frame, cmd.t_us) == (HitKind.COMMAND, "ls -l /srv/app", f["ls"], 10_000_000)
    (tab,) = index.search("echo hello world", commands_only=True)  # tab completion resolved
    assert (tab.frame, tab.t_us) == (f["enter1"], 3_000_000)
    # output lines that scrolled off: the output frame that wrote them
    (out,) = index.search("app.conf")
    assert (out.kind, out.frame, out.t_us) == (HitKind.OUTPUT, f["listing"], 11_000_000)
    (total,) = index.search("total 0")
    assert (total.frame, total.t_us) == (f["total"], 10_500_000)
    # the screen still visible at the end
    (final,) = index.search("final-line")
    assert (final.frame, final.t_us, final.text) == (f["last"], 40_000_000, "$ final-line on screen")
    assert final.session_id == stored.session_id and final.user == "alice" and final.target == "db1"


def test_reindexing_a_recording_does_not_duplicate_hits(tmp_path: Path, key: SigningKey, index: SqliteSearchIndex) -> None:
    path, _ = shell_session(tmp_path / "s.zsprec", key)
    first = index_recording(index, path, [key.public])
    before = [(h.frame, h.text) for h in index.search("true", limit=1000)]
    second = index_recording(index, path, [key.public])
    assert first.rows == second.rows
    assert [(h.frame, h.text) for h in index.search("true", limit=1000)] == before


def test_untrusted_signer_indexes_nothing(tmp_path: Path, key: SigningKey, other_key: SigningKey,
                                         index: SqliteSearchIndex) -> None:
    path, _ = shell_session(tmp_path / "s.zsprec", key)
    stored = index_recording(index, path, [other_key.public])
    assert stored.outcome == "CORRUPT" and stored.problem == "untrusted-signer"
    assert index.search("hello") == []


def test_a_transferred_file_path_is_found_at_the_moment_it_was_closed(tmp_path: Path, key: SigningKey,
                                                                       index: SqliteSearchIndex) -> None:
    """``sftp.file`` events are indexed as output rows (replay/_indexer.py ``file_row``), path escaped,
    in time order with the screen's lines; run on both backends (tests/test_search_postgres.py)."""
    s = Script(tmp_path / "f.zsprec", key)
    s.at(1).out(b"before\r\n")
    frame = s.frame()
    s.at(2).w.event("sftp.file", "", path="/srv/out/report.csv\x1b[2J", direction="upload", size=8,
                    sha256="ab" * 32, content_kept=8, content_complete=True)
    s.at(3).w.event("sftp.file_incomplete", "", path="/srv/big.tar", uploaded=0, downloaded=5, content_kept=5)
    s.at(4).out(b"after report\r\n")
    index_recording(index, s.close(), [key.public])
    (hit,) = index.search("report.csv")
    assert (hit.frame, hit.t_us, hit.kind) == (frame, 2_000_000, HitKind.OUTPUT)
    assert hit.text == f"[sftp upload] /srv/out/report.csv\\x1b[2J (8 bytes, sha256 {'ab' * 32})"
    (cut,) = index.search("big.tar")
    assert cut.text == "[sftp download, cut] /srv/big.tar (5 bytes)" and cut.t_us == 3_000_000
    assert texts(index.search("sftp")) == [cut.text, hit.text]  # newest first


def test_corrupt_recording_is_indexed_up_to_its_break_and_marked(tmp_path: Path, key: SigningKey,
                                                                 index: SqliteSearchIndex) -> None:
    s = Script(tmp_path / "c.zsprec", key, checkpoint_frames=4)
    for i in range(40):
        s.at(i).out(f"line-{i:02d} marker\r\n".encode())
    path = s.close()
    data = bytearray(path.read_bytes())
    at = data.index(b"line-30 marker")
    data[at : at + 7] = b"LINE-99"  # a forger's edit, without the key
    path.write_bytes(bytes(data))
    stored = index_recording(index, path, [key.public])
    assert stored.outcome == "CORRUPT" and stored.problem == "hash-mismatch" and stored.bad_frame is not None
    found = {h.text for h in index.search("marker", limit=1000)}
    assert "line-10 marker" in found
    assert not any(t.startswith(("line-3", "LINE")) for t in found)  # nothing at or after the break
    (hit,) = index.search("line-10")
    assert hit.outcome == "CORRUPT"


def test_hostile_output_is_indexed_as_the_screen_showed_it(tmp_path: Path, key: SigningKey,
                                                           index: SqliteSearchIndex) -> None:
    s = Script(tmp_path / "h.zsprec", key, user="eve\x1b[2J", target="t\nforged")
    s.at(1).out(b"\x1b]52;c;ZXZpbA==\x07\x1b]0;title\x07\x1b[6nvisible \x1b[31mred\x1b[0m text\r\n")
    s.at(2).out(b"bad \xff\xfe bytes \xe2\x82 end\r\n")
    path = s.close()
    index_recording(index, path, [key.public])
    (hit,) = index.search("visible red")
    assert hit.text == "visible red text" and hit.user == "eve\x1b[2J" and hit.target == "t\nforged"
    (bad,) = index.search("bytes end")
    assert "\ufffd" in bad.text and all(c >= " " for c in bad.text)


def test_no_pty_session_lines_are_split_on_newlines(tmp_path: Path, key: SigningKey, index: SqliteSearchIndex) -> None:
    s = Script(tmp_path / "e.zsprec", key, cols=0, rows=0, term="")
    s.at(1).out(b"alpha one\nbeta two\n")
    path = s.close()
    index_recording(index, path, [key.public])
    assert texts(index.search("beta")) == ["beta two"]


def test_ten_megabytes_without_a_newline_and_many_lines(tmp_path: Path, key: SigningKey,
                                                       index: SqliteSearchIndex) -> None:
    s = Script(tmp_path / "big.zsprec", key)
    s.at(1).out(b"start-marker ")
    chunk = b"0123456789" * 6000
    for i in range(170):  # ~10 MB, no newline
        s.at(1 + i / 1000).out(chunk)
    s.at(2).out(b" end-marker\r\n")
    path = s.close()
    stored = index_recording(index, path, [key.public])
    assert stored.outcome == "VALID"
    assert len(index.search("start-marker")) == 1 and len(index.search("end-marker")) == 1

    s = Script(tmp_path / "many.zsprec", key)
    block = b"".join(b"row %06d here\r\n" % i for i in range(1000))
    for j in range(100):
        s.at(j).out(block.replace(b"here", b"h%03d" % j))
    path = s.close()
    stored = index_recording(index, path, [key.public])
    assert stored.rows >= 100_000
    (hit,) = index.search("row 000500 h042")
    assert hit.t_us == 42_000_000


# --- the CLI ---------------------------------------------------------------------------------


def zsp(data: Path, *args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZSP_DATA=str(data))
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    p = zsp(d, "init")
    assert p.returncode == 0, p.stderr
    return d


def recording_key(data: Path) -> SigningKey:
    return SigningKey.load(data / "keys" / "recording_ed25519")


def test_zsp_search_json_is_exact_and_human_output_is_escaped(data: Path) -> None:
    key = recording_key(data)
    s = Script(data / "recordings" / "x.zsprec", key, user='mallory"\x1b]0;pwn\x07', login="root")
    s.at(1).out(b'$ ')
    s.at(2).key(b"echo 'DROP TABLE' \"q\"\r").out(b"echo 'DROP TABLE' \"q\"\r\n\x1b[1mDROP TABLE\x1b[0m \"q\" \\ \xff\r\n$ ")
    s.close()
    assert zsp(data, "index").returncode == 0
    p = zsp(data, "search", "--json", '"DROP TABLE"')
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    assert {h["kind"] for h in hits} == {"command", "output"}
    out = next(h for h in hits if h["kind"] == "output" and h["text"].startswith("DROP"))
    assert out["text"] == 'DROP TABLE "q" \\ \ufffd'
    assert out["user"] == 'mallory"\x1b]0;pwn\x07' and out["target"] == "db1"
    assert out["t"] == 2.0 and isinstance(out["frame"], int) and out["session_id"]
    cmd = next(h for h in hits if h["kind"] == "command")
    assert cmd["text"] == "echo 'DROP TABLE' \"q\""

    p = zsp(data, "search", "DROP", "TABLE")
    assert p.returncode == 0 and "\x1b" not in p.stdout and "\x07" not in p.stdout
    assert "mallory\"\\x1b]0;pwn\\x07" in p.stdout
    assert f"zsp play {out['session_id']}" not in p.stdout  # the file is not named by its id: a path
    assert "--from 2.000" in p.stdout


def test_zsp_search_options_anywhere_and_words_with_dashes(data: Path) -> None:
    key = recording_key(data)
    sid = None
    for user, text in (("alice", b"rm -rf /srv/app"), ("bob", b"rm -rf /srv/app")):
        s = Script(data / "recordings" / f"{user}.zsprec", key, user=user)
        sid = str(s.w.session_id) if user == "bob" else sid
        s.at(3).out(text + b"\r\n")
        s.close()
    zsp(data, "index")
    p = zsp(data, "search", "rm", "-rf", "/srv/app", "--user", "bob", "--json")
    assert p.returncode == 0, p.stderr
    assert [h["user"] for h in json.loads(p.stdout)] == ["bob"]
    p = zsp(data, "search", "--since", "7d", "--json", "--", "-rf")
    assert p.returncode == 1 and json.loads(p.stdout) == []  # recorded in 2026-09 (the test clock): too old
    p = zsp(data, "search", "--since", "2020-01-01", "--json", "--", "-rf", "/srv/app")
    assert len(json.loads(p.stdout)) == 2


@pytest.mark.parametrize("args", [["search", "*"], ["search"], ["search", "x", "--since", "yesterday-ish"],
                                  ["search", "x", "--limit", "0"], ["search", "x", "--user"]])
def test_zsp_search_usage_errors_are_one_line(data: Path, args: list[str]) -> None:
    p = zsp(data, *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("zsp: error: ") and len(p.stderr.strip().splitlines()) == 1


def test_zsp_search_says_when_the_index_is_stale_and_index_fixes_it(data: Path) -> None:
    key = recording_key(data)
    s = Script(data / "recordings" / "a.zsprec", key)
    s.at(1).out(b"first-session\r\n")
    s.close()
    p = zsp(data, "search", "first-session")
    assert p.returncode == 1 and "zsp index" in p.stderr
    assert zsp(data, "index").returncode == 0
    s = Script(data / "recordings" / "b.zsprec", key)
    s.at(1).out(b"second-session\r\n")
    s.close()
    p = zsp(data, "search", "first-session")
    assert p.returncode == 0 and "1 of 2 recordings" in p.stderr and "zsp index" in p.stderr
    p = zsp(data, "index")
    assert p.returncode == 0 and "1 recording(s) indexed" in p.stderr
    p = zsp(data, "search", "second-session")
    assert p.returncode == 0 and "zsp index" not in p.stderr
    (data / "recordings" / "a.zsprec").unlink()
    p = zsp(data, "index")
    assert "1 recording(s) no longer on disk" in p.stderr
    assert zsp(data, "search", "first-session").returncode == 1


def test_rebuild_equals_incremental(data: Path) -> None:
    key = recording_key(data)
    for i in range(4):
        shell_session(data / "recordings" / f"s{i}.zsprec", key, wall_start_ns=WALL_START_NS + i * 10**9)
        assert zsp(data, "index").returncode == 0
    bad = data / "recordings" / "s2.zsprec"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(bytes(raw))
    p = zsp(data, "index")
    assert "CORRUPT" in p.stderr
    incremental = zsp(data, "search", "--json", "--limit", "1000", "e").stdout
    p = zsp(data, "index", "--rebuild")
    assert p.returncode == 0 and "4 recording(s) indexed" in p.stderr
    assert zsp(data, "search", "--json", "--limit", "1000", "e").stdout == incremental
    db = sqlite3.connect(data / "search.db")
    assert db.execute("SELECT outcome FROM sessions WHERE path LIKE '%s2.zsprec'").fetchone() == ("CORRUPT",)


def test_a_search_does_not_wait_for_an_indexing_transaction(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "search.db"
    writer = SqliteSearchIndex(path)
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
        result: list = []
        reader = threading.Thread(target=lambda: result.append(SqliteSearchIndex(path).search("indexed")))
        reader.start()
        reader.join(10)
        assert result and texts(result[0]) == ["already indexed"], "the search waited for the writer"
    finally:
        release.set()
        t.join(30)
    assert sorted(texts(writer.search("indexed"))) == ["already indexed", "being indexed"]
    writer.close()


def test_scan_survives_huge_pastes_and_ctrl_c(tmp_path: Path, key: SigningKey) -> None:
    from replay import Command, load, scan
    from replay._scan import MAX_KEYS

    s = Script(tmp_path / "p.zsprec", key)
    s.at(1).out(b"$ ")
    s.at(2).key(b"abandoned line\x03").out(b"abandoned line^C\r\n$ ")
    s.at(3).key(b"ls\r").out(b"ls\r\nfile\r\n$ ")
    s.at(4).key(b"x" * 3_000_000 + b"\r").out(b"x" * 3_000_000 + b"\r\n$ ")
    path = s.close()
    frames, report = load(path, [key.public])
    assert report.valid
    cmds = [c for c in scan(frames) if isinstance(c, Command)]
    assert [(c.text, c.keys) for c in cmds[:1]] == [("ls", b"ls")]
    assert len(cmds[1].keys) == MAX_KEYS and cmds[1].text.startswith("xxxx") and not cmds[1].blind


def test_hostile_file_names_and_garbage_recordings(data: Path) -> None:
    key = recording_key(data)
    (data / "recordings" / "evil\x1b]0;pwn\x07\x1b[2J.zsprec").write_bytes(b"ZSPREC\x00\x01" + b"\xff" * 100)
    (data / "recordings" / "notarecording.zsprec").write_bytes(b"#!/bin/sh\necho hi\n")
    s = Script(data / "recordings" / "ok.zsprec", key)
    s.at(1).out(b"fine-output\r\n")
    s.close()
    p = zsp(data, "index")
    assert p.returncode == 0, p.stderr
    # A name that is not a session id is not a recording of this data dir (replay.LocalDirectory):
    # never indexed, never printed; a file with a proper name but garbage inside is indexed CORRUPT.
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr and "pwn" not in p.stderr
    assert p.stderr.count("CORRUPT") == 1 and "2 recording(s) indexed" in p.stderr
    p = zsp(data, "search", "fine-output")
    assert p.returncode == 0 and "zsp index" not in p.stderr  # the garbage is indexed (as CORRUPT), not stale
    db = sqlite3.connect(data / "search.db")
    ids = {r[0] for r in db.execute("SELECT session_id FROM sessions WHERE outcome = 'CORRUPT'")}
    assert ids == {"notarecording"}


def test_full_screen_programs_give_no_commands_and_the_main_screen_survives(tmp_path: Path, key: SigningKey) -> None:
    from replay import Command, TextLine, load, scan

    s = Script(tmp_path / "vim.zsprec", key)
    s.at(1).out(b"$ ")
    s.at(2).key(b"vim notes\r").out(b"vim notes\r\n\x1b[?1049h\x1b[H\x1b[2J~ alt-screen-text\r\n~")
    s.at(3).key(b":wq\r").out(b"\x1b[?1049l$ ")
    s.at(4).key(b"top\r").out(b"top\r\n\x1b[?1049h\x1b[Hload average")  # the session ends inside top
    path = s.close()
    frames, _ = load(path, [key.public])
    items = list(scan(frames))
    assert [c.text for c in items if isinstance(c, Command)] == ["vim notes", "top"]
    lines = [i.text for i in items if isinstance(i, TextLine)]
    assert "$ vim notes" in lines and "$ top" in lines  # the main screen, read after leaving top's screen
    assert not any("alt-screen-text" in t or "load average" in t for t in lines)


def test_search_within_one_session_and_the_play_command_names_the_data_dir(data: Path) -> None:
    key = recording_key(data)
    ids = []
    for n in range(2):
        sid = uuid.uuid4()
        s = Script(data / "recordings" / f"{sid}.zsprec", key, session_id=sid)
        s.at(1 + n).out(b"$ ").at(2 + n).key(b"echo needle\r").out(b"echo needle\r\nneedle\r\n$ ")
        s.close()
        ids.append(str(sid))
    assert zsp(data, "index").returncode == 0
    both = json.loads(zsp(data, "search", "--json", "needle").stdout)
    assert {h["session_id"] for h in both} == set(ids)
    one = json.loads(zsp(data, "search", "--json", "needle", "--session", ids[1][-12:]).stdout)
    assert one and {h["session_id"] for h in one} == {ids[1]}
    assert all(h["play"].startswith(f"zsp play {ids[1]} --from ") for h in one)  # ZSP_DATA: no --data
    # With --data, the printed command carries it, so it pastes as printed.
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "search", "--data", str(data), "needle", "--session", ids[0]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and f"zsp play --data {data} {ids[0]} --from " in p.stdout, p.stdout + p.stderr
    bad = zsp(data, "search", "needle", "--session", "zzzz-nothing")
    assert bad.returncode == 2 and bad.stderr.startswith("zsp: error: no session") and bad.stderr.count("\n") == 1
    short = zsp(data, "search", "needle", "--session", ids[0][-5:])  # an end, one character too short
    assert short.returncode == 2 and "an end of an id needs 6 characters" in short.stderr
    assert zsp(data, "search", "needle", "--session", str(data / "recordings" / f"{ids[0]}.zsprec")).returncode == 2


def test_commands_after_a_program_that_read_a_key_are_all_there_as_the_screen_showed_them(
    tmp_path: Path, key: SigningKey
) -> None:
    """Found by a first-time reviewer: after `top` (main screen) quit with `q`, that `q` started a
    line no echo ever resolved, and every later command waited behind it (missing from
    `zsp play --commands`); the next command was flagged blind with a stray `q`."""
    from replay import Command, load, scan

    s = Script(tmp_path / "top.zsprec", key)
    s.at(1).out(b"$ ")
    s.at(2).key(b"t").out(b"t").key(b"op").out(b"op").key(b"\r").out(b"\r\n")
    s.at(3).out(b"\x1b[H\x1b[Jtop - load average 0.1\r\n  PID USER\r\n    1 root")
    s.at(4).key(b"q").out(b"\x1b[24;1H\r\n$ ")
    for n, cmd in enumerate((b"echo one", b"rm -rf /srv/app", b"exit")):
        s.at(5 + n).key(cmd).out(cmd).key(b"\r").out(b"\r\n" + (b"one\r\n" if n == 0 else b"") + b"$ ")
    frames, _ = load(s.close(), [key.public])
    for final in (False, True):  # --commands reads without the end of session; the index with it
        cmds = [c for c in scan(frames, final=final) if isinstance(c, Command)]
        assert [(c.text, c.blind) for c in cmds] == [
            ("top", False), ("echo one", False), ("rm -rf /srv/app", False), ("exit", False)
        ]


def test_a_completion_listing_taller_than_the_screen_leaves_the_completed_command(
    tmp_path: Path, key: SigningKey
) -> None:
    from replay import Command, load, scan

    s = Script(tmp_path / "tab.zsprec", key, rows=5)
    s.at(1).out(b"$ ")
    s.at(2).key(b"ls /doc/pyth").out(b"ls /doc/pyth")
    listing = b"".join(b"\r\npython3-%d" % i for i in range(8))
    s.at(3).key(b"\t\t").out(listing + b"\r\n$ ls /doc/pyth")  # the start row scrolled off
    s.at(4).key(b"3-ya").out(b"3-ya").key(b"\t").out(b"\r$ ls /doc/python3-yaml/")  # readline redraws
    s.at(5).key(b"\r").out(b"\r\nREADME\r\n$ ")
    frames, _ = load(s.close(), [key.public])
    cmds = [c for c in scan(frames) if isinstance(c, Command)]
    assert [(c.text, c.keys) for c in cmds] == [("ls /doc/python3-yaml/", b"ls /doc/pyth\t\t3-ya\t")]


def test_the_index_is_private_and_a_missing_data_dir_is_an_error_not_no_hits(data: Path, tmp_path: Path) -> None:
    key = recording_key(data)
    for n in range(3):
        s = Script(data / "recordings" / f"s{n}.zsprec", key)
        s.at(1).out(b"secret-output-line\r\n")
        s.close()
    assert zsp(data, "index").returncode == 0
    for name in ("search.db", "search.db-wal"):
        if (data / name).exists():
            assert (data / name).stat().st_mode & 0o077 == 0, name  # commands and output: 0600
    few = zsp(data, "search", "secret-output-line", "--limit", "2")
    assert few.returncode == 0 and "there may be more (--limit N)" in few.stderr
    assert "there may be more" not in zsp(data, "search", "secret-output-line").stderr
    for argv in (["search", "x", "--data", str(tmp_path / "typo")], ["play", "abcd", "--data", str(tmp_path / "typo")]):
        p = subprocess.run([sys.executable, "-m", "zsp_tui", *argv], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.startswith("zsp: error: no data directory"), p.stderr


def test_edited_completed_and_recalled_commands_get_no_second_row(tmp_path: Path, key: SigningKey) -> None:
    """Keys not shown are indexed beside the screen's line (a decoy echo), but editing, completion
    and history only add to what was typed: those commands are indexed once."""
    from replay import Command, load, rows_of, scan

    s = Script(tmp_path / "edit.zsprec", key)
    s.at(1).out(b"$ ")
    s.at(2).key(b"ho fixed").out(b"ho fixed").key(b"\x01").out(b"\x08" * 8).key(b"ec").out(b"\x1b[2@ec")
    s.at(3).key(b"\x05 end").out(b"\x1b[8C end").key(b"\r").out(b"\r\nfixed end\r\n$ ")
    s.at(4).key(b"cat hel").out(b"cat hel").key(b"\t").out(b"lo-file.txt ").key(b"\r").out(b"\r\nHI\r\n$ ")
    s.at(5).key(b"\x1b[A").out(b"cat hello-file.txt ").key(b"\r").out(b"\r\nHI\r\n$ ")
    frames, _ = load(s.close(), [key.public])
    items = list(scan(frames, final=False))
    commands = [c.text for c in items if isinstance(c, Command)]
    assert commands == ["echo fixed end", "cat hello-file.txt", "cat hello-file.txt"]
    rows = [r for r in rows_of(items) if r.kind is HitKind.COMMAND]
    assert [(r.text, r.blind) for r in rows] == [(c, False) for c in commands]
