"""What ``zsp verify|play X`` means by X: a file path, or a session of the data dir.

X is a path only if it contains a ``/`` (``./fix.zsprec``, ``/tmp/x.zsprec``). Anything else is
a session id, or a unique prefix (at least :data:`MIN_PREFIX` characters) or end (at least
:data:`MIN_SUFFIX`) of one, looked up in the data dir's store and its ``recordings/`` directory
(a session uploaded to object storage resolves to its verified download, ``DataDir.recording_path``),
never in the current directory: a file
that happens to be named like a session id must not stand in for the recording an auditor asked
for. An ambiguous prefix is an error that lists the candidates.

A session named by id is also held to what the data dir recorded about it: the file's header must
name that session, and a session that ended sealed must end at the chain head written at its end
(the store's row and the signed ``session.end`` audit event). Otherwise a recording copied over
another's file, or dropped into ``recordings/`` under another's name, would verify VALID as the
session the reviewer asked for (:func:`identity_problem`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replay import SUFFIX, VerificationReport

from .datadir import DataDir
from .exceptions import UsageError
from .models import SessionRecord

__all__ = [
    "MIN_PREFIX",
    "MIN_SUFFIX",
    "SessionIndex",
    "SessionRef",
    "SessionRefError",
    "identity_problem",
    "resolve_ref",
]

MIN_PREFIX = 4
MIN_SUFFIX = 6
_SUFFIX = SUFFIX
_SHOWN = 10


class SessionRefError(UsageError):
    """A session reference that names no session, or more than one."""

    def __init__(self, message: str, *, ref: str, candidates: tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.candidates = candidates
        super().__init__(message)


class SessionIndex:
    """What a data dir knows about its sessions, read once and shared by every reference one
    command resolves (``zsp verify A B C``): the store's sessions and the recordings on disk it
    does not know, and, when first needed, the heads written at each session's end."""

    def __init__(self, d: DataDir) -> None:
        self.root = d.root
        self._svc = d.service() if d.has_store() else None
        self.known: dict[str, Path] = {}
        """Session id -> recording path (for a session uploaded to object storage, where its
        verified download goes: :func:`resolve_ref` downloads it when it is asked for)."""
        self.records: dict[str, SessionRecord] = {}
        """Session id -> the store's row, for the sessions the store knows."""
        self._stored_heads: dict[str, str] = {}
        self.end_reasons: dict[str, str] = {}
        """Session id -> why the store says it ended (``exit``, ``revoked``, ``interrupted``, ...)."""
        self._ended: dict[str, list[str]] | None = None
        if self._svc is not None:
            for s in self._svc.sessions():
                self.known[s.id] = d.recording_location(s)
                self.records[s.id] = s
                if s.head:
                    self._stored_heads[s.id] = s.head
                if s.end_reason:
                    self.end_reasons[s.id] = s.end_reason
        # Files in scratch the store does not know (a bucket's objects are read only through a row:
        # its sha256 is what a download is checked against).
        for stored in d.scratch().list():
            self.known.setdefault(stored.name, Path(stored.location))

    def heads(self, sid: str) -> tuple[str, ...]:
        """The final heads recorded for ``sid``: the store's row and the signed ``session.end``."""
        if self._svc is None:
            return ()
        if self._ended is None:  # one pass over the audit log, for every session at once
            self._ended = {}
            for e in self._svc.audit_events():
                head = e.fields.get("head")
                if e.event == "session.end" and e.session_id and isinstance(head, str):
                    self._ended.setdefault(e.session_id, []).append(head)
        heads = [self._stored_heads[sid]] if sid in self._stored_heads else []
        return tuple(dict.fromkeys(heads + self._ended.get(sid, [])))


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A resolved reference: the file, and what the data dir says it must be."""

    path: Path
    session_id: str | None = None
    """The session asked for; None when a path was given (nothing to hold the file to)."""
    heads: tuple[str, ...] = ()
    """Final chain heads the data dir recorded at the session's end (store row, audit event)."""
    end_reason: str | None = None
    """Why the data dir says the session ended (None: live, unknown, or a path was given)."""


def resolve_ref(d: DataDir, ref: str, index: SessionIndex | None = None) -> SessionRef:
    """``ref`` resolved, with the identity the recording must have (see the module docstring).
    ``index``: what the data dir knows, when resolving several references (read once)."""
    if "/" in ref:
        return SessionRef(Path(ref))
    key = ref.removesuffix(_SUFFIX).lower()
    if index is None and d.root.exists():
        index = SessionIndex(d)
    known = index.known if index is not None else {}
    sid = key if key in known else None
    matches = sorted(s for s in known if s.startswith(key)) if sid is None and len(key) >= MIN_PREFIX else []
    if sid is None and not matches and len(key) >= MIN_SUFFIX:
        # Ids begin with their start time, so sessions of one day share a long prefix: the end of
        # an id (random) names it as well.
        matches = sorted(s for s in known if s.endswith(key))
    if sid is None and len(matches) == 1:
        sid = matches[0]
    if sid is not None:
        if index is None:
            return SessionRef(known[sid], sid)
        record = index.records.get(sid)
        # An uploaded recording: its verified download (RecordingUnavailable if the object is
        # gone or changed, never another file in its place).
        path = d.recording_path(record) if record is not None else known[sid]
        return SessionRef(path, sid, index.heads(sid), index.end_reasons.get(sid))
    if len(matches) > 1:
        shown = ", ".join(matches[:_SHOWN]) + (f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else "")
        raise SessionRefError(
            f"{ref!r} matches {len(matches)} sessions: {shown}; give more of the id", ref=ref, candidates=tuple(matches)
        )
    if Path(ref).exists():
        # A file of that name here is never used on its own: say how to name it as a path.
        raise SessionRefError(
            f"{ref!r} is not a session in {d.root}; for the file in this directory say ./{ref} (a path needs a '/')",
            ref=ref,
        )
    if len(key) < MIN_PREFIX:
        raise SessionRefError(
            f"{ref!r}: give a session id, at least {MIN_PREFIX} of its first characters or {MIN_SUFFIX} of its last",
            ref=ref,
        )
    if len(key) < MIN_SUFFIX:
        raise SessionRefError(
            f"no session starts with {ref!r} in {d.root} (an end of an id needs {MIN_SUFFIX} characters or more; "
            "`zsp sessions` lists them)",
            ref=ref,
        )
    raise SessionRefError(f"no session {ref!r} in {d.root} (`zsp sessions` lists them)", ref=ref)


def identity_problem(ref: SessionRef, report: VerificationReport) -> str | None:
    """Why the verified recording is not the session ``ref`` asked for, or None if it is."""
    if ref.session_id is None or report.header is None:
        return None
    named = str(report.header.session_id)
    if named != ref.session_id:
        return f"the file {ref.path} holds session {named}, not {ref.session_id}"
    if ref.heads and report.valid and report.head is not None and report.head.hex() not in ref.heads:
        return (
            f"session {ref.session_id} ended at chain head {ref.heads[0][:16]}..., "
            f"but this recording ends at {report.head.hex()[:16]}... (replaced after the session ended)"
        )
    if len(ref.heads) > 1:
        return f"the data dir disagrees with itself about how session {ref.session_id} ended ({len(ref.heads)} heads)"
    return None
