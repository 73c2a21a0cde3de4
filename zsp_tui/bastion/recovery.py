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
cannot be live and is closed.

Each such session is closed as ``interrupted``, and its recording sealed as such when that is
honest. Under an exclusive ``flock`` on the file (so two processes recovering at once seal it
once), the recording is verified; if it ends exactly at a frame boundary with nothing wrong
(INCOMPLETE ``no-seal``), a seal whose reason is ``interrupted`` and the checkpoint signing it
are appended in one write and fsynced (:func:`recorder.interrupted_seal`): the chain goes on from
the last intact frame, the original bytes stay a byte-exact prefix, and the seal names how far the
session itself wrote and signed (``session_frames``, ``session_signed_frames``, ``session_head``)
and who recovered it (``recovered_by``). It is signed with the bastion's recording key, which must
be the recording's own signer (a verifier accepts no other key's checkpoints), and the result is
verified in memory before a byte is written: sealing never makes a recording VALID that would
not verify with the trusted keys. Anything else is left exactly as it is: a torn tail (sealing
would mean cutting it), a seal without its checkpoint, a CORRUPT or unreadable file, one signed by
another key. A ``session.interrupted`` audit event records how far the recording reached (its
intact and signed frames and last intact head, as found), whether it was sealed (``sealed``,
``sealed_head``, ``sealed_frames``) and if not why (``not_sealed``), so a recording cut back later
is caught against the audit log. A crash while sealing leaves the original bytes, or them plus a
torn tail that the next start leaves alone; a recording a crashed recovery sealed but could not
close in the store is recognised by its seal and closed as sealed.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recorder import (
    INTERRUPTED,
    PublicKey,
    RecordingFailed,
    ResumeRefused,
    SigningKey,
    append_at_end,
    interrupted_seal,
)
from replay import Outcome, Problem, SourceError, VerificationReport, verify

from ..access import AccessService
from ..exceptions import UsageError
from ..models import SessionRecord, session_owner

__all__ = ["InstanceLock", "close_interrupted", "owner_gone", "owner_process"]


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


def owner_process(owner: str) -> str:
    """What process of this host has the pid a session's ``owner`` names (its command line and
    start time), for a bastion saying why it left a session live; ``""`` if it names none here."""
    kind, _, rest = owner.partition(":")
    host, _, pid = rest.rpartition(":")
    if kind not in ("serve", "record") or not pid.isdigit() or host != socket.gethostname():
        return ""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError as exc:
        return f"pid {pid}: {exc.strerror or exc}"
    born = _started_at(int(pid))
    when = "?" if born is None else datetime.fromtimestamp(born, UTC).isoformat(timespec="seconds")
    command = " ".join(a.decode("utf-8", "replace") for a in argv if a)[:200] or "(no command line: a zombie?)"
    return f"pid {pid} started {when}: {command}"


