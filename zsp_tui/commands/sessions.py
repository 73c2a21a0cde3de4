"""``zsp sessions``: every recorded session, bastion and ``zsp record`` alike, with filters."""

from __future__ import annotations

import argparse
import os
from datetime import datetime
from typing import Any

from ..clock import parse_since, rfc3339
from ..exceptions import UsageError
from ..indexing import verified_outcomes
from ..models import SessionRecord
from ._common import data, emit_json, service, table

__all__ = ["STATUSES", "flag_summary", "register", "session_status"]

STATUSES = ("live", "sealed", "incomplete", "corrupt", "interrupted")
"""What ``--status`` takes. ``corrupt`` is known only for sessions whose recording was verified
(by the search indexer, which verifies every recording it reads, or ``zsp index``), and still
unchanged since."""


def session_status(s: SessionRecord, outcome: str | None = None) -> str:
    """``live`` (not ended), ``interrupted`` (its recorder died with it), ``corrupt`` (verified and
    found CORRUPT), ``sealed`` (ended with a seal), else ``incomplete`` (ended without one)."""
    if s.ended_at is None:
        return "live"
    if outcome == "CORRUPT":
        return "corrupt"
    if s.end_reason == "interrupted":
        return "interrupted"
    if s.head and outcome != "INCOMPLETE":
        return "sealed"
    return "incomplete"


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def cmd_sessions(args: argparse.Namespace) -> int:
    svc = service(args)
    now = svc.clock.now()
    since: datetime | None = None
    if args.since:
        try:
            since = parse_since(args.since, now)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    rows = svc.sessions(user=args.user, target=args.target, since=since)
    if args.flagged:
        rows = [s for s in rows if s.flags > 0]
    reviews = svc.reviews() if rows else {}
    if args.unreviewed:  # ended sessions nobody attested a review of yet (live ones cannot be)
        rows = [s for s in rows if s.ended_at is not None and s.id not in reviews]
    reasons = {r.id: r.reason for r in svc.requests()} if rows else {}
    # Sessions that masked more input than a password needs are flagged for review (zsp unseal).
    flagged = {e.session_id for e in svc.audit_events(since) if e.event == "input.masked.excessive"}
    d = data(args)
    by_path = verified_outcomes(d) if rows else {}
    # Where each recording is here: its scratch file, or an uploaded one's download (if fetched).
    where = {s.id: str(d.recording_location(s).absolute()) for s in rows}
    outcomes = {s.id: by_path[where[s.id]] for s in rows if where[s.id] in by_path}
    out: list[dict[str, Any]] = []
    for s in rows:
        status = session_status(s, outcomes.get(s.id))
        if args.status and status != args.status:
            continue
        end = s.ended_at or now
        out.append(
            {
                "id": s.id,
                "user": s.user,
                "target": s.target,
                "login": s.login,
                "grant_id": s.grant_id,
                "reason": reasons.get(s.grant_id) if s.grant_id else None,
                "command": s.command,
                "client": s.client,
                "started_at": rfc3339(s.started_at),
                "ended_at": rfc3339(s.ended_at) if s.ended_at else None,
                "duration_s": round((end - s.started_at).total_seconds(), 3),
                "bytes": _size(where[s.id]),
                "status": status,
                "verified": outcomes.get(s.id),
                "exit_status": s.exit_status,
                "end_reason": s.end_reason,
                "head": s.head,
                "path": s.path,
                "upload": s.upload,
                "object_key": s.object_key,
                "sha256": s.sha256,
                "flags": s.flags,
                "flag_severity": s.flag_severity,
                "review_flags": ["masked-input-excessive"] if s.id in flagged else [],
                "reviewed_by": [r.reviewer for r in reviews.get(s.id, ())],
            }
        )
    if args.json:
        emit_json(out)
        return 0
    table(
        [
            [
                o["id"],
                o["user"],
                f"{o['login']}@{o['target']}",
                o["grant_id"] or "-",
                o["started_at"][:19] + "Z",
                f"{o['duration_s']:.0f}s",
                _human_bytes(o["bytes"]) if o["bytes"] is not None or o["upload"] != "uploaded" else "in bucket",
                o["status"]
                + (" pending upload" if o["upload"] == "pending" else "")
                + (" FLAGGED" if o["review_flags"] else ""),
                flag_summary(o["flags"], o["flag_severity"]),
                o["end_reason"] or "-",
                _short(o["reason"]) if o["reason"] else "-",
            ]
            for o in out
        ],
        [
            "SESSION",
            "USER",
            "LOGIN@TARGET",
            "GRANT",
            "STARTED",
            "DURATION",
            "BYTES",
            "STATUS",
            "FLAGS",
            "ENDED BY",
            "REASON",
        ],
    )
    if flagged & {o["id"] for o in out}:
        print(
            "FLAGGED: more input was masked than a password needs; an admin reviews it with "
            "`zsp unseal SESSION --escrow-key FILE --as ADMIN`"
        )
    return 0


def flag_summary(count: int, severity: str | None) -> str:
    """What the FLAGS column shows: how many times rules fired and the highest severity
    (``3 high``); blank for none."""
    if count <= 0:
        return ""
    return f"{count} {severity}" if severity else str(count)


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "missing"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sessions",
        parents=[common],
        help="list recorded sessions",
        description="List every session, bastion and `zsp record` alike, oldest first. Status: live, sealed, "
        "incomplete (ended without a seal), corrupt (its recording failed verification when it was indexed), "
        "interrupted (its recorder died with it); `pending upload` after it: with [storage] configured, the "
        "recording waits in local scratch to be uploaded (retried until it is). "
        "FLAGS: how many times real-time rules fired in it and the "
        "highest severity (3 high); `zsp search --flagged` lists those moments.",
    )
    p.add_argument("--user", metavar="U", help="only sessions of this zsp user")
    p.add_argument("--target", metavar="T", help="only sessions on this target")
    p.add_argument(
        "--since", metavar="T", help="only sessions started since T: a time (2026-11-30) or an age (7d, 12h)"
    )
    p.add_argument("--status", choices=STATUSES, help="only sessions in this status")
    p.add_argument(
        "--flagged", action="store_true", help="only sessions in which a real-time rule fired (FLAGS column)"
    )
    p.add_argument(
        "--unreviewed",
        action="store_true",
        help="only ended sessions nobody has attested a review of (zsp review-mark)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_sessions)
