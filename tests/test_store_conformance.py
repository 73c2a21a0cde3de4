"""One set of store behaviours, run against both stores: the embedded SQLite file and PostgreSQL
(a real server from tests/servers.py). Whatever a caller can observe through ``Tx`` (return
values, Conflict messages, orders, filters, the far end of the session list read backwards) is
the same on both, so the service, the bastion and the review app cannot tell them apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from zsp_tui.exceptions import Conflict
from zsp_tui.models import (
    AccessRequest,
    Flag,
    Hold,
    HoldState,
    RequestState,
    Role,
    SessionRecord,
    Target,
    Watch,
    WatchEnd,
)
from zsp_tui.store import SessionQuery, SessionSort, SessionState, SqliteStore, Store
from zsp_tui.store.base import TABLES

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        st: Store = SqliteStore(tmp_path / "zsp.db")
    else:
        from zsp_tui.store.postgres import PostgresStore

        st = PostgresStore(request.getfixturevalue("postgres_url"))
    yield st
    st.close()


def _request(rid: str, *, at: datetime = T0, state: RequestState = RequestState.PENDING, **kw) -> AccessRequest:
    values = {
        "id": rid,
        "requester": "alice",
        "requester_id": 1,
        "target": "db1",
        "login": "root",
        "duration": timedelta(hours=1),
        "reason": "INC-1 look at the disk",
        "state": state,
        "approvals_needed": 2,
        "approver_patterns": ("bob", "carol"),
        "rule": "ops",
        "created_at": at,
        "lapses_at": at + timedelta(minutes=30),
    }
    values.update(kw)
    return AccessRequest(**values)


def _session(sid: str, *, at: datetime = T0, user: str = "alice", target: str = "db1", **kw) -> SessionRecord:
    values = {
        "id": sid,
        "user": user,
        "target": target,
        "login": "root",
        "grant_id": None,
        "command": None,
        "client": "10.0.0.1:5000",
        "path": f"/rec/{sid}.zsprec",
        "started_at": at,
        "owner": "serve:host:1",
    }
    values.update(kw)
    return SessionRecord(**values)


def _hold(hid: str, *, at: datetime = T0, **kw) -> Hold:
    values = {
        "id": hid,
        "session_id": "s1",
        "grant_id": "g1",
        "user": "alice",
        "target": "db1",
        "login": "root",
        "rule": "rm-rf",
        "severity": "high",
        "command": "rm -rf /",
        "state": HoldState.PENDING,
        "created_at": at,
        "expires_at": at + timedelta(minutes=5),
    }
    values.update(kw)
    return Hold(**values)


# --- meta, users, keys ---------------------------------------------------------------------


def test_meta_is_set_read_and_overwritten(store) -> None:
    with store.transaction() as tx:
        assert tx.get_meta("nope") is None
        tx.set_meta("k", "one")
        tx.set_meta("k", "two")
    with store.transaction(write=False) as tx:
        assert tx.get_meta("k") == "two"
        assert tx.get_meta("schema_version") == "7"


def test_users_are_added_listed_in_byte_order_and_a_duplicate_name_conflicts(store) -> None:
    with store.transaction() as tx:
        alice = tx.add_user("alice", frozenset({Role.OPERATOR, Role.ADMIN}), T0)
        for name in ("bob", "Zed", "émile", "_x"):
            tx.add_user(name, frozenset(), T0)
    assert alice.id == 1 and alice.roles == {Role.OPERATOR, Role.ADMIN} and alice.created_at == T0
    with pytest.raises(Conflict, match=r"^user alice already exists$"), store.transaction() as tx:
        tx.add_user("alice", frozenset(), T0)
    with store.transaction(write=False) as tx:
        # Byte order (SQLite's BINARY collation), whatever the database's locale.
        assert [u.name for u in tx.list_users()] == ["Zed", "_x", "alice", "bob", "émile"]
        assert tx.get_user("alice") == alice
        assert tx.get_user_by_id(alice.id) == alice
        assert tx.get_user("carol") is None and tx.get_user_by_id(99) is None


def test_a_removed_users_id_is_never_given_out_again(store) -> None:
    with store.transaction() as tx:
        tx.add_user("alice", frozenset(), T0)
        bob = tx.add_user("bob", frozenset(), T0)
        assert tx.remove_user("bob") is True
        assert tx.remove_user("bob") is False
        carol = tx.add_user("carol", frozenset(), T0)
    assert carol.id == bob.id + 1
    with store.transaction(write=False) as tx:
        assert tx.id_high_water("users") == carol.id


def test_roles_are_replaced(store) -> None:
    with store.transaction() as tx:
        u = tx.add_user("alice", frozenset({Role.OPERATOR}), T0)
        tx.set_roles(u.id, frozenset({Role.APPROVER, Role.REVIEWER}))
        assert tx.get_user("alice").roles == {Role.APPROVER, Role.REVIEWER}


def test_keys_find_their_user_in_order_added_conflict_naming_the_owner_and_go_with_the_user(store) -> None:
    with store.transaction() as tx:
        a = tx.add_user("alice", frozenset(), T0)
        b = tx.add_user("bob", frozenset(), T0)
        tx.add_key(a.id, "ssh-ed25519 BBBB", "SHA256:b", "second", T0 + timedelta(seconds=2))
        tx.add_key(a.id, "ssh-ed25519 AAAA", "SHA256:a", "first", T0 + timedelta(seconds=1))
    with pytest.raises(Conflict, match=r"^key SHA256:a already belongs to alice$"), store.transaction() as tx:
        tx.add_key(b.id, "ssh-ed25519 AAAA", "SHA256:a", "stolen", T0)
    with store.transaction(write=False) as tx:
        alice = tx.get_user("alice")
        assert [(k.fingerprint, k.comment, k.added_at) for k in alice.keys] == [
            ("SHA256:a", "first", T0 + timedelta(seconds=1)),
            ("SHA256:b", "second", T0 + timedelta(seconds=2)),
        ]
        assert tx.user_by_key("SHA256:b").name == "alice"
        assert tx.user_by_key("SHA256:zz") is None
        assert [len(u.keys) for u in tx.list_users()] == [2, 0]
    with store.transaction() as tx:
        assert tx.remove_key(b.id, "SHA256:a") is False
        assert tx.remove_key(a.id, "SHA256:a") is True
        assert tx.remove_user("alice") is True
    with store.transaction(write=False) as tx:
        assert tx.user_by_key("SHA256:b") is None
        assert tx.count_rows("user_keys") == 0


# --- targets -------------------------------------------------------------------------------


def test_targets_round_trip_sorted_and_a_duplicate_conflicts(store) -> None:
    db = Target("db1", "10.0.0.5", 2222, ("root", "app"), "ssh-ed25519 HOST", frozenset({"prod", "eu"}), client_key="k")
    web = Target("Web", "web.example", 22, ("www",), "ssh-ed25519 W")
    with store.transaction() as tx:
        tx.add_target(db, T0)
        tx.add_target(web, T0)
    with pytest.raises(Conflict, match=r"^target db1 already exists$"), store.transaction() as tx:
        tx.add_target(db, T0)
    with store.transaction(write=False) as tx:
        assert tx.get_target("db1") == db
        assert tx.get_target("nope") is None
        assert tx.list_targets() == [web, db]
    with store.transaction() as tx:
        assert tx.remove_target("db1") is True
        assert tx.remove_target("db1") is False


# --- requests, approvals -------------------------------------------------------------------


def test_requests_round_trip_every_field_and_a_duplicate_id_conflicts(store) -> None:
    r = _request(
        "g1",
        break_glass=True,
        decided_at=T0 + timedelta(seconds=1),
        starts_at=T0 + timedelta(seconds=2),
        ends_at=T0 + timedelta(hours=1),
        ended_by="bob",
        note="n",
    )
    with store.transaction() as tx:
        tx.insert_request(r)
    with pytest.raises(Conflict, match=r"^request g1 already exists$"), store.transaction() as tx:
        tx.insert_request(r)
    with store.transaction(write=False) as tx:
        assert tx.get_request("g1") == r
        assert tx.get_request("g2") is None


def test_requests_list_oldest_first_and_by_state(store) -> None:
    with store.transaction() as tx:
        tx.insert_request(_request("b", at=T0))
        tx.insert_request(_request("a", at=T0))
        tx.insert_request(_request("c", at=T0 - timedelta(seconds=1), state=RequestState.APPROVED))
        tx.insert_request(_request("d", at=T0 + timedelta(seconds=1), state=RequestState.DENIED))
    with store.transaction(write=False) as tx:
        assert [r.id for r in tx.list_requests()] == ["c", "a", "b", "d"]
        assert [r.id for r in tx.list_requests((RequestState.PENDING, RequestState.DENIED))] == ["a", "b", "d"]
        assert [r.id for r in tx.list_requests(())] == ["c", "a", "b", "d"]


def test_update_request_is_compare_and_set(store) -> None:
    with store.transaction() as tx:
        tx.insert_request(_request("g1"))
        ends = T0 + timedelta(hours=1)
        assert tx.update_request("g1", RequestState.PENDING, state=RequestState.APPROVED, ends_at=ends, note="ok")
        assert not tx.update_request("g1", RequestState.PENDING, state=RequestState.DENIED)
        assert not tx.update_request("nope", RequestState.PENDING, state=RequestState.DENIED)
        with pytest.raises(ValueError, match="cannot update column requester"):
            tx.update_request("g1", RequestState.APPROVED, requester="mallory")
        got = tx.get_request("g1")
    assert (got.state, got.ends_at, got.note) == (RequestState.APPROVED, ends, "ok")


def test_an_approver_counts_once_and_approvals_list_in_time_order(store) -> None:
    with store.transaction() as tx:
        tx.insert_request(_request("g1"))
        assert tx.add_approval("g1", "carol", T0 + timedelta(seconds=2)) is True
        assert tx.add_approval("g1", "bob", T0 + timedelta(seconds=2)) is True
        assert tx.add_approval("g1", "dave", T0 + timedelta(seconds=1)) is True
        assert tx.add_approval("g1", "bob", T0 + timedelta(seconds=3)) is False
    with store.transaction(write=False) as tx:
        assert tx.get_request("g1").approvals == ("dave", "bob", "carol")
        assert [r.approvals for r in tx.list_requests()] == [("dave", "bob", "carol")]


def test_due_requests_are_expired_grants_and_lapsed_requests_soonest_first(store) -> None:
    now = T0 + timedelta(hours=2)
    with store.transaction() as tx:
        tx.insert_request(_request("lapsed", at=T0))  # lapses at T0+30m
        tx.insert_request(_request("fresh", at=now))  # lapses later
        tx.insert_request(_request("expired", state=RequestState.APPROVED, ends_at=T0 + timedelta(minutes=10), at=T0))
        tx.insert_request(_request("live", state=RequestState.APPROVED, ends_at=now + timedelta(minutes=1)))
        tx.insert_request(_request("at-now", state=RequestState.APPROVED, ends_at=now))
        tx.insert_request(_request("done", state=RequestState.DENIED, at=T0))
    with store.transaction(write=False) as tx:
        assert [r.id for r in tx.due_requests(now)] == ["expired", "lapsed", "at-now"]


# --- sessions ------------------------------------------------------------------------------


def test_sessions_start_end_and_list_by_user_target_and_time(store) -> None:
    with store.transaction() as tx:
        tx.session_start(_session("s2", at=T0 + timedelta(seconds=1), user="bob", grant_id="g1", command="ls"))
        tx.session_start(_session("s1", at=T0))
        tx.session_start(_session("s3", at=T0 + timedelta(seconds=2), target="db2"))
        tx.session_end("s1", T0 + timedelta(minutes=1), 0, "exit", "ab" * 32)
    with store.transaction(write=False) as tx:
        s1 = tx.get_session("s1")
        assert (s1.ended_at, s1.exit_status, s1.end_reason, s1.head) == (
            T0 + timedelta(minutes=1),
            0,
            "exit",
            "ab" * 32,
        )
        assert s1.owner == "serve:host:1" and s1.flags == 0 and s1.upload is None
        assert tx.get_session("s2").command == "ls" and tx.get_session("s2").grant_id == "g1"
        assert tx.get_session("nope") is None
        assert [s.id for s in tx.list_sessions()] == ["s1", "s2", "s3"]
        assert [s.id for s in tx.list_sessions(user="alice")] == ["s1", "s3"]
        assert [s.id for s in tx.list_sessions(target="db2")] == ["s3"]
        assert [s.id for s in tx.list_sessions(since=T0 + timedelta(seconds=1))] == ["s2", "s3"]
        assert [s.id for s in tx.unended_sessions()] == ["s2", "s3"]
        assert tx.live_sessions() == 2
        assert tx.live_sessions("alice") == 1
        assert tx.live_sessions("nobody") == 0


def test_uploads_are_marked_and_pending_ones_listed_oldest_first(store) -> None:
    with store.transaction() as tx:
        for i in range(4):
            tx.session_start(_session(f"s{i}", at=T0 - timedelta(seconds=i)))
        assert tx.set_upload("s0", "pending") is True
        assert tx.set_upload("s2", "pending") is True
        assert tx.set_upload("s3", "uploaded", object_key="s3://b/k3", sha256="ff" * 32) is True
        assert tx.set_upload("nope", "pending") is False
    with store.transaction(write=False) as tx:
        assert [s.id for s in tx.pending_uploads()] == ["s2", "s0"]
        assert [s.id for s in tx.pending_uploads(limit=1)] == ["s2"]
        assert tx.pending_uploads(limit=-1) == []
        s3 = tx.get_session("s3")
        assert (s3.upload, s3.object_key, s3.sha256) == ("uploaded", "s3://b/k3", "ff" * 32)
    with store.transaction() as tx:
        assert tx.set_upload("s3", None) is True
        assert tx.get_session("s3").object_key is None


# --- flags and holds -----------------------------------------------------------------------


def test_flags_count_on_their_session_keep_the_highest_severity_and_list_in_order(store) -> None:
    with store.transaction() as tx:
        tx.session_start(_session("s1"))
        tx.session_start(_session("s2"))
        for i, sev in enumerate(["low", "high", "medium"]):
            tx.add_flag(Flag("s1", T0 + timedelta(seconds=i), i * 1_000_000, f"r{i}", sev, "command", "flag", f"t{i}"))
        tx.add_flag(Flag("s2", T0 + timedelta(seconds=9), 2**40, "r9", "info", "output", "flag,notify", "x"))
    with store.transaction(write=False) as tx:
        s1, s2 = tx.get_session("s1"), tx.get_session("s2")
        assert (s1.flags, s1.flag_severity) == (3, "high")
        # info ranks above "none yet": a session whose only match is info says so
        assert (s2.flags, s2.flag_severity) == (1, "info")
        flags = tx.list_flags()
        assert [f.rule for f in flags] == ["r0", "r1", "r2", "r9"]
        assert flags[3] == Flag("s2", T0 + timedelta(seconds=9), 2**40, "r9", "info", "output", "flag,notify", "x")
        assert [f.rule for f in tx.list_flags(session_id="s1", since=T0 + timedelta(seconds=1))] == ["r1", "r2"]
        assert [f.rule for f in tx.list_flags(limit=2)] == ["r0", "r1"]
        assert tx.count_sessions(SessionQuery(flagged=True)) == 2


def test_holds_round_trip_list_by_state_and_are_decided_once(store) -> None:
    h1, h2 = _hold("h-1", at=T0 + timedelta(seconds=1)), _hold("h-2", at=T0)
    with store.transaction() as tx:
        tx.insert_hold(h1)
        tx.insert_hold(h2)
    with pytest.raises(Conflict, match=r"^hold h-1 already exists$"), store.transaction() as tx:
        tx.insert_hold(h1)
    with store.transaction() as tx:
        assert tx.get_hold("h-1") == h1 and tx.get_hold("nope") is None
        assert tx.decide_hold("h-1", HoldState.DENIED, "bob", T0 + timedelta(minutes=1), "no") is True
        assert tx.decide_hold("h-1", HoldState.ALLOWED, "carol", T0 + timedelta(minutes=2)) is False
    with store.transaction(write=False) as tx:
        h = tx.get_hold("h-1")
        assert (h.state, h.decided_by, h.decided_at, h.note) == (
            HoldState.DENIED,
            "bob",
            T0 + timedelta(minutes=1),
            "no",
        )
        assert [x.id for x in tx.list_holds()] == ["h-2", "h-1"]
        assert [x.id for x in tx.list_holds((HoldState.PENDING,))] == ["h-2"]
        assert tx.list_holds(()) == []


# --- audit ---------------------------------------------------------------------------------


def _watch(wid: str, sid: str = "s1", *, at: datetime = T0, user: str = "bob", **kw) -> Watch:
    values = {
        "id": wid,
        "session_id": sid,
        "user": user,
        "client": "10.0.0.2:6000",
        "via": "ssh",
        "since": at,
        "seen_at": at,
    }
    values.update(kw)
    return Watch(**values)


def test_watches_start_beat_end_once_and_list_by_session_open_or_all(store) -> None:
    with store.transaction() as tx:
        tx.insert_watch(_watch("w-1"))
        tx.insert_watch(_watch("w-2", at=T0 + timedelta(seconds=1), user="carol", via="console", client="console"))
        tx.insert_watch(_watch("w-3", "s2", at=T0 + timedelta(seconds=2)))
    with pytest.raises(Conflict, match=r"^watch w-1 already exists$"), store.transaction() as tx:
        tx.insert_watch(_watch("w-1"))
    with store.transaction() as tx:
        assert tx.beat_watch("w-1", T0 + timedelta(seconds=5))
        assert not tx.beat_watch("nope", T0)
        assert tx.leave_watch("w-2", T0 + timedelta(seconds=6), WatchEnd.TERMINATED)
        assert not tx.leave_watch("w-2", T0 + timedelta(seconds=7), WatchEnd.LEFT)  # once only
        assert not tx.beat_watch("w-2", T0 + timedelta(seconds=8))  # an ended watch has no heartbeat
    with store.transaction(write=False) as tx:
        w1 = tx.get_watch("w-1")
        assert w1 == _watch("w-1", seen_at=T0 + timedelta(seconds=5)) and w1.open
        w2 = tx.get_watch("w-2")
        assert w2.how is WatchEnd.TERMINATED and w2.left_at == T0 + timedelta(seconds=6) and not w2.open
        assert tx.get_watch("nope") is None
        assert [w.id for w in tx.list_watches(["s1", "s2"])] == ["w-1", "w-3"]
        assert [w.id for w in tx.list_watches(["s1"], open_only=False)] == ["w-1", "w-2"]
        assert [w.id for w in tx.list_watches(["s1", "s1"])] == ["w-1"]
        assert tx.list_watches([]) == [] and tx.list_watches(["none"]) == []
        assert tx.count_rows("watches") == 3


def _audit_rows(n: int, start: int = 0) -> list[tuple[int, bytes, bytes, str, str]]:
    events = ["audit.header", "Grant.approve", "session.start", "grant.revoke", "grant_x"]
    return [
        (
            i,
            bytes([i % 256, 0, 255]) * 3,  # a NUL and a high byte: stored as bytes, exactly
            bytes([255 - i % 256]) * 32,
            f"2026-03-01T09:00:{i % 60:02d}.000000Z",
            events[i % len(events)],
        )
        for i in range(start, start + n)
    ]


def test_audit_rows_come_back_byte_for_byte_in_order_from_any_seq(store) -> None:
    rows = _audit_rows(4500)  # more than one batch of PostgreSQL's reader
    with store.transaction(write=False) as tx:
        assert tx.audit_tail() is None
    with store.transaction() as tx:
        tx.audit_append(rows[:10])
        tx.audit_append(rows[10:])
        tx.audit_append([])
    with store.transaction(write=False) as tx:
        assert tx.audit_tail() == rows[-1][:3]
        assert list(tx.audit_rows()) == [r[:3] for r in rows]
        assert list(tx.audit_rows(since_seq=4490)) == [r[:3] for r in rows[4490:]]


def test_audit_pages_newest_first_by_prefix_case_insensitively_and_by_time(store) -> None:
    rows = _audit_rows(20)
    with store.transaction() as tx:
        tx.audit_append(rows)
    with store.transaction(write=False) as tx:
        assert [r[0] for r in tx.audit_page(None, 3)] == [19, 18, 17]
        assert [r[0] for r in tx.audit_page(5, 10)] == [4, 3, 2, 1, 0]
        assert [r[0] for r in tx.audit_page(None, 10, event_prefix="grant.")] == [18, 16, 13, 11, 8, 6, 3, 1]
        assert [r[0] for r in tx.audit_page(None, 10, event_prefix="grant_")] == [19, 14, 9, 4]
        since = datetime(2026, 3, 1, 9, 0, 15, tzinfo=UTC)
        assert [r[0] for r in tx.audit_page(None, 10, since=since)] == [19, 18, 17, 16, 15]
        assert tx.audit_page(None, 10)[0] == rows[19][:3]


def test_a_failed_transaction_changes_nothing(store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.add_user("alice", frozenset(), T0)
        tx.audit_append(_audit_rows(3))
        raise RuntimeError("boom")
    with store.transaction(write=False) as tx:
        assert tx.list_users() == [] and tx.audit_tail() is None


# --- the session list: count_sessions / page_sessions --------------------------------------

N = 4300  # past page_sessions' flip point (2000), so the far end is read backwards


def _fill_sessions(store) -> dict[str, dict[SessionSort, object]]:
    """N sessions and their grants through load_rows; the order each sort must give (the oracle)."""
    users = ["alice", "Bob", "carol", "émile", "_dave"]
    requests, sessions, keys = [], [], {}
    now = datetime.now(UTC)
    for g in range(60):
        r = _request(f"gr-{g:03d}", reason=[f"INC-{g} disk", "deploy 50%_off", "Rotate CERTS"][g % 3])
        requests.append(r)
    for i in range(N):
        began = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i)
        live = i % 97 == 96
        ended = None if live else began + timedelta(seconds=5 + (i * 7919) % 3600, microseconds=(i * 37) % 1000)
        reason = None if live else ["exit", "grant expired", "interrupted"][i % 3]
        head = None if live or i % 11 == 0 else "ab" * 32
        sid = f"syn-{i:05d}"
        row = {
            "id": sid,
            "user": users[i % len(users)],
            "target": f"db-{(i * 7) % 13:02d}",
            "login": ["root", "app", "Postgres"][i % 3],
            "grant_id": None if i % 10 == 0 else f"gr-{i % 60:03d}",
            "command": None if i % 3 else f"cat /srv/{i}",
            "client": "10.0.0.1:5000",
            "path": f"/rec/{sid}.zsprec",
            "started_at": began.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "ended_at": None if ended is None else ended.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "exit_status": None if live else 0,
            "end_reason": reason,
            "head": head,
            "owner": "",
            "flags": int(i % 7 == 0),
        }
        sessions.append(row)
        status = 0 if ended is None else 1 if reason == "interrupted" else 2 if head else 3
        keys[sid] = {
            SessionSort.STARTED: row["started_at"],
            SessionSort.USER: row["user"].encode(),
            SessionSort.TARGET: row["target"],
            SessionSort.LOGIN: row["login"],
            SessionSort.DURATION: round(((ended or now) - began).total_seconds() * 1000),
            SessionSort.END_REASON: reason or "",
            SessionSort.STATUS: status,
        }
    with store.transaction() as tx:
        for r in requests:
            tx.insert_request(r)
        columns = list(sessions[0])
        assert tx.load_rows("sessions", columns, [tuple(s[c] for c in columns) for s in sessions]) == N
    return keys


@pytest.fixture
def filled(store):
    return store, _fill_sessions(store)


@pytest.mark.parametrize("descending", [True, False])
def test_every_sort_orders_every_session_and_far_pages_read_backwards_agree(filled, descending) -> None:
    store, keys = filled
    for sort in SessionSort:
        q = SessionQuery(sort=sort, descending=descending)
        expected = sorted(keys, key=lambda sid: (keys[sid][sort], sid), reverse=descending)
        with store.transaction(write=False) as tx:
            assert tx.count_sessions(q) == N
            ids = [r.session.id for r in tx.page_sessions(q, 0, 10 * N)]
            assert ids == expected, sort
            for offset in (2001, 3000, N - 60, N - 7, N + 5):
                page = [r.session.id for r in tx.page_sessions(q, offset, 60)]
                assert page == expected[offset : offset + 60], (sort, offset)


def test_session_filter_matches_fields_and_reason_case_insensitively_wildcards_literally(filled) -> None:
    store, keys = filled

    def ids(text: str, **kw) -> list[str]:
        with store.transaction(write=False) as tx:
            q = SessionQuery(text=text, **kw)
            got = [r.session.id for r in tx.page_sessions(q, 0, 10 * N)]
            assert tx.count_sessions(q) == len(got)
            return got

    assert len(ids("")) == N
    assert len(ids("BOB")) == N // 5  # user Bob, ASCII case folded
    assert len(ids("postgres")) == len(ids("POSTGRES")) == N // 3 + (1 if N % 3 > 2 else 0)
    assert ids("syn-00042") == ["syn-00042"]
    assert ids("/srv/4298") == []  # 4298 % 3 != 0: no command
    assert ids("/srv/4296") == ["syn-04296"]
    # the grant's reason, through the request; % and _ are literal
    with_reason = {sid for sid in keys if int(sid[4:]) % 10 and int(sid[4:]) % 60 % 3 == 1}
    assert set(ids("50%_off")) == with_reason
    assert ids("50%%_off") == [] and ids("5_%") == []
    assert set(ids("rotate certs")) == {sid for sid in keys if int(sid[4:]) % 10 and int(sid[4:]) % 60 % 3 == 2}
    live = ids("", state=SessionState.LIVE)
    assert live == [s for s in sorted(keys, reverse=True) if int(s[4:]) % 97 == 96]
    assert len(ids("", state=SessionState.ENDED)) == N - len(live)
    flagged = ids("", flagged=True)
    assert flagged == [s for s in sorted(keys, reverse=True) if int(s[4:]) % 7 == 0]
    assert ids("émile", flagged=True, state=SessionState.ENDED) == [
        s for s in flagged if int(s[4:]) % 5 == 3 and int(s[4:]) % 97 != 96
    ]
    with store.transaction(write=False) as tx:
        rows = tx.page_sessions(SessionQuery(text="syn-00001"), 0, 5)
        assert [(r.session.id, r.reason) for r in rows] == [("syn-00001", "deploy 50%_off")]
        with pytest.raises(ValueError, match="must not be negative"):
            tx.page_sessions(SessionQuery(), -1, 5)


# --- whole tables (zsp migrate) ------------------------------------------------------------


def test_tables_dump_and_load_exactly_and_ids_move_past_what_was_loaded(store, tmp_path: Path) -> None:
    other = SqliteStore(tmp_path / "other.db")
    try:
        with other.transaction() as tx:
            tx.add_user("alice", frozenset({Role.ADMIN}), T0)
            bob = tx.add_user("bob", frozenset(), T0)
            tx.add_key(bob.id, "ssh-ed25519 K", "SHA256:k", "c", T0)
            bob = tx.get_user("bob")
            tx.remove_user("alice")
            tx.session_start(_session("s1"))
            tx.add_flag(Flag("s1", T0, 5, "r", "low", "command", "flag", "t"))
            tx.audit_append(_audit_rows(5))
        with other.transaction(write=False) as src, store.transaction() as dst:
            for table in TABLES:
                if table == "meta":
                    continue
                columns, rows = src.dump_rows(table)
                assert dst.load_rows(table, columns, rows) == src.count_rows(table)
            for table in ("users", "flags"):
                dst.raise_id_floor(table, src.id_high_water(table))
        with store.transaction() as tx:
            assert tx.get_user("bob") == bob
            assert list(tx.audit_rows()) == [r[:3] for r in _audit_rows(5)]
            assert tx.add_user("carol", frozenset(), T0).id == 3  # alice's 1 is gone but never reused
            tx.add_flag(Flag("s1", T0, 6, "r", "low", "command", "flag", "t"))
            assert tx.id_high_water("flags") == 2
            assert tx.get_session("s1").flags == 2
            assert sorted(tx.table_columns("audit")) == ["body", "event", "head", "seq", "time"]
            with pytest.raises(ValueError):
                tx.count_rows("sqlite_master")
    finally:
        other.close()