class _Appended(io.RawIOBase):
    """A file followed by bytes not yet written to it: what the file would read as after the write."""

    def __init__(self, f: io.BufferedReader, tail: bytes) -> None:
        self._f = f
        self._tail = memoryview(tail)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        if n:
            return n
        n = min(len(buffer), len(self._tail))
        buffer[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n


def _found(report: VerificationReport) -> dict[str, Any]:
    """What the audit event says of a recording as found (before any seal recovery adds)."""
    return {
        "recording_outcome": report.outcome.value,
        "frames": report.frames,
        "signed_frames": report.signed_frames,
        "last_head": report.head.hex() if report.head else None,
        "problem": report.problem.value if report.problem else None,
    }


def _sealed_before(report: VerificationReport) -> dict[str, Any] | None:
    """A recording an earlier recovery sealed (and then died before closing its session): what
    the audit event says of it, from the seal's own account of how far the session reached."""
    seal = report.seal
    if seal is None or seal.reason != INTERRUPTED or report.head is None:
        return None
    frames, signed, head = (seal.extra.get(k) for k in ("session_frames", "session_signed_frames", "session_head"))
    if type(frames) is not int or type(signed) is not int or type(head) is not str:
        return None
    return {
        "recording_outcome": Outcome.INCOMPLETE.value,
        "frames": frames,
        "signed_frames": signed,
        "last_head": head,
        "problem": Problem.NO_SEAL.value,
        "sealed": True,
        "sealed_head": report.head.hex(),
        "sealed_frames": report.frames,
        "recovered_by": seal.extra.get("recovered_by"),
    }


def _why_not(report: VerificationReport) -> str:
    """Why a recording that is not INCOMPLETE ``no-seal`` is left as it is."""
    if report.outcome is Outcome.VALID:
        return f"already sealed (reason {report.seal.reason if report.seal else '?'})"
    if report.outcome is Outcome.CORRUPT:
        where = "the preamble" if report.bad_frame is None else f"frame {report.bad_frame}"
        return f"CORRUPT at {where} ({report.problem.value if report.problem else '?'}): never sealed at recovery"
    if report.problem is Problem.TORN:
        return f"the file ends inside frame {report.bad_frame} (a torn tail): sealing it would mean cutting it"
    if report.problem is Problem.UNSIGNED_SEAL:
        return "it ends between a seal and the checkpoint that signs it"
    return f"INCOMPLETE ({report.problem.value if report.problem else '?'}): nothing to seal"


def _seal(path: Path, fd: int, report: VerificationReport, trusted: list[PublicKey], key: SigningKey) -> dict[str, Any]:
    """Seal a recording verified INCOMPLETE ``no-seal`` (``fd``: open for appending, locked).
    Returns the audit fields saying whether it was sealed and how, or why not."""
    end = report.chain_end()
    if end is None:
        return {"sealed": False, "not_sealed": "nothing to resume from"}
    try:
        resumed = interrupted_seal(end, key, recovered_by=session_owner("serve"))
        with open(path, "rb") as f:
            after = verify(io.BufferedReader(_Appended(f, resumed.data)), trusted)
        if not (after.valid and after.head == resumed.info.head and after.frames == resumed.info.frames):
            why = f"{after.outcome.value} ({after.problem.value if after.problem else '-'}: {after.detail})"
            return {"sealed": False, "not_sealed": f"the sealed recording would not verify: {why}"}
        append_at_end(fd, resumed, name=str(path))
    except ResumeRefused as exc:
        return {"sealed": False, "not_sealed": exc.reason}
    except RecordingFailed as exc:
        return {"sealed": False, "not_sealed": f"writing the seal failed: {exc.reason}"}
    except (OSError, SourceError) as exc:
        return {"sealed": False, "not_sealed": f"cannot read it back: {exc}"}
    return {"sealed": True, "sealed_head": resumed.info.head_hex, "sealed_frames": resumed.info.frames}


def _close_one(
    svc: AccessService, record: SessionRecord, trusted: list[PublicKey], key: SigningKey | None
) -> bool | None:
    """Seal (when honest) and close one session whose recorder is gone. None if someone else
    closed it meanwhile; else whether this call closed it."""
    path = Path(record.path)
    cannot_write = ""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        fd = -1
        cannot_write = f"cannot open it to append: {exc.strerror or exc}"
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one recovering process at a time seals this file
        current = svc.session(record.id)
        if current is None or current.ended_at is not None:
            return None
        try:
            report = verify(path, trusted)
        except SourceError as exc:
            return svc.session_interrupted(
                record,
                None,
                {
                    "recording_outcome": "unreadable",
                    "detail": exc.reason,
                    "sealed": False,
                    "not_sealed": f"cannot read it: {exc.reason}",
                },
            )
        found = _found(report)
        earlier = _sealed_before(report)
        if earlier is not None:
            found = earlier
        elif report.outcome is not Outcome.INCOMPLETE or report.problem is not Problem.NO_SEAL:
            found |= {"sealed": False, "not_sealed": _why_not(report)}
        elif fd < 0:
            found |= {"sealed": False, "not_sealed": cannot_write}
        elif key is None:
            found |= {"sealed": False, "not_sealed": "no recording key to sign a seal with"}
        else:
            found |= _seal(path, fd, report, trusted, key)
        last_seen = None
        if report.header is not None:
            last_seen = datetime.fromtimestamp((report.header.started_at_us + report.duration_us) / 1e6, UTC)
        return svc.session_interrupted(record, last_seen, found)
    finally:
        if fd >= 0:
            os.close(fd)  # drops the flock


def close_interrupted(
    svc: AccessService,
    trusted: list[PublicKey],
    *,
    key: SigningKey | None = None,
    shared_store: bool = False,
    upload: bool = False,
) -> list[str]:
    """Close every session whose recorder is gone (:func:`owner_gone`) as ``interrupted``, sealing
    its recording with ``key`` where that is honest (module docstring); returns their ids. Safe to
    run in several processes at once: each session is closed, and each recording sealed, once.
    With ``upload`` (object storage configured), its recording is then marked pending upload:
    sealed first, so what is uploaded is the sealed file."""
    closed = []
    for record in svc.unended_sessions():
        if not owner_gone(record.owner, record.started_at, shared_store=shared_store):
            continue
        if _close_one(svc, record, trusted, key):
            closed.append(record.id)
            if upload:
                with svc.store.transaction() as tx:
                    tx.set_upload(record.id, "pending")
    return closed
