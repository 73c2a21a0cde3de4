"""``rules.toml``: parse and validate a rules file whole, with errors that name the line.

A rules file is refused as a whole on its first mistake (:class:`zsp_tui.exceptions.RulesError`
with the file, the line of the offending key or of its ``[[rule]]``, and what is wrong); nothing
from it is used. The line numbers and the checks of principals and durations are the access
policy's (``zsp_tui.policy``: ``_Locator``, ``_Checker``), so both files speak alike.

The shipped rule set ``standard`` is TOML text in this module (:data:`STANDARD_RULES`), parsed by
the same parser, its rules marked ``shipped``; a file names it with ``[settings] defaults`` and
switches single rules off with ``disable``. Its patterns are documented rule by rule in
``docs/RULES.md``, with what they do not catch.

:class:`RuleKeeper` is how the bastion holds its rules: re-read when the file changes, a bad file
refused (the last good set stays in force, and a copy of it on disk, ``rules.last-good.toml``,
carries it across restarts).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import tomllib
import warnings
from dataclasses import dataclass
from datetime import time, timedelta
from functools import cache
from pathlib import Path
from time import time as wall_clock
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..exceptions import ConfigError, RulesError
from ..policy import _Checker, hours_window
from .model import Action, FileOp, Rule, RuleSet, Severity, Trigger

__all__ = [
    "DEFAULT_RULES_FILE",
    "MAX_PATTERN",
    "STANDARD_RULES",
    "Reload",
    "RuleKeeper",
    "load_rules",
    "load_rules_file",
    "parse_rules",
    "shipped_names",
    "shipped_rules",
]

MAX_PATTERN = 1000
"""Longest regular expression a rule may give (characters). Python's ``re`` has no timeout: a
pattern is searched in lines of at most 4 KiB (``engine.MAX_LINE``), and its author keeps it free
of nested unbounded repetition (``(a+)+``), which can take exponential time on a crafted line."""
MAX_TEXT = 1000
"""Longest description or message."""
MAX_RULES = 500
"""Most rules of its own a file may hold."""
MAX_FILE = 1 << 20
"""Largest rules file read (bytes)."""
HOLD_TIMEOUT = timedelta(minutes=5)
_HOLD_MIN = timedelta(seconds=10)
_HOLD_MAX = timedelta(hours=1)
_MAX_MIN_DURATION = timedelta(days=30)
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TOP_KEYS = {"settings", "rule"}
_SETTINGS_KEYS = {"defaults", "disable", "hold_timeout"}
_PATTERN_KEYS = ("command", "keys", "output", "path")
_FILE_KEYS = ("path", "file_ops")
_RULE_KEYS = {
    "file_ops",
    "name",
    "severity",
    "actions",
    "description",
    "message",
    *_PATTERN_KEYS,
    "users",
    "targets",
    "logins",
    "days",
    "hours",
    "timezone",
    "min_duration",
}
_CONDITIONS = (*_PATTERN_KEYS, "file_ops", "users", "targets", "logins", "days", "hours", "min_duration")

# --- the shipped set ---------------------------------------------------------------------------
# Building blocks of the shipped patterns (substituted into the TOML text below before it is
# parsed). {CMD}: a command word's position: the start of the line, after ; & | ( { ` or $(, after
# then/do/else, after a command prefix (sudo, doas, exec, env, nohup, time, nice, timeout N,
# xargs, watch, command, builtin) with its options, with VAR=value assignments and a directory
# (/usr/bin/) allowed in front. So `echo rm -rf /` and `man mkfs` are not commands, `sudo rm` and
# `/bin/rm` are.
_CMD = (
    r"(?:^|[;&|({`]\s*|\$\(\s*|\b(?:then|do|else)\s+"
    r"|\b(?:sudo|doas)(?:\s+(?:-[A-Za-z]*[ugCDhprTU]\s*[^\s-]\S*|-\S+))*\s+"
    r"|\b(?:exec|nohup|time|nice|ionice|env|command|builtin|xargs|watch|timeout\s+\S+)(?:\s+(?:-\S+|\w+=\S*))*\s+)"
    r"(?:\w+=\S*\s+)*(?:[^\s;&|()`]*/)?"
)
_DEV = r"/dev/(?:[shv]d[a-z]|xvd[a-z]|nvme\d|mmcblk\d|md\d|dm-\d|mapper/|disk/)"
_READERS = (
    r"cat|tac|less|more|most|head|tail|nl|od|xxd|hexdump|strings|grep|egrep|fgrep|zgrep|rg|ag|awk|gawk|mawk|sed"
    r"|cut|sort|uniq|base64|base32|openssl|gpg|cp|mv|scp|rsync|tar|zip|gzip|bzip2|xz|zstd|dd|install|vi|vim|view"
    r"|nvim|nano|emacs|ed|ex|pico|python[0-9.]*|perl|ruby|php|node|lua|unshadow|john|diff|cmp|\w*sum|tee|paste"
    r"|join|pr|fold|fmt|column|iconv|look|curl|wget|nc|ncat|socat|busybox|bat|batcat|jq|split|mail|mailx"
)

_STANDARD_TEMPLATE = r"""
# Command patterns are verbose regexes, (?x): whitespace between the alternatives is not matched.

