"""Errors of the zsp application. The CLI (and the bastion's control commands) print each as one
line and exit non-zero; none of them is a bug.

::

    ZspError
     ├── DataDirError        the data directory is missing, unreadable or not initialised
     ├── UsageError          the user asked for something that cannot be done as asked
     ├── ConfigError         a configuration file is invalid (names the line and the problem)
     │    └── PolicyError    ...the access policy file
     ├── NotFound            no such user / target / request
     │    └── LocalTargetOff the built-in `local` target is switched off (the default)
     ├── Conflict            it exists already
     ├── StoreError          the store (PostgreSQL) cannot be reached or failed: nothing was changed
     ├── ExportRefused       an export cannot be made as asked (a CORRUPT recording): exit 1
     ├── ReviewRefused       a review cannot be attested (the recording does not verify): exit 1
     └── AccessDenied        the rules forbid it (self-approval, not an approver, no rule...)
          ├── InvalidState   the request is not in a state that allows it (already approved, expired...)
          └── WatchRefused   a moderated session cannot be watched as asked (not live, not moderated...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ZspError(Exception):
    """Base class of application errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class DataDirError(ZspError):
    def __init__(self, *, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"data directory {path}: {reason}")


class UsageError(ZspError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class ConfigError(ZspError):
    what = "config"

    def __init__(self, *, path: Path | str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{self.what} {where}: {problem}")


class PolicyError(ConfigError):
    what = "policy"


class NotFound(ZspError):
    exit_code = 1

    def __init__(self, *, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"no such {kind}: {name}")


class LocalTargetOff(NotFound):
    """The built-in `local` target was asked for, but zsp.toml leaves it off (the default)."""

    def __init__(self) -> None:
        self.kind = "target"
        self.name = "local"
        ZspError.__init__(
            self,
            "no such target: local (the built-in `local` target, a shell as the bastion's own account, is off; "
            "it is for demos: [targets] local = true in the data dir's zsp.toml switches it on)",
        )


class Conflict(ZspError):
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)


class StoreError(ZspError):
    """The store could not do what was asked (PostgreSQL unreachable, a lost connection, a failed
    statement). The transaction was rolled back: nothing was changed. ``where`` names the store
    for people, with no password in it."""

    exit_code = 2

    def __init__(self, *, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"store {where}: {reason}")


class ExportRefused(ZspError):
    """``zsp export`` will not export this: a recording does not verify (never exported), or the
    evidence could not be assembled. Nothing is written."""

    exit_code = 1

    def __init__(self, *, session_id: str | None, reason: str) -> None:
        self.session_id = session_id
        self.reason = reason
        where = f"session {session_id}: " if session_id else ""
        super().__init__(f"export refused: {where}{reason}; nothing was written")


class ReviewRefused(ZspError):
    """``zsp review-mark`` will not attest this review: the recording does not verify, or is not
    the session named. Nothing is written."""

    exit_code = 1

    def __init__(self, *, session_id: str, reason: str) -> None:
        self.session_id = session_id
        self.reason = reason
        super().__init__(f"review of session {session_id} refused: {reason}; nothing was written")


class AccessDenied(ZspError):
    """``event``, when set, is the audit event that records the refusal."""

    exit_code = 1

    def __init__(self, message: str, *, request_id: str | None = None, event: object | None = None) -> None:
        self.request_id = request_id
        self.event: Any = event
        super().__init__(message)


class InvalidState(AccessDenied):
    def __init__(self, *, request_id: str, state: str, action: str) -> None:
        self.state = state
        self.action = action
        super().__init__(f"cannot {action} {request_id}: it is {state}", request_id=request_id)


class WatchRefused(AccessDenied):
    """A moderator's watch refused: no such live session, not moderated, the operator's own,
    not among its moderators, or recorded on another bastion. ``event`` is its
    ``session.watch.refused`` audit event (written by the service)."""

    def __init__(self, *, session_id: str, reason: str, event: object | None = None) -> None:
        self.session_id = session_id
        self.reason = reason
        super().__init__(reason, event=event)


class RulesError(ConfigError):
    """A rules file that cannot be used: the file, the line (when known) and what is wrong."""

    what = "rules"
