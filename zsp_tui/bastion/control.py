"""Control commands over SSH: ``ssh -p 2222 zsp@bastion request|approve|deny|...|targets|status|whoami``.

The caller is whoever owns the key that signed the SSH login; there is no ``--as`` here. The same
:class:`AccessService` as the local console applies the same rules and writes the same audit
events (with ``via: ssh``).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from replay import printable

from ..access import AccessService, Actor
from ..clock import parse_duration
from ..command_line import split_command
from ..commands._common import request_json, request_line
from ..commands.holds import hold_line, is_hold_id
from ..commands.reviews import review_json, review_line
from ..datadir import DataDir
from ..exceptions import UsageError, ZspError
from ..models import RequestState, Role, User
from ..requestable import requestable_lines
from ..reviews import mark_reviewed

__all__ = ["SshHint", "run_control"]


@dataclass(frozen=True, slots=True)
class SshHint:
    """How this operator reaches the bastion, to print commands they can paste."""

    port: int
    host: str
    ssh_config: str | None = None
    """In demo mode, the demo's ssh_config (key files, pinned host key): without it, a pasted
    command fails host key verification. Hosts are then its aliases, from ``aliases``."""
    aliases: tuple[tuple[str, str], ...] = ()
    """``(zsp user, Host alias in ssh_config)`` pairs."""
    user: str | None = None
    """Who the hints are for (whose alias is used)."""
    approver: str | None = None
    """In demo mode, the user who approves: the "an approver runs" hint uses their alias."""

    def _ssh(self, ssh_user: str, as_user: str | None = None) -> str:
        alias = dict(self.aliases).get(as_user or self.user or "") if self.ssh_config else None
        if alias is not None:
            return f"ssh -F {self.ssh_config} {ssh_user}@{alias}"
        return f"ssh -p {self.port} {ssh_user}@{self.host}"

    def control(self, command: str, as_user: str | None = None) -> str:
        return f"{self._ssh('zsp', as_user)} {command}"

    def session(self, login: str, target: str) -> str:
        return self._ssh(f"{login}@{target}" if login else target)


HELP = """\
zsp control commands (your identity is the key you logged in with):

  request TARGET [--login LOGIN] --for DURATION [--reason TEXT...] [--break-glass]
  approve ID                 approve someone else's request
  deny ID --reason TEXT...   deny a pending request
  holds                      commands held by a rule, waiting for a decision
  allow HOLD                 let someone else's held command run (approvers, admins)
  deny HOLD [--reason TEXT...]  refuse a held command: its line is cleared, never sent
  cancel ID                  withdraw your own pending request
  revoke ID [--reason TEXT...]  end an active grant now
  grants [--active] [--json] list requests and grants
  targets [--json]           the targets and logins you may request
  status                     your grants, and requests waiting for you
  whoami                     who the bastion thinks you are
  review-mark SESSION [--note TEXT...]  attest that you reviewed a session (reviewers;
                             signed into the audit log; never your own)
  watch SESSION              (ssh -t) moderate a live session whose rule needs a moderator:
                             a read-only view; q leaves, T ends the session; never your own
  export ID... [--user U] [--target T] [--since T] [--format bundle|asciicast|asciicast3|text]
         [--redact REGEX]... [--include-input] [--files] > FILE
                             signed evidence of recorded sessions (reviewers, admins; no -t)

A reason is every word after --reason up to the next option of the command, so no
quotes are needed: --reason INC-7 vacuum (quoted forms work too).

