"""Signed reviews (issue 13): ``zsp review-mark`` as reviewers use it. Real data dirs, real
recordings made by ``recorder``, real SQLite, the real CLI in subprocesses; over ssh through a
real bastion; the attestation in the signed audit chain and in an evidence export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, new_session_id
from replay import verify
from tests.access_helpers import make_service, populate
from zsp_tui.access import AccessService, Actor
from zsp_tui.datadir import DataDir
from zsp_tui.exceptions import AccessDenied, Conflict, UsageError
from zsp_tui.models import Role, SessionRecord, session_owner
from zsp_tui.reviews import mark_reviewed


def _zsp(d: DataDir, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSP_")}
    return subprocess.run(
        [sys.executable, "-m", "zsp_tui", *args, "--data", str(d.root)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )


def _session(svc: AccessService, d: DataDir, user: str = "oscar", *, end: bool = True, text: str = "hello") -> str:
    """A session recorded by ``recorder`` in the data dir, started (and ``end``: ended, sealed) in the store."""
    sid = new_session_id()
    path = d.recordings / f"{sid}.zsprec"
    meta = SessionMeta(user=user, target="db-1", login="postgres", term="xterm", cols=80, rows=24)
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(), meta, session_id=sid)
    w.output(f"$ echo {text}\r\n{text}\r\n".encode(), at_ns=1_000_000_000)
    record = SessionRecord(
        id=str(sid), user=user, target="db-1", login="postgres", grant_id=None, command=None,
        client="127.0.0.1:40000", path=str(path), started_at=datetime.now(UTC), owner=session_owner("serve"),
    )
    svc.session_started(record)
    if end:
        w.close(0, "exit")
        report = verify(path, d.trusted_keys())
        assert report.head is not None
        svc.session_ended(record, 0, "exit", report.head.hex())
    else:
        w.flush()
    return str(sid)


@pytest.fixture
def dd(tmp_path: Path) -> tuple[AccessService, DataDir]:
    svc, d = make_service(tmp_path / "data")
    populate(svc)  # alice operator+admin, bob/carol approvers, dora reviewer, oscar operator
    svc.add_user(Actor("alice"), "rita", frozenset({Role.REVIEWER, Role.OPERATOR}))
    return svc, d


def test_a_reviewer_attests_a_session_into_the_signed_audit_chain(dd) -> None:
    svc, d = dd
    sid = _session(svc, d)
    before = _zsp(d, "sessions", "--unreviewed", "--json")
    assert before.returncode == 0 and [s["id"] for s in json.loads(before.stdout)] == [sid]

    p = _zsp(d, "review-mark", sid[-8:], "--note", "checked the vacuum, nothing else ran", "--as", "dora", "--json")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    head = verify(d.recordings / f"{sid}.zsprec", d.trusted_keys()).head
    assert head is not None
    assert got["session_id"] == sid and got["reviewer"] == "dora" and got["outcome"] == "VALID"
    assert got["head"] == head.hex() and got["note"] == "checked the vacuum, nothing else ran"

    events = [json.loads(line) for line in _zsp(d, "audit", "--json").stdout.splitlines()]
    [ev] = [e for e in events if e.get("event") == "session.review" or e.get("type") == "session.review"]
    assert ev["session_id"] == sid and ev["actor"] == "dora" and ev["head"] == head.hex()
    assert ev["code"] == "ZSP2320I" and ev["verdict"] == "VALID" and ev["operator"] == "oscar"
    audit = _zsp(d, "audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr  # the attestation is signed by the chain

    after = _zsp(d, "sessions", "--unreviewed", "--json")
    assert json.loads(after.stdout) == []
    listed = json.loads(_zsp(d, "sessions", "--json").stdout)
    assert listed[0]["reviewed_by"] == ["dora"]


def test_nobody_attests_their_own_session_admins_included_and_the_refusal_is_audited(dd) -> None:
    svc, d = dd
    own = _session(svc, d, user="rita")  # rita is a reviewer and an operator
    p = _zsp(d, "review-mark", own, "--as", "rita")
    assert p.returncode == 1 and "cannot attest a review of their own session" in p.stderr
    assert "Traceback" not in p.stderr
    refused = [e for e in svc.audit_events() if e.event == "session.review.refused"]
    assert [(e.actor, e.session_id) for e in refused] == [("rita", own)]
    assert not [e for e in svc.audit_events() if e.event == "session.review"]
    # An admin without the reviewer role may not attest either; an operator may not.
    other = _session(svc, d, user="carol")
    for who in ("alice", "oscar", "bob"):
        q = _zsp(d, "review-mark", other, "--as", who)
        assert q.returncode == 1 and "needs the reviewer role" in q.stderr, (who, q.stderr)


def test_a_corrupt_or_live_recording_is_never_attested(dd) -> None:
    svc, d = dd
    live = _session(svc, d, end=False)
    p = _zsp(d, "review-mark", live, "--as", "dora")
    assert p.returncode == 1 and "still live" in p.stderr, p.stderr

    sid = _session(svc, d, text="original output")
    path = d.recordings / f"{sid}.zsprec"
    data = bytearray(path.read_bytes())
    i = data.find(b"original output")
    data[i : i + 8] = b"FORGED!!"
    path.write_bytes(bytes(data))
    q = _zsp(d, "review-mark", sid, "--as", "dora")
    assert q.returncode == 1 and "refused" in q.stderr and "CORRUPT" in q.stderr, q.stderr
    assert not [e for e in svc.audit_events() if e.event == "session.review"]


def test_a_recording_swapped_for_another_session_is_not_attested(dd) -> None:
    svc, d = dd
    a, b = _session(svc, d, text="aaa"), _session(svc, d, text="bbb")
    (d.recordings / f"{a}.zsprec").write_bytes((d.recordings / f"{b}.zsprec").read_bytes())
    p = _zsp(d, "review-mark", a, "--as", "dora")
    assert p.returncode == 1 and f"holds session {b}" in p.stderr, p.stderr


def test_one_attestation_per_reviewer_and_session_others_may_add_theirs(dd) -> None:
    svc, d = dd
    sid = _session(svc, d)
    assert mark_reviewed(d, svc, Actor("dora"), sid, "first").reviewer == "dora"
    with pytest.raises(Conflict, match="already attested"):
        mark_reviewed(d, svc, Actor("dora"), sid, "again")
    assert mark_reviewed(d, svc, Actor("rita"), sid).reviewer == "rita"
    assert [r.reviewer for r in svc.reviews()[sid]] == ["dora", "rita"]


@pytest.mark.parametrize("note", ["\x1b]52;c;cHduZWQ=\x07", "a" * 501, "line\nbreak", "\u202etxt.exe"])
def test_a_hostile_note_is_refused_before_anything_is_written(dd, note: str) -> None:
    svc, d = dd
    sid = _session(svc, d)
    with pytest.raises(UsageError, match="review note"):
        mark_reviewed(d, svc, Actor("dora"), sid, note)
    assert not svc.reviews()


def test_a_file_path_is_not_a_session_to_attest(dd) -> None:
    svc, d = dd
    sid = _session(svc, d)
    with pytest.raises(UsageError, match="not a file"):
        mark_reviewed(d, svc, Actor("dora"), str(d.recordings / f"{sid}.zsprec"))


def test_the_head_must_be_the_one_stored_at_the_session_end(dd) -> None:
    svc, d = dd
    sid = _session(svc, d)
    with pytest.raises(AccessDenied, match="not this session's recording"):
        svc.attest_review(Actor("dora"), sid, head="00" * 32, outcome="VALID", frames=3)


def test_an_export_of_the_session_carries_the_attestation_verified_offline(dd, tmp_path: Path) -> None:
    svc, d = dd
    sid = _session(svc, d)
    assert _zsp(d, "review-mark", sid, "--note", "ok", "--as", "dora").returncode == 0
    out = tmp_path / "evidence.tar"
    e = _zsp(d, "export", sid, "-o", str(out), "--as", "dora")
    assert e.returncode == 0, e.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
        [events_name] = [n for n in names if n.endswith("audit/events.jsonl")]
        events = [json.loads(line) for line in tar.extractfile(events_name).read().decode().splitlines()]  # type: ignore[union-attr]
    reviews = [x for x in events if "session.review" in (x.get("event"), x.get("type"))]
    assert len(reviews) == 1 and reviews[0]["actor"] == "dora" and reviews[0]["session_id"] == sid
    v = _zsp(d, "verify", str(out))
    assert v.returncode == 0, v.stdout + v.stderr


def test_review_mark_over_ssh_through_the_bastion(env) -> None:
    """``ssh zsp@BASTION review-mark SESSION --note ...`` as the key's user (``env``: alice
    operator+admin, bob approver; mallory's key becomes the reviewer rev)."""
    env.grant()
    r = env.ssh("alice", "local", "echo reviewed-over-ssh")
    assert r.returncode == 0, r.stderr
    [s] = env.svc.sessions()
    env.svc.add_user(Actor("alice"), "rev", frozenset({Role.REVIEWER}), [Path(f"{env.keys['mallory']}.pub").read_text()])
    refused = env.ssh("bob", "zsp", "review-mark", s.id, "--note", "looks fine")
    assert refused.returncode != 0 and "needs the reviewer role" in refused.stderr, refused.stderr
    ok = env.ssh("mallory", "zsp", "review-mark", s.id[-8:], "--note", "looked at it over ssh, fine")
    assert ok.returncode == 0, ok.stderr
    assert f"session {s.id} reviewed by rev" in ok.stdout and "looked at it over ssh, fine" in ok.stdout
    [review] = env.svc.reviews()[s.id]
    assert (review.reviewer, review.note, review.outcome) == ("rev", "looked at it over ssh, fine", "VALID")
    assert any(e.event == "session.review" and e.via == "ssh" for e in env.svc.audit_events())


