"""``zsp targets --as USER``: the targets and logins USER may request (as ``ssh zsp@bastion targets``)."""

from __future__ import annotations

import argparse

from ..exceptions import NotFound
from ..identity import canonical_name
from ..requestable import requestable_lines
from ._common import add_as, emit_json, service

__all__ = ["register"]


def cmd_targets(args: argparse.Namespace) -> int:
    svc = service(args)
    name = canonical_name(args.as_user)
    user = next((u for u in svc.users() if u.name == name), None)
    if user is None:
        raise NotFound(kind="user", name=args.as_user)
    rows = requestable_lines(svc, user)
    if args.json:
        emit_json([r.to_json() for r in rows])
        return 0
    for r in rows:
        print(r.line())
    if not rows:
        print(f"no target {user.name} may request")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("targets", parents=[common], help="list the targets and logins a user may request")
    add_as(p, required=True, help="the user whose policy rules apply")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_targets)
