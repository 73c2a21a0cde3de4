"""Authenticated operator connections, and whether the key and user they logged in with still stand.

A connection is bound at login to one user and the key whose signature was verified. Removing
that key or that user must end what the connection can do: the bastion re-checks the binding
when each channel opens (:func:`still_registered`), and its watcher ends connections whose
binding is gone (:meth:`Logins.stale`), live sessions first. A user removed and added again
under the same name is a different user (a new id): connections of the old one end too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncssh

    from ..models import User

__all__ = ["Login", "Logins", "Standing", "key_owners", "still_registered"]


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


def key_owners(users: Iterable[User]) -> dict[str, int]:
    """Registered key fingerprint -> id of the user it belongs to."""
    return {k.fingerprint: u.id for u in users for k in u.keys}


def still_registered(login_user: User, current: User | None) -> bool:
    """Whether the key a connection logged in with still belongs to the same user (same id)."""
    return current is not None and current.id == login_user.id


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

    def stale(self, users: Iterable[User], among: Iterable[Login]) -> list[Standing]:
        """Which of ``among`` no longer stand, given every current user with their keys. ``among``
        must be taken before ``users`` was read: a login made with a key added since would look
        stale. Each one found is dropped from the set, so it is reported once."""
        users = list(users)
        ids = {u.id for u in users}
        owners = key_owners(users)
        gone = []
        for login in among:
            if self._open.get(login.conn) is not login:
                continue  # lost meanwhile
            if owners.get(login.fingerprint) == login.user.id:
                continue
            reason = "key-removed" if login.user.id in ids else "user-removed"
            gone.append(Standing(login, reason))
            self.discard(login.conn)
        return gone
