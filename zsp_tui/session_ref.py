"""What ``zsp verify|play X`` means by X: a file path, or a session of the data dir.

X is a path only if it contains a ``/`` (``./fix.zsprec``, ``/tmp/x.zsprec``). Anything else is
a session id, or a unique prefix (at least :data:`MIN_PREFIX` characters) or end (at least
:data:`MIN_SUFFIX`) of one, looked up in the data dir's store and its ``recordings/`` directory,
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

from replay import VerificationReport

from .datadir import DataDir
from .exceptions import UsageError

__all__ = [
    "MIN_PREFIX",
    "MIN_SUFFIX",
    "SessionRef",
    "SessionRefError",
    "identity_problem",
    "resolve_ref",
    "resolve_session",
]

MIN_PREFIX = 4
MIN_SUFFIX = 6
_SUFFIX = ".zsprec"
_SHOWN = 10


class SessionRefError(UsageError):
    """A session reference that names no session, or more than one."""

    def __init__(self, message: str, *, ref: str, candidates: tuple[str, ...] = ()) -> None:
        self.ref = ref
        self.candidates = candidates
        super().__init__(message)


def _known(d: DataDir) -> dict[str, Path]:
    """Session id -> recording path: the store's sessions, then recordings on disk it does not know."""
    found: dict[str, Path] = {}
    if d.db_path.exists():
        for s in d.service().sessions():
            found[s.id] = Path(s.path)
    if d.recordings.is_dir():
        for p in d.recordings.glob(f"*{_SUFFIX}"):
            found.setdefault(p.name[: -len(_SUFFIX)], p)
    return found


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A resolved reference: the file, and what the data dir says it must be."""

    path: Path
    session_id: str | None = None
    """The session asked for; None when a path was given (nothing to hold the file to)."""
    heads: tuple[str, ...] = ()
    """Final chain heads the data dir recorded at the session's end (store row, audit event)."""


def resolve_session(d: DataDir, ref: str) -> Path:
    """The recording ``ref`` names (see the module docstring)."""
    return resolve_ref(d, ref).path


def resolve_ref(d: DataDir, ref: str) -> SessionRef:
    """``ref`` resolved, with the identity the recording must have (see the module docstring)."""
    if "/" in ref:
        return SessionRef(Path(ref))
    key = ref.removesuffix(_SUFFIX).lower()
    known = _known(d) if d.root.exists() else {}
    sid = key if key in known else None
    matches = sorted(s for s in known if s.startswith(key)) if sid is None and len(key) >= MIN_PREFIX else []
    if sid is None and not matches and len(key) >= MIN_SUFFIX:
        # Ids begin with their start time, so sessions of one day share a long prefix: the end of
        # an id (random) names it as well.
        matches = sorted(s for s in known if s.endswith(key))
    if sid is None and len(matches) == 1:
        sid = matches[0]
    if sid is not None:
        return SessionRef(known[sid], sid, _recorded_heads(d, sid))
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
        raise SessionRefError(f"{ref!r}: give a session id or at least {MIN_PREFIX} of its first characters", ref=ref)
    raise SessionRefError(f"no session {ref!r} in {d.root} (`zsp sessions` lists them)", ref=ref)


def _recorded_heads(d: DataDir, sid: str) -> tuple[str, ...]:
    if not d.db_path.exists():
        return ()
    svc = d.service()
    heads = []
    record = svc.session(sid)
    if record is not None and record.head:
        heads.append(record.head)
    for e in svc.audit_events():
        if e.event == "session.end" and e.session_id == sid and isinstance(e.fields.get("head"), str):
            heads.append(str(e.fields["head"]))
    return tuple(dict.fromkeys(heads))


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
