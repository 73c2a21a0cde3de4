"""Settings of a zsp installation: ``DATA/zsp.toml`` (the access rules live in ``policy.toml``)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .masking import MaskLimits
from .sinks import JsonlSink, Sink, SyslogSink, WebhookSink

__all__ = [
    "DEFAULT_CONFIG",
    "DEMO_CONFIG",
    "ObjectStorageSettings",
    "Settings",
    "load_settings",
    "redact_url",
    "scrub_secrets",
    "url_secrets",
]

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
# max_file_record_bytes = 16777216      # content kept per file transferred (SFTP/SCP); beyond: its hash only
# min_free_bytes = 1073741824           # new sessions are refused while the recordings disk has less free
# max_review_apps_per_user = 2          # review apps (ssh -t review@bastion) of one user at once
# max_review_apps = 16                  # review apps of all users at once
# store_grace = 10                      # seconds live sessions go on while the store fails; new ones are refused
# moderation_wait = 300                 # seconds a moderated session waits for its first moderator
# moderation_grace = 30                 # seconds input is held after the last moderator left, then it ends

[store]
# Where users, targets, requests, grants, sessions, the audit log and the search index live.
# Default: zsp.db (SQLite) in this data dir. For several bastions (or `zsp serve --workers N` on
# PostgreSQL): a PostgreSQL URL. ZSP_DATABASE_URL, when set, overrides this. See docs/DEPLOY.md.
# url = "postgresql://zsp@db.internal:5432/zsp"

[storage]
# Where sealed recordings are kept. Default: recordings/ in this data dir. With an S3-compatible
# bucket, sessions record to recordings/ (local scratch) as before, and each finished recording is
# uploaded, verified by hash, and only then removed from scratch. ZSP_STORAGE_URL and
# ZSP_S3_ENDPOINT override url and endpoint; credentials come from the environment or
# ~/.aws (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from this file.
# url = "s3://zsp-recordings/prod"
# endpoint = "https://s3.eu-west-1.amazonaws.com"   # or your MinIO / SeaweedFS / Ceph gateway
# region = "us-east-1"
# retention_days = 365      # S3 Object Lock (COMPLIANCE) on each recording, where the bucket has it

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
    "max_file_record_bytes": (0, 1 << 40),
    "max_connections_per_user": (1, 10_000),
    "max_channels_per_connection": (1, 1_000),
    "control_rate": (1, 10_000),
    "control_burst": (1, 100_000),
    "max_control_per_user": (1, 1_000),
    "max_unauthenticated": (1, 100_000),
    "max_review_apps_per_user": (1, 100),
    "max_review_apps": (1, 1_000),
    "store_grace": (0, 3_600),
    "moderation_wait": (1, 86_400),
    "moderation_grace": (0, 3_600),
}


_MASKING_KEYS = {"max_runs": (0, 1_000_000), "max_bytes": (0, 1 << 30)}


@dataclass(frozen=True, slots=True)
class ObjectStorageSettings:
    """An S3-compatible bucket for recordings (``[storage]``)."""

    bucket: str
    prefix: str
    """Key prefix, without a trailing ``/`` ("" for the bucket's root)."""
    endpoint: str | None = None
    """The S3 endpoint URL; None for AWS's default for the region."""
    region: str | None = None
    retention_days: int = 0
    """Object Lock retention (COMPLIANCE mode) put on each recording; 0 for none."""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


_SECRET_PARAMS = frozenset({"password", "sslpassword"})
"""libpq URI query parameters whose value is a secret (``?password=`` works as ``user:password@``)."""


def _secret_param(raw_key: str) -> bool:
    from urllib.parse import unquote

    return unquote(raw_key).strip().lower() in _SECRET_PARAMS  # libpq decodes the keyword too


def redact_url(url: str) -> str:
    """``url`` for people and logs: any password in it (``user:PASSWORD@``, ``?password=``,
    ``?sslpassword=``) replaced by ``***``."""
    url = re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
    base, mark, query = url.partition("?")
    if not mark:
        return url
    params = []
    for param in query.split("&"):
        key, eq, _ = param.partition("=")
        params.append(f"{key}=***" if eq and _secret_param(key) else param)
    return base + mark + "&".join(params)


def url_secrets(url: str) -> tuple[str, ...]:
    """The secrets in a store URL (its password, ``?password=``/``?sslpassword=`` values) as
    written and percent-decoded: text a driver's message may quote, to be scrubbed from it."""
    from urllib.parse import unquote

    found: list[str] = []
    m = re.search(r"//[^/@:]*:([^/@]*)@", url)
    if m:
        found.append(m.group(1))
    for param in url.partition("?")[2].split("&"):
        key, eq, value = param.partition("=")
        if eq and _secret_param(key):
            found.append(value.partition("#")[0])
    out = {v for raw in found for v in (raw, unquote(raw))}
    return tuple(sorted((v for v in out if v), key=len, reverse=True))


def scrub_secrets(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with every secret of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        text = text.replace(secret, "***")
    return text


_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/([A-Za-z0-9!_.*'()/-]{0,512}))?")


def parse_storage_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket[/prefix]``; ValueError for anything else."""
    m = _S3_URL.fullmatch(url.strip())
    if m is None:
        raise ValueError(f"{url!r} is not an S3 URL (s3://bucket or s3://bucket/prefix)")
    prefix = (m.group(2) or "").strip("/")
    if ".." in prefix.split("/"):
        raise ValueError(f"{url!r}: the prefix may not contain '..'")
    return m.group(1), prefix


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
    store_url: str | None = None
    """``[store] url`` (or ``ZSP_DATABASE_URL``): a PostgreSQL URL; None for the embedded SQLite."""
    storage: ObjectStorageSettings | None = None
    """``[storage]`` (or ``ZSP_STORAGE_URL``): the bucket recordings go to; None to keep them local."""


def _line(text: str, key: str) -> int | None:
    for i, raw in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", raw):
            return i
    return None


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in ``path`` (defaults if it does not exist), with the environment's overrides
    (``ZSP_DATABASE_URL``, ``ZSP_STORAGE_URL``, ``ZSP_S3_ENDPOINT``; ``environ`` defaults to
    ``os.environ``)."""
    env = os.environ if environ is None else environ
    if not path.exists():
        return _with_env(Settings(local_target=False, sinks=()), path, env)
    text = path.read_text(encoding="utf-8", errors="strict")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path=path, line=int(m.group(1)) if m else None, problem=f"not valid TOML: {exc}") from None

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(path=path, line=_line(text, key), problem=problem)

    unknown = set(doc) - {"targets", "audit", "bastion", "masking", "store", "storage"}
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
    store_url, storage = _store_sections(doc, fail)
    settings = Settings(
        local_target=local,
        sinks=tuple(sinks),
        bastion=dict(bastion),
        masking=MaskLimits(**masking),
        local_user=local_user,
        store_url=store_url,
        storage=storage,
    )
    return _with_env(settings, path, env)


def _store_sections(
    doc: dict[str, Any], fail: Callable[[str, str], ConfigError]
) -> tuple[str | None, ObjectStorageSettings | None]:
    store: dict[str, Any] = doc.get("store", {})
    storage: dict[str, Any] = doc.get("storage", {})
    for table, allowed, d in (
        ("store", {"url"}, store),
        ("storage", {"url", "endpoint", "region", "retention_days"}, storage),
    ):
        for k in d:
            if k not in allowed:
                raise fail(k, f"unknown key {k!r} in [{table}]")
        for k, v in d.items():
            if k != "retention_days" and not isinstance(v, str):
                raise fail(k, f"{k} in [{table}] must be a string")
    url = store.get("url")
    if url is not None:
        try:
            check_store_url(url)
        except ValueError as exc:
            raise fail("url", str(exc)) from None
    if "url" not in storage:
        if storage:
            raise fail(sorted(storage)[0], "[storage] needs url = \"s3://bucket/prefix\"")
        return url, None
    try:
        bucket, prefix = parse_storage_url(storage["url"])
    except ValueError as exc:
        raise fail("url", str(exc)) from None
    days = storage.get("retention_days", 0)
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 36500:
        raise fail("retention_days", "retention_days must be an integer from 0 to 36500")
    endpoint = storage.get("endpoint")
    if endpoint is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
        raise fail("endpoint", f"endpoint {endpoint!r} must be an http:// or https:// URL")
    return url, ObjectStorageSettings(bucket, prefix, endpoint, storage.get("region"), days)


def check_store_url(url: str) -> str:
    """``url`` if it is a PostgreSQL connection URL; ValueError (saying what is wrong) if not."""
    if not re.fullmatch(r"postgres(?:ql)?://\S+", url):
        raise ValueError(f"store url {redact_url(url)!r} is not a PostgreSQL URL (postgresql://USER@HOST:PORT/DB)")
    return url


def _with_env(settings: Settings, path: Path, env: Mapping[str, str]) -> Settings:
    """``settings`` with the environment's overrides applied (a bad value: ConfigError naming it)."""
    changes: dict[str, Any] = {}
    if url := env.get("ZSP_DATABASE_URL"):
        try:
            changes["store_url"] = check_store_url(url)
        except ValueError as exc:
            raise ConfigError(path=path, line=None, problem=f"ZSP_DATABASE_URL: {exc}") from None
    storage = settings.storage
    if surl := env.get("ZSP_STORAGE_URL"):
        try:
            bucket, prefix = parse_storage_url(surl)
        except ValueError as exc:
            raise ConfigError(path=path, line=None, problem=f"ZSP_STORAGE_URL: {exc}") from None
        storage = (
            replace(storage, bucket=bucket, prefix=prefix) if storage else ObjectStorageSettings(bucket, prefix)
        )
    if (endpoint := env.get("ZSP_S3_ENDPOINT")) and storage is not None:
        storage = replace(storage, endpoint=endpoint)
    if storage is not settings.storage:
        changes["storage"] = storage
    return replace(settings, **changes) if changes else settings
