"""What a bastion does about its predecessor: one bastion per data dir, and no session left ``live``.

A bastion killed with ``kill -9`` (or a machine that lost power) leaves sessions the store still
calls live, with no recorder behind them. On start, while holding the data dir's instance lock
(so no other ``zsp serve`` on this data dir is alive), every such session is closed as
``interrupted``: its recording is left exactly as it is (INCOMPLETE: FORMAT.md has no seal that
could say "interrupted", and anything appended now would be written by a process that did not
see the session), and a ``session.interrupted`` audit event records how far the recording
reached (its intact and signed frames and last intact head), so a recording cut back later is
caught against the audit log.
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

__all__ = ["InstanceLock", "close_interrupted"]


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


def _dead(owner: str) -> bool:
    """Whether the process named by ``owner`` is gone. Sessions of bastions (``serve:`` or the
    pre-schema-2 ``""``) are: the caller holds the instance lock. A ``zsp record`` on this host
    is gone if its pid is; one on another host cannot be judged, so it is left alone."""
    if owner == "" or owner.startswith("serve:"):
        return True
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind != "record" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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


def close_interrupted(svc: AccessService, trusted: list[PublicKey]) -> list[str]:
    """Close every session whose recorder is gone as ``interrupted``; returns their ids."""
    closed = []
    for record in svc.unended_sessions():
        if not _dead(record.owner):
            continue
        last_seen, found = _inspect(record, trusted)
        if svc.session_interrupted(record, last_seen, found):
            closed.append(record.id)
    return closed
