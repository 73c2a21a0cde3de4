"""The access policy: a TOML file in the data directory, validated whole on every load.

Every mistake is reported with the file, the line and what is wrong, and nothing is applied from
a file that has one (the caller keeps refusing requests rather than guessing). See
``DEFAULT_POLICY`` for the commented template ``zsp init`` writes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .clock import parse_duration
from .exceptions import ConfigError, PolicyError
from .identity import InvalidName, canonical_name
from .models import LOCAL_TARGET, Role, Target, User

__all__ = ["DEFAULT_POLICY", "AutoRule", "BreakGlass", "Policy", "Rule", "load_policy", "principal_matches"]

DEFAULT_POLICY = """\
# zsp access policy: who may request what, for how long, and who approves.
# Read on every request; `zsp policy check` validates it. Durations: 90s, 30m, 1h30m, 2d.
# Principals: "*", "role:operator|approver|reviewer|admin", "group:NAME", "user:NAME" (or "NAME").
# Targets: a target name or glob ("db-*"), or "label:GLOB" to match any of a target's labels.
# The built-in `local` target (a shell as the bastion's own account) is matched only by a rule
# that names it: targets = ["local"]. "*", other globs and labels never match it.
# Nobody ever approves their own request, admins included.

[settings]
request_timeout = "1h"        # unanswered requests lapse after this
warn_before = ["5m", "1m"]    # in-band warnings before a grant ends

[groups]
# dba = ["alice", "bob"]

# The first rule that matches the requester, target and login decides.
[[rule]]
name = "operators"
requesters = ["role:operator"]
targets = ["*"]
logins = ["*"]
max_duration = "4h"
require_reason = true
ticket_pattern = ""           # e.g. '(INC|CHG)-[0-9]+': the reason must contain a ticket id
approvers = ["role:approver", "role:admin"]
approvals = 1                 # distinct approvers needed, never counting the requester
# moderators = ["role:reviewer"]  # who may watch its sessions live (ssh -t zsp@BASTION watch SESSION)
# moderation = "watch"        # default "none"; "watch": a session starts only once a moderator watches
file_transfer = false         # true: its grants may use sftp/scp through the bastion (recorded)

# Requests matching an auto_approve rule are approved at once, by the rule; the grant ends when
# the rule's window (days, hours) closes, if that comes before the requested duration is up.
# [[auto_approve]]
# name = "read-only during business hours"
# requesters = ["role:operator"]
# targets = ["*"]
# logins = ["readonly"]
# max_duration = "30m"
# days = ["mon", "tue", "wed", "thu", "fri"]
# hours = "09:00-17:00"
# timezone = "UTC"

# Break-glass: self-activated, short, always flagged for review and announced in the audit log.
[break_glass]
enabled = false
requesters = ["role:admin"]
targets = ["*"]
logins = ["*"]
max_duration = "30m"
"""


def hours_window(text: str) -> tuple[time, time] | None:
    """``"HH:MM-HH:MM"`` as (start, end), ``24:00`` as :attr:`time.max`; None if malformed. Whether
    a window may wrap past midnight is the caller's rule."""
    m = re.fullmatch(r"(\d\d):(\d\d)-(\d\d):(\d\d)", text)
    if not m or int(m[1]) > 23 or int(m[2]) > 59 or int(m[3]) > 24 or int(m[4]) > 59 or (m[3] == "24" and int(m[4])):
        return None
    return time(int(m[1]), int(m[2])), time.max if m[3] == "24" else time(int(m[3]), int(m[4]))


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MAX_BREAK_GLASS = timedelta(hours=4)
_MAX_GRANT = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    requesters: tuple[str, ...]
    targets: tuple[str, ...]
    logins: tuple[str, ...]
    max_duration: timedelta
    require_reason: bool
    ticket_pattern: re.Pattern[str] | None
    approvers: tuple[str, ...]
    approvals: int
    moderators: tuple[str, ...] = ()
    """Who may moderate (watch) its sessions; principals, as ``approvers``."""
    moderation: str = "none"
    """``none``, or ``watch``: a session under its grant waits for a moderator to watch it."""
    file_transfer: bool = False
    """Grants by this rule may use SFTP/SCP through the bastion (recorded; bastion/sftp.py)."""


