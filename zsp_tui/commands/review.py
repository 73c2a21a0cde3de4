"""``zsp review``: the review app over a data dir, on the bastion host's console.

The reviewer is a zsp user (``--as USER``, else ``$ZSP_USER``, else the OS login name) holding the
reviewer, approver or admin role; everything they open, search and decide is audited under that
name with ``via=console``. Through the bastion, ``ssh -t review@BASTION`` runs this same command
for the user the key belongs to, with ``via=ssh`` (bastion/review.py).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import traceback

from ..exceptions import AccessDenied, UsageError
from ._common import add_as, data, say

__all__ = ["register"]

VIA = ("console", "ssh")


def cmd_review(args: argparse.Namespace) -> int:
    d = data(args)
    d.require()
    name = args.as_user or os.environ.get("ZSP_USER") or getpass.getuser()
    from ..tui import ReviewApp, ReviewContext

    try:
        ctx = ReviewContext.open(d, name, args.via)
    except AccessDenied as exc:
        if not args.as_user and "no zsp user" in str(exc):
            raise UsageError(f"{exc}: name yourself with --as USER (a zsp user with a review role)") from None
        raise
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("zsp review needs a terminal (over ssh: ssh -t review@BASTION)")
    app = ReviewApp(ctx, start=args.start)
    app.run()
    if app.crash is not None:
        if args.via == "console":
            # On the bastion host: enough to report the bug, without the locals Textual would show.
            traceback.print_exception(app.crash, file=sys.stderr)
        say(f"zsp: error: the review app stopped on an internal error ({type(app.crash).__name__}: {app.crash})",
            file=sys.stderr)
        return 1
    if app.problem:
        say(f"zsp: error: {app.problem}", file=sys.stderr)
    return app.return_code or 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "review",
        parents=[common],
        help="the review app: sessions, replay, search, live, requests, audit",
        description="Open the review app (a terminal UI) over the data dir. Reviewers browse, search and replay "
        "sessions and watch live ones; approvers decide requests and terminate sessions; admins do both. "
        "Every replay, search and decision is audited under your name. Through the bastion: "
        "ssh -t -p 2222 review@BASTION.",
    )
    add_as(p, help="the zsp user reviewing (default: $ZSP_USER, else your login name)")
    p.add_argument("--start", choices=["sessions", "search", "live", "requests", "audit"], help="area to open in")
    # Set by the bastion for `ssh -t review@BASTION`; the audit log then says via=ssh.
    p.add_argument("--via", choices=VIA, default="console", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_review)
