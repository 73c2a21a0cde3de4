"""Gaps in the access rules found in review (issue 7): refusals by the wrong user are audited,
a policy change is logged before the refusals it causes, an auto-approved grant ends with its
rule's window, and self-approval is refused at every position of an N-approval rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from recorder import SigningKey
from tests.access_helpers import POLICY, make_service, populate
from zsp_tui.access import AccessService, Actor
from zsp_tui.audit import AuditEvent
from zsp_tui.clock import FakeClock, rfc3339
from zsp_tui.commands._common import request_line
from zsp_tui.datadir import DataDir
from zsp_tui.exceptions import AccessDenied, PolicyError
from zsp_tui.models import RequestState, Role

M = timedelta(minutes=1)
OSCAR, ALICE, BOB, CAROL, DORA, ERIN = (Actor(n) for n in ("oscar", "alice", "bob", "carol", "dora", "erin"))


def last(svc: AccessService) -> AuditEvent:
    return svc.audit_events()[-1]


def names(svc: AccessService) -> list[str]:
    return [e.event for e in svc.audit_events()]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def svc(tmp_path: Path, clock: FakeClock) -> AccessService:
    s, _ = make_service(tmp_path / "data", clock)
    populate(s)
    return s


# --- refusals by the wrong user are audited ----------------------------------------------------


def assert_refused(svc: AccessService, actor: str, action: str, grant_id: str) -> None:
    e = last(svc)
    assert e.event == "access_request.refused" and e.code == "ZSP5005W"
    assert (e.actor, e.outcome, e.grant_id, e.via) == (actor, "failure", grant_id, "console")
    assert e.fields["action"] == action and e.fields["requester"] == "oscar"


def test_approve_by_a_non_approver_is_refused_and_audited(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    with pytest.raises(AccessDenied, match="may not approve"):
        svc.approve(DORA, r.id)  # a reviewer, not an approver of rule "ops"
    assert_refused(svc, "dora", "approve", r.id)
    assert svc.get(r.id).state is RequestState.PENDING and svc.get(r.id).approvals == ()


def test_deny_by_a_non_approver_and_by_the_requester_are_refused_and_audited(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    with pytest.raises(AccessDenied, match="may not deny"):
        svc.deny(DORA, r.id, "no")
    assert_refused(svc, "dora", "deny", r.id)
    with pytest.raises(AccessDenied, match="cancel it"):
        svc.deny(OSCAR, r.id, "no")
    assert_refused(svc, "oscar", "deny", r.id)
    assert svc.get(r.id).state is RequestState.PENDING


def test_cancel_by_someone_else_is_refused_and_audited(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    for who in (BOB, ALICE):  # an approver, an admin: only the requester cancels
        with pytest.raises(AccessDenied, match="only oscar can cancel"):
            svc.cancel(who, r.id)
        assert_refused(svc, who.name or "", "cancel", r.id)
    assert svc.get(r.id).state is RequestState.PENDING


def test_revoke_by_an_unrelated_user_is_refused_and_audited(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    svc.approve(BOB, r.id)
    with pytest.raises(AccessDenied, match="may not revoke"):
        svc.revoke(DORA, r.id, "mine now")
    assert_refused(svc, "dora", "revoke", r.id)
    assert svc.get(r.id).state is RequestState.APPROVED


def test_refusals_over_ssh_say_via_ssh(svc: AccessService) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    with pytest.raises(AccessDenied):
        svc.approve(Actor("dora", via="ssh"), r.id)
    assert last(svc).via == "ssh"


def test_the_audit_log_still_verifies_after_refusals(svc: AccessService, tmp_path: Path) -> None:
    r = svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    for call in (lambda: svc.approve(DORA, r.id), lambda: svc.cancel(BOB, r.id), lambda: svc.deny(DORA, r.id, "n")):
        with pytest.raises(AccessDenied):
            call()
    report = svc.audit_verify([DataDir(tmp_path / "data").signing_key().public])
    assert report.ok, report


# --- a policy change is logged before the refusals it causes -----------------------------------


def test_policy_change_precedes_the_refusal_it_causes(svc: AccessService, tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    before = names(svc).count("policy.change")
    # Operators may no longer request the web target at all.
    d.policy_path.write_text(
        POLICY.replace('targets = ["*"]', 'targets = ["db-*"]').replace('targets = ["web"]', 'targets = ["nothing"]')
    )
    with pytest.raises(AccessDenied, match="no policy rule"):
        svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    ev = svc.audit_events()
    assert [e.event for e in ev[-2:]] == ["policy.change", "access_request.refused"]
    assert ev[-2].seq < ev[-1].seq
    assert ev[-2].fields["new_sha256"] == d.policy().digest
    assert names(svc).count("policy.change") == before + 1
    # Logged once: the next operation does not log the same change again.
    with pytest.raises(AccessDenied):
        svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    assert names(svc).count("policy.change") == before + 1


def test_policy_change_precedes_a_refused_approval(svc: AccessService, tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    r = svc.request(OSCAR, "db-1", "postgres", 30 * M, "INC-1")  # approvers: role:approver, group:dba
    d.policy_path.write_text(POLICY.replace('dba = ["dora"]', "dba = []"))
    with pytest.raises(AccessDenied, match="may not approve"):
        svc.approve(DORA, r.id)
    assert names(svc)[-2:] == ["policy.change", "access_request.refused"]


def test_an_invalid_policy_file_refuses_without_logging_a_change(svc: AccessService, tmp_path: Path) -> None:
    d = DataDir(tmp_path / "data")
    before = names(svc)
    d.policy_path.write_text("[[rule]]\nname = 1\n")
    with pytest.raises(PolicyError):
        svc.request(OSCAR, "web", "deploy", 30 * M, "x")
    assert names(svc) == before


# --- an auto-approved grant ends with its rule's window ----------------------------------------

WINDOW_POLICY = """\
[[auto_approve]]
name = "morning"
requesters = ["role:operator"]
targets = ["web"]
logins = ["readonly"]
max_duration = "1h"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "{hours}"
timezone = "Europe/Berlin"
require_reason = false
"""

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-11-26 is a Thursday; 2026-11-27 a Friday.


def window_service(tmp_path: Path, hours: str, at: datetime) -> tuple[AccessService, FakeClock]:
    clock = FakeClock(at.astimezone(UTC))
    s, _ = make_service(tmp_path / "data", clock, WINDOW_POLICY.format(hours=hours))
    populate(s)
    return s, clock


def test_auto_grant_is_cut_at_the_end_of_the_window(tmp_path: Path) -> None:
    svc, clock = window_service(tmp_path, "10:00-10:40", datetime(2026, 11, 26, 10, 18, tzinfo=BERLIN))
    g = svc.request(OSCAR, "web", "readonly", 30 * M, "")
    end = datetime(2026, 11, 26, 10, 40, tzinfo=BERLIN)
    assert g.state is RequestState.APPROVED and g.ends_at == end  # not 10:48
    assert svc.get(g.id).ends_at == end
    e = last(svc)
    assert e.event == "grant.start" and e.fields["ends_at"] == rfc3339(end) and e.fields["cut_to_window"] is True
    assert "the end of rule 'morning'" in e.message
    assert "cut short" in request_line(svc.get(g.id), clock.now())
    user = next(u for u in svc.users() if u.name == "oscar")
    clock.set(end - timedelta(microseconds=1))
    assert svc.active_grant(user, "web", "readonly") is not None
    clock.set(end)
    assert svc.active_grant(user, "web", "readonly") is None


def test_auto_grant_inside_the_window_is_not_cut(tmp_path: Path) -> None:
    svc, clock = window_service(tmp_path, "10:00-10:40", datetime(2026, 11, 26, 10, 5, tzinfo=BERLIN))
    g = svc.request(OSCAR, "web", "readonly", 30 * M, "")
    assert g.ends_at == clock.now() + 30 * M
    assert last(svc).fields["cut_to_window"] is False
    assert "cut short" not in request_line(g, clock.now())


def test_a_window_to_midnight_runs_on_into_the_next_allowed_day_only(tmp_path: Path) -> None:
    # Thursday 23:50: Friday's window starts at 00:00, so the grant runs its full hour.
    svc, clock = window_service(tmp_path, "00:00-24:00", datetime(2026, 11, 26, 23, 50, tzinfo=BERLIN))
    g = svc.request(OSCAR, "web", "readonly", 60 * M, "")
    assert g.ends_at == clock.now() + 60 * M
    # Friday 23:50: Saturday is not an allowed day, so it ends at midnight.
    svc2, _ = window_service(tmp_path / "b", "00:00-24:00", datetime(2026, 11, 27, 23, 50, tzinfo=BERLIN))
    g2 = svc2.request(OSCAR, "web", "readonly", 60 * M, "")
    assert g2.ends_at == datetime(2026, 11, 28, 0, 0, tzinfo=BERLIN)


def test_a_window_ending_at_midnight_on_a_later_start_is_cut(tmp_path: Path) -> None:
    svc, _ = window_service(tmp_path, "18:00-24:00", datetime(2026, 11, 26, 23, 30, tzinfo=BERLIN))
    g = svc.request(OSCAR, "web", "readonly", 60 * M, "")
    assert g.ends_at == datetime(2026, 11, 27, 0, 0, tzinfo=BERLIN)


def test_break_glass_and_approved_grants_are_not_cut(svc: AccessService, clock: FakeClock) -> None:
    r = svc.request(OSCAR, "web", "deploy", 4 * 60 * M, "x")
    assert svc.approve(BOB, r.id).ends_at == clock.now() + 4 * 60 * M
    assert last(svc).fields["cut_to_window"] is False


# --- self-approval is refused wherever it comes in an N-approval rule --------------------------

N_POLICY = """\
[[rule]]
name = "two"
requesters = ["*"]
targets = ["db-*"]
logins = ["*"]
max_duration = "4h"
require_reason = false
approvers = ["role:approver", "role:admin"]
approvals = 2

