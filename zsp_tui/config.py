"""Settings of a zsp installation: ``DATA/zsp.toml`` (the access rules live in ``policy.toml``)."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .masking import MaskLimits
from .sinks import JsonlSink, Sink, SyslogSink, WebhookSink

__all__ = ["DEFAULT_CONFIG", "DEMO_CONFIG", "Settings", "load_settings"]

DEFAULT_CONFIG = """\
# zsp settings. Access rules are in policy.toml.

[targets]
# The built-in `local` target: a shell on this host, as the account running zsp. It is for the demo
# (`zsp serve --demo` switches it on in its own data dir) and tests. A grant on it is control of the
# bastion itself (its CA and signing keys, its database, every recording): leave it off in
# production. Even when on, only a policy rule that names "local" matches it; "*" and globs never do.
local = false
# When zsp runs as root, `local` shells run as this unprivileged account (never root), which cannot
# read the data dir; run as any other account, zsp cannot switch and `local` shares its account.
# local_user = "nobody"

[bastion]
# login_timeout = 10                    # seconds to authenticate
# max_sessions_per_user = 64            # concurrent sessions of one user
# max_connections_per_user = 64         # concurrent authenticated connections of one user
# max_channels_per_connection = 10      # concurrent channels (sessions, commands) per connection
# control_rate = 5                      # control commands (ssh zsp@bastion ...) per second per user,
# control_burst = 20                    #   with bursts up to this many; beyond: refused, try later
# max_control_per_user = 4              # control commands of one user running at once
# max_unauthenticated = 256             # not-yet-authenticated connections in all; when full, a new
#                                       #   one displaces one of the busiest address (see README)
# max_unauthenticated_per_source = 64   # not-yet-authenticated connections per address
# max_auth_failures_per_source = 20     # failed logins per address in 5 minutes, then refused
# max_recording_bytes = 1073741824      # input+output one session may record; then it ends (recording-limit)
# min_free_bytes = 1073741824           # new sessions are refused while the recordings disk has less free
# max_review_apps_per_user = 2          # review apps (ssh -t review@bastion) of one user at once
# max_review_apps = 16                  # review apps of all users at once

[masking]
# Input typed at password prompts is masked (sealed to the escrow key, keys/escrow_x25519.pub).
# A session masking more than this is flagged (input.masked.excessive) for review.
# max_runs = 3        # prompts answered
# max_bytes = 512     # bytes masked in all

[audit]
# Every event is always kept in the chained, signed log in the database (`zsp audit`).
# Copies can also go to:
# jsonl = "/var/log/zsp/audit.jsonl"                 # JSON Lines, one event per line
# syslog = "udp://127.0.0.1:514"                     # RFC 5424; or tcp://host:port, unix:///dev/log
# webhook = "https://chat.example.com/hooks/zsp"     # JSON POST, e.g. to tell approvers
# webhook_events = ["access_request.create", "grant.break_glass"]
"""

DEMO_CONFIG = DEFAULT_CONFIG.replace("\nlocal = false\n", "\nlocal = true\n", 1)
"""The settings ``zsp serve --demo`` writes into a data dir it creates: the `local` target on."""

_DEFAULT_WEBHOOK_EVENTS = ("access_request.create", "grant.break_glass")


_BASTION_KEYS = {
    "login_timeout": (1, 600),
    "max_sessions_per_user": (1, 10_000),
    "max_unauthenticated_per_source": (1, 10_000),
    "max_auth_failures_per_source": (1, 10_000),
    "max_recording_bytes": (4096, 1 << 50),
    "min_free_bytes": (0, 1 << 60),
    "max_connections_per_user": (1, 10_000),
    "max_channels_per_connection": (1, 1_000),
    "control_rate": (1, 10_000),
    "control_burst": (1, 100_000),
    "max_control_per_user": (1, 1_000),
    "max_unauthenticated": (1, 100_000),
    "max_review_apps_per_user": (1, 100),
    "max_review_apps": (1, 1_000),
}


_MASKING_KEYS = {"max_runs": (0, 1_000_000), "max_bytes": (0, 1 << 30)}


@dataclass(frozen=True, slots=True)
class Settings:
    local_target: bool
    sinks: tuple[Sink, ...]
    local_user: str = "nobody"
    """Who `local` shells run as when zsp runs as root (see :mod:`zsp_tui.local_account`)."""
    bastion: dict[str, int] = field(default_factory=dict)
    """Overrides of :class:`zsp_tui.bastion.Limits` fields."""
    masking: MaskLimits = field(default_factory=MaskLimits)
    """When a session's masked input is flagged as excessive."""


def _line(text: str, key: str) -> int | None:
    for i, raw in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", raw):
            return i
    return None


def load_settings(path: Path) -> Settings:
    if not path.exists():
        return Settings(local_target=False, sinks=())
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path=path, line=int(m.group(1)) if m else None, problem=f"not valid TOML: {exc}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(path=path, line=_line(text, key), problem=problem)

    unknown = set(doc) - {"targets", "audit", "bastion", "masking"}
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown section {sorted(unknown)[0]!r}")
    targets: dict[str, Any] = doc.get("targets", {})
    audit: dict[str, Any] = doc.get("audit", {})
    bastion: dict[str, Any] = doc.get("bastion", {})
    masking: dict[str, Any] = doc.get("masking", {})
    for name, values, ranges in (("bastion", bastion, _BASTION_KEYS), ("masking", masking, _MASKING_KEYS)):
        for k, v in values.items():  # integer settings, each in its range
            if k not in ranges:
                raise fail(k, f"unknown key {k!r} in [{name}]")
            lo, hi = ranges[k]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise fail(k, f"{k} must be an integer from {lo} to {hi}")
    for table, allowed, d in (
        ("targets", {"local", "local_user"}, targets),
        ("audit", {"jsonl", "syslog", "webhook", "webhook_events"}, audit),
    ):
        for k in d:
            if k not in allowed:
                raise fail(k, f"unknown key {k!r} in [{table}]")
    local = targets.get("local", False)  # off unless switched on: a grant on it owns the bastion
    if not isinstance(local, bool):
        raise fail("local", "local must be true or false")
    local_user = targets.get("local_user", "nobody")
    if not isinstance(local_user, str) or not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", local_user):
        raise fail("local_user", "local_user must be the name of an account on this host")
    sinks: list[Sink] = []
    for key in ("jsonl", "syslog", "webhook"):
        if key in audit and not isinstance(audit[key], str):
            raise fail(key, f"{key} must be a string")
    if "jsonl" in audit:
        sinks.append(JsonlSink(Path(audit["jsonl"])))
    try:
        if "syslog" in audit:
            sinks.append(SyslogSink(audit["syslog"]))
        if "webhook" in audit:
            events = audit.get("webhook_events", list(_DEFAULT_WEBHOOK_EVENTS))
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                raise fail("webhook_events", "webhook_events must be a list of event names")
            sinks.append(WebhookSink(audit["webhook"], events))
    except ValueError as exc:
        raise ConfigError(path=path, line=None, problem=str(exc)) from None
    return Settings(
        local_target=local,
        sinks=tuple(sinks),
        bastion=dict(bastion),
        masking=MaskLimits(**masking),
        local_user=local_user,
    )
