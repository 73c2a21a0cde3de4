"""``zsp rules check|list|test``: validate a rules file, show the rules in force, and run rules over
recorded sessions to see what would have fired, and whether that is what fired live.

``test`` replays each recording's verified, signed frames through the same engine the bastion runs
(``zsp_tui.rules.engine.run_frames``) with the facts the session had: from its ``rules.loaded``
event when the bastion wrote one, else from the store as it is now. It lists the ``rule.match``
events the bastion recorded live beside, and says whether the two agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recorder import Event, Frame, FrameKind, Header, PublicKey
from replay import Outcome, SourceError, only_signed, printable, verify, verify_frames

from ..clock import format_duration, rfc3339
from ..datadir import DataDir
from ..exceptions import NotFound, PolicyError, UsageError
from ..models import LOCAL_TARGET
from ..player import format_time
from ..rules import Match, Rule, RuleSet, SessionFacts
from ..rules.config import load_rules, load_rules_file
from ..rules.engine import MAX_MATCHES, facts_of_recording, run_frames
from ..session_ref import SessionIndex, identity_problem, resolve_ref
from ._common import data, say, table

__all__ = ["register"]



def _rules_for(args: argparse.Namespace) -> RuleSet:
    """``--rules FILE`` (which must exist), else the data dir's rules.toml (missing: the shipped set)."""
    if args.rules:
        return load_rules_file(Path(args.rules))
    return load_rules(data(args).rules_path)


def _counts(rules: RuleSet) -> str:
    shipped = sum(1 for r in rules.rules if r.shipped)
    return f"{len(rules.rules)} rules ({shipped} shipped, {len(rules.rules) - shipped} own)"


# --- check, list --------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    rules = load_rules_file(Path(args.file))
    print(f"ok: {_counts(rules)}")
    return 0


def _rule_json(r: Rule) -> dict[str, Any]:
    return {
        "name": r.name,
        "severity": r.severity.value,
        "trigger": r.trigger.value,
        "actions": [a for a in r.actions_text.split(",")],
        "shipped": r.shipped,
        "line": r.line or None,
        "description": r.description,
        "message": r.message,
        "command": r.command.pattern if r.command else None,
        "keys": r.keys.pattern if r.keys else None,
        "output": r.output.pattern if r.output else None,
        "path": r.path.pattern if r.path else None,
        "file_ops": sorted(op.value for op in r.file_ops) if r.file_ops is not None else None,
        "users": list(r.users),
        "targets": list(r.targets),
        "logins": list(r.logins),
        "days": sorted(r.days) if r.days is not None else None,
        "hours": [h.strftime("%H:%M") for h in r.hours] if r.hours else None,
        "timezone": str(r.timezone),
        "min_duration_s": int(r.min_duration.total_seconds()) if r.min_duration else None,
    }


