"""Access commands: ``zsp request``, ``approve``, ``deny``, ``cancel``, ``revoke``, ``grants``."""

from __future__ import annotations

import argparse

from ..clock import parse_duration
from ..exceptions import UsageError
from ._common import actor, add_as, emit_json, request_json, request_line, service
from .holds import deny_hold, is_hold_id

__all__ = ["register"]


def cmd_request(args: argparse.Namespace) -> int:
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    svc = service(args)
    r = svc.request(actor(args), args.target, args.login, duration, args.reason or "", break_glass=args.break_glass)
    now = svc.clock.now()
    print(request_line(r, now))
    if r.state.value == "pending":
        print(f"waiting for {r.approvals_needed} approval(s); an approver runs: zsp approve {r.id} --as APPROVER")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    svc = service(args)
    r = svc.approve(actor(args), args.id)
    print(request_line(r, svc.clock.now()))
    return 0


def cmd_deny(args: argparse.Namespace) -> int:
    if is_hold_id(args.id):  # a held command (commands/holds.py): the reason is optional
        return deny_hold(args)
    if args.reason is None:
        raise UsageError("deny: the following arguments are required: --reason")
    svc = service(args)
    print(request_line(svc.deny(actor(args), args.id, args.reason), svc.clock.now()))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    svc = service(args)
    print(request_line(svc.cancel(actor(args), args.id), svc.clock.now()))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    svc = service(args)
    print(request_line(svc.revoke(actor(args), args.id, args.reason or ""), svc.clock.now()))
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    svc = service(args)
    rows = svc.requests(active_only=args.active)
    now = svc.clock.now()
    if args.json:
        emit_json([request_json(r, now) for r in rows])
        return 0
    if not rows:
        print("no active grants" if args.active else "no requests")
    for r in rows:
        print(request_line(r, now))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("request", parents=[common], help="ask for a time-boxed shell on a target")
    p.add_argument("target")
    p.add_argument("--login", help="remote account (default: the target's first login)")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="e.g. 30m, 1h30m")
    p.add_argument("--reason", help="why, the rest of the words up to the next option (a ticket id, if policy asks)")
    p.add_argument(
        "--break-glass",
        action="store_true",
        help="activate at once without approval, if policy allows; always flagged for review",
    )
    add_as(p, required=True, help="who is asking")
    p.set_defaults(func=cmd_request)

    p = sub.add_parser("approve", parents=[common], help="approve someone else's request")
    p.add_argument("id")
    add_as(p, required=True, help="the approver")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("deny", parents=[common], help="deny a pending request, or a held command (h-...)")
    p.add_argument("id")
    p.add_argument("--reason", help="why (required for a request)")
    add_as(p, required=True, help="the approver")
    p.set_defaults(func=cmd_deny)

    p = sub.add_parser("cancel", parents=[common], help="withdraw your own pending request")
    p.add_argument("id")
    add_as(p, required=True, help="the requester")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("revoke", parents=[common], help="end an active grant now")
    p.add_argument("id")
    p.add_argument("--reason")
    add_as(p, required=True)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("grants", parents=[common], help="list requests and grants")
    p.add_argument("--active", action="store_true", help="only grants active now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_grants)