[[rule]]
name = "shadow-read"
severity = "high"
actions = ["flag", "notify"]
description = "reads /etc/shadow or /etc/gshadow (password hashes)"
command = '''(?x)
  {CMD}(?: (?:{READERS})\b[^;&|\n]*?/etc/g?shadow\b
         | getent\s+g?shadow\b
         | vi(?:pw|gr)\s+(?:-\S+\s+)*-s\b )
| <\s*["\x27]?/etc/g?shadow\b
| \bif=["\x27]?/etc/g?shadow\b'''

[[rule]]
name = "history-tamper"
severity = "medium"
actions = ["flag", "notify"]
description = "clears, disables or removes shell history"
command = '''(?x)
  {CMD}(?: history\s+(?:-\S+\s+)*-[a-zA-Z]*[cd][a-zA-Z]*\b
         | (?:rm|shred|truncate|unlink|srm|wipe)\b[^;&|\n]*_history\b
         | ln\s+(?:-\S+\s+)*/dev/null\s+\S*_history\b
         | kill\s+-(?:9|KILL|SIGKILL)\s+\$\$ )
| \bunset\s+(?:-v\s+)?(?:\w+\s+)*HISTFILE\b
| \bHISTFILE=(?:["\x27]?/dev/null|["\x27]{2}|(?=\s|;|$))
| \bHIST(?:FILE)?SIZE=["\x27]?0\b
| \bHISTIGNORE=["\x27]?\*
| \bset\s+\+o\s+history\b
| (?<!>)>(?!>)\|?\s*["\x27]?[^\s;&|>]*_history\b'''

[[rule]]
name = "rm-rf-root"
severity = "critical"
actions = ["flag", "notify", "warn", "hold"]
description = "recursive rm of / or /* (--no-preserve-root too)"
message = "rm -rf of the root directory needs an approver"
command = '''(?x)
  {CMD}rm\s+
  (?=(?:[^;&|\n]*\s)?(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)(?=\s|$))
  (?:[^;&|\n]*\s)?["\x27]?/\*?["\x27]?(?=$|[\s;&|)])'''

[[rule]]
name = "disk-wipe"
severity = "critical"
actions = ["flag", "notify", "warn", "hold"]
description = "makes a file system on, overwrites or wipes a disk device (mkfs, dd of=, wipefs, shred, > /dev/sdX)"
message = "wiping a disk device needs an approver"
command = '''(?x)
  {CMD}(?: (?:mkfs\S*|mke2fs|mkswap|mkdosfs|mkntfs)\s[^;&|\n]*/dev/
         | dd\s[^;&|\n]*\bof=["\x27]?{DEV}
         | wipefs(?:\s[^;&|\n]*)?\s(?:-[a-zA-Z]*[ao]|--all|--offset)
         | shred\s[^;&|\n]*{DEV}
         | blkdiscard\s )
| (?<!\d)>\|?\s*["\x27]?{DEV}'''