Then open a session:  SESSION   (or TARGET@HOST for the target's default login)
"""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that reports to a buffer and raises, instead of printing and exiting the process."""

    out = io.StringIO()

    def _print_message(self, message: str, file: Any = None) -> None:
        self.out.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self.out.write(message)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        # run_control prefixes "zsp: error: "; name the subcommand, not "zsp" a second time.
        command = self.prog.removeprefix("zsp").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _parser(out: io.StringIO) -> _Parser:
    _Parser.out = out
    p = _Parser(prog="zsp", add_help=True)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True, parser_class=_Parser)
    r = sub.add_parser("request")
    r.add_argument("target")
    r.add_argument("--login")
    r.add_argument("--for", dest="duration", required=True)
    r.add_argument("--reason", default="")
    r.add_argument("--break-glass", action="store_true")
    a = sub.add_parser("approve")
    a.add_argument("id")
    d = sub.add_parser("deny")
    d.add_argument("id")
    d.add_argument("--reason")  # required for a request (r-...), optional for a held command (h-...)
    w = sub.add_parser("allow")
    w.add_argument("id")
    sub.add_parser("holds")
    c = sub.add_parser("cancel")
    c.add_argument("id")
    v = sub.add_parser("revoke")
    v.add_argument("id")
    v.add_argument("--reason", default="")
    g = sub.add_parser("grants")
    g.add_argument("--active", action="store_true")
    g.add_argument("--json", action="store_true")
    t = sub.add_parser("targets")
    t.add_argument("--json", action="store_true")
    m = sub.add_parser("review-mark")
    m.add_argument("session")
    m.add_argument("--note", default="")
    m.add_argument("--json", action="store_true")
    sub.add_parser("status")
    sub.add_parser("whoami")
    sub.add_parser("help")
    return p


def run_control(
    svc: AccessService, user: User, command: str | None, hint: SshHint, data: DataDir | None = None
) -> tuple[int, str, str]:
    """Run one control command for ``user``; returns ``(exit status, stdout text, stderr text)``.
    ``data``: the bastion's data dir (``review-mark`` verifies the recording it attests).

    Blocking (it uses the store); the bastion runs it in its database thread.
    """
    out = io.StringIO()
    if not command or not command.strip():
        return 0, _help(hint), ""
    try:
        argv = split_command(command)
        args = _parser(out).parse_args(argv)
        args.data_dir = data
        if args.cmd == "help":
            return 0, _help(hint), ""
        status = _COMMANDS[args.cmd](svc, Actor(user.name, "ssh"), user, args, out, hint)
    except _Exit as exc:
        return exc.status, out.getvalue(), ""
    except ZspError as exc:
        return exc.exit_code, out.getvalue(), f"zsp: error: {printable(str(exc))}\n"
    return status, out.getvalue(), ""


def _help(hint: SshHint) -> str:
    return HELP.replace("SESSION", hint.session("LOGIN", "TARGET")).replace("TARGET@HOST", hint.session("", "TARGET"))


Handler = Callable[[AccessService, Actor, User, argparse.Namespace, io.StringIO, SshHint], int]


