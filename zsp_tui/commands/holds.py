"""Held commands: ``zsp holds``, ``zsp allow HOLD``, ``zsp deny HOLD [--reason TEXT]``.

A rule with the ``hold`` action stops a command line at Enter until an approver or admin other
than the operator decides (docs/RULES.md). These are the console's way to decide; the bastion's
``ssh zsp@BASTION holds|allow|deny`` and the review app's Requests screen call the same
:class:`~zsp_tui.access.AccessService` methods. ``zsp deny`` itself lives with the request
commands (:mod:`.access`): an ``h-`` id there is a held command, handled by :func:`deny_hold`.

Command lines are the operator's (and a hostile one's) text: every line printed here goes
through :func:`replay.printable`.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from typing import Any

from replay import printable

from ..clock import format_duration, rfc3339
from ..exceptions import UsageError
from ..models import Hold, HoldState
from ._common import actor, add_as, emit_json, service

__all__ = ["deny_hold", "hold_json", "hold_line", "is_hold_id", "register"]

_HOLD_ID = re.compile(r"\s*[hH]-[0-9a-fA-F]{8}\s*")


def is_hold_id(text: str) -> bool:
    """``h-`` and 8 hex digits: a held command's id (a request's is ``r-...``)."""
    return _HOLD_ID.fullmatch(text) is not None


def hold_line(h: Hold, now: datetime) -> str:
    """One escaped line: id, who, where, rule and severity, age (or outcome), the command."""
    head = f"{h.id}  {h.user} -> {h.login}@{h.target}  rule {h.rule} ({h.severity})"
    if h.state is HoldState.PENDING:
        when = f"held {format_duration(now - h.created_at)} ago, times out in {format_duration(h.expires_at - now)}"
    else:
        when = h.state.value + (f" by {h.decided_by}" if h.decided_by else "") + (f" ({h.note})" if h.note else "")
    return printable(f"{head}  {when}: {h.command}")


def hold_json(h: Hold, now: datetime) -> dict[str, Any]:
    return {
        "id": h.id,
        "state": h.state.value,
        "session_id": h.session_id,
        "grant_id": h.grant_id,
        "user": h.user,
        "target": h.target,
        "login": h.login,
        "rule": h.rule,
        "severity": h.severity,
        "command": h.command,
        "created_at": rfc3339(h.created_at),
        "expires_at": rfc3339(h.expires_at),
        "age_s": max(0, int((now - h.created_at).total_seconds())),
        "decided_at": rfc3339(h.decided_at) if h.decided_at else None,
        "decided_by": h.decided_by,
        "note": h.note,
    }


def cmd_holds(args: argparse.Namespace) -> int:
    svc = service(args)
    rows = svc.holds(pending_only=not args.all)
    now = svc.clock.now()
    if args.json:
        emit_json([hold_json(h, now) for h in rows])
        return 0
    if not rows:
        print("no held commands" if not args.all else "no holds")
    for h in rows:
        print(hold_line(h, now))
    return 0


def cmd_allow(args: argparse.Namespace) -> int:
    if not is_hold_id(args.id):
        raise UsageError(f"allow: {printable(args.id)} is not a held command (h-XXXXXXXX); requests are approved")
    svc = service(args)
    print(hold_line(svc.allow_hold(actor(args), args.id), svc.clock.now()))
    return 0


def deny_hold(args: argparse.Namespace) -> int:
    """``zsp deny h-...``: called by the request commands' ``deny`` for a hold id."""
    svc = service(args)
    print(hold_line(svc.deny_hold(actor(args), args.id, args.reason or ""), svc.clock.now()))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("holds", parents=[common], help="commands held by a rule, waiting for a decision")
    p.add_argument("--all", action="store_true", help="also those decided, timed out or cancelled")
    p.add_argument("--json", action="store_true")
    add_as(p)
    p.set_defaults(func=cmd_holds)

    p = sub.add_parser("allow", parents=[common], help="let someone else's held command run (zsp deny HOLD refuses)")
    p.add_argument("id", metavar="HOLD")
    add_as(p, required=True, help="the approver or admin (never the operator whose command it is)")
    p.set_defaults(func=cmd_allow)