[[rule]]
name = "curl-pipe-shell"
severity = "high"
actions = ["flag", "warn"]
description = "runs a script straight from the network (curl|sh, wget|bash, bash <(curl ...))"
message = "piping a download into a shell runs code nobody reviewed"
command = '''(?x)
  \b(?:curl|wget|fetch)\b[^;&\n]*?\|\s*(?:(?:sudo|doas)(?:\s+-\S+)*\s+)?(?:env\s+(?:\w+=\S*\s+)*)?
    (?:\S*/)?(?:ba|z|da|k|fi)?sh\b(?![.\w-])
| \b(?:ba|z|da|k)?sh\s+(?:-\S+\s+)*["\x27]?(?:<\(|\$\(|`)\s*(?:curl|wget)\b
| (?:\bsource|(?:^|[;&|]\s*)\.)\s+<\(\s*(?:curl|wget)\b'''

[[rule]]
name = "ssh-key-added"
severity = "medium"
actions = ["flag", "notify"]
description = "adds or changes an SSH authorized key (>> authorized_keys, tee, cp, editors, ssh-copy-id)"
command = '''(?x)
  {CMD}(?: tee\s+[^;&|\n]*authorized_keys2?\b
         | ssh-copy-id\b
         | (?:cp|mv|install|scp|rsync|ln)\s[^;&|\n]*\s["\x27]?\S*authorized_keys2?["\x27]?\s*(?:$|[;&|])
         | (?:curl|wget)\s[^;&|\n]*-[oO]\s*["\x27]?\S*authorized_keys2?\b
         | (?:vi|vim|nvim|nano|emacs|ed|pico|sed\s+(?:-\S+\s+)*-i\S*)\s[^;&|\n]*authorized_keys2?\b )
| >>?\|?\s*["\x27]?[^\s;&|>]*authorized_keys2?\b
| \bof=["\x27]?\S*authorized_keys2?\b'''

[[rule]]
name = "sudo-root-prod"
severity = "high"
actions = ["flag", "notify"]
description = "becomes root interactively (sudo -i/-s, sudo su, sudo bash, su -) on a production target"
command = '''(?x)
  \b(?:sudo|doas)(?![^;&|\n]*\s-[A-Za-z]*u\s*(?!root\b|0\b|\#0\b)[\w\#])\s+
    (?:-[A-Za-z]*[ugCDhprTU]\s*[^\s-]\S*\s+|-\S+\s+)*?(?:-[A-Za-z]*[is][A-Za-z]*|--login|--shell)(?=\s|$)
| \b(?:sudo|doas)\s+(?:-u\s*(?:root|0|\#0)\s+|-\S+\s+)*(?:\S*/)?
    (?: su(?:\s+-\S*)*(?:\s+root)?
      | (?:ba|z|da|k|fi|tc|c)?sh(?:\s+-[il-]+|\s+--login)* )\s*(?:$|[;&|)])
| (?:^|[;&|({]\s*|\b(?:then|do|else|exec)\s+)(?:\S*/)?su(?:\s+-\S*)*(?:\s+root)?\s*(?:$|[;&|)])'''
targets = ["label:prod", "label:production"]

[[rule]]
name = "root-login-prod"
severity = "medium"
actions = ["flag"]
description = "a session logged in as root on a production target"
logins = ["root"]
targets = ["label:prod", "label:production"]

[[rule]]
name = "private-key-output"
severity = "high"
actions = ["flag", "notify"]
description = "a private key was shown on the screen (-----BEGIN ... PRIVATE KEY-----)"
output = '-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----'

[[rule]]
name = "audit-disabled"
severity = "high"
actions = ["flag", "notify", "warn"]
description = "stops or disables auditd, rsyslog or journald, or switches kernel auditing off (auditctl -D, -e 0)"
message = "switching auditing off is reported"
command = '''(?x)
  {CMD}(?: systemctl\s+(?:-\S+\s+)*(?:stop|disable|mask|kill)\s+(?:\S+\s+)*?
             (?:auditd|rsyslog|syslog-ng|syslog|systemd-journald|journald)(?:\.service|\.socket)?(?![\w.-])
         | (?:service\s+)?(?:auditd|rsyslog|syslog-ng|syslog)\s+stop\b
         | auditctl\s+(?:[^;&|\n]*\s)?-(?:D\b|e\s*0\b)
         | (?:pkill|killall)\s+(?:-\S+\s+)*(?:auditd|rsyslogd|systemd-journald|syslog-ng)\b
         | (?:chkconfig|update-rc\.d)\s+(?:auditd|rsyslog)\s+(?:off|disable|remove)\b )'''

