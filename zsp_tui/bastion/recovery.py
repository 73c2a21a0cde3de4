"""What a bastion does about its predecessor: one bastion per data dir, and no session left ``live``.

A bastion killed with ``kill -9`` (or a machine that lost power) leaves sessions the store still
calls live, with no recorder behind them. On start, while holding the data dir's instance lock
(so no other ``zsp serve`` on this data dir is alive), every such session whose recorder is gone
is closed as ``interrupted``. Which recorders are gone (:func:`owner_gone`): a process named in a
session's ``owner`` (``serve:HOST:PID``) on this host is gone when no process has that pid, or the
one that has it started after the session did (the pid was reused). With ``zsp serve --workers N``
the other workers of this data dir are live processes of this host and are left alone. Sessions
of another host are left alone when the store is shared (PostgreSQL: another bastion host may be
serving them; its own restart closes them); with the embedded SQLite store, whose data dir only
one ``zsp serve`` uses, a ``serve:`` session of another host name (a renamed host or container)
cannot be live and is closed. Each such session is closed as ``interrupted``: its recording is
left exactly as it is (INCOMPLETE: FORMAT.md has no seal that could say "interrupted", and
anything appended now would be written by a process that did not see the session), and a
``session.interrupted`` audit event records how far the recording reached (its intact and signed
frames and last intact head), so a recording cut back later is caught against the audit log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder import PublicKey
from replay import SourceError, verify

from ..access import AccessService
from ..exceptions import UsageError
from ..models import SessionRecord, session_owner

__all__ = ["InstanceLock", "close_interrupted", "owner_gone"]


class InstanceLock:
    """An exclusive lock on ``DATA/serve.lock`` for the life of this process (released by the
    kernel when it dies, however it dies)."""

    def __init__(self, root: Path) -> None:
        self.path = root / "serve.lock"
        self._fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise UsageError(
                f"another zsp serve ({holder}) is using the data dir {self.path.parent}; "
                "stop it first, or use another --data"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{session_owner('serve')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        btime = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    try:
        ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
    except (IndexError, ValueError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def owner_gone(owner: str, started: datetime | None = None, *, shared_store: bool = False) -> bool:
    """Whether the process named by ``owner`` (``serve:HOST:PID``, ``record:HOST:PID``) is gone.

    On this host: gone if no process has the pid, or the one that has it started after the
    session (``started``) did. A ``zsp record`` on another host cannot be judged, nor, on a
    shared store (``shared_store``), a bastion on another host: both are left alone. A bastion
    session of another host on an unshared store is gone (the caller holds the data dir's
    instance lock), and so is one written before schema 2 (owner ``""``: only bastions recorded)."""
    if owner == "":
        return True
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind not in ("serve", "record") or not pid.isdigit():
        return False
    if host != socket.gethostname():
        return kind == "serve" and not shared_store
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another account has the pid: judged by its start time below
    born = _started_at(int(pid))
    # One second of slack: /proc's start time is in clock ticks, the session's in microseconds.
    return born is not None and started is not None and born > started.timestamp() + 1


def _inspect(record: SessionRecord, trusted: list[PublicKey]) -> tuple[datetime | None, dict[str, Any]]:
    """Verify the recording (read only): its last recorded moment and how far it is intact."""
    try:
        report = verify(Path(record.path), trusted)
    except SourceError as exc:
        return None, {"recording_outcome": "unreadable", "detail": exc.reason}
    found: dict[str, Any] = {
        "recording_outcome": report.outcome.value,
        "frames": report.frames,
        "signed_frames": report.signed_frames,
        "last_head": report.head.hex() if report.head else None,
        "problem": report.problem.value if report.problem else None,
    }
    last_seen = None
    if report.header is not None:
        last_seen = datetime.fromtimestamp((report.header.started_at_us + report.duration_us) / 1e6, UTC)
    return last_seen, found


def close_interrupted(
    svc: AccessService, trusted: list[PublicKey], *, shared_store: bool = False, upload: bool = False
) -> list[str]:
    """Close every session whose recorder is gone (:func:`owner_gone`) as ``interrupted``;
    returns their ids. Safe to run in several processes at once: each session is closed once.
    With ``upload`` (object storage configured), its recording is then marked pending upload."""
    closed = []
    for record in svc.unended_sessions():
        if not owner_gone(record.owner, record.started_at, shared_store=shared_store):
            continue
        last_seen, found = _inspect(record, trusted)
        if svc.session_interrupted(record, last_seen, found):
            closed.append(record.id)
            if upload:
                with svc.store.transaction() as tx:
                    tx.set_upload(record.id, "pending")
    return closed
