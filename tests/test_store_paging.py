"""The store pages the session list (count_sessions / page_sessions) and the audit log
(audit_page / AuditLog.newest) so the review app never loads every row: filters, orders, the far
end read backwards, and the schema 4 migration that adds their indexes. Real SQLite throughout."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.session_rows import fill_sessions
from zsp_tui.store import SCHEMA_VERSION, SessionQuery, SessionSort, SessionState, SqliteStore

N = 5000


@pytest.fixture
def store(tmp_path: Path):
    st = SqliteStore(tmp_path / "zsp.db")
    fill_sessions(tmp_path / "zsp.db", N, grants=300, live_every=97)
    yield st
    st.close()


def _all(st: SqliteStore, q: SessionQuery) -> list[str]:
    with st.transaction(write=False) as tx:
        return [r.session.id for r in tx.page_sessions(q, 0, 10 * N)]


def _key(st: SqliteStore, sort: SessionSort):
    """The order a reviewer expects, computed in Python from the whole table (the oracle)."""
    con = sqlite3.connect(st.path)
    rows = con.execute("SELECT id, user, target, login, started_at, ended_at, end_reason, head FROM sessions")
    now = datetime.now(UTC)
    out = {}
    for sid, user, target, login, started, ended, reason, head in rows:
        began = datetime.fromisoformat(started.replace("Z", "+00:00"))
        end = datetime.fromisoformat(ended.replace("Z", "+00:00")) if ended else now
        status = 0 if ended is None else 1 if reason == "interrupted" else 2 if head else 3
        out[sid] = {
            SessionSort.STARTED: started,
            SessionSort.USER: user,
            SessionSort.TARGET: target,
            SessionSort.LOGIN: login,
            SessionSort.DURATION: round((end - began).total_seconds() * 1000),
            SessionSort.END_REASON: reason or "",
            SessionSort.STATUS: status,
        }[sort]
    con.close()
    return out


@pytest.mark.parametrize("sort", list(SessionSort))
@pytest.mark.parametrize("descending", [True, False])
def test_every_sort_orders_every_row_and_far_pages_read_backwards_match(store, sort, descending) -> None:
    q = SessionQuery(sort=sort, descending=descending)
    ids = _all(store, q)
    assert len(ids) == N
    keys = _key(store, sort)
    expected = sorted(keys, key=lambda sid: (keys[sid], sid), reverse=descending)
    assert ids == expected
    with store.transaction(write=False) as tx:
        assert tx.count_sessions(q) == N
        # Pages past the flip point are read from the other end: they must be the same rows.
        for offset in (0, 2500, 3001, N - 60, N - 7):
            page = [r.session.id for r in tx.page_sessions(q, offset, 60)]
            assert page == ids[offset : offset + 60], offset


def test_filter_matches_every_named_field_case_insensitively_and_wildcards_literally(store, tmp_path) -> None:
    con = sqlite3.connect(tmp_path / "zsp.db")
    with con:
        con.execute("UPDATE sessions SET command = 'cat /etc/Shad%w_x' WHERE id = 'syn-000010'")
        con.execute("UPDATE requests SET reason = 'Ticket [reverse]X[/] \x1b[2J' WHERE id = 'gr-00007'")
    con.close()

    def ids(text: str, **kw) -> set[str]:
        q = SessionQuery(text=text, **kw)
        with store.transaction(write=False) as tx:
            found = {r.session.id for r in tx.page_sessions(q, 0, 10 * N)}
            assert tx.count_sessions(q) == len(found)
        return found

    assert ids("SYN-000123") == {"syn-000123"}  # id
    assert ids("shad%W_X") == {"syn-000010"}  # command; % and _ are literal
    assert ids("d%x") == set() and ids("h_d") == set()  # as wildcards they would match "Shad%w_x"
    assert ids("USER03") == {f"syn-{i:06d}" for i in range(N) if (i % 300) % 50 == 3}  # user
    assert ids("db-19") == {f"syn-{i:06d}" for i in range(N) if (i % 300) % 20 == 19}  # target
    assert ids("POSTGRES") == {f"syn-{i:06d}" for i in range(N) if (i % 300) % 3 == 2}  # login
    assert ids("gr-00299") == {f"syn-{i:06d}" for i in range(N) if i % 300 == 299}  # grant id
    assert ids("[reverse]x[/]") == {f"syn-{i:06d}" for i in range(N) if i % 300 == 7}  # the grant's reason
    live = ids("", state=SessionState.LIVE)
    assert live == {f"syn-{i:06d}" for i in range(N) if i % 97 == 96}
    assert ids("", state=SessionState.ENDED) == {f"syn-{i:06d}" for i in range(N)} - live
    with store.transaction(write=False) as tx:
        row = tx.page_sessions(SessionQuery(text="syn-000007"), 0, 5)[0]
        assert row.reason == "Ticket [reverse]X[/] \x1b[2J"
        assert row.session.grant_id == "gr-00007"
        assert tx.page_sessions(SessionQuery(), N + 10, 50) == []
        with pytest.raises(ValueError, match="negative"):
            tx.page_sessions(SessionQuery(), -1, 5)


def test_a_schema_3_database_is_migrated_to_the_paging_indexes(tmp_path) -> None:
    path = tmp_path / "zsp.db"
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    with con:
        for name in ("sessions_target", "sessions_login", "sessions_end_reason", "sessions_live", "audit_event"):
            con.execute(f"DROP INDEX {name}")
        # nor what schema 5 added (real-time rules)
        con.execute("DROP INDEX sessions_flagged")
        con.execute("ALTER TABLE sessions DROP COLUMN flags")
        con.execute("ALTER TABLE sessions DROP COLUMN flag_severity")
        con.execute("DROP TABLE holds")
        con.execute("DROP TABLE flags")
        # nor what schema 6 added (object storage)
        con.execute("DROP INDEX sessions_upload_pending")
        con.execute("ALTER TABLE sessions DROP COLUMN upload")
        con.execute("ALTER TABLE sessions DROP COLUMN object_key")
        con.execute("ALTER TABLE sessions DROP COLUMN sha256")
        con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    names = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"sessions_target", "sessions_login", "sessions_end_reason", "sessions_live", "audit_event"} <= names
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    plan = " ".join(
        str(r)
        for r in con.execute("EXPLAIN QUERY PLAN SELECT id FROM sessions s ORDER BY s.target DESC, s.id DESC LIMIT 5")
    )
    assert "sessions_target" in plan
    con.close()


def test_audit_newest_pages_backwards_with_actor_event_and_time_filters(reviewed) -> None:
    svc = reviewed.svc
    everything = svc.audit_events()
    assert len(everything) > 10
    newest = svc.audit_newest(limit=5)
    assert [e.seq for e in newest] == [e.seq for e in reversed(everything)][:5]
    older = svc.audit_newest(before=newest[-1].seq, limit=5)
    assert [e.seq for e in older] == [e.seq for e in reversed(everything)][5:10]
    grants = svc.audit_newest(limit=1000, event_prefix="grant.")
    assert grants and [e.seq for e in grants] == [e.seq for e in reversed(everything) if e.event.startswith("grant.")]
    alice = svc.audit_newest(limit=1000, actor="alice")
    assert alice and [e.seq for e in alice] == [e.seq for e in reversed(everything) if e.actor == "alice"]
    assert svc.audit_newest(limit=1000, event_prefix="grant%") == []  # a prefix, never a pattern
    later = everything[len(everything) // 2].time
    recent = svc.audit_newest(limit=1000, since=later)
    assert [e.seq for e in recent] == [e.seq for e in reversed(everything) if e.time >= later]
    assert svc.audit_newest(limit=1000, since=datetime.now(UTC) + timedelta(days=1)) == []


def test_threads_sharing_one_store_take_turns_at_transactions(store) -> None:
    """The review app's workers page from the store while the event loop appends audit events:
    each transaction holds the one connection to itself (before, two BEGINs interleaved)."""
    import threading

    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(150):
                with store.transaction(write=False) as tx:
                    tx.count_sessions(SessionQuery(state=SessionState.LIVE))
                    tx.page_sessions(SessionQuery(), 0, 5)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    def writer() -> None:
        try:
            for i in range(150):
                with store.transaction() as tx:
                    tx.set_meta("probe", str(i))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.transaction(write=False) as tx:
        assert tx.get_meta("probe") == "149"