async def test_the_review_app_attests_from_the_replay_screen(dd) -> None:
    """In Replay, ``m`` asks for a note and attests, as ``zsp review-mark`` does; a refusal (here:
    the reviewer's own session) is shown, never raised into the UI."""
    import time as _time

    from zsp_tui.tui import ReviewApp, ReviewContext
    from zsp_tui.tui.screens.replay import ReplayScreen

    svc, d = dd
    sid, own = _session(svc, d), _session(svc, d, user="rita")

    async def until(pilot, cond, timeout: float = 30.0) -> None:
        end = _time.monotonic() + timeout
        while not cond():
            if _time.monotonic() > end:
                raise AssertionError("timed out")
            await pilot.pause(0.05)

    app = ReviewApp(ReviewContext.open(d, "rita", "console"))
    async with app.run_test(size=(120, 36)) as pilot:
        for target, note in ((sid, "checked it in the app"), (own, "mine")):
            app.open_replay(target)
            await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.report is not None)
            await pilot.press("m")
            await pilot.pause(0.2)
            await pilot.press(*note)
            await pilot.press("enter")
            if target == sid:
                await until(pilot, lambda: sid in svc.reviews())
            else:
                await until(pilot, lambda: any(e.event == "session.review.refused" for e in svc.audit_events()))
            await pilot.pause(0.2)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ReplayScreen))
    [review] = svc.reviews()[sid]
    assert (review.reviewer, review.note, review.outcome) == ("rita", "checked it in the app", "VALID")
    assert own not in svc.reviews()