def cmd_list(args: argparse.Namespace) -> int:
    rules = _rules_for(args)
    if args.json:
        json.dump(
            {
                "source": rules.source,
                "digest": rules.digest,
                "defaults": rules.defaults,
                "disabled": sorted(rules.disabled),
                "hold_timeout_s": int(rules.hold_timeout.total_seconds()),
                "rules": [_rule_json(r) for r in rules.rules],
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    disabled = f"; switched off: {', '.join(sorted(rules.disabled))}" if rules.disabled else ""
    say(
        f"{rules.source}: {_counts(rules)}, shipped set {rules.defaults!r}{disabled}; "
        f"holds time out after {format_duration(rules.hold_timeout)}; sha256 {rules.digest[:16]}..."
    )
    rows = [
        [
            r.name,
            r.severity.value,
            r.trigger.value,
            r.actions_text,
            "shipped" if r.shipped else f"own:{r.line}",
            r.description or r.message,
        ]
        for r in rules.rules
    ]
    if rows:
        table(rows, ["NAME", "SEVERITY", "TRIGGER", "ACTIONS", "FROM", "DESCRIPTION"])
    return 0


# --- test -----------------------------------------------------------------------------------------


class _Refused(Exception):
    """A recording that is not tested (CORRUPT): one line, exit 1."""


@dataclass(slots=True)
class _Live:
    """What the bastion recorded about rules in one session."""

    loaded: dict[str, Any] | None = None
    matches: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    allowed: set[str] = field(default_factory=set)
    """Holds an approver allowed (their Enter was recorded)."""
    terminated: bool = False
    suppressed: dict[str, Any] | None = None
    cut_paths: int = 0
    """File requests whose path is longer than the recording keeps exactly (3 KiB): live, rules
    matched the whole path; here, the part recorded."""


def _watch(frames: Iterator[Frame], live: _Live) -> Iterator[Frame]:
    """The frames, passed on as they are, noting the rule events among them."""
    for f in frames:
        if f.kind is FrameKind.EVENT and isinstance(f.data, Event):
            e = f.data
            if e.type == "rules.loaded" and live.loaded is None:
                live.loaded = dict(e.fields)
            elif e.type == "rule.match":
                live.matches.append((f.t_us, dict(e.fields)))
            elif e.type == "rule.hold.allow":
                live.allowed.add(str(e.fields.get("id")))
            elif e.type == "rule.terminate":
                live.terminated = True
            elif e.type == "rule.suppressed":
                live.suppressed = dict(e.fields)
            elif e.type == "sftp.op" and (e.fields.get("path_cut") or e.fields.get("path2_cut")):
                live.cut_paths += 1
        yield f


def _prelude(frames: Iterator[Frame], live: _Live) -> tuple[Header | None, list[Frame]]:
    """The header and the frames before the session's first byte of input or output (the
    ``rules.loaded`` event is among them when the bastion ran rules)."""
    header: Header | None = None
    held: list[Frame] = []
    for f in frames:
        if f.kind is FrameKind.HEADER and isinstance(f.data, Header):
            header = f.data
            continue
        held.append(f)
        if f.kind in (FrameKind.INPUT, FrameKind.OUTPUT) or live.loaded is not None:
            break
    return header, held


def _store_facts(d: DataDir, header: Header) -> tuple[frozenset[str], frozenset[str], frozenset[str], str]:
    """Roles, groups and labels as the data dir has them now (a recording without ``rules.loaded``),
    and a note when something could not be read."""
    if not d.db_path.exists():
        return frozenset(), frozenset(), frozenset(), "no data dir store: no roles, groups or labels"
    notes = []
    svc = d.service()
    user = next((u for u in svc.users() if u.name == header.user), None)
    roles = frozenset(str(r) for r in user.roles) if user is not None else frozenset()
    if user is None:
        notes.append(f"no user {header.user!r} in the store")
    groups: frozenset[str] = frozenset()
    try:
        groups = frozenset(g for g, members in d.policy().groups.items() if header.user in members)
    except PolicyError as exc:
        notes.append(f"groups unknown ({exc})")
    labels: frozenset[str] = frozenset()
    if header.target != LOCAL_TARGET:
        try:
            labels = svc.target(header.target).labels
        except NotFound:
            notes.append(f"no target {header.target!r} in the store")
    return roles, groups, labels, "; ".join(notes)


@dataclass(slots=True)
class _Result:
    session: str
    path: str
    outcome: str
    header: Header
    facts: SessionFacts
    facts_from: str
    matches: list[Match]
    suppressed: dict[str, int]
    live: _Live
    ran_live: bool
    same_rules: bool | None
    agree: bool | None
    only_here: list[tuple[str, str]]
    only_live: list[tuple[str, str]]
    never_entered: list[tuple[str, str]]


_Pairs = list[tuple[str, str]]


def _compare(matches: list[Match], live: _Live) -> tuple[bool, _Pairs, _Pairs, _Pairs]:
    """(agree, found here only, recorded live only, live ones whose Enter never reached the
    recording: held and not allowed, or the session terminated at it)."""
    here = Counter((m.rule.name, m.text) for m in matches)
    there: Counter[tuple[str, str]] = Counter()
    never: list[tuple[str, str]] = []
    for _, f in live.matches:
        key = (str(f.get("rule", "")), str(f.get("text", "")))
        hold = f.get("hold")
        actions = str(f.get("actions", "")).split(",")
        entered = True
        if hold and str(hold) not in live.allowed:
            entered = False  # denied, timed out or cancelled: Ctrl-U was recorded, not the Enter
        elif "terminate" in actions and f.get("trigger") == "command" and live.terminated:
            entered = False  # ended before the Enter was sent
        if not entered and here[key] <= there[key]:
            never.append(key)
            continue
        there[key] += 1
    only_here = sorted((here - there).elements())
    only_live = sorted((there - here).elements())
    return not only_here and not only_live, only_here, only_live, never


def _test_one(
    d: DataDir, rules: RuleSet, ref_name: str, trusted: list[PublicKey], index: SessionIndex | None
) -> _Result:
    ref = resolve_ref(d, ref_name, index)
    try:
        report = verify(ref.path, trusted)
    except SourceError as exc:
        raise UsageError(f"cannot read {ref.path}: {exc.reason}") from None
    problem = identity_problem(ref, report)
    if report.outcome is Outcome.CORRUPT or problem is not None:
        why = problem or f"{report.problem.value if report.problem else ''}: {report.detail}"
        raise _Refused(f"{ref_name}: CORRUPT recording, not tested: {why}")
    live = _Live()
    with open(ref.path, "rb") as f:
        frames = _watch(only_signed(verify_frames(f, trusted, source=str(ref.path))), live)
        header, held = _prelude(frames, live)
        if header is None:
            raise _Refused(f"{ref_name}: no signed header: nothing to test")
        if live.loaded is not None:
            facts = facts_of_recording(header, live.loaded)
            facts_from = "the recording (rules.loaded)"
        else:
            roles, groups, labels, note = _store_facts(d, header)
            facts = facts_of_recording(header, None, roles=roles, groups=groups, labels=labels)
            facts_from = "the store as it is now" + (f" ({note})" if note else "")

        def body() -> Iterator[Frame]:
            yield from held
            yield from frames

        matches, suppressed = run_frames(rules, facts, header, body())
    ran_live = live.loaded is not None or bool(live.matches)
    same = None
    if live.loaded is not None:
        same = live.loaded.get("ruleset") == rules.digest
    agree, only_here, only_live, never = _compare(matches, live)
    return _Result(
        session=str(header.session_id),
        path=str(ref.path),
        outcome=report.outcome.value,
        header=header,
        facts=facts,
        facts_from=facts_from,
        matches=matches,
        suppressed=suppressed,
        live=live,
        ran_live=ran_live,
        same_rules=same,
        agree=agree if ran_live else None,
        only_here=only_here,
        only_live=only_live,
        never_entered=never,
    )


def _when(header: Header, t_us: int) -> tuple[str, str]:
    at = format_time(t_us) + f".{t_us // 1000 % 1000:03d}"
    wall = datetime.fromtimestamp(header.started_at_us / 1e6, UTC) + timedelta(microseconds=t_us)
    return at, rfc3339(wall)[:19] + "Z"


def _match_json(r: _Result, m: Match) -> dict[str, Any]:
    at, wall = _when(r.header, m.t_us)
    return {
        "t_us": m.t_us,
        "time": at,
        "wall": wall,
        "rule": m.rule.name,
        "severity": m.rule.severity.value,
        "trigger": m.trigger.value,
        "actions": m.rule.actions_text,
        "text": m.text,
    }


def _result_json(r: _Result, rules: RuleSet) -> dict[str, Any]:
    f = r.facts
    return {
        "session": r.session,
        "path": r.path,
        "outcome": r.outcome,
        "rules": {"source": rules.source, "digest": rules.digest, "count": len(rules.rules)},
        "facts": {
            "user": f.user,
            "roles": sorted(f.roles),
            "groups": sorted(f.groups),
            "target": f.target,
            "labels": sorted(f.labels),
            "login": f.login,
            "started_at": rfc3339(f.started_at),
            "command": f.command,
            "from": r.facts_from,
        },
        "matches": [_match_json(r, m) for m in r.matches],
        "suppressed": r.suppressed,
        "live": {
            "ran": r.ran_live,
            "ruleset": r.live.loaded.get("ruleset") if r.live.loaded else None,
            "same_rules": r.same_rules,
            "matches": [{"t_us": t, **{k: v for k, v in fields.items()}} for t, fields in r.live.matches],
            "suppressed": r.live.suppressed,
        },
        "agree": r.agree,
        "only_here": [{"rule": a, "text": b} for a, b in r.only_here],
        "only_live": [{"rule": a, "text": b} for a, b in r.only_live],
        "never_entered": [{"rule": a, "text": b} for a, b in r.never_entered],
        "cut_paths": r.live.cut_paths,
    }


def _print_result(r: _Result, rules: RuleSet) -> None:
    h = r.header
    f = r.facts
    started = rfc3339(f.started_at)[:19] + "Z"
    say(f"session {r.session}  {h.user} -> {h.login}@{h.target}  started {started}  {r.outcome}")
    groups = f"; groups {', '.join(sorted(f.groups))}" if f.groups else ""
    say(
        f"  rules {rules.source} ({len(rules.rules)}, sha256 {rules.digest[:12]}...); facts from {r.facts_from}: "
        f"roles {', '.join(sorted(f.roles)) or '-'}{groups}; labels {', '.join(sorted(f.labels)) or '-'}"
    )
    if r.matches:
        rows = []
        for m in r.matches:
            at, wall = _when(h, m.t_us)
            rows.append([at, wall, m.rule.name, m.rule.severity.value, m.trigger.value, m.rule.actions_text, m.text])
        table(
            [["  " + c[0], *c[1:]] for c in rows], ["  TIME", "WALL", "RULE", "SEVERITY", "TRIGGER", "ACTIONS", "TEXT"]
        )
    say(
        f"  would fire: {len(r.matches)}"
        + (
            "; past the cap of "
            + str(MAX_MATCHES)
            + " per rule: "
            + ", ".join(f"{k} {v} more" for k, v in sorted(r.suppressed.items()))
            if r.suppressed
            else ""
        )
    )
    if r.matches:
        first = format_time(r.matches[0].t_us)
        say(f"  to see the first: zsp play {r.session} --from {first}")
    if not r.ran_live:
        say("  recorded live: no rule events (no rules ran in this session): nothing to compare")
        return
    live_rows = []
    for t, fields in r.live.matches:
        at, wall = _when(h, t)
        hold = fields.get("hold")
        live_rows.append(
            [
                "  " + at,
                wall,
                str(fields.get("rule", "")),
                str(fields.get("severity", "")),
                str(fields.get("trigger", "")),
                str(fields.get("actions", "")) + (f" (hold {hold})" if hold else ""),
                str(fields.get("text", "")),
            ]
        )
    say(f"  recorded live: {len(r.live.matches)} rule event(s)")
    if live_rows:
        table(live_rows, ["  TIME", "WALL", "RULE", "SEVERITY", "TRIGGER", "ACTIONS", "TEXT"])
    notes = []
    if r.never_entered:
        shown = ", ".join(f"{a} {b!r}" for a, b in r.never_entered)
        notes.append(
            f"{len(r.never_entered)} held and not allowed (or ended by terminate) live, so its Enter is not in "
            f"the recording and nothing is found here: {shown}"
        )
    if r.live.cut_paths:
        notes.append(
            f"{r.live.cut_paths} file request(s) with a path longer than the recording keeps exactly (3 KiB): "
            "rules matched the whole path live, here only its recorded part (a match on the rest is not found here)"
        )
    if r.same_rules is False:
        ran = str(r.live.loaded.get("ruleset") if r.live.loaded else "")[:12]
        notes.append(f"the session ran with other rules (sha256 {ran}...): differences are expected")
    for n in notes:
        say(f"  note: {n}")
    if r.agree:
        say(f"  agree: yes: these rules find the {len(r.matches)} match(es) recorded live")
    else:
        parts = []
        if r.only_here:
            parts.append("found here, not recorded live: " + ", ".join(f"{a} {b!r}" for a, b in r.only_here))
        if r.only_live:
            parts.append("recorded live, not found here: " + ", ".join(f"{a} {b!r}" for a, b in r.only_live))
        say("  agree: no: " + "; ".join(parts))


def cmd_test(args: argparse.Namespace) -> int:
    from .recording import _trusted

    rules = _rules_for(args)
    trusted = _trusted(args)
    d = data(args)
    index = SessionIndex(d) if d.root.exists() and any("/" not in s for s in args.sessions) else None
    results: list[dict[str, Any]] = []
    code = 0
    for i, name in enumerate(args.sessions):
        try:
            r = _test_one(d, rules, name, trusted, index)
        except _Refused as exc:
            print(f"zsp: error: {printable(str(exc))}", file=sys.stderr)
            code = 1
            continue
        if args.json:
            results.append(_result_json(r, rules))
        else:
            if i:
                print()
            _print_result(r, rules)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return code


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rules",
        help="check, list and test the real-time rules (rules.toml)",
        description="Real-time rules flag, notify, warn, hold or terminate while a session runs "
        "(docs/RULES.md). check validates a file; list shows the rules in force; test runs rules over "
        "recorded sessions and shows what would have fired and what fired live.",
    )
    rs = p.add_subparsers(dest="rules_cmd", metavar="ACTION", required=True)
    a = rs.add_parser(
        "check", parents=[common], help="validate a rules file (exit 0 ok, 2 with the line of the mistake)"
    )
    a.add_argument("file", metavar="FILE")
    a.set_defaults(func=cmd_check)
    a = rs.add_parser("list", parents=[common], help="the rules in force: shipped and own")
    a.add_argument("--rules", metavar="FILE", help="a rules file (default: DATA/rules.toml, else the shipped set)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_list)
    a = rs.add_parser(
        "test",
        parents=[common],
        help="run rules over recorded sessions: what would fire, and what fired live",
        description="Replay each session's verified, signed frames through the rules engine as the bastion "
        "runs it live (gating each Enter, then feeding), with the facts the session had (its rules.loaded "
        "event, else the store now), and print each match with its time; then the rule events recorded "
        "live and whether they agree. A CORRUPT recording is refused (exit 1).",
    )
    a.add_argument("sessions", nargs="+", metavar="SESSION", help="session id, unique start or end, or a path with '/'")
    a.add_argument("--rules", metavar="FILE", help="a rules file (default: DATA/rules.toml, else the shipped set)")
    a.add_argument("--signer", action="append", metavar="KEYFILE", help="trust this key (repeatable)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_test)
