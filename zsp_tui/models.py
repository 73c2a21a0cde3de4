"""Values of the access domain: users, targets, requests and grants. Frozen; the store makes them."""

from __future__ import annotations

import enum
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "LOCAL_TARGET",
    "WATCH_BEAT_S",
    "WATCH_FRESH_S",
    "AccessRequest",
    "Flag",
    "Hold",
    "HoldState",
    "RequestState",
    "Review",
    "Role",
    "SessionRecord",
    "Target",
    "User",
    "UserKey",
    "Watch",
    "WatchEnd",
    "owner_host",
    "session_owner",
]

LOCAL_TARGET = "local"
"""Name of the built-in target: a shell on the bastion host."""


class Role(enum.StrEnum):
    OPERATOR = "operator"
    """May request access and open sessions."""
    APPROVER = "approver"
    """May approve, deny and revoke other people's requests (as policy allows)."""
    REVIEWER = "reviewer"
    """May browse, replay and export recordings."""
    ADMIN = "admin"
    """Manages users, targets and policy. Not exempt from the two-person rule."""


class RequestState(enum.StrEnum):
    """Lifecycle: pending -> approved -> expired | revoked; pending -> denied | cancelled | lapsed."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    LAPSED = "lapsed"
    EXPIRED = "expired"
    REVOKED = "revoked"

    @property
    def final(self) -> bool:
        return self not in (RequestState.PENDING, RequestState.APPROVED)


@dataclass(frozen=True, slots=True)
class UserKey:
    fingerprint: str
    """``SHA256:...`` of the key, as ssh-keygen prints it."""
    key: str
    """The OpenSSH public key line, without comment."""
    comment: str
    added_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    roles: frozenset[Role]
    keys: tuple[UserKey, ...]
    created_at: datetime

    def has(self, role: Role) -> bool:
        return role in self.roles


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    host: str
    port: int
    logins: tuple[str, ...]
    """Remote accounts operators may ask for; the first is the default login."""
    host_key: str
    """Pinned OpenSSH host public key line; empty for the built-in local target."""
    labels: frozenset[str] = frozenset()
    builtin: bool = False
    client_key: str = ""
    """Fallback for targets that cannot trust the bastion's CA: a static private key file the
    bastion logs in with. Empty (the default): a per-session certificate."""

    @property
    def default_login(self) -> str:
        return self.logins[0]


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """A request for a shell; once approved it is also the grant (same id)."""

    id: str
    requester: str
    requester_id: int
    target: str
    login: str
    duration: timedelta
    reason: str
    state: RequestState
    approvals_needed: int
    approver_patterns: tuple[str, ...]
    """Who may approve (policy principals), fixed when the request was made."""
    rule: str
    """Name of the policy rule that admitted the request."""
    created_at: datetime
    lapses_at: datetime
    break_glass: bool = False
    approvals: tuple[str, ...] = ()
    """Names of the users (or ``policy:RULE``) whose approvals were counted."""
    decided_at: datetime | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    note: str = ""
    """Denial reason, revocation reason."""
    extra: dict[str, str] = field(default_factory=dict)

    def active(self, now: datetime) -> bool:
        return (
            self.state is RequestState.APPROVED
            and self.starts_at is not None
            and self.ends_at is not None
            and self.starts_at <= now < self.ends_at
        )

    def effective_state(self, now: datetime) -> RequestState:
        """The state as of ``now``, even if the sweeper has not recorded an expiry or lapse yet."""
        if self.state is RequestState.APPROVED and self.ends_at is not None and now >= self.ends_at:
            return RequestState.EXPIRED
        if self.state is RequestState.PENDING and now >= self.lapses_at:
            return RequestState.LAPSED
        return self.state


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A recorded session as the store knows it (the recording file is the evidence)."""

    id: str
    user: str
    target: str
    login: str
    grant_id: str | None
    command: str | None
    client: str
    """Operator's address, ``ip:port``."""
    path: str
    """Recording file."""
    started_at: datetime
    ended_at: datetime | None = None
    exit_status: int | None = None
    end_reason: str | None = None
    head: str | None = None
    """Final chain head (hex) from the seal; None while live or if the recording never sealed."""
    owner: str = ""
    """The process recording it, ``serve:HOST:PID`` or ``record:HOST:PID`` ("" before schema 2: a bastion)."""
    flags: int = 0
    """How many times a real-time rule fired in it (``rule.match`` events); 0 for none."""
    flag_severity: str | None = None
    """The highest severity among those matches (``info`` ... ``critical``), None without any."""
    upload: str | None = None
    """Where the recording is with respect to object storage (schema 6): None when no object
    storage is configured (it stays in ``path``), ``pending`` while it waits in local scratch to
    be uploaded (or failed and will be retried), ``uploaded`` once it is in the bucket, verified by
    hash, and removed from scratch."""
    object_key: str | None = None
    """The recording's object URL once uploaded (``s3://bucket/prefix/<id>.zsprec``)."""
    sha256: str | None = None
    """Hex sha256 of the whole recording file as uploaded (checked after upload and on download)."""


