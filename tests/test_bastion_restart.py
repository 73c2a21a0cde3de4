"""A bastion that died (kill -9) leaves no session `live` forever; one bastion per data dir."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recorder import SigningKey, append_at_end, interrupted_seal, load_trusted_keys
from replay import Outcome, Problem, verify
from tests.bastion_env import Env, make_env
from tests.test_bastion import killed_mid_session, wait_for
from zsp_tui.audit import AuditEvent
from zsp_tui.bastion.recovery import close_interrupted
from zsp_tui.exceptions import DataDirError
from zsp_tui.models import SessionRecord
from zsp_tui.store.sqlite import SCHEMA_VERSION, SqliteStore


def _sessions(data: Path) -> list[dict]:
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "sessions", "--json", "--data", str(data)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout)


def test_sessions_of_a_killed_bastion_are_closed_as_interrupted_on_restart(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    before = Path(s.path).read_bytes()
    trusted = load_trusted_keys(env.data.allowed_signers_path)
    found = verify(s.path, trusted)
    assert found.outcome is Outcome.INCOMPLETE and found.problem is Problem.NO_SEAL
    [row] = _sessions(env.data.root)
    assert row["status"] == "live"  # what the store believed while no bastion ran

    env.output.clear()
    env.start()
    try:
        wait_for(lambda: _sessions(env.data.root)[0]["status"] == "interrupted")
        [row] = _sessions(env.data.root)
        assert row["end_reason"] == "interrupted" and row["head"] is None
        time.sleep(1.1)
        assert _sessions(env.data.root)[0]["duration_s"] == row["duration_s"]  # no longer growing
        # Sealed: the original bytes are a byte-exact prefix, followed by a seal (reason
        # interrupted) and the checkpoint signing it, and the recording is VALID.
        sealed = Path(s.path).read_bytes()
        assert sealed.startswith(before) and len(sealed) > len(before)
        report = verify(s.path, trusted)
        assert report.outcome is Outcome.VALID and report.seal is not None
        assert report.seal.reason == "interrupted" and report.seal.exit_status is None
        assert report.frames == found.frames + 2  # the seal and its checkpoint, nothing else
        assert report.seal.extra["session_frames"] == found.frames
        assert report.seal.extra["session_signed_frames"] == found.signed_frames
        assert report.seal.extra["session_head"] == found.head.hex()
        assert str(report.seal.extra["recovered_by"]).startswith("serve:")
        assert report.duration_us == found.duration_us  # the seal claims no time the session did not have
        # The audit log pins how far the session itself reached, and the sealed end.
        [event] = [e for e in env.svc.audit_events() if e.event == "session.interrupted"]
        assert event.session_id == s.id and event.outcome == "failure"
        assert event.fields["recording_outcome"] == "INCOMPLETE"
        assert event.fields["frames"] == found.frames and event.fields["last_head"] == found.head.hex()
        assert event.fields["signed_frames"] == found.signed_frames
        assert event.fields["sealed"] is True and "not_sealed" not in event.fields
        assert event.fields["sealed_head"] == report.head.hex() and event.fields["sealed_frames"] == report.frames
        assert event.fields["owner"].startswith("serve:")
        assert "sealed at restart" in event.message
        # Its end is the recording's last moment, not the restart.
        ended = datetime.fromisoformat(row["ended_at"].replace("Z", "+00:00"))
        last = datetime.fromtimestamp((report.header.started_at_us + report.duration_us) / 1e6, UTC)
        assert abs((ended - last).total_seconds()) < 1
        assert any("interrupted" in line for line in env.output)
        # The restarted bastion re-indexes it as what it now is (it was LIVE in the index): VALID.
        wait_for(lambda: _sessions(env.data.root)[0]["verified"] == "VALID")
        # zsp verify says it is VALID, sealed with reason interrupted, and what the session signed.
        shown = subprocess.run(
            [sys.executable, "-m", "zsp_tui", "verify", s.id[-8:], "--data", str(env.data.root)],
            capture_output=True, text=True,
        )
        assert shown.returncode == 0 and shown.stdout.startswith("VALID"), shown.stdout
        assert " reason=interrupted" in shown.stdout and " ended=interrupted" in shown.stdout
        assert f"session-frames={found.frames} session-signed-frames={found.signed_frames}" in shown.stdout
        as_json = subprocess.run(
            [sys.executable, "-m", "zsp_tui", "verify", s.id, "--json", "--data", str(env.data.root)],
            capture_output=True, text=True,
        )
        assert json.loads(as_json.stdout)[0]["end_reason"] == "interrupted"
        # zsp verify --all: INTERRUPTED (not a plain VALID that would hide the crash).
        every = subprocess.run(
            [sys.executable, "-m", "zsp_tui", "verify", "--all", "--json", "--data", str(env.data.root)],
            capture_output=True, text=True,
        )
        [checked] = json.loads(every.stdout)["recordings"]
        assert checked["state"] == "INTERRUPTED" and every.returncode == 1
        # A second restart finds nothing more to close and seals nothing more.
        env.stop()
        env.start()
        assert len([e for e in env.svc.audit_events() if e.event == "session.interrupted"]) == 1
        assert Path(s.path).read_bytes() == sealed
    finally:
        env.stop()


def _interrupted_event(env: Env, sid: str) -> AuditEvent:
    [event] = [e for e in env.svc.audit_events() if e.event == "session.interrupted" and e.session_id == sid]
    return event


def test_a_torn_tail_is_left_untouched_and_audited_as_unsealed(tmp_path: Path) -> None:
    """A recording whose last frame was cut off mid-write (a crash inside a write, or inside
    recovery's own write of the seal): sealing it would mean cutting it, so it is left as it is."""
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    with open(s.path, "ab") as f:
        f.write(b"\x00\x00\x01\x00" + b"\x94\x01")  # a frame of 256 bytes, cut after 2 of them
    torn = Path(s.path).read_bytes()
    found = verify(s.path, load_trusted_keys(env.data.allowed_signers_path))
    assert found.outcome is Outcome.INCOMPLETE and found.problem is Problem.TORN
    env.start()
    try:
        wait_for(lambda: _sessions(env.data.root)[0]["status"] == "interrupted")
        assert Path(s.path).read_bytes() == torn
        event = _interrupted_event(env, s.id)
        assert event.fields["sealed"] is False and "torn tail" in event.fields["not_sealed"]
        assert event.fields["frames"] == found.frames and event.fields["last_head"] == found.head.hex()
        assert "left unsealed" in event.message
        env.stop()
        env.start()  # a second restart leaves it alone too
        assert Path(s.path).read_bytes() == torn
        assert len([e for e in env.svc.audit_events() if e.event == "session.interrupted"]) == 1
    finally:
        env.stop()


def test_a_recording_edited_before_the_restart_is_not_sealed(tmp_path: Path) -> None:
    """Changed between the crash and the restart: CORRUPT, and recovery never makes it VALID."""
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    raw = bytearray(Path(s.path).read_bytes())
    at = raw.index(b"tick", len(raw) // 2)
    raw[at : at + 4] = b"TOCK"
    Path(s.path).write_bytes(raw)
    found = verify(s.path, load_trusted_keys(env.data.allowed_signers_path))
    assert found.outcome is Outcome.CORRUPT and found.problem is Problem.HASH_MISMATCH
    env.start()
    try:
        wait_for(lambda: _sessions(env.data.root)[0]["end_reason"] == "interrupted")
        assert Path(s.path).read_bytes() == bytes(raw)
        event = _interrupted_event(env, s.id)
        assert event.fields["recording_outcome"] == "CORRUPT" and event.fields["sealed"] is False
        assert "CORRUPT" in event.fields["not_sealed"]
    finally:
        env.stop()


def test_a_recording_sealed_by_a_recovery_that_then_died_is_closed_as_sealed(tmp_path: Path) -> None:
    """Recovery appended the seal, then died before closing the session in the store: the next
    start finds the seal it wrote, appends nothing, and closes the session as sealed at restart."""
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    trusted = load_trusted_keys(env.data.allowed_signers_path)
    found = verify(s.path, trusted)
    end = found.chain_end()
    assert end is not None
    resumed = interrupted_seal(end, env.data.signing_key(), recovered_by="serve:elsewhere:1")
    fd = os.open(s.path, os.O_WRONLY | os.O_APPEND)
    try:
        append_at_end(fd, resumed)
    finally:
        os.close(fd)
    sealed = Path(s.path).read_bytes()
    env.start()
    try:
        wait_for(lambda: _sessions(env.data.root)[0]["status"] == "interrupted")
        assert Path(s.path).read_bytes() == sealed
        event = _interrupted_event(env, s.id)
        assert event.fields["sealed"] is True and event.fields["sealed_head"] == resumed.info.head_hex
        assert event.fields["frames"] == found.frames and event.fields["last_head"] == found.head.hex()
        assert event.fields["recovered_by"] == "serve:elsewhere:1"
    finally:
        env.stop()


def test_a_recording_signed_by_another_key_is_not_sealed(tmp_path: Path) -> None:
    """The bastion's key is not the recording's signer (rotated since): a checkpoint by it would not
    verify, so the recording is left unsealed and the audit event says why."""
    env = make_env(tmp_path)
    s = killed_mid_session(env)
    before = Path(s.path).read_bytes()
    other = SigningKey.generate()
    trusted = [*load_trusted_keys(env.data.allowed_signers_path), other.public]
    assert close_interrupted(env.svc, trusted, key=other) == [s.id]
    assert Path(s.path).read_bytes() == before
    event = _interrupted_event(env, s.id)
    assert event.fields["sealed"] is False and "another key" in event.fields["not_sealed"]


def test_a_second_bastion_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "zsp_tui", "serve", "--data", str(env.data.root), "--listen", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2
        assert "another zsp serve" in p.stderr and "Traceback" not in p.stderr
        assert env.proc is not None and env.proc.poll() is None  # the first one is unharmed
    finally:
        env.stop()


def _session_row(env: Env, sid: str, owner: str, started_at: datetime) -> None:
    """A session the store holds as live, written by ``owner`` (whose recorder may be gone)."""
    env.svc.session_started(
        SessionRecord(
            id=sid,
            user="alice",
            target="local",
            login="alice",
            grant_id=None,
            command=None,
            client="console",
            path=str(env.data.root / f"{sid}.zsprec"),
            started_at=started_at,
            owner=owner,
        ),
        via="console",
    )


def test_only_sessions_whose_recorder_is_gone_are_closed(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    now = env.svc.clock.now()
    host = __import__("socket").gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()

    def started(sid: str, owner: str) -> None:
        _session_row(env, sid, owner, now)  # after this process started: a live pid is its owner, not a reused one

    me = __import__("os").getpid()
    started("old-bastion", "")  # written before schema 2: only bastions recorded sessions
    started("bastion", "serve:otherhost:1")  # an unshared store: another host name cannot be live
    started("worker-dead", f"serve:{host}:{dead.pid}")
    started("worker-alive", f"serve:{host}:{me}")  # another worker of this data dir (zsp serve --workers)
    started("record-dead", f"record:{host}:{dead.pid}")
    started("record-alive", f"record:{host}:{me}")
    started("record-elsewhere", "record:otherhost:1")
    closed = close_interrupted(env.svc, [])
    assert sorted(closed) == ["bastion", "old-bastion", "record-dead", "worker-dead"]
    states = {s.id: s.end_reason for s in env.svc.sessions()}
    assert states == {
        "old-bastion": "interrupted",
        "bastion": "interrupted",
        "worker-dead": "interrupted",
        "worker-alive": None,
        "record-dead": "interrupted",
        "record-alive": None,
        "record-elsewhere": None,
    }
    events = [e for e in env.svc.audit_events() if e.event == "session.interrupted"]
    assert {e.session_id for e in events} == set(closed)
    assert all(e.fields["recording_outcome"] == "unreadable" for e in events)
    assert close_interrupted(env.svc, []) == []
    # On a shared store (PostgreSQL, several bastion hosts) another host's sessions are its own.
    started("other-host", "serve:otherhost:2")
    assert close_interrupted(env.svc, [], shared_store=True) == []


def test_a_live_pid_that_started_after_the_session_is_a_reused_pid(tmp_path: Path) -> None:
    """A bastion killed long ago whose pid now belongs to another process: its session is closed."""
    env = make_env(tmp_path)
    host = __import__("socket").gethostname()
    other = subprocess.Popen(["sleep", "30"])  # a live process, born after the session below
    try:
        _session_row(env, "reused", f"serve:{host}:{other.pid}", env.svc.clock.now() - timedelta(minutes=5))
        assert close_interrupted(env.svc, [], shared_store=True) == ["reused"]
    finally:
        other.kill()
        other.wait()


def test_a_session_left_live_for_a_running_owner_is_said_with_that_process(tmp_path: Path) -> None:
    """A bastion holding the data dir's lock leaves a `serve:` session of a running process live
    (an orphaned worker, say) and says which process that is: a session nobody closes is explained."""
    env = make_env(tmp_path)
    host = __import__("socket").gethostname()
    other = subprocess.Popen(["sleep", "300"])  # born before the session below: it is its owner
    try:
        _session_row(env, "orphaned", f"serve:{host}:{other.pid}", env.svc.clock.now())
        env.start()
        said = [line for line in env.output if "left live" in line]
        assert len(said) == 1 and f"session orphaned left live: its owner serve:{host}:{other.pid} runs" in said[0]
        assert f"pid {other.pid} started " in said[0] and "sleep 300" in said[0], said
        assert [s.end_reason for s in env.svc.sessions()] == [None]
    finally:
        env.stop()
        other.kill()
        other.wait()


def test_a_schema_1_database_is_migrated_forward(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.grant()
    db = env.data.db_path
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE sessions DROP COLUMN owner")
    # Nor what schema 5 added (real-time rules).
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
    # nor what schema 7 added (moderators' watches)
    con.execute("DROP TABLE watches")
    con.execute("DROP INDEX sessions_started")  # schema 1 had neither
    con.execute("DROP INDEX sessions_user")
    con.execute("INSERT INTO sessions(id, user, target, login, client, path, started_at) "
                "VALUES ('s1', 'alice', 'local', 'alice', 'x', '/nonexistent', '2026-01-01T00:00:00Z')")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    store = SqliteStore(db)
    with store.transaction(write=False) as tx:
        assert tx.get_meta("schema_version") == str(SCHEMA_VERSION)
        [s] = tx.list_sessions()
        assert s.id == "s1" and s.owner == "" and s.flags == 0 and s.flag_severity is None and s.upload is None
        assert tx.list_holds() == [] and tx.list_flags() == [] and tx.list_watches(["s1"], open_only=False) == []
        assert [s.id for s in tx.list_sessions(user="alice", since=datetime(2025, 1, 1, tzinfo=UTC))] == ["s1"]
    indexes = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"sessions_started", "sessions_user"} <= indexes
    with store.transaction(write=False) as tx:
        assert len(tx.list_requests()) == 1  # nothing else lost
    store.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(DataDirError, match="newer than this zsp"):
        SqliteStore(db)
