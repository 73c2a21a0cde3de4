"""Authenticated operator connections, and whether the key and user they logged in with still stand.

A connection is bound at login to one user and the key whose signature was verified. Removing
that key or that user must end what the connection can do: the bastion re-checks the binding
when each channel opens (:func:`still_registered`), and its watcher ends connections whose
binding is gone (:func:`find_stale`), live sessions first. A user removed and added again
under the same name is a different user (a new id): connections of the old one end too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncssh

    from ..access import AccessService
    from ..models import User

__all__ = ["Checked", "Login", "Logins", "Standing", "find_stale", "still_registered"]


@dataclass(frozen=True, slots=True)
class Login:
    """One authenticated connection: who, with which key, from where."""

    conn: asyncssh.SSHServerConnection
    user: User
    fingerprint: str
    client: str


@dataclass(frozen=True, slots=True)
class Standing:
    """Why a login no longer stands: ``reason`` is ``key-removed`` or ``user-removed``."""

    login: Login
    reason: str

    @property
    def message(self) -> str:
        what = (
            f"key {self.login.fingerprint} of {self.login.user.name}"
            if self.reason == "key-removed"
            else f"user {self.login.user.name}"
        )
        return f"{what} was removed; connection closed"


@dataclass(frozen=True, slots=True)
class Checked:
    """What one :func:`find_stale` pass looked at: the audit log's tail and the connections."""

    mark: int
    conns: frozenset[asyncssh.SSHServerConnection]


def still_registered(login_user: User, current: User | None) -> bool:
    """Whether the key a connection logged in with still belongs to the same user (same id)."""
    return current is not None and current.id == login_user.id


def find_stale(
    svc: AccessService, logins: Sequence[Login], since: Checked | None = None
) -> tuple[list[Standing], Checked]:
    """Which of ``logins`` no longer stand, and what was checked (pass it back next time).

    Runs four times a second, so it does as little as it can: nothing but one read of the audit
    log's tail when no key or user can have been removed since ``since`` (the log has not moved)
    and no login is new; otherwise one lookup per distinct key, and the user list only when
    something is stale, to say why."""
    mark = svc.change_mark()  # read first: a removal committed after it moves it for next time
    checked = Checked(mark, frozenset(login.conn for login in logins))
    if since is not None and since.mark == mark and checked.conns <= since.conns:
        return [], checked
    owners = {fp: svc.user_by_key(fp) for fp in {login.fingerprint for login in logins}}
    gone = [login for login in logins if not still_registered(login.user, owners[login.fingerprint])]
    if not gone:
        return [], checked
    ids = {u.id for u in svc.users()}
    return [Standing(login, "key-removed" if login.user.id in ids else "user-removed") for login in gone], checked


class Logins:
    """The bastion's authenticated connections (added at login, dropped when the connection is lost)."""

    def __init__(self) -> None:
        self._open: dict[asyncssh.SSHServerConnection, Login] = {}

    def add(self, login: Login) -> None:
        self._open[login.conn] = login

    def discard(self, conn: asyncssh.SSHServerConnection) -> None:
        self._open.pop(conn, None)

    def __iter__(self) -> Iterator[Login]:
        return iter(list(self._open.values()))

    def __len__(self) -> int:
        return len(self._open)

    def drop(self, stale: Iterable[Standing]) -> list[Standing]:
        """Remove these logins from the set; returns those still in it (each is reported once, and
        one lost meanwhile needs nothing more)."""
        dropped = []
        for standing in stale:
            if self._open.get(standing.login.conn) is standing.login:
                del self._open[standing.login.conn]
                dropped.append(standing)
        return dropped
