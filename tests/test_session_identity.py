"""A session named by id is the recording of that session, not a genuine recording of another.

Every recording in a data dir is signed by the same key, so a file copied over another session's
recording (or dropped into ``recordings/`` under another id) verifies VALID on its own. What the
data dir recorded about the session (its id; the chain head written at its end, in the store and
in the signed ``session.end`` audit event) must therefore hold too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta
from tests.test_first_hour import run_zsp
from zsp_tui.datadir import DataDir


def _two_sessions(tmp_path: Path) -> tuple[Path, dict, dict]:
    data = tmp_path / "data"
    assert run_zsp("init", "--data", str(data)).returncode == 0
    for word in ("first-session", "second-session"):
        r = run_zsp("record", "--data", str(data), "--", "sh", "-c", f"echo {word}")
        assert r.returncode == 0, r.stderr
    a, b = json.loads(run_zsp("sessions", "--data", str(data), "--json").stdout)
    return data, a, b


def test_a_recording_copied_over_another_session_is_not_that_session(tmp_path: Path) -> None:
    data, a, b = _two_sessions(tmp_path)
    assert run_zsp("verify", "--data", str(data), b["id"]).returncode == 0
    shutil.copyfile(a["path"], b["path"])  # A's genuine, signed recording in B's place

    v = run_zsp("verify", "--data", str(data), b["id"])
    assert v.returncode == 1
    assert v.stdout.startswith("CORRUPT") and "wrong-session" in v.stdout and a["id"] in v.stdout
    j = json.loads(run_zsp("verify", "--data", str(data), "--json", b["id"]).stdout)
    assert j[0]["outcome"] == "CORRUPT" and j[0]["problem"] == "wrong-session"
    # Nothing of it is played, and it is not unsealed, as session B.
    p = run_zsp("play", "--data", str(data), "--instant", b["id"])
    assert p.returncode == 2 and "first-session" not in p.stdout and "wrong-session" not in p.stdout
    assert "CORRUPT" in p.stderr and "Traceback" not in p.stderr
    escrow = DataDir(data).escrow_private_path
    u = run_zsp("unseal", "--data", str(data), "--escrow-key", str(escrow), b["id"])
    assert u.returncode == 2 and "CORRUPT" in u.stderr and u.stdout == ""
    # Named as a file, it is what it is: the path was the reviewer's own choice.
    assert run_zsp("verify", "--data", str(data), b["path"]).returncode == 0


def test_a_recording_dropped_into_recordings_under_another_id_is_refused(tmp_path: Path) -> None:
    data, a, _b = _two_sessions(tmp_path)
    fake = "01900000-0000-7000-8000-000000000000"
    shutil.copyfile(a["path"], DataDir(data).recordings / f"{fake}.zsprec")
    v = run_zsp("verify", "--data", str(data), fake)
    assert v.returncode == 1 and "wrong-session" in v.stdout


def test_a_re_recorded_session_with_its_own_id_does_not_match_its_recorded_end(tmp_path: Path) -> None:
    """Someone with the signing key writes a new recording under the same session id: its header
    names the right session, but it does not end at the head the bastion wrote down at the end."""
    data, a, _b = _two_sessions(tmp_path)
    d = DataDir(data)
    import uuid

    replacement = tmp_path / "replacement.zsprec"
    w = RecordingWriter(
        FileSink(replacement),
        d.signing_key(),
        SessionMeta(user="root", target="local", login="root", host="h"),
        session_id=uuid.UUID(a["id"]),
    )
    w.output(b"nothing to see here\r\n")
    w.close(0, "exit")
    shutil.copyfile(replacement, a["path"])
    v = run_zsp("verify", "--data", str(data), a["id"])
    assert v.returncode == 1 and "wrong-session" in v.stdout and "replaced after the session ended" in v.stdout


def test_the_end_of_an_id_names_a_session_too(tmp_path: Path) -> None:
    """Ids begin with their start time, so sessions of one day share a long prefix."""
    data, _a, b = _two_sessions(tmp_path)
    v = run_zsp("verify", "--data", str(data), b["id"][-8:])
    assert v.returncode == 0 and v.stdout.startswith("VALID") and b["path"] in v.stdout
    short = run_zsp("verify", "--data", str(data), b["id"][-5:])  # too short to be an end
    assert short.returncode == 2
