"""An event field the format does not admit is refused by the writer (nothing written), never
written as a frame every verifier then reports ``malformed`` (a corrupt recording)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recorder import AsyncRecorder, FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, verify

META = SessionMeta(user="alice", target="db1", login="postgres", term="xterm", cols=80, rows=24)


@pytest.mark.parametrize(
    "fields",
    [{"who": ["a", "b"]}, {"n": 2**64}, {"n": -(2**63) - 1}, {"blob": b"\x00"}, {"f": 1.5}, {"m": {}}],
)
def test_a_bad_event_field_is_refused_and_the_recording_stays_valid(tmp_path: Path, fields: dict) -> None:
    key = SigningKey.generate()
    path = tmp_path / "r.zsprec"
    w = RecordingWriter(FileSink(path, sync_dir=False), key, META)
    w.output(b"before\r\n", at_ns=1_000_000)
    with pytest.raises(ValueError, match="event field"):
        w.event("note", "bad", at_ns=2_000_000, **fields)
    w.event("note", "good", at_ns=3_000_000, who="a,b", n=2**64 - 1, neg=-(2**63), ok=True, none=None)
    w.close(0, "exit")
    report = verify(path, [key.public])
    assert report.outcome is Outcome.VALID, report


def test_the_async_recorder_refuses_a_bad_field_at_once(tmp_path: Path) -> None:
    async def run() -> Outcome:
        key = SigningKey.generate()
        path = tmp_path / "a.zsprec"
        rec = AsyncRecorder(RecordingWriter(FileSink(path, sync_dir=False), key, META))
        rec.output(b"x")
        with pytest.raises(ValueError, match="event field"):
            rec.event("moderation.watch.start", "who", moderators=["bob"])  # type: ignore[arg-type]
        rec.event("moderation.watch.start", "who", moderators="bob")
        await rec.close(0, "exit")
        return verify(path, [key.public]).outcome

    assert asyncio.run(run()) is Outcome.VALID


def test_an_audit_event_with_a_bad_field_is_refused_and_the_log_stays_verifiable(tmp_path: Path) -> None:
    """The audit log is a recording too: a list field (the moderation code once passed one) would
    have made every later `zsp audit verify` fail. The change is refused, the log stays whole."""
    from tests.access_helpers import make_service, populate
    from zsp_tui.audit import NewEvent

    svc, d = make_service(tmp_path / "data")
    populate(svc)
    with pytest.raises(ValueError, match="event field 'moderators'"):
        with svc._unit() as u:
            u.audit(NewEvent("session.review", "dora", "console", "x", fields={"moderators": ["a", "b"]}))
    key = d.signing_key()
    with svc.store.transaction(write=False) as tx:
        report = svc.audit_log.verify(tx, [key.public])
    assert report.ok, report.detail
    assert not [e for e in svc.audit_events() if e.event == "session.review"]
