"""What every screen of the review app shares: who is looking, through which way in, and the
data dir's service, recordings and search index; plus the audit trail of what the reviewer did.

The reviewer is fixed when the app starts (``zsp review --as USER`` on the console, or the key a
user logged in with over ``ssh -t review@BASTION``) and never changes; each screen asks
:meth:`Reviewer.may` before it shows or does anything, and the service enforces the access rules
(who may approve, deny, revoke) on its own, exactly as for the CLI and ssh control commands.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from replay import RecordingStorage, SearchIndex

from ..access import AccessService, Actor
from ..audit import NewEvent, Scalar
from ..datadir import DataDir
from ..exceptions import AccessDenied
from ..indexing import open_index
from ..models import Role, User

__all__ = ["REVIEW_ROLES", "Area", "ReviewContext", "Reviewer"]

REVIEW_ROLES = frozenset({Role.REVIEWER, Role.APPROVER, Role.ADMIN})
"""Roles that may open the review app at all."""


class Area:
    """What a screen needs: reviewers (and admins) read recordings; approvers (and admins) decide."""

    SESSIONS = "sessions"
    REPLAY = "replay"
    SEARCH = "search"
    LIVE = "live"
    REQUESTS = "requests"
    AUDIT = "audit"


_ALLOWED: dict[str, frozenset[Role]] = {
    Area.SESSIONS: frozenset({Role.REVIEWER, Role.ADMIN}),
    Area.REPLAY: frozenset({Role.REVIEWER, Role.ADMIN}),
    Area.SEARCH: frozenset({Role.REVIEWER, Role.ADMIN}),
    # Approvers see who is on which target now (to terminate), reviewers to watch.
    Area.LIVE: frozenset({Role.REVIEWER, Role.APPROVER, Role.ADMIN}),
    Area.REQUESTS: frozenset({Role.APPROVER, Role.ADMIN}),
    Area.AUDIT: frozenset({Role.REVIEWER, Role.ADMIN}),
}


_EVENT_AREA = {"review.replay": Area.REPLAY, "review.watch": Area.REPLAY, "review.search": Area.SEARCH}
"""Audited acts whose role is checked again, against the store, each time (ReviewContext.audit)."""


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str
    roles: frozenset[Role]
    via: str
    """``console`` (``zsp review`` on the bastion host) or ``ssh`` (``ssh -t review@BASTION``)."""

    def may(self, area: str) -> bool:
        return bool(self.roles & _ALLOWED[area])

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.via)

    @property
    def label(self) -> str:
        return f"{self.name} ({', '.join(sorted(r.value for r in self.roles & REVIEW_ROLES))})"


class ReviewContext:
    """The data dir as the app sees it. Thread-safe where workers need it: the store runs one
    transaction at a time on its connection (SqliteStore's lock) and the search index serialises
    its own use."""

    def __init__(self, data: DataDir, service: AccessService, reviewer: Reviewer) -> None:
        self.data = data
        self.service = service
        self.reviewer = reviewer
        self._index: SearchIndex | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data: DataDir, name: str, via: str) -> ReviewContext:
        """The context for zsp user ``name``; :class:`AccessDenied` (one clear line) unless they
        hold a role that may review or decide."""
        service = data.service()
        user = _find(service, name)
        if user is None:
            raise AccessDenied(f"no zsp user {name!r}")
        roles = user.roles & REVIEW_ROLES
        if not roles:
            raise AccessDenied(
                f"{name} may not open the review app: it needs the reviewer, approver or admin role "
                f"(has: {', '.join(sorted(r.value for r in user.roles)) or 'none'})"
            )
        return cls(data, service, Reviewer(user.name, frozenset(user.roles), via))

    @property
    def storage(self) -> RecordingStorage:
        return self.data.storage()

    @property
    def recordings_dir(self) -> Path:
        return self.data.recordings

    def search_index(self) -> SearchIndex:
        with self._lock:
            if self._index is None:
                self._index = open_index(self.data)
            return self._index

    def audit(
        self,
        event: str,
        message: str,
        *,
        session_id: str | None = None,
        outcome: str = "success",
        **fields: Scalar,
    ) -> None:
        """Append a ``review.*`` event naming the reviewer (opening the app, each replay, each
        search, each live watch). Called from workers too: the service opens its own transaction.

        A replay, search or watch is audited only if the reviewer still holds a role for it now
        (the roles are read again from the store: a user removed or demoted while the app is open
        is refused from the next one on, with a ``review.refused`` event); else AccessDenied.
        Callers show nothing unless this returns."""
        area = _EVENT_AREA.get(event)
        if area is not None:
            self._recheck(area, event)
        self.service.record_event(
            NewEvent(
                event,
                self.reviewer.name,
                self.reviewer.via,
                message,
                outcome=outcome,
                session_id=session_id,
                fields=dict(fields),
            )
        )

    def _recheck(self, area: str, event: str) -> None:
        name, via = self.reviewer.name, self.reviewer.via
        user = _find(self.service, name)
        if user is not None and Reviewer(name, frozenset(user.roles), via).may(area):
            return
        why = "no longer a zsp user" if user is None else "no longer holds a role for it"
        self.service.record_event(
            NewEvent(
                "review.refused",
                name,
                via,
                f"{name} was refused {area} in the review app: {why}",
                outcome="failure",
                fields={"reason": "role", "area": area, "refused": event},
            )
        )
        raise AccessDenied(f"{name} may no longer use {area}: {why}")

    def close(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None


def _find(service: AccessService, name: str) -> User | None:
    with service.store.transaction(write=False) as tx:
        return tx.get_user(name)