class HoldState(enum.StrEnum):
    """Lifecycle of a held command: pending -> allowed | denied | expired | cancelled."""

    PENDING = "pending"
    ALLOWED = "allowed"
    DENIED = "denied"
    EXPIRED = "expired"
    """Nobody decided in time: the command was not sent (a timeout denies)."""
    CANCELLED = "cancelled"
    """The session ended while the command waited: it was never sent."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A command line a rule held at Enter: it reaches the target only once someone allows it."""

    id: str
    """``h-`` and 8 hex digits."""
    session_id: str
    grant_id: str | None
    user: str
    """The operator whose command waits (never the one who decides)."""
    target: str
    login: str
    rule: str
    severity: str
    command: str
    """The command line as the bastion read it at Enter (capped at 1,024 characters)."""
    state: HoldState
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    """Who allowed or denied it; ``system`` for expiry and cancellation."""
    note: str = ""
    """The decider's reason (deny), or why it was cancelled."""


WATCH_BEAT_S = 1.0
"""How often a watcher (the ssh view, the review app's Live screen) beats its watch in the store."""
WATCH_FRESH_S = 5.0
"""A watch whose last heartbeat is older than this counts as gone (``lost``): a killed watcher."""


class WatchEnd(enum.StrEnum):
    """How a moderator's watch of a moderated session ended."""

    LEFT = "left"
    """The moderator left (``q``, closed the view or the connection)."""
    TERMINATED = "terminated"
    """The moderator ended the session (``T``): the owning bastion ends it on seeing this."""
    SESSION_ENDED = "session-ended"
    """The session ended while watched."""
    LOST = "lost"
    """The watcher's heartbeat stopped (a killed view, a lost connection): counted as left."""


@dataclass(frozen=True, slots=True)
class Watch:
    """One moderator watching one moderated session (schema 7), from any process of the host: the
    bastion that owns the session reads the open watches and lets input flow while one is fresh."""

    id: str
    """``w-`` and 12 hex digits (given by zsp, not the store)."""
    session_id: str
    user: str
    """The moderator."""
    client: str
    """Where they watch from: the ssh client's address, or ``console``."""
    via: str
    """``ssh`` (``ssh -t zsp@BASTION watch``, the review app over ssh) or ``console``."""
    since: datetime
    seen_at: datetime
    """The last heartbeat (watchers beat every second; a stale one counts as gone)."""
    left_at: datetime | None = None
    how: WatchEnd | None = None
    """How it ended; None while open."""

    @property
    def open(self) -> bool:
        return self.left_at is None


@dataclass(frozen=True, slots=True)
class Flag:
    """One moment a rule fired in a session, as the store keeps it for listing (the recording's
    ``rule.match`` event frame and the audit log's ``rule.match`` event are the evidence)."""

    session_id: str
    at: datetime
    t_us: int
    """Microseconds into the recording (what ``zsp play --from`` takes)."""
    rule: str
    severity: str
    trigger: str
    """``command``, ``output``, ``session`` or ``duration``."""
    actions: str
    """The rule's actions, comma-separated (``flag,notify,hold``)."""
    text: str
    """What matched (the command line, the output line, or a description of the session facts)."""


def session_owner(kind: str) -> str:
    """How a session names the process recording it, ``serve:HOST:PID`` or ``record:HOST:PID``, so
    that a bastion starting later can tell whether that process is gone (bastion/recovery.py)."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def owner_host(owner: str) -> str | None:
    """The host of a session's owner (``serve:HOST:PID``), None if it names none."""
    parts = owner.split(":")
    return parts[1] if len(parts) == 3 and parts[1] else None


@dataclass(frozen=True, slots=True)
class Review:
    """A reviewer's signed attestation that they reviewed a session (a ``session.review`` event
    in the audit chain, whose checkpoint signs it)."""

    session_id: str
    reviewer: str
    at: datetime
    head: str
    """Hex head of the recording as the reviewer verified it (its seal's, for a sealed one)."""
    outcome: str
    """VALID, or INCOMPLETE for a recording a crash cut short."""
    frames: int
    note: str = ""

    @staticmethod
    def from_event(ev: Any) -> Review:
        """From a ``session.review`` :class:`~zsp_tui.audit.AuditEvent`."""
        f = ev.fields
        return Review(
            session_id=str(ev.session_id),
            reviewer=str(ev.actor),
            at=ev.time,
            head=str(f.get("head", "")),
            outcome=str(f.get("verdict", "")),
            frames=int(f.get("frames", 0) or 0),
            note=str(f.get("note", "")),
        )
