"""Helpers shared by the subcommand modules: data dir, service, actor, output.

Human-readable output goes through :func:`replay.printable` here (``say``, ``table``,
``request_line``), so no stored value (a key comment, a target name, a reason, a recording header)
can put a control character on the reader's terminal or forge a line. ``--json`` output is exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any, TextIO

from replay import printable

from ..access import AccessService, Actor
from ..clock import format_duration, rfc3339
from ..datadir import DataDir, resolve_data_dir
from ..models import AccessRequest

__all__ = ["actor", "data", "emit_json", "request_line", "say", "service", "table"]


def data(args: argparse.Namespace) -> DataDir:
    return DataDir(resolve_data_dir(args.data))


def service(args: argparse.Namespace) -> AccessService:
    return data(args).service()


def actor(args: argparse.Namespace) -> Actor:
    return Actor(getattr(args, "as_user", None), "console")


def add_as(p: argparse.ArgumentParser, required: bool = False, help: str | None = None) -> None:
    p.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        required=required,
        help=help or "the zsp user doing this (audited as that user from the local console)",
    )


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    print()


def say(line: str, *, file: TextIO | None = None) -> None:
    """Print one line of human-readable output with its control characters escaped: the line may
    embed stored values, and it stays one line whatever they hold."""
    print(printable(line), file=file or sys.stdout)


def table(rows: list[list[str]], header: list[str]) -> None:
    cells = [[printable(str(c)) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def request_json(r: AccessRequest, now: datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.effective_state(now).value,
        "requester": r.requester,
        "target": r.target,
        "login": r.login,
        "duration_s": int(r.duration.total_seconds()),
        "reason": r.reason,
        "rule": r.rule,
        "break_glass": r.break_glass,
        "approvals": list(r.approvals),
        "approvals_needed": r.approvals_needed,
        "created_at": rfc3339(r.created_at),
        "lapses_at": rfc3339(r.lapses_at),
        "starts_at": rfc3339(r.starts_at) if r.starts_at else None,
        "ends_at": rfc3339(r.ends_at) if r.ends_at else None,
        "ended_at": rfc3339(r.ended_at) if r.ended_at else None,
        "ended_by": r.ended_by,
        "note": r.note,
        "active": r.active(now),
    }


def request_line(r: AccessRequest, now: datetime) -> str:
    state = r.effective_state(now).value
    where = printable(f"{r.login}@{r.target}")
    if r.active(now) and r.ends_at:
        when = f"active until {rfc3339(r.ends_at)[:19]}Z ({format_duration(r.ends_at - now)} left)"
        if r.starts_at and r.ends_at - r.starts_at < r.duration:
            when += f", cut short: rule {r.rule!r} approves only until then"
    elif state == "pending":
        when = f"pending {len(r.approvals)}/{r.approvals_needed} approvals, lapses {rfc3339(r.lapses_at)[:19]}Z"
    else:
        when = state
    flag = " BREAK-GLASS" if r.break_glass else ""
    return f"{printable(r.id)}  {printable(r.requester)} -> {where} for {format_duration(r.duration)}: {when}{flag}"