def _request(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    r = svc.request(actor, args.target, args.login, duration, args.reason, break_glass=args.break_glass)
    out.write(request_line(r, svc.clock.now()) + "\n")
    if r.state is RequestState.PENDING:
        out.write(f"an approver runs: {hint.control('approve ' + r.id, hint.approver)}\n")
    else:
        out.write(f"open it: {printable(hint.session(r.login, r.target))}\n")
    return 0


def _approve(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    out.write(request_line(svc.approve(actor, args.id), svc.clock.now()) + "\n")
    return 0


def _deny(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    if is_hold_id(args.id):
        out.write(hold_line(svc.deny_hold(actor, args.id, args.reason or ""), svc.clock.now()) + "\n")
        return 0
    if args.reason is None:
        raise UsageError("deny: the following arguments are required: --reason")
    out.write(request_line(svc.deny(actor, args.id, args.reason), svc.clock.now()) + "\n")
    return 0


def _allow(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    if not is_hold_id(args.id):
        raise UsageError(f"allow: {printable(args.id)} is not a held command (h-XXXXXXXX); requests are approved")
    out.write(hold_line(svc.allow_hold(actor, args.id), svc.clock.now()) + "\n")
    return 0


def _holds(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    rows = svc.holds(pending_only=True)
    if not (user.has(Role.APPROVER) or user.has(Role.ADMIN)):
        rows = [h for h in rows if h.user == user.name]  # others' command lines only for those who decide
    now = svc.clock.now()
    for h in rows:
        out.write(hold_line(h, now) + "\n")
    if not rows:
        out.write("no held commands\n")
    else:
        out.write(f"decide: {hint.control('allow ID')}  or  {hint.control('deny ID --reason WHY')}\n")
    return 0


def _cancel(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    out.write(request_line(svc.cancel(actor, args.id), svc.clock.now()) + "\n")
    return 0


def _revoke(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    out.write(request_line(svc.revoke(actor, args.id, args.reason), svc.clock.now()) + "\n")
    return 0


def _grants(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    rows = svc.requests(active_only=args.active)
    if Role.ADMIN not in user.roles:
        # Others' requests (and their reasons) only for those who may act on them.
        policy = svc.policy()
        rows = [r for r in rows if r.requester == user.name or policy.principal_matches(r.approver_patterns, user)]
    now = svc.clock.now()
    if args.json:
        out.write(json.dumps([request_json(r, now) for r in rows], indent=2) + "\n")
    else:
        for r in rows:
            out.write(request_line(r, now) + "\n")
        if not rows:
            out.write("no active grants\n" if args.active else "no requests\n")
    return 0


def _targets(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    rows = requestable_lines(svc, user)
    if args.json:
        out.write(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
        return 0
    for r in rows:
        out.write(r.line() + "\n")
    if not rows:
        out.write(f"no target you may request ({user.name}); ask an admin\n")
    else:
        out.write(f"ask for one: {hint.control('request TARGET --login LOGIN --for 30m --reason WHY')}\n")
    return 0


def _status(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    now = svc.clock.now()
    mine = [r for r in svc.requests() if r.requester == user.name and not r.effective_state(now).final]
    policy = svc.policy()
    waiting = [
        r
        for r in svc.requests()
        if r.effective_state(now) is RequestState.PENDING
        and r.requester != user.name
        and policy.principal_matches(r.approver_patterns, user)
        and user.name not in r.approvals
    ]
    out.write(f"you are {printable(user.name)} ({', '.join(sorted(user.roles))})\n")
    out.write("your requests and grants:\n" if mine else "no pending requests or active grants of your own\n")
    for r in mine:
        out.write("  " + request_line(r, now) + "\n")
    if waiting:
        out.write("waiting for your approval:\n")
        for r in waiting:
            out.write(f"  {request_line(r, now)}  reason: {printable(r.reason)}\n")
    if user.has(Role.APPROVER) or user.has(Role.ADMIN):
        held = [h for h in svc.holds() if h.user != user.name]
        if held:
            out.write("held commands waiting for a decision (allow ID / deny ID):\n")
            for h in held:
                out.write(f"  {hold_line(h, now)}\n")
    return 0


def _review_mark(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    if args.data_dir is None:
        raise UsageError("review-mark: this bastion cannot read recordings")
    review = mark_reviewed(args.data_dir, svc, actor, args.session, args.note)
    if args.json:
        out.write(json.dumps(review_json(review), sort_keys=True) + "\n")
    else:
        out.write(review_line(review) + "\n")
    return 0


def _whoami(
    svc: AccessService, actor: Actor, user: User, args: argparse.Namespace, out: io.StringIO, hint: SshHint
) -> int:
    out.write(f"{printable(user.name)} roles={','.join(sorted(user.roles))} keys={len(user.keys)}\n")
    return 0


_COMMANDS: dict[str, Handler] = {
    "request": _request,
    "approve": _approve,
    "deny": _deny,
    "allow": _allow,
    "holds": _holds,
    "cancel": _cancel,
    "revoke": _revoke,
    "grants": _grants,
    "targets": _targets,
    "status": _status,
    "whoami": _whoami,
    "review-mark": _review_mark,
}