@dataclass(frozen=True, slots=True)
class AutoRule:
    name: str
    requesters: tuple[str, ...]
    targets: tuple[str, ...]
    logins: tuple[str, ...]
    max_duration: timedelta
    days: frozenset[int]
    start: time
    end: time
    """End of the daily window; ``time.max`` stands for 24:00."""
    zone: ZoneInfo
    require_reason: bool
    moderators: tuple[str, ...] = ()
    moderation: str = "none"
    file_transfer: bool = False
    """As ``Rule.file_transfer``."""

    def open_at(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def closes_at(self, now: datetime) -> datetime | None:
        """When the window open at ``now`` closes; None if it never does (every day, all day).

        A grant this rule approves ends then at the latest: a 10:00-10:40 rule must not approve
        access until 10:48. A window running to 24:00 goes on into the next day when that day's
        window starts at 00:00 (``hours = "00:00-24:00"`` on mon-fri closes at Saturday 00:00).
        """
        day = now.astimezone(self.zone).date()
        for _ in range(8):
            if self.end != time.max:
                return datetime.combine(day, self.end, self.zone)
            day += timedelta(days=1)
            if self.start != time.min or day.weekday() not in self.days:
                return datetime.combine(day, time.min, self.zone)
        return None


@dataclass(frozen=True, slots=True)
class BreakGlass:
    enabled: bool
    requesters: tuple[str, ...]
    targets: tuple[str, ...]
    logins: tuple[str, ...]
    max_duration: timedelta


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    digest: str
    """sha256 of the file's bytes: an audit event records every change."""
    request_timeout: timedelta
    warn_before: tuple[timedelta, ...]
    groups: dict[str, frozenset[str]]
    rules: tuple[Rule, ...]
    auto_rules: tuple[AutoRule, ...]
    break_glass: BreakGlass

    # --- evaluation -----------------------------------------------------------------------

    def moderated_by(self, rule_name: str) -> tuple[str, ...]:
        """The moderators a grant admitted by ``rule_name`` must have watching; () for none
        (break-glass grants and rules without ``moderation = "watch"``, or a rule since removed)."""
        rules: list[Rule | AutoRule] = [*self.rules, *self.auto_rules]
        for r in rules:
            if r.name == rule_name and r.moderation == "watch":
                return r.moderators
        return ()

    def allows_file_transfer(self, rule_name: str, break_glass: bool = False) -> bool:
        """Whether grants admitted by the rule named ``rule_name`` may transfer files (SFTP/SCP).
        Break-glass grants never do; a rule renamed or removed since the grant no longer allows it."""
        if break_glass:
            return False
        rules: list[Rule | AutoRule] = [*self.rules, *self.auto_rules]
        return any(r.name == rule_name and r.file_transfer for r in rules)

    def principal_matches(self, patterns: tuple[str, ...], user: User) -> bool:
        groups = frozenset(g for g, members in self.groups.items() if user.name in members)
        return principal_matches(patterns, user.name, user.roles, groups)

    @staticmethod
    def target_matches(patterns: tuple[str, ...], target: Target) -> bool:
        if target.builtin and target.name == LOCAL_TARGET:
            # A grant on `local` is control of the bastion itself: only a rule naming it matches.
            return LOCAL_TARGET in patterns
        for p in patterns:
            if p.startswith("label:"):
                glob = p[len("label:") :]
                if any(fnmatch.fnmatchcase(label, glob) for label in target.labels):
                    return True
            elif fnmatch.fnmatchcase(target.name, p):
                return True
        return False

    @staticmethod
    def login_matches(patterns: tuple[str, ...], login: str) -> bool:
        return any(fnmatch.fnmatchcase(login, p) for p in patterns)

    def _scope(self, r: Rule | AutoRule | BreakGlass, user: User, target: Target, login: str) -> bool:
        return (
            self.principal_matches(r.requesters, user)
            and self.target_matches(r.targets, target)
            and self.login_matches(r.logins, login)
        )

    def request_rule(self, user: User, target: Target, login: str) -> Rule | None:
        return next((r for r in self.rules if self._scope(r, user, target, login)), None)

    def auto_rule(self, user: User, target: Target, login: str, duration: timedelta, now: datetime) -> AutoRule | None:
        for r in self.auto_rules:
            if self._scope(r, user, target, login) and duration <= r.max_duration and r.open_at(now):
                return r
        return None

    def break_glass_allows(self, user: User, target: Target, login: str) -> bool:
        bg = self.break_glass
        return bg.enabled and self._scope(bg, user, target, login)


def principal_matches(
    patterns: tuple[str, ...], name: str, roles: Collection[str], groups: Collection[str]
) -> bool:
    """Whether a user (``name``, its ``roles``, the ``groups`` it belongs to) matches any of the
    validated principal patterns: ``*``, ``role:R``, ``group:G``, ``user:U``."""
    for p in patterns:
        if p == "*":
            return True
        kind, _, value = p.partition(":")
        if kind == "role" and value in roles:
            return True
        if kind == "group" and value in groups:
            return True
        if kind == "user" and value == name:
            return True
    return False


# --- loading ---------------------------------------------------------------------------------


class _Locator:
    """Finds the line of a key in the TOML text, for error messages (tomllib gives no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    @staticmethod
    def _header(raw: str) -> str:
        """A table header line as written without spaces or a comment (``[[ rule ]]  # x`` is
        ``[[rule]]``); other lines as they are, stripped."""
        line = raw.strip()
        if line.startswith("[") and "#" in line:
            line = line[: line.index("#")].rstrip()
        return line.replace(" ", "").replace("\t", "") if line.startswith("[") else line

    def line(self, table: str | None, index: int | None = None, key: str | None = None) -> int | None:
        """Line of ``key`` in table ``table`` (its ``index``-th occurrence for ``[[arrays]]``); the
        table's header line when the key is absent; None when nothing matches."""
        header = -1  # index of the table's header line; -1 for the top level
        if table is not None:
            seen = -1
            for i, raw in enumerate(self.lines):
                if self._header(raw) in (f"[{table}]", f"[[{table}]]"):
                    seen += 1
                    if index is None or seen == index:
                        header = i
                        break
            if header < 0:
                return None
        if key is not None:
            quoted = json.dumps(key)  # a key with control characters is written escaped, as JSON does
            pattern = re.compile(rf"\s*(?:\"?{re.escape(key)}\"?|{re.escape(quoted)})\s*=")
            for i in range(header + 1, len(self.lines)):
                if self.lines[i].strip().startswith("["):
                    break
                if pattern.match(self.lines[i]):
                    return i + 1
        return header + 1 if header >= 0 else None


class _Checker:
    error: type[ConfigError] = PolicyError
    """What :meth:`fail` raises (the rules file's checker raises RulesError)."""

    def __init__(self, path: Path | str, text: str) -> None:
        self.path = path
        self.loc = _Locator(text)

    def fail(
        self, problem: str, table: str | None = None, index: int | None = None, key: str | None = None
    ) -> NoReturn:
        raise self.error(path=self.path, line=self.loc.line(table, index, key), problem=problem)

    def table(self, doc: dict[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            self.fail(f"[{name}] must be a table", None, None, name)
        return value

    def keys(self, t: dict[str, Any], allowed: set[str], table: str, index: int | None = None) -> None:
        for k in t:
            if k not in allowed:
                where = "at the top level" if table == "<top level>" else f"in [{table}]"
                self.fail(
                    f"unknown key {k!r} {where} (allowed: {', '.join(sorted(allowed))})",
                    None if table == "<top level>" else table,
                    index,
                    k,
                )

    def string(self, t: dict[str, Any], key: str, table: str, index: int | None, default: str | None = None) -> str:
        v = t.get(key, default)
        if not isinstance(v, str) or (default is None and not v):
            self.fail(f"{key} must be a non-empty string", table, index, key)
        return str(v)

    def boolean(self, t: dict[str, Any], key: str, table: str, index: int | None, default: bool) -> bool:
        v = t.get(key, default)
        if not isinstance(v, bool):
            self.fail(f"{key} must be true or false", table, index, key)
        return bool(v)

    def duration(
        self, t: dict[str, Any], key: str, table: str, index: int | None, default: str | None = None
    ) -> timedelta:
        v = t.get(key, default)
        if v is None:
            self.fail(f"{key} is required", table, index, key)
        if not isinstance(v, str):
            self.fail(f'{key} must be a duration string such as "30m"', table, index, key)
        try:
            return parse_duration(str(v))
        except ValueError as exc:
            self.fail(f"{key}: {exc}", table, index, key)

    def strings(
        self, t: dict[str, Any], key: str, table: str, index: int | None, default: list[str] | None = None
    ) -> tuple[str, ...]:
        v = t.get(key, default)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            self.fail(f"{key} must be a non-empty list of strings", table, index, key)
        return tuple(str(x) for x in v or ())

    def moderation(
        self, t: dict[str, Any], table: str, index: int, groups: dict[str, frozenset[str]] | None
    ) -> dict[str, Any]:
        """``moderators`` and ``moderation`` of a rule: ``watch`` needs moderators."""
        mode = t.get("moderation", "none")
        if mode not in ("none", "watch"):
            self.fail('moderation must be "none" or "watch"', table, index, "moderation")
        moderators = self.principals(t, "moderators", table, index, groups) if "moderators" in t else ()
        if mode == "watch" and not moderators:
            self.fail('moderation = "watch" needs moderators (principals, as approvers)', table, index, "moderation")
        return {"moderators": moderators, "moderation": str(mode)}

    def principals(
        self, t: dict[str, Any], key: str, table: str, index: int | None, groups: dict[str, frozenset[str]] | None
    ) -> tuple[str, ...]:
        """Validated principal patterns; ``groups`` None: any group name is taken (the groups are
        known only when the patterns are matched)."""
        out = []
        for p in self.strings(t, key, table, index):
            kind, sep, value = p.partition(":")
            if p == "*":
                out.append(p)
            elif sep and kind == "role":
                if value not in {r.value for r in Role}:
                    self.fail(
                        f"{key}: unknown role {value!r} (roles: {', '.join(r.value for r in Role)})", table, index, key
                    )
                out.append(p)
            elif sep and kind == "group":
                if not value:
                    self.fail(f"{key}: {p!r} names no group", table, index, key)
                if groups is not None and value not in groups:
                    self.fail(f"{key}: group {value!r} is not defined in [groups]", table, index, key)
                out.append(p)
            else:
                name = value if (sep and kind == "user") else p
                try:
                    out.append("user:" + canonical_name(name))
                except InvalidName as exc:
                    self.fail(f"{key}: {exc}", table, index, key)
        return tuple(out)


_RULE_KEYS = {
    "name",
    "requesters",
    "targets",
    "logins",
    "max_duration",
    "require_reason",
    "ticket_pattern",
    "approvers",
    "approvals",
    "moderators",
    "moderation",
    "file_transfer",
}
_AUTO_KEYS = {
    "name",
    "requesters",
    "targets",
    "logins",
    "max_duration",
    "days",
    "hours",
    "timezone",
    "require_reason",
    "moderators",
    "moderation",
    "file_transfer",
}
_BG_KEYS = {"enabled", "requesters", "targets", "logins", "max_duration"}


def parse_policy(text: str, path: Path | str = "<policy>") -> Policy:
    """Validate and build a policy from TOML text; raise PolicyError naming the line."""
    c = _Checker(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise PolicyError(path=path, line=int(m.group(1)) if m else None, problem=f"not valid TOML: {exc}") from None
    c.keys(doc, {"settings", "groups", "rule", "auto_approve", "break_glass"}, "<top level>")

    settings = c.table(doc, "settings")
    c.keys(settings, {"request_timeout", "warn_before"}, "settings")
    timeout = c.duration(settings, "request_timeout", "settings", None, "1h")
    warn_raw = settings.get("warn_before", ["5m", "1m"])
    if not isinstance(warn_raw, list) or not all(isinstance(w, str) for w in warn_raw):
        c.fail("warn_before must be a list of durations", "settings", None, "warn_before")
    warn = []
    for w in warn_raw:
        try:
            warn.append(parse_duration(w))
        except ValueError as exc:
            c.fail(f"warn_before: {exc}", "settings", None, "warn_before")

    groups: dict[str, frozenset[str]] = {}
    for gname, members in c.table(doc, "groups").items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            c.fail(f"group {gname!r} must be a list of user names", "groups", None, gname)
        try:
            groups[gname] = frozenset(canonical_name(m) for m in members)
        except InvalidName as exc:
            c.fail(f"group {gname!r}: {exc}", "groups", None, gname)

    rules_raw = doc.get("rule", [])
    if not isinstance(rules_raw, list):
        c.fail("rule must be written as [[rule]] tables", None, None, "rule")
    rules: list[Rule] = []
    names: set[str] = set()
    for i, r in enumerate(rules_raw):
        c.keys(r, _RULE_KEYS, "rule", i)
        name = c.string(r, "name", "rule", i)
        if name in names:
            c.fail(f"two rules are named {name!r}", "rule", i, "name")
        names.add(name)
        pattern = c.string(r, "ticket_pattern", "rule", i, "")
        try:
            ticket = re.compile(pattern) if pattern else None
        except re.error as exc:
            c.fail(f"ticket_pattern is not a valid regular expression: {exc}", "rule", i, "ticket_pattern")
        approvals = r.get("approvals", 1)
        if not isinstance(approvals, int) or isinstance(approvals, bool) or not 1 <= approvals <= 10:
            c.fail("approvals must be an integer from 1 to 10", "rule", i, "approvals")
        max_duration = c.duration(r, "max_duration", "rule", i)
        if max_duration > _MAX_GRANT:
            c.fail("max_duration may not exceed 7d", "rule", i, "max_duration")
        rules.append(
            Rule(
                name=name,
                requesters=c.principals(r, "requesters", "rule", i, groups),
                targets=c.strings(r, "targets", "rule", i, ["*"]),
                logins=c.strings(r, "logins", "rule", i, ["*"]),
                max_duration=max_duration,
                require_reason=c.boolean(r, "require_reason", "rule", i, True),
                ticket_pattern=ticket,
                approvers=c.principals(r, "approvers", "rule", i, groups),
                approvals=approvals,
                **c.moderation(r, "rule", i, groups),
                file_transfer=c.boolean(r, "file_transfer", "rule", i, False),
            )
        )

    auto_raw = doc.get("auto_approve", [])
    if not isinstance(auto_raw, list):
        c.fail("auto_approve must be written as [[auto_approve]] tables", None, None, "auto_approve")
    autos: list[AutoRule] = []
    for i, r in enumerate(auto_raw):
        c.keys(r, _AUTO_KEYS, "auto_approve", i)
        name = c.string(r, "name", "auto_approve", i)
        if name in names:
            c.fail(f"two rules are named {name!r}", "auto_approve", i, "name")
        names.add(name)
        days = c.strings(r, "days", "auto_approve", i, list(_DAYS))
        bad = [d for d in days if d.lower() not in _DAYS]
        if bad:
            c.fail(f"days: unknown day {bad[0]!r} (use {', '.join(_DAYS)})", "auto_approve", i, "days")
        hours = c.string(r, "hours", "auto_approve", i, "00:00-24:00")
        window = hours_window(hours)
        if window is None:
            c.fail('hours must look like "09:00-17:00"', "auto_approve", i, "hours")
        start, end = window
        if end <= start:
            c.fail(
                "hours must end after they start (no windows across midnight; use two rules)",
                "auto_approve",
                i,
                "hours",
            )
        tzname = c.string(r, "timezone", "auto_approve", i, "UTC")
        try:
            zone = ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError):
            c.fail(f"timezone: unknown time zone {tzname!r}", "auto_approve", i, "timezone")
        autos.append(
            AutoRule(
                name=name,
                requesters=c.principals(r, "requesters", "auto_approve", i, groups),
                targets=c.strings(r, "targets", "auto_approve", i, ["*"]),
                logins=c.strings(r, "logins", "auto_approve", i),
                max_duration=c.duration(r, "max_duration", "auto_approve", i),
                days=frozenset(_DAYS.index(d.lower()) for d in days),
                start=start,
                end=end,
                zone=zone,
                require_reason=c.boolean(r, "require_reason", "auto_approve", i, True),
                **c.moderation(r, "auto_approve", i, groups),
                file_transfer=c.boolean(r, "file_transfer", "auto_approve", i, False),
            )
        )

    bg_raw = c.table(doc, "break_glass")
    c.keys(bg_raw, _BG_KEYS, "break_glass")
    bg_enabled = c.boolean(bg_raw, "enabled", "break_glass", None, False)
    bg_max = c.duration(bg_raw, "max_duration", "break_glass", None, "30m")
    if bg_max > _MAX_BREAK_GLASS:
        c.fail("break-glass max_duration may not exceed 4h", "break_glass", None, "max_duration")
    break_glass = BreakGlass(
        enabled=bg_enabled,
        requesters=c.principals(bg_raw, "requesters", "break_glass", None, groups)
        if "requesters" in bg_raw or bg_enabled
        else (),
        targets=c.strings(bg_raw, "targets", "break_glass", None, ["*"]),
        logins=c.strings(bg_raw, "logins", "break_glass", None, ["*"]),
        max_duration=bg_max,
    )
    if bg_enabled and not break_glass.requesters:
        c.fail("break_glass needs requesters", "break_glass", None, "requesters")

    return Policy(
        source=str(path),
        digest=hashlib.sha256(text.encode()).hexdigest(),
        request_timeout=timeout,
        warn_before=tuple(sorted(warn, reverse=True)),
        groups=groups,
        rules=tuple(rules),
        auto_rules=tuple(autos),
        break_glass=break_glass,
    )


def load_policy(path: Path) -> Policy:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(path=path, line=None, problem="file not found; run `zsp init`") from None
    except OSError as exc:
        raise PolicyError(path=path, line=None, problem=exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(path=path, line=raw[: exc.start].count(b"\n") + 1, problem="not valid UTF-8") from None
    return parse_policy(text, path)