# File rules: SFTP requests (sftp, scp) as the client sent them, before they reach the target.
# A path is matched as given: [/.]* lets through //, /./ and a relative start; ../ is not resolved.

[[rule]]
name = "ssh-key-upload"
severity = "medium"
actions = ["flag", "notify"]
description = "a file transfer writes, renames or links an SSH authorized_keys file"
path = '(?:^|/)authorized_keys2?$'
file_ops = ["write", "rename", "link", "symlink"]

[[rule]]
name = "sudoers-upload"
severity = "high"
actions = ["flag", "notify"]
description = "a file transfer changes /etc/sudoers or /etc/sudoers.d (write, rename, link, remove, setstat)"
path = '^[/.]*/etc/[/.]*sudoers(?:$|[./~-])'
file_ops = ["write", "rename", "link", "symlink", "remove", "setstat"]

[[rule]]
name = "shadow-download"
severity = "high"
actions = ["flag", "notify"]
description = "a file transfer downloads /etc/shadow or /etc/gshadow (password hashes), or links to one"
path = '^[/.]*/etc/[/.]*g?shadow(?:-|\.bak)?$'
file_ops = ["read", "link", "symlink"]
"""

STANDARD_RULES = (
    _STANDARD_TEMPLATE.replace("{CMD}", _CMD).replace("{READERS}", _READERS).replace("{DEV}", _DEV).lstrip()
)
"""The shipped ``standard`` set, as the TOML text it is parsed from."""

_SHIPPED_TEXT = {"standard": STANDARD_RULES, "none": ""}

DEFAULT_RULES_FILE = """\
# zsp real-time rules: what the bastion notices while a session runs, and what it does then.
# Read when a session starts (a session keeps the rules it started with) and re-read when this file
# changes. A file with a mistake is refused whole: the bastion keeps its last good rules and says so
# in its log and the audit log. `zsp rules check FILE` validates a file, `zsp rules list` shows the
# rules in force, `zsp rules test SESSION` runs them over recorded sessions. See docs/RULES.md.
# A rule is a tripwire, not a sandbox: it sees the command line as the screen shows it at Enter,
# the keys typed, and lines of output; a determined user can always write a command it misses.

[settings]
defaults = "standard"      # the shipped rules: "standard" or "none" (`zsp rules list` shows them)
disable = []               # shipped rules to switch off by name, e.g. ["sudo-root-prod"]
hold_timeout = "5m"        # a held command nobody allows in time is denied (10s..1h)

