"""What ``zsp verify|play X`` means by X: a file path, or a session of the data dir.

X is a path only if it contains a ``/`` (``./fix.zsprec``, ``/tmp/x.zsprec``). Anything else is
a session id, or a unique prefix of one (at least :data:`MIN_PREFIX` characters), looked up in
the data dir's store and its ``recordings/`` directory, never in the current directory: a file
that happens to be named like a session id must not stand in for the recording an auditor asked
for. An ambiguous prefix is an error that lists the candidates.
"""

from __future__ import annotations

from pathlib import Path

from .datadir import DataDir
from .exceptions import UsageError

__all__ = ["MIN_PREFIX", "SessionRefError", "resolve_session"]

MIN_PREFIX = 4
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


def resolve_session(d: DataDir, ref: str) -> Path:
    """The recording ``ref`` names (see the module docstring)."""
    if "/" in ref:
        return Path(ref)
    key = ref.removesuffix(_SUFFIX).lower()
    known = _known(d) if d.root.exists() else {}
    if key in known:
        return known[key]
    matches = sorted(sid for sid in known if sid.startswith(key)) if len(key) >= MIN_PREFIX else []
    if len(matches) == 1:
        return known[matches[0]]
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
