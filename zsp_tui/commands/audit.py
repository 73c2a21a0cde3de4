"""``zsp audit``: read and verify the chained audit log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..anchors import AnchorFileError, AnchorRefused, read_anchors
from ..clock import parse_time, rfc3339
from ..exceptions import UsageError
from ._common import data, emit_json, say, service

__all__ = ["register"]


def cmd_audit(args: argparse.Namespace) -> int:
    if args.action == "verify":
        d = data(args)
        svc = service(args)
        trusted = d.trusted_keys() or [d.signing_key().public]
        anchors = None
        if args.anchor:
            try:
                anchors = read_anchors(Path(args.anchor), trusted)
            except AnchorRefused as exc:
                # A forged anchor is evidence of tampering with the sink: a failed verification.
                if args.json:
                    emit_json({"ok": False, "detail": str(exc)})
                else:
                    print(f"audit log FAILED: {exc}")
                return 1
            except AnchorFileError as exc:
                raise UsageError(f"--anchor {exc}") from None
        report = svc.audit_verify(trusted, anchors)
        last = rfc3339(report.last_checkpoint) if report.last_checkpoint else "-"
        if args.json:
            emit_json(
                {
                    "ok": report.ok,
                    "frames": report.events,
                    "signed": report.signed,
                    "last_checkpoint": last,
                    "detail": report.detail,
                }
            )
        else:
            state = "OK" if report.ok else "FAILED"
            say(
                f"audit log {state}: {report.events} frames, signed up to {report.signed}, "
                f"last checkpoint {last}: {report.detail}"
            )
        return 0 if report.ok else 1
    if args.anchor:
        raise UsageError("--anchor is for `zsp audit verify`")
    since = None
    if args.since:
        try:
            since = parse_time(args.since)
        except ValueError:
            raise UsageError(f"--since: not an RFC 3339 time: {args.since!r} (e.g. 2026-11-26T09:00:00Z)") from None
    events = service(args).audit_events(since)
    if args.json:
        for e in events:
            print(json.dumps(e.to_json(), sort_keys=True))
        return 0
    for e in events:
        who = f"{e.actor}({e.via})"
        where = (f" {e.login}@{e.target}" if e.login else f" {e.target}") if e.target else ""
        grant = f" {e.grant_id}" if e.grant_id else ""
        say(f"{rfc3339(e.time)[:23]}Z {e.seq:>6} {e.code} {e.event:<24} {who:<20}{where}{grant}  {e.message}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", parents=[common], help="list the audit log, or `zsp audit verify` its chain")
    p.add_argument("action", nargs="?", choices=["list", "verify"], default="list")
    p.add_argument("--since", metavar="TIME", help="only events at or after this RFC 3339 time")
    p.add_argument("--json", action="store_true", help="JSON Lines, one event per line (SIEM friendly)")
    p.add_argument(
        "--anchor",
        metavar="FILE",
        help="verify: also prove the log reaches the last audit.anchor in FILE (a JSON Lines sink file)",
    )
    p.set_defaults(func=cmd_audit)
