"""Values of the real-time rules: a rule, a loaded rule set, a session's facts, a match, a gate.

Frozen; :mod:`zsp_tui.rules.config` makes rules from ``rules.toml`` and :mod:`zsp_tui.rules.engine`
makes matches. Nothing here knows about SSH or the store.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "Action",
    "FileOp",
    "FileVerdict",
    "Gate",
    "Match",
    "Rule",
    "RuleSet",
    "SessionFacts",
    "Severity",
    "Trigger",
]


class Severity(enum.StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}


class Action(enum.StrEnum):
    FLAG = "flag"
    """An ``event`` frame in the recording and a ``rule.match`` audit event (every rule does this)."""
    NOTIFY = "notify"
    """The audit sinks get the ``rule.match`` at once (the webhook whatever its event filter)."""
    WARN = "warn"
    """A line in the operator's terminal."""
    HOLD = "hold"
    """The command line is not sent until an approver allows it; a timeout denies."""
    TERMINATE = "terminate"
    """The session ends and its grant is revoked."""
    DENY = "deny"
    """File rules only: the file operation is refused (the client gets "permission denied"), the
    session goes on."""


ENFORCING = frozenset({Action.HOLD, Action.TERMINATE})
"""Actions taken before the matched command reaches the target (evaluated at Enter)."""


class Trigger(enum.StrEnum):
    """What a match was made on."""

    COMMAND = "command"
    """A command line at Enter (its ``command`` and/or ``keys`` pattern), or an exec command."""
    OUTPUT = "output"
    """A line of output text."""
    SESSION = "session"
    """Session facts alone, at the start."""
    DURATION = "duration"
    """Session facts once the session has lasted ``min_duration``."""
    FILE = "file"
    """An SFTP request (its ``path`` and/or ``file_ops``), before it is relayed to the target."""


class FileOp(enum.StrEnum):
    """What a file rule's ``file_ops`` name: SFTP requests, grouped by what they do to the target.

    Metadata lookups every client makes all the time (stat, lstat, fstat, realpath, readlink,
    statvfs) and the data packets of an open file (read, write: the open decided) are no file op."""

    READ = "read"
    """A file opened for reading: a download (``get``, ``scp host:f .``)."""
    WRITE = "write"
    """A file opened for writing (write, create, truncate or append): an upload (``put``)."""
    REMOVE = "remove"
    RENAME = "rename"
    """rename or posix-rename@openssh.com: matched on the old path and the new one."""
    LINK = "link"
    """hardlink@openssh.com: matched on both paths."""
    SYMLINK = "symlink"
    """Matched on both paths (the link and what it points to)."""
    MKDIR = "mkdir"
    RMDIR = "rmdir"
    SETSTAT = "setstat"
    """setstat, fsetstat (the path its handle was opened with), lsetstat@openssh.com: mode,
    owner, times, size."""
    LIST = "list"
    """opendir: a directory listed (``ls``)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule. Every condition given must hold; a rule gives at least one condition.

    Principal, target and login patterns use the policy's syntax (``zsp_tui.policy``): ``*``,
    ``role:R``, ``group:G``, ``user:U`` or ``U``; target globs or ``label:GLOB``. An empty tuple
    means "any". Regexes are Python ``re`` searched (not anchored) in the text."""

    name: str
    severity: Severity
    actions: frozenset[Action]
    """Always contains FLAG."""
    description: str = ""
    message: str = ""
    """What warn/hold/terminate tell the operator (the description if empty)."""
    command: re.Pattern[str] | None = None
    keys: re.Pattern[str] | None = None
    """Matched against the line's raw keystrokes, decoded UTF-8 (errors replaced), controls kept."""
    output: re.Pattern[str] | None = None
    users: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()
    days: frozenset[int] | None = None
    """Weekdays (0 = Monday) in ``timezone`` at the moment of the match; None: any day."""
    hours: tuple[time, time] | None = None
    """``start <= t < end`` (wrapping past midnight when end <= start); None: any time."""
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    min_duration: timedelta | None = None
    path: re.Pattern[str] | None = None
    """Searched in each path of a file operation, decoded UTF-8 (errors replaced), as the client sent it."""
    file_ops: frozenset[FileOp] | None = None
    """The file operations the rule matches; None: all of them (with ``path``)."""
    line: int = 0
    """Line of its ``[[rule]]`` in the file; 0 for a shipped rule."""
    shipped: bool = False
    """From the shipped default set (switched off by name with ``disable``)."""

    @property
    def enforcing(self) -> bool:
        """Holds or terminates: evaluated at Enter, before the command reaches the target."""
        return bool(self.actions & ENFORCING)

    @property
    def trigger(self) -> Trigger:
        if self.path is not None or self.file_ops is not None:
            return Trigger.FILE
        if self.command is not None or self.keys is not None:
            return Trigger.COMMAND
        if self.output is not None:
            return Trigger.OUTPUT
        if self.min_duration is not None:
            return Trigger.DURATION
        return Trigger.SESSION

    @property
    def actions_text(self) -> str:
        """The actions in a fixed order, comma-separated (``flag,notify,hold``)."""
        return ",".join(a.value for a in Action if a in self.actions)

    @property
    def shown_message(self) -> str:
        return self.message or self.description or f"rule {self.name}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force: the file's own rules after the shipped set's (minus those disabled)."""

    rules: tuple[Rule, ...]
    hold_timeout: timedelta
    source: str
    """The file read, or ``shipped:NAME`` when there is no file."""
    digest: str
    """sha256 (hex) of the file's bytes (of the shipped text without a file): names this set in
    recordings and the audit log."""
    defaults: str = "standard"
    """The shipped set in use: ``standard`` or ``none``."""
    disabled: frozenset[str] = frozenset()

    def named(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """What rules may know about a session besides its bytes."""

    user: str
    roles: frozenset[str]
    groups: frozenset[str]
    target: str
    labels: frozenset[str]
    login: str
    started_at: datetime
    command: str | None = None
    """The exec command (``ssh host CMD``), None for a shell."""


@dataclass(frozen=True, slots=True)
class Match:
    """A rule fired."""

    rule: Rule
    trigger: Trigger
    text: str
    """What matched: the command line, the output line, or the facts (capped at 1,024 characters)."""
    t_us: int
    """Microseconds into the session when it fired."""


@dataclass(frozen=True, slots=True)
class Gate:
    """An Enter in a chunk of typed input whose command line matches an enforcing rule."""

    offset: int
    """Index of the Enter in the chunk: bytes before it may be sent, the Enter may not (yet)."""
    enter: int
    """Length of the Enter (2 for CR LF, else 1)."""
    text: str
    """The command line as read at this Enter."""
    matches: tuple[Match, ...]
    """The enforcing rules that matched (at least one), in rule order."""

    @property
    def terminates(self) -> bool:
        return any(Action.TERMINATE in m.rule.actions for m in self.matches)


@dataclass(frozen=True, slots=True)
class FileVerdict:
    """What the rules say of one file operation, decided before it is relayed."""

    matches: tuple[Match, ...]
    """The matches to report (flag, notify, warn), in rule order: past a rule's cap of matches
    per session, a rule still acts but is not reported again."""
    refused: Match | None
    """The match that refuses the operation (the first terminating one, else the first denying
    one), reported or not; None: it is relayed."""

    @property
    def terminates(self) -> bool:
        return self.refused is not None and Action.TERMINATE in self.refused.rule.actions
