"""Shared by the evidence export tests: a data dir of real sessions (the review template, recorded
through the real bastion to a real sshd) plus one live session, and ``zsp`` run in-process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zsp_tui
from recorder import FileSink, RecordingWriter, SessionMeta, new_session_id
from tests.tui_helpers import ReviewData, copy_reviewed
from zsp_tui.cli import main
from zsp_tui.models import SessionRecord, session_owner

__all__ = ["Result", "extract", "live_session", "prepare_data", "zsp", "zsp_process"]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def zsp(*args: str) -> Result:
    """``zsp ARGS`` in this process (the same code as the command; no interpreter start-up)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # has .buffer, as sys.stdout
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    out.flush()
    return Result(code, out.buffer.getvalue().decode("utf-8", "replace"), err.getvalue())


def zsp_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``zsp ARGS`` as a new process with no data dir anywhere (HOME and XDG point at ``cwd``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSP_", "XDG_"))}
    env["HOME"] = str(cwd)
    env["PYTHONPATH"] = str(Path(zsp_tui.__file__).resolve().parents[1])  # this checkout, wherever cwd is
    return subprocess.run(
        [sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def live_session(rv: ReviewData, user: str = "dave") -> str:
    """A session still being recorded (never sealed): its recording as the writer leaves it after a
    checkpoint, listed in the store as started and not ended. Returns its id."""
    d = rv.data
    sid = new_session_id()
    path = d.recordings / f"{sid}.zsprec"
    meta = SessionMeta(user=user, target="local", login=user, term="xterm", cols=80, rows=24)
    w = RecordingWriter(FileSink(path), d.signing_key(), meta, session_id=sid)
    t0 = 1_000_000_000
    w.output(b"$ tail -f /var/log/syslog\r\n", at_ns=t0)
    w.input(b"q", at_ns=t0 + 10_000_000)
    w.output(b"still running \xe2\x9c\x93\r\n", at_ns=t0 + 20_000_000)
    w.tick(at_ns=t0 + 60_000_000_000)  # a checkpoint falls due: everything so far is signed
    w.flush()
    w.abandon()
    rv.svc.session_started(
        SessionRecord(
            id=str(sid),
            user=user,
            target="local",
            login=user,
            grant_id=None,
            command=None,
            client="127.0.0.1:40000",
            path=str(path),
            started_at=datetime.now(UTC),
            owner=session_owner("serve"),
        )
    )
    return str(sid)


def prepare_data(template: ReviewData, dest: Path) -> tuple[ReviewData, str]:
    """A private copy of the review data dir, with dave's live session added."""
    rv = copy_reviewed(template, dest)
    return rv, live_session(rv)


def extract(bundle: Path, dest: Path) -> Path:
    """Extract with the stock tar command, as a responder would; return the bundle's directory."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(bundle), "-C", str(dest)], check=True, timeout=30)
    (top,) = dest.iterdir()
    return top


def members(bundle: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(bundle) as tar:
        return tar.getmembers()
