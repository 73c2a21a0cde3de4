"""`zsp verify --all`: every recording cross-checked against the audit log (RELIABILITY.md, row R1-R5).

A recording rewritten and signed again with the bastion's own key verifies VALID on its own; the
audit log, which holds each session's final head (and is anchored off the box), is what catches it.
Real CLI processes (`zsp record`, `zsp verify --all`) over a real data dir and SQLite store.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta
from replay import Outcome, verify
from tests.test_cli import no_traceback, zsp
from zsp_tui.bastion.recovery import close_interrupted
from zsp_tui.datadir import DataDir


def _record(text: str) -> str:
    """One audited `zsp record` session; its id."""
    p = zsp("record", "-q", "--", "sh", "-c", f"echo {text}")
    assert p.returncode == 0, p.stderr
    return _newest_id()


def _newest_id() -> str:
    data = DataDir(Path(os.environ["ZSP_DATA"]))
    return max(data.service().sessions(), key=lambda s: s.started_at).id


def _forge(data: DataDir, sid: str, path: Path, text: bytes) -> None:
    """Rewrite ``sid``'s recording at ``path`` with the data dir's own key: a whole, sealed,
    validly signed recording of the same session id, with other content."""
    tmp = path.with_suffix(".forged")
    w = RecordingWriter(
        FileSink(tmp),
        data.signing_key(),
        SessionMeta(user=os.environ.get("USER", "root"), target="local", login="root"),
        session_id=uuid.UUID(sid),
        coalesce_ms=0,
    )
    w.output(text)
    w.close(0, "exit")
    tmp.replace(path)


def _all(*extra: str) -> subprocess.CompletedProcess[str]:
    p = zsp("verify", "--all", *extra)
    no_traceback(p)
    return p


def _states(p: subprocess.CompletedProcess[str]) -> dict[str, str]:
    out = json.loads(p.stdout)
    return {r["session_id"]: r["state"] for r in out["recordings"]}


def test_verify_all_catches_resigned_truncated_missing_unknown_and_corrupt(data_dir: Path) -> None:
    assert zsp("init").returncode == 0
    data = DataDir(data_dir)
    ids = [_record(f"session-{i}") for i in range(6)]
    good, resigned, cut, gone, flipped, resealed_shorter = ids

    p = _all()
    assert p.returncode == 0, p.stdout
    assert "audit log OK" in p.stdout and "6 session(s): 6 VALID" in p.stdout

    path = {s.id: Path(s.path) for s in data.service().sessions()}
    trusted = data.trusted_keys()
    # Rewritten and re-signed with the bastion's own key: VALID alone, caught by the audited head.
    _forge(data, resigned, path[resigned], b"nothing to see here\r\n")
    assert verify(path[resigned], trusted).outcome is Outcome.VALID
    # Cut back, then sealed again with the same key (a shorter but whole recording).
    _forge(data, resealed_shorter, path[resealed_shorter], b"")
    # Cut at a byte offset: INCOMPLETE alone, TRUNCATED against an audited seal.
    raw = path[cut].read_bytes()
    path[cut].write_bytes(raw[: len(raw) // 2])
    # Deleted whole.
    path[gone].unlink()
    # One byte changed.
    raw = bytearray(path[flipped].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path[flipped].write_bytes(bytes(raw))
    # Planted: a recording the audit log never saw, signed with the bastion's key.
    planted = str(uuid.uuid4())
    _forge(data, planted, data.recordings / f"{planted}.zsprec", b"planted\r\n")

    p = _all("--json")
    assert p.returncode == 1
    states = _states(p)
    assert states == {
        good: "VALID",
        resigned: "RESIGNED",
        resealed_shorter: "RESIGNED",
        cut: "TRUNCATED",
        gone: "MISSING",
        flipped: "CORRUPT",
        planted: "UNKNOWN",
    }
    assert json.loads(p.stdout)["audit"]["ok"] is True
    # The human form says the same, one line each.
    h = _all()
    assert h.returncode == 1
    for sid, state in states.items():
        assert any(line.startswith(state) and sid in line for line in h.stdout.splitlines())


def test_a_recording_renamed_to_another_session_is_corrupt(data_dir: Path) -> None:
    assert zsp("init").returncode == 0
    data = DataDir(data_dir)
    a, b = _record("a"), _record("b")
    path = {s.id: Path(s.path) for s in data.service().sessions()}
    path[a].replace(path[b])  # b's file now holds a's (genuine, VALID) recording; a's is gone
    states = _states(_all("--json"))
    assert states == {a: "MISSING", b: "CORRUPT"}


def test_an_interrupted_session_is_interrupted_until_cut_further(data_dir: Path) -> None:
    """A `zsp record` killed with SIGKILL: closed as interrupted at recovery (what a restarting
    bastion runs) and sealed as such, then INTERRUPTED, ending at the audited sealed head; cut
    back to before the seal (its bytes as the kill left them) or further, TRUNCATED."""
    assert zsp("init").returncode == 0
    data = DataDir(data_dir)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zsp_tui",
            "record",
            "-q",
            "--",
            "sh",
            "-c",
            "yes interrupted | head -c 400000; sleep 60",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        live = data.service().unended_sessions()
        # All 400000 bytes recorded: the writer idles in `sleep 60`, so the kill leaves no torn tail.
        if live and Path(live[0].path).exists() and Path(live[0].path).stat().st_size > 400_000:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    [record] = data.service().unended_sessions()

    p = _all("--json")
    assert _states(p) == {record.id: "LIVE"} and p.returncode == 0  # not found interrupted yet

    as_killed = Path(record.path).read_bytes()
    assert close_interrupted(data.service(), data.trusted_keys(), key=data.signing_key()) == [record.id]
    sealed = Path(record.path).read_bytes()
    assert sealed.startswith(as_killed) and len(sealed) > len(as_killed)
    p = _all("--json")
    assert _states(p) == {record.id: "INTERRUPTED"} and p.returncode == 1
    [row] = json.loads(p.stdout)["recordings"]
    assert row["audited_end"] == "interrupted" and row["outcome"] == "VALID"
    assert row["head"] == row["audited_sealed_head"] and row["head"] != row["audited_head"]
    assert "sealed at restart (reason interrupted)" in row["detail"]
    shown = zsp("verify", record.id)
    assert shown.returncode == 0 and shown.stdout.startswith("VALID") and " reason=interrupted" in shown.stdout

    Path(record.path).write_bytes(as_killed)  # the seal cut off: what the session itself wrote
    assert _states(_all("--json")) == {record.id: "TRUNCATED"}
    Path(record.path).write_bytes(as_killed[: len(as_killed) // 3])
    assert _states(_all("--json")) == {record.id: "TRUNCATED"}


def test_a_header_only_recording_of_a_session_never_stored_is_an_orphan(data_dir: Path) -> None:
    """The bastion makes a session's recording, then stores the session: killed in between, it
    leaves a file with a header and nothing else. Reported, but it fails nothing (no byte is
    recorded in it); one with a single recorded byte is UNKNOWN."""
    assert zsp("init").returncode == 0
    data = DataDir(data_dir)
    good = _record("good")
    orphan, planted = str(uuid.uuid4()), str(uuid.uuid4())
    meta = SessionMeta(user="alice", target="local", login="root")
    RecordingWriter(
        FileSink(data.recordings / f"{orphan}.zsprec"),
        data.signing_key(),
        meta,
        session_id=uuid.UUID(orphan),
        autoflush=False,
    )  # never closed: as a SIGKILL leaves it
    w = RecordingWriter(
        FileSink(data.recordings / f"{planted}.zsprec"),
        data.signing_key(),
        meta,
        session_id=uuid.UUID(planted),
        coalesce_ms=0,
    )
    w.output(b"x")
    w.tick()
    p = _all("--json")
    assert _states(p) == {good: "VALID", orphan: "ORPHAN", planted: "UNKNOWN"}
    assert p.returncode == 1
    (data.recordings / f"{planted}.zsprec").unlink()
    p = _all()
    assert p.returncode == 0 and "1 VALID, 1 ORPHAN" in p.stdout


def test_all_takes_no_paths_and_an_empty_data_dir_is_fine(data_dir: Path) -> None:
    assert zsp("init").returncode == 0
    p = _all()
    assert p.returncode == 0 and "0 session(s): none" in p.stdout
    p = zsp("verify", "--all", "x.zsprec")
    assert p.returncode == 2 and "--all" in p.stderr
    p = zsp("verify")
    assert p.returncode == 2 and "--all" in p.stderr


def test_an_audit_log_cut_back_to_hide_a_rewrite_is_caught_by_its_anchors(data_dir: Path, tmp_path: Path) -> None:
    """The attacker rewrites a recording with the bastion's key and cuts the audit log back to the
    checkpoint after its session started (so no end, and no head, is audited): alone, the log is an
    intact signed prefix and the session looks live; the anchors its checkpoints sent off the box
    show the log was cut."""
    assert zsp("init").returncode == 0
    jsonl = tmp_path / "audit.jsonl"
    (data_dir / "zsp.toml").write_text(f'[audit]\njsonl = "{jsonl}"\n')
    sid = _record("honest")
    data = DataDir(data_dir)
    [s] = data.service().sessions()
    _forge(data, sid, Path(s.path), b"rewritten\r\n")
    with sqlite3.connect(data_dir / "zsp.db") as db:
        rows = db.execute("SELECT seq, event FROM audit ORDER BY seq").fetchall()
        start = next(seq for seq, event in rows if event == "session.start")
        keep = next(seq for seq, event in rows if seq > start and event == "audit.checkpoint")
        db.execute("DELETE FROM audit WHERE seq > ?", (keep,))

    p = _all("--json")
    assert _states(p) == {sid: "LIVE"} and p.returncode == 0  # fooled, without the anchors
    p = _all("--json", "--anchor", str(jsonl))
    assert p.returncode == 1
    audit = json.loads(p.stdout)["audit"]
    assert audit["ok"] is False and "CUT" in audit["detail"]
    h = _all("--anchor", str(jsonl))
    assert h.returncode == 1 and h.stdout.startswith("audit log FAILED")
    assert zsp("verify", sid, "--anchor", str(jsonl)).returncode == 2  # --anchor only with --all


def test_a_recording_sealed_just_before_its_bastion_died_is_valid(tmp_path: Path, data_dir: Path) -> None:
    """The bastion sealed the recording, then died before storing the session's end: the restart
    finds it interrupted, with the recording whole; the audit log pins that very head."""
    from replay import verify as verify_report
    from zsp_tui.commands.verify_all import Audited, State, _judge

    assert zsp("init").returncode == 0
    data = DataDir(data_dir)
    sid = str(uuid.uuid4())
    path = tmp_path / "sealed.zsprec"
    _forge(data, sid, path, b"whole\r\n")
    r = verify_report(path, data.trusted_keys())
    assert r.outcome is Outcome.VALID and r.head is not None
    found = Audited(sid, ended=True, interrupted=True, reason="interrupted", head=r.head.hex(), frames=r.frames)
    assert _judge(found, r, str(path)).state is State.VALID
    cut_later = Audited(sid, ended=True, interrupted=True, reason="interrupted", head=r.head.hex(), frames=r.frames + 3)
    assert _judge(cut_later, r, str(path)).state is State.TRUNCATED
    other = Audited(sid, ended=True, interrupted=True, reason="interrupted", head="00" * 32, frames=r.frames)
    assert _judge(other, r, str(path)).state is State.RESIGNED
