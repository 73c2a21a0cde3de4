"""The access lifecycle against a real SQLite store: every transition, every forbidden one,
self-approval under any spelling, concurrency, expiry by an injected clock, and the audit trail."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from tests.access_helpers import make_service, populate
from zsp_tui.access import AccessService, Actor
from zsp_tui.clock import FakeClock, SystemClock
from zsp_tui.exceptions import AccessDenied, Conflict, InvalidState, NotFound, UsageError
from zsp_tui.models import RequestState, Role

M = timedelta(minutes=1)
OSCAR, ALICE, BOB, CAROL, DORA = (Actor(n) for n in ("oscar", "alice", "bob", "carol", "dora"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def svc(tmp_path: Path, clock: FakeClock) -> AccessService:
    s, _ = make_service(tmp_path / "data", clock)
    populate(s)
    return s


def events(svc: AccessService) -> list[str]:
    return [e.event for e in svc.audit_events()]


def test_request_approve_expire(svc: AccessService, clock: FakeClock) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "deploy hotfix")
    assert r.state is RequestState.PENDING and r.approvals_needed == 1 and r.rule == "ops"
    g = svc.approve(BOB, r.id)
    assert g.state is RequestState.APPROVED and g.active(clock.now())
    assert g.ends_at == clock.now() + 30 * M
    user = next(u for u in svc.users() if u.name == "oscar")
    assert svc.active_grant(user, "web", "deploy").id == r.id
    clock.advance(30 * M - timedelta(seconds=1))
    assert svc.active_grant(user, "web", "deploy") is not None
    clock.advance(timedelta(seconds=1))
    assert svc.active_grant(user, "web", "deploy") is None
    assert svc.get(r.id).state is RequestState.EXPIRED
    assert events(svc)[-4:] == ["access_request.create", "access_request.approve", "grant.start", "grant.expire"]


def test_pending_lapses(svc: AccessService, clock: FakeClock) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    clock.advance(timedelta(hours=1))
    svc.sweep()
    assert svc.get(r.id).state is RequestState.LAPSED
    with pytest.raises(InvalidState, match="lapsed"):
        svc.approve(BOB, r.id)
    assert "access_request.lapse" in events(svc)


def test_deny_cancel_revoke(svc: AccessService) -> None:
    r1 = svc.request(OSCAR, "web", "deploy", 30 * M, "a")
    assert svc.deny(BOB, r1.id, "not now").state is RequestState.DENIED
    r2 = svc.request(OSCAR, "web", "deploy", 30 * M, "b")
    with pytest.raises(AccessDenied, match="only oscar can cancel"):
        svc.cancel(BOB, r2.id)
    assert svc.cancel(OSCAR, r2.id).state is RequestState.CANCELLED
    r3 = svc.request(OSCAR, "web", "deploy", 30 * M, "c")
    with pytest.raises(AccessDenied, match="pending requests are denied or cancelled"):
        svc.revoke(BOB, r3.id)
    svc.approve(BOB, r3.id)
    with pytest.raises(AccessDenied, match="dora may not revoke"):
        svc.revoke(DORA, r3.id)
    assert svc.revoke(OSCAR, r3.id, "done early").state is RequestState.REVOKED


FORBIDDEN = [
    # (state reached, action, error)
    ("denied", "approve", InvalidState), ("denied", "deny", InvalidState), ("denied", "cancel", InvalidState),
    ("denied", "revoke", AccessDenied),
    ("cancelled", "approve", InvalidState), ("cancelled", "revoke", AccessDenied),
    ("approved", "approve", InvalidState), ("approved", "deny", InvalidState), ("approved", "cancel", InvalidState),
    ("revoked", "approve", InvalidState), ("revoked", "revoke", AccessDenied), ("revoked", "cancel", InvalidState),
    ("expired", "approve", InvalidState), ("expired", "revoke", AccessDenied), ("expired", "deny", InvalidState),
    ("lapsed", "approve", InvalidState), ("lapsed", "cancel", InvalidState), ("lapsed", "deny", InvalidState),
]


@pytest.mark.parametrize(("state", "action", "error"), FORBIDDEN)
def test_forbidden_transitions(svc: AccessService, clock: FakeClock, state: str, action: str, error: type) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    if state == "denied":
        svc.deny(BOB, r.id, "no")
    elif state == "cancelled":
        svc.cancel(OSCAR, r.id)
    elif state in ("approved", "revoked", "expired"):
        svc.approve(BOB, r.id)
        if state == "revoked":
            svc.revoke(BOB, r.id)
        if state == "expired":
            clock.advance(31 * M)
    elif state == "lapsed":
        clock.advance(61 * M)
    before = svc.get(r.id)
    do = {"approve": lambda: svc.approve(CAROL, r.id), "deny": lambda: svc.deny(CAROL, r.id, "n"),
          "cancel": lambda: svc.cancel(OSCAR, r.id), "revoke": lambda: svc.revoke(CAROL, r.id)}[action]
    with pytest.raises(error):
        do()
    after = svc.get(r.id)
    assert after.state.value == state and after.approvals == before.approvals


@pytest.mark.parametrize("spelling", ["alice", "ALICE", "Alice", "\uff41\uff4c\uff49\uff43\uff45"])
def test_self_approval_is_refused_for_admins_under_any_spelling(svc: AccessService, spelling: str) -> None:
    r = svc.request(ALICE, "web", "deploy", 30 * M, "x")
    with pytest.raises(AccessDenied, match="cannot approve their own request"):
        svc.approve(Actor(spelling), r.id)
    assert svc.get(r.id).state is RequestState.PENDING
    refused = [e for e in svc.audit_events() if e.event == "access_request.refused"]
    assert refused and refused[-1].outcome == "failure" and refused[-1].grant_id == r.id


def test_look_alike_names_cannot_exist_or_act(svc: AccessService) -> None:
    r = svc.request(ALICE, "web", "deploy", 30 * M, "x")
    with pytest.raises(NotFound):
        svc.approve(Actor("\u0430lice"), r.id)  # Cyrillic a
    with pytest.raises(UsageError, match="invalid name"):
        svc.add_user(ALICE, "\u0430lice", frozenset({Role.APPROVER}))


def test_two_approvals_counted_once_each(svc: AccessService) -> None:
    r = svc.request(OSCAR, "db-1", "postgres", timedelta(hours=1), "CHG-7 migrate")
    assert r.approvals_needed == 2
    assert svc.approve(BOB, r.id).state is RequestState.PENDING
    with pytest.raises(Conflict, match="already approved"):
        svc.approve(Actor("BOB"), r.id)
    assert svc.get(r.id).state is RequestState.PENDING
    with pytest.raises(AccessDenied, match="may not approve"):
        svc.approve(ALICE, r.id)  # an admin, but not an approver under this rule
    g = svc.approve(DORA, r.id)  # a reviewer in group dba may approve this rule
    assert g.state is RequestState.APPROVED and set(g.approvals) == {"bob", "dora"}


def test_policy_refusals_are_audited(svc: AccessService) -> None:
    with pytest.raises(AccessDenied, match="ticket"):
        svc.request(OSCAR, "db-1", "postgres", M, "no ticket here")
    with pytest.raises(AccessDenied, match="longer than"):
        svc.request(OSCAR, "web", "deploy", timedelta(hours=5), "x")
    with pytest.raises(AccessDenied, match="no policy rule"):
        svc.request(DORA, "web", "deploy", M, "x")
    with pytest.raises(AccessDenied, match="reason is required"):
        svc.request(OSCAR, "web", "deploy", M, "  ")
    with pytest.raises(UsageError, match="no login"):
        svc.request(OSCAR, "web", "root", M, "x")
    assert events(svc).count("access_request.refused") == 4
    assert svc.requests() == []


def test_auto_approval_and_break_glass(svc: AccessService) -> None:
    g = svc.request(OSCAR, "web", "readonly", 30 * M, "look at logs")
    assert g.state is RequestState.APPROVED
    assert svc.get(g.id).approvals == ("policy:readonly",)
    with pytest.raises(AccessDenied, match="break-glass is not allowed"):
        svc.request(OSCAR, "db-1", "root", 10 * M, "INC-1 fire", break_glass=True)
    with pytest.raises(AccessDenied, match="at most 30m"):
        svc.request(ALICE, "db-1", "root", 31 * M, "INC-1 fire", break_glass=True)
    bg = svc.request(ALICE, "db-1", "root", 15 * M, "INC-1 fire", break_glass=True)
    assert bg.state is RequestState.APPROVED and bg.break_glass
    ev = [e for e in svc.audit_events() if e.event == "grant.break_glass"]
    assert ev and ev[0].code.endswith("W") and ev[0].fields["needs_review"] is True


def test_duplicate_pending_request_is_refused(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    with pytest.raises(Conflict, match=r.id):
        svc.request(OSCAR, "web", "deploy", 30 * M, "again")


def test_admin_actions_need_an_admin(svc: AccessService) -> None:
    with pytest.raises(AccessDenied, match="not an admin"):
        svc.add_user(BOB, "eve", frozenset({Role.OPERATOR}))
    with pytest.raises(UsageError, match="an admin exists"):
        svc.add_user(Actor(None), "eve", frozenset({Role.OPERATOR}))
    with pytest.raises(AccessDenied, match="cannot remove themselves"):
        svc.remove_user(ALICE, "alice")


# --- concurrency against the real SQLite file -------------------------------------------------


def _approve_in_process(root: str, request_id: str, who: str, out: multiprocessing.Queue) -> None:
    from zsp_tui.access import Actor
    from zsp_tui.datadir import DataDir

    svc = DataDir(Path(root)).service()
    try:
        r = svc.approve(Actor(who), request_id)
        out.put((who, "ok", r.state.value))
    except Exception as exc:  # reported to the parent, which asserts on it
        out.put((who, type(exc).__name__, str(exc)))


def test_concurrent_approvals_from_processes(tmp_path: Path) -> None:
    svc, d = make_service(tmp_path / "data", SystemClock())  # real clock: the processes share the file
    populate(svc)
    for _round in range(3):
        r = svc.request(OSCAR, "db-1", "postgres", timedelta(hours=1), "CHG-1")
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=_approve_in_process, args=(str(d.root), r.id, who, q))
                 for who in ("bob", "carol", "dora", "bob", "carol")]
        for p in procs:
            p.start()
        results = [q.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
        final = svc.get(r.id)
        ok = [x for x in results if x[1] == "ok"]
        # Exactly two approvals count; the third and any repeat are refused; one grant starts.
        assert final.state is RequestState.APPROVED and len(final.approvals) == 2, results
        assert len(ok) == 2 and {x[2] for x in ok} == {"pending", "approved"}
        assert all(x[1] in ("Conflict", "InvalidState") for x in results if x[1] != "ok")
        assert [e.event for e in svc.audit_events()].count("grant.start") == _round + 1
        svc.revoke(ALICE, r.id)
    assert svc.audit_verify([d.signing_key().public]).ok


def test_revoke_racing_approval_ends_in_one_state(tmp_path: Path) -> None:
    svc, d = make_service(tmp_path / "data", SystemClock())
    populate(svc)
    for _ in range(10):
        r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
        other = d.service()
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def approve() -> None:
            barrier.wait()
            try:
                outcome["approve"] = svc.approve(BOB, r.id).state
            except AccessDenied as exc:
                outcome["approve"] = exc

        def revoke() -> None:
            barrier.wait()
            try:
                outcome["revoke"] = other.revoke(CAROL, r.id).state
            except AccessDenied as exc:
                outcome["revoke"] = exc

        ts = [threading.Thread(target=approve), threading.Thread(target=revoke)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        final = svc.get(r.id).state
        assert outcome["approve"] is RequestState.APPROVED
        # Either the revoke came first (refused: still pending then) or second (revoked).
        if isinstance(outcome["revoke"], AccessDenied):
            assert final is RequestState.APPROVED
            svc.revoke(CAROL, r.id)
        else:
            assert final is RequestState.REVOKED
    assert svc.audit_verify([d.signing_key().public]).ok


# --- audit log ----------------------------------------------------------------------------------


def test_audit_chain_detects_edits_deletions_and_reordering(tmp_path: Path) -> None:
    svc, d = make_service(tmp_path / "data")
    populate(svc)
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    svc.approve(BOB, r.id)
    trusted = [d.signing_key().public]
    good = svc.audit_verify(trusted)
    assert good.ok and good.events > 10
    db = sqlite3.connect(d.db_path)
    seq, body = db.execute("SELECT seq, body FROM audit WHERE event = 'access_request.approve'").fetchone()
    tampered = body.replace(b"bob", b"eve")
    assert tampered != body
    db.execute("UPDATE audit SET body = ? WHERE seq = ?", (tampered, seq))
    db.commit()
    bad = svc.audit_verify(trusted)
    assert not bad.ok and bad.report.bad_frame == seq and "hash-mismatch" in bad.detail
    db.execute("UPDATE audit SET body = ? WHERE seq = ?", (body, seq))
    db.execute("DELETE FROM audit WHERE seq = ?", (seq - 1,))
    db.commit()
    bad = svc.audit_verify(trusted)
    assert not bad.ok and "sequence-gap" in bad.detail
    db.close()


def test_audit_events_have_stable_fields_and_json_lines(svc: AccessService, tmp_path: Path) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "deploy")
    svc.approve(BOB, r.id)
    evs = svc.audit_events()
    lines = [json.dumps(e.to_json()) for e in evs]
    parsed = [json.loads(x) for x in lines]
    for p in parsed:
        for key in ("event", "code", "time", "seq", "actor", "via", "outcome", "target", "login", "grant_id",
                    "session_id", "message"):
            assert key in p
        assert p["time"].endswith("Z") and "T" in p["time"]
    start = next(p for p in parsed if p["event"] == "grant.start")
    assert start["grant_id"] == r.id and start["code"] == "ZSP5100I" and start["requester"] == "oscar"
    assert [p["seq"] for p in parsed] == sorted(p["seq"] for p in parsed)


def test_removed_user_takes_their_access_and_their_id_with_them(svc: AccessService) -> None:
    pending = svc.request(OSCAR, "web", "deploy", 30 * M, "a")
    svc.add_user(ALICE, "mallory", frozenset({Role.OPERATOR}))
    g = svc.request(Actor("mallory"), "web", "deploy", 30 * M, "b")
    svc.approve(BOB, g.id)
    mallory_id = next(u.id for u in svc.users() if u.name == "mallory")
    svc.remove_user(ALICE, "mallory")
    assert svc.get(g.id).state is RequestState.REVOKED and svc.get(g.id).note == "user removed"
    carol2 = svc.add_user(ALICE, "newbie", frozenset({Role.OPERATOR}))
    assert carol2.id != mallory_id
    assert svc.active_grant(carol2, "web", "deploy") is None
    assert svc.get(pending.id).state is RequestState.PENDING  # oscar's request is untouched


@pytest.mark.parametrize("reason", ["fix\x1b[2Kthis", "a\rb", "line\nbreak", "x" * 501])
def test_reasons_must_be_short_printable_text(svc: AccessService, reason: str) -> None:
    with pytest.raises(UsageError, match="printable"):
        svc.request(OSCAR, "web", "deploy", 30 * M, reason)
    assert svc.requests() == []