# Your own rules come after the shipped ones. Each has a name, a severity and at least one
# condition; every condition given must hold. Regexes are Python `re`, searched (not anchored);
# write them in '...' (literal strings: backslashes as they are), at most 1,000 characters.
#
# [[rule]]
# name = "no-prod-drop"            # [a-z0-9][a-z0-9._-]{0,63}, unique (also vs shipped rules in force)
# severity = "high"                # info | low | medium | high | critical
# actions = ["flag", "notify", "hold"]   # flag (always) | notify | warn | hold | terminate
# description = "DROP on a production database"
# message = "DROP needs an approver"      # shown to the operator (warn, hold, terminate)
# command = '(?i)\\bdrop\\s+(table|database)\\b'   # the command line at Enter, as the screen shows it
# keys = '...'                     # the raw keystrokes of the line (controls kept)
# output = '...'                   # a line of output (escape sequences removed); no hold
# users = ["role:operator"]        # "*", role:R, group:G (policy.toml [groups]), user:U or U
# targets = ["label:prod"]         # names or globs, or label:GLOB ("local" only if named)
# logins = ["postgres"]
# days = ["mon", "tue", "wed", "thu", "fri"]   # at the moment of the match, in timezone
# hours = "22:00-06:00"            # start-end, may wrap past midnight
# timezone = "UTC"
# min_duration = "2h"              # alone with facts: fires once the session has lasted this long
#
# File rules (sftp, scp) match each file operation before it reaches the target:
# path = '^/etc/'                  # a path of the operation, as the client sent it
# file_ops = ["read", "write"]     # read write remove rename link symlink mkdir rmdir setstat list
# actions = ["flag", "deny"]       # deny: the operation is refused, the session goes on; no hold
"""
"""The commented ``rules.toml`` that ``zsp init`` writes."""


class _RulesChecker(_Checker):
    error: type[ConfigError] = RulesError


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def shipped_names() -> tuple[str, ...]:
    """Names of the shipped rule sets (``standard``, ``none``)."""
    return tuple(_SHIPPED_TEXT)


@cache
@functools.cache
def shipped_rules(name: str = "standard") -> tuple[Rule, ...]:
    """The rules of the shipped set ``name`` (all of them, none disabled). Parsed once: a data dir
    without ``rules.toml`` asks for them on every watcher tick, and each file parse does too."""
    if name not in _SHIPPED_TEXT:
        raise ValueError(f"no shipped rule set {name!r}")
    return _parse_rules(_SHIPPED_TEXT[name], f"shipped:{name}", shipped=True, in_force=())


def _shipped_set(name: str) -> RuleSet:
    text = _SHIPPED_TEXT[name]
    return RuleSet(shipped_rules(name), HOLD_TIMEOUT, f"shipped:{name}", _digest(text), name, frozenset())


def parse_rules(text: str, source: str) -> RuleSet:
    """The rule set of a rules file's text; :class:`zsp_tui.exceptions.RulesError` (with the
    line) on the first problem. ``source`` names the file in errors and in the result."""
    c = _RulesChecker(source, text)
    doc = _toml(text, source)
    c.keys(doc, _TOP_KEYS, "<top level>")
    settings = c.table(doc, "settings")
    c.keys(settings, _SETTINGS_KEYS, "settings")
    defaults = c.string(settings, "defaults", "settings", None, "standard")
    if defaults not in _SHIPPED_TEXT:
        c.fail(f"defaults: no shipped rule set {defaults!r} (use {' or '.join(shipped_names())})", "settings", None,
               "defaults")
    shipped = shipped_rules(defaults)
    disable_raw = settings.get("disable", [])
    if not isinstance(disable_raw, list) or not all(isinstance(x, str) for x in disable_raw):
        c.fail("disable must be a list of shipped rule names", "settings", None, "disable")
    names = {r.name for r in shipped}
    for name in disable_raw:
        if name not in names:
            known = ", ".join(sorted(names)) if names else f"none: defaults = {defaults!r} ships no rules"
            c.fail(f"disable: no shipped rule named {name!r} ({known})", "settings", None, "disable")
    disabled = frozenset(disable_raw)
    hold_timeout = c.duration(settings, "hold_timeout", "settings", None, "5m")
    if not _HOLD_MIN <= hold_timeout <= _HOLD_MAX:
        c.fail("hold_timeout must be from 10s to 1h", "settings", None, "hold_timeout")
    in_force = tuple(r for r in shipped if r.name not in disabled)
    own = _parse_rules(text, source, shipped=False, in_force=in_force, doc=doc, checker=c)
    return RuleSet(in_force + own, hold_timeout, source, _digest(text), defaults, disabled)


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RulesError(path=source, line=int(m.group(1)) if m else None, problem=f"not valid TOML: {exc}") from None


def _parse_rules(
    text: str,
    source: str,
    *,
    shipped: bool,
    in_force: tuple[Rule, ...],
    doc: dict[str, Any] | None = None,
    checker: _RulesChecker | None = None,
) -> tuple[Rule, ...]:
    """The ``[[rule]]`` tables of ``text`` (parsed as ``doc``, when given)."""
    c = checker or _RulesChecker(source, text)
    if doc is None:
        doc = _toml(text, source)
    raw = doc.get("rule", [])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        problem = "rules must be written as [[rule]] tables"
        raise RulesError(path=source, line=c.loc.line("rule") or c.loc.line(None, None, "rule"), problem=problem)
    if len(raw) > MAX_RULES:
        c.fail(f"at most {MAX_RULES} rules in a file", "rule", MAX_RULES)
    taken = {r.name: "a shipped rule in force (disable it first to reuse its name)" for r in in_force}
    out: list[Rule] = []
    for i, r in enumerate(raw):
        rule = _rule(c, r, i, taken, shipped)
        taken[rule.name] = "the name of another rule in this file"
        out.append(rule)
    return tuple(out)


def _rule(c: _RulesChecker, r: dict[str, Any], i: int, taken: dict[str, str], shipped: bool) -> Rule:
    c.keys(r, _RULE_KEYS, "rule", i)
    name = r.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        c.fail(
            "name must be 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", "rule", i,
            "name",
        )
    if name in taken:
        c.fail(f"rule name {name!r} is taken: {taken[name]}", "rule", i, "name")
    severity_raw = r.get("severity")
    if severity_raw is None:
        c.fail(f"rule {name!r} needs a severity ({' | '.join(s.value for s in Severity)})", "rule", i)
    if severity_raw not in {s.value for s in Severity}:
        c.fail(f"severity must be one of {', '.join(s.value for s in Severity)}", "rule", i, "severity")
    actions_raw = c.strings(r, "actions", "rule", i, ["flag"])
    bad = [a for a in actions_raw if a not in {x.value for x in Action}]
    if bad:
        c.fail(f"actions: unknown action {bad[0]!r} (use {', '.join(a.value for a in Action)})", "rule", i, "actions")
    actions = frozenset({Action.FLAG, *(Action(a) for a in actions_raw)})
    texts = {k: _text(c, r, k, i) for k in ("description", "message")}
    patterns = {k: _pattern(c, r, k, i, limit=not shipped) for k in _PATTERN_KEYS}
    file_ops = _file_ops(c, r, i) if "file_ops" in r else None
    is_file = any(k in r for k in _FILE_KEYS)
    other = next((k for k in ("command", "keys", "output") if k in r), None)
    if is_file and other is not None:
        c.fail(
            f"{other} and {'path' if 'path' in r else 'file_ops'} in one rule: a rule matches command lines, output "
            "or file operations (write two rules)",
            "rule",
            i,
            other,
        )
    users = c.principals(r, "users", "rule", i, None) if "users" in r else ()
    targets = c.strings(r, "targets", "rule", i) if "targets" in r else ()
    logins = c.strings(r, "logins", "rule", i) if "logins" in r else ()
    days = None
    if "days" in r:
        given = c.strings(r, "days", "rule", i)
        wrong = [d for d in given if d.lower() not in _DAYS]
        if wrong:
            c.fail(f"days: unknown day {wrong[0]!r} (use {', '.join(_DAYS)})", "rule", i, "days")
        days = frozenset(_DAYS.index(d.lower()) for d in given)
    hours = _hours(c, r, i) if "hours" in r else None
    zone = ZoneInfo("UTC")
    if "timezone" in r:
        tzname = c.string(r, "timezone", "rule", i)
        try:
            zone = ZoneInfo(tzname)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            c.fail(f"timezone: unknown time zone {tzname!r}", "rule", i, "timezone")
    min_duration = None
    if "min_duration" in r:
        min_duration = c.duration(r, "min_duration", "rule", i)
        if min_duration > _MAX_MIN_DURATION:
            c.fail("min_duration may not exceed 30d", "rule", i, "min_duration")
    if not any(k in r for k in _CONDITIONS):
        c.fail(
            f"rule {name!r} has no condition: give command, keys, output, path, file_ops, users, targets, logins, "
            "days, hours or min_duration",
            "rule",
            i,
        )
    rule = Rule(
        name=name,
        severity=Severity(severity_raw),
        actions=actions,
        description=texts["description"],
        message=texts["message"],
        command=patterns["command"],
        keys=patterns["keys"],
        output=patterns["output"],
        users=users,
        targets=targets,
        logins=logins,
        days=days,
        hours=hours,
        timezone=zone,
        min_duration=min_duration,
        path=patterns["path"],
        file_ops=file_ops,
        line=0 if shipped else (c.loc.line("rule", i) or 0),
        shipped=shipped,
    )
    if Action.HOLD in actions and rule.trigger is Trigger.FILE:
        c.fail(
            f"hold is for command lines: rule {name!r} matches file operations, which are decided at once "
            "(use deny to refuse the operation, or terminate)",
            "rule",
            i,
            "actions",
        )
    if Action.DENY in actions and rule.trigger is not Trigger.FILE:
        c.fail(
            f"deny refuses a file operation: rule {name!r} matches {rule.trigger.value}, not file operations "
            "(give path or file_ops; for a command line use hold or terminate)",
            "rule",
            i,
            "actions",
        )
    if Action.HOLD in actions and rule.trigger is not Trigger.COMMAND:
        c.fail(
            f"hold needs a command line to hold back: rule {name!r} matches {rule.trigger.value}, not a command "
            "(give command or keys, or use terminate)",
            "rule",
            i,
            "actions",
        )
    return rule


def _text(c: _RulesChecker, r: dict[str, Any], key: str, i: int) -> str:
    v = r.get(key, "")
    if not isinstance(v, str):
        c.fail(f"{key} must be a string", "rule", i, key)
    if len(v) > MAX_TEXT:
        c.fail(f"{key} is longer than {MAX_TEXT} characters", "rule", i, key)
    return v


def _pattern(c: _RulesChecker, r: dict[str, Any], key: str, i: int, *, limit: bool) -> re.Pattern[str] | None:
    """A rule's regex, compiled; ``limit``: at most :data:`MAX_PATTERN` characters (the shipped
    patterns, longer, are this module's own code and tested)."""
    if key not in r:
        return None
    v = r[key]
    if not isinstance(v, str) or not v:
        c.fail(f"{key} must be a non-empty regular expression (a string)", "rule", i, key)
    if limit and len(v) > MAX_PATTERN:
        c.fail(f"{key} is longer than {MAX_PATTERN} characters", "rule", i, key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set" and the like: say so, not later
            return re.compile(v)
    except (re.error, Warning) as exc:
        c.fail(f"{key} is not a valid regular expression: {exc}", "rule", i, key)
    except RecursionError:
        c.fail(f"{key} is nested too deeply", "rule", i, key)


def _file_ops(c: _RulesChecker, r: dict[str, Any], i: int) -> frozenset[FileOp]:
    """A file rule's operations (a non-empty list of :class:`FileOp` names)."""
    given = c.strings(r, "file_ops", "rule", i)
    known = [op.value for op in FileOp]
    wrong = [op for op in given if op not in known]
    if wrong:
        c.fail(f"file_ops: unknown file operation {wrong[0]!r} (use {', '.join(known)})", "rule", i, "file_ops")
    return frozenset(FileOp(op) for op in given)


def _hours(c: _RulesChecker, r: dict[str, Any], i: int) -> tuple[time, time]:
    v = r["hours"]
    window = hours_window(v) if isinstance(v, str) else None
    if window is None:
        c.fail('hours must look like "09:00-17:00" (or "22:00-06:00" across midnight)', "rule", i, "hours")
    start, end = window
    if start == end:
        c.fail("hours must not start and end at the same time (leave hours out for all day)", "rule", i, "hours")
    return start, end


def load_rules(path: Path) -> RuleSet:
    """Read and parse ``path``; a missing file gives the shipped ``standard`` set."""
    raw = _read(path)
    if raw is None:
        return _shipped_set("standard")
    return parse_rules(_decode(path, raw), str(path))


def _read(path: Path) -> bytes | None:
    """The file's bytes; None if there is no file; RulesError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RulesError(path=path, line=None, problem=exc.strerror or str(exc)) from None
    if len(raw) > MAX_FILE:
        raise RulesError(path=path, line=None, problem=f"larger than {MAX_FILE} bytes")
    return raw


def load_rules_file(path: Path) -> RuleSet:
    """A rules file that must exist (``zsp rules check``, ``--rules FILE``): a missing one is an
    error, not the shipped set; same size cap and errors as :func:`load_rules`."""
    raw = _read(path)
    if raw is None:
        raise RulesError(path=path, line=None, problem="no such file")
    return parse_rules(_decode(path, raw), str(path))


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(path=path, line=raw[: exc.start].count(b"\n") + 1, problem="not valid UTF-8") from None


# --- the bastion's rules ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reload:
    """What :meth:`RuleKeeper.reload` found."""

    rules: RuleSet
    """The rules in force after the reload (the last good ones if the file is bad)."""
    changed: bool
    """A new good set was taken."""
    error: str | None
    """Why the file on disk was refused (reported once per distinct bad content); None if fine."""


class RuleKeeper:
    """The bastion's rules: the file's, re-read when it changes; a bad file is refused and the last
    good set stays in force, across restarts too (a copy is kept as ``rules.last-good.toml``).

    Every :meth:`reload` reads the file (it is small) and compares its digest, so a change is seen
    whatever its mtime and size. No file: the shipped ``standard`` set. At the first reload, a bad
    file falls back to the copy; with neither usable, :meth:`reload` raises RulesError."""

    def __init__(self, path: Path, *, settle: float = 0.0) -> None:
        self.path = path
        self.settle = settle
        """A changed file is taken only once it was last written at least this many seconds ago:
        an editor (or ``>``) that truncates and then writes must not have its empty or half
        written file taken, or refused, between the two (the bastion uses 0.5 s)."""
        self.last_good_path = path.with_name(f"{path.stem}.last-good.toml")
        self._rules: RuleSet | None = None
        self._bad: str | None = None
        """Digest of the bad content last reported."""

    @property
    def rules(self) -> RuleSet | None:
        """The rules in force (None before the first successful :meth:`reload`)."""
        return self._rules

    def reload(self) -> Reload:
        try:
            raw = _read(self.path)
        except RulesError as exc:
            return self._refused(str(exc), f"unreadable:{exc}", exc)
        if raw is None:
            return self._take(_shipped_set("standard"))
        digest = hashlib.sha256(raw).hexdigest()
        current = self._rules
        if current is not None and current.digest == digest and current.source == str(self.path):
            return Reload(current, False, None)
        if digest == self._bad and current is not None:
            return Reload(current, False, None)
        if current is not None and self.settle > 0 and self._unsettled():
            return Reload(current, False, None)  # being written: looked at again next time
        try:
            rules = parse_rules(_decode(self.path, raw), str(self.path))
        except RulesError as exc:
            return self._refused(str(exc), digest, exc)
        self._keep_copy(raw)
        return self._take(rules)

    def _unsettled(self) -> bool:
        try:
            age = wall_clock() - os.stat(self.path).st_mtime
        except OSError:
            return False  # gone meanwhile: the next reload sees that
        return 0 <= age < self.settle  # a future mtime (a clock set back) must not block reloads

    def _take(self, rules: RuleSet) -> Reload:
        old = self._rules
        self._bad = None
        if old is not None and old.digest == rules.digest and old.source == rules.source:
            return Reload(old, False, None)
        self._rules = rules
        return Reload(rules, True, None)

    def _refused(self, error: str, bad: str, exc: RulesError) -> Reload:
        report = bad != self._bad
        self._bad = bad
        if self._rules is None:
            fallback = self._from_copy()
            if fallback is None:
                raise exc
            self._rules = fallback
            return Reload(fallback, True, f"{error} (using the last good copy {self.last_good_path})")
        return Reload(self._rules, False, error if report else None)

    def _from_copy(self) -> RuleSet | None:
        try:
            raw = _read(self.last_good_path)
            if raw is None:
                return None
            return parse_rules(_decode(self.last_good_path, raw), str(self.last_good_path))
        except RulesError:
            return None

    def _keep_copy(self, raw: bytes) -> None:
        """Write ``rules.last-good.toml`` (0600, atomically) unless it already holds ``raw``. A copy
        that cannot be written only costs the fallback: the rules are taken all the same."""
        copy = self.last_good_path
        try:
            with open(copy, "rb") as f:
                if f.read(MAX_FILE + 1) == raw:
                    return
        except OSError:
            pass  # no copy yet (or unreadable): write one
        tmp = copy.with_name(f".{copy.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, copy)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
