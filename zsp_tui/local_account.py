"""The account a `local` session's shell runs as.

The built-in `local` target is a shell on the bastion host. Run as the bastion's own account it
could read the data dir: the signing and CA keys, the database, every recording. So when the
bastion runs as root (the only case where it can choose), the shell runs as an unprivileged
account instead (``[targets] local_user`` in zsp.toml, default ``nobody``), which the data dir's
0700/0600 modes keep out. Never as root. When the bastion runs as an ordinary account it cannot
switch, and `local` shares that account (and so its keys): that is why `local` is off unless
zsp.toml switches it on, and is meant for the demo.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

__all__ = ["LocalAccount", "local_account", "own_account"]

_FALLBACK_SHELL = "/bin/sh"


@dataclass(frozen=True, slots=True)
class LocalAccount:
    name: str
    uid: int
    gid: int
    home: str
    """The account's home if it exists, else ``/``."""
    shell: str
    """Its login shell if /etc/shells lists it (``nobody``'s nologin is not), else the shell of the
    account running zsp, else /bin/sh."""
    switch: bool
    """True when the bastion (root) must switch to this account to start the shell."""


def _shells() -> frozenset[str]:
    try:
        with open("/etc/shells", encoding="utf-8") as f:
            return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))
    except OSError:
        return frozenset({_FALLBACK_SHELL})


def local_account(configured: str) -> LocalAccount:
    """Resolve who `local` shells run as; raise ValueError (one printable line) if that is unsafe."""
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(configured)
        except KeyError:
            raise ValueError(f"local_user {configured!r}: no such account on this host") from None
        if pw.pw_uid == 0:
            raise ValueError(f"local_user {configured!r} is root: `local` shells never run as root")
        switch = True
    else:
        pw = pwd.getpwuid(os.getuid())
        switch = False
    shells = _shells()
    own = pwd.getpwuid(os.getuid()).pw_shell
    shell = pw.pw_shell if pw.pw_shell in shells else own if own in shells else _FALLBACK_SHELL
    home = pw.pw_dir if pw.pw_dir and os.path.isdir(pw.pw_dir) else "/"
    return LocalAccount(pw.pw_name, pw.pw_uid, pw.pw_gid, home, shell, switch)


def own_account() -> LocalAccount:
    """The account running zsp, as it is (no switch)."""
    pw = pwd.getpwuid(os.getuid())
    return LocalAccount(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell or _FALLBACK_SHELL, False)