[[rule]]
name = "three"
requesters = ["*"]
targets = ["web"]
logins = ["*"]
max_duration = "4h"
require_reason = false
approvers = ["role:approver", "role:admin"]
approvals = 3
"""


@pytest.fixture
def nsvc(tmp_path: Path, clock: FakeClock) -> AccessService:
    s, _ = make_service(tmp_path / "data", clock, N_POLICY)
    populate(s)
    s.add_user(ALICE, "erin", frozenset({Role.APPROVER}), [SigningKey.generate().public.openssh])
    return s


def refused_self(svc: AccessService, who: Actor, rid: str, approvals: tuple[str, ...]) -> None:
    with pytest.raises(AccessDenied, match="cannot approve their own request"):
        svc.approve(who, rid)
    r = svc.get(rid)
    assert r.state is RequestState.PENDING and r.approvals == approvals
    e = last(svc)
    assert e.event == "access_request.refused" and e.grant_id == rid and e.fields["action"] == "approve"


def test_requester_approving_second_of_two_is_refused(nsvc: AccessService) -> None:
    r = nsvc.request(BOB, "db-1", "postgres", 30 * M, "")
    nsvc.approve(CAROL, r.id)
    refused_self(nsvc, BOB, r.id, ("carol",))
    g = nsvc.approve(ERIN, r.id)  # a second real approver completes it
    assert g.state is RequestState.APPROVED and g.approvals == ("carol", "erin")


@pytest.mark.parametrize("before", [("carol",), ("carol", "erin")])
def test_requester_approving_second_or_third_of_three_is_refused(nsvc: AccessService, before: tuple[str, ...]) -> None:
    r = nsvc.request(BOB, "web", "deploy", 30 * M, "")
    for name in before:
        nsvc.approve(Actor(name), r.id)
    refused_self(nsvc, BOB, r.id, before)


def test_admin_requester_approving_second_of_two_is_refused(nsvc: AccessService) -> None:
    r = nsvc.request(ALICE, "db-1", "postgres", 30 * M, "")
    nsvc.approve(BOB, r.id)
    refused_self(nsvc, ALICE, r.id, ("bob",))


@pytest.mark.parametrize("spelling", ["BOB", "Bob", " bob ", "\uff42\uff4f\uff42"])
def test_requester_under_another_spelling_approving_second_is_refused(nsvc: AccessService, spelling: str) -> None:
    r = nsvc.request(BOB, "db-1", "postgres", 30 * M, "")
    nsvc.approve(CAROL, r.id)
    refused_self(nsvc, Actor(spelling), r.id, ("carol",))
    # ...and over SSH too.
    refused_self(nsvc, Actor(spelling, via="ssh"), r.id, ("carol",))


def test_requester_cannot_complete_a_grant_after_another_spelling_approved_first(nsvc: AccessService) -> None:
    r = nsvc.request(Actor("BOB"), "web", "deploy", 30 * M, "")
    nsvc.approve(CAROL, r.id)
    nsvc.approve(ERIN, r.id)
    refused_self(nsvc, Actor("bob"), r.id, ("carol", "erin"))
    assert nsvc.approve(ALICE, r.id).state is RequestState.APPROVED


# --- docs/AUDIT.md lists every event ------------------------------------------------------------


def test_every_event_is_documented_with_its_code() -> None:
    from zsp_tui.audit import EVENTS

    doc = (Path(__file__).parent.parent / "docs" / "AUDIT.md").read_text()
    for name, code in EVENTS.items():
        if name == "audit.start":  # reserved; never emitted
            continue
        short = name.rsplit(".", 1)[1]
        assert code in doc and (f"`{name}`" in doc or f"`{short}`" in doc), name


def test_every_event_has_a_code_of_its_own() -> None:
    """A SIEM rule keys on the code: two events sharing one would be read as each other (seen:
    file transfer and the review app both took ZSP2400I)."""
    from collections import Counter

    from zsp_tui.audit import EVENTS

    shared = {code: n for code, n in Counter(EVENTS.values()).items() if n > 1}
    assert shared == {}, shared
