"""Clocks and time formats. The clock is injected everywhere a decision depends on time, so tests of
expiry, lapse and business hours move time instead of sleeping through it.

All times are timezone-aware UTC datetimes; they are stored and printed in RFC 3339
(``2026-11-26T13:05:00.123456Z``), which also sorts correctly as text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = [
    "Clock",
    "FakeClock",
    "SystemClock",
    "format_duration",
    "parse_duration",
    "parse_since",
    "parse_time",
    "rfc3339",
]


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> None:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    def set(self, when: datetime) -> None:
        self._now = when


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """RFC 3339 / ISO 8601 with a zone (``Z`` allowed); a naive time is taken as UTC."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


_DURATION = re.compile(r"(\d+)\s*(d|h|m|s)", re.IGNORECASE)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h30m``, ``2d``; raise ValueError for anything else or zero."""
    s = text.strip().lower().replace(" ", "")
    if not s or _DURATION.sub("", s):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h30m, 2d)")
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(s))
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    if seconds > 3650 * 86400:
        raise ValueError(f"duration too long: {text!r}")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """A ``--since`` value: a time (``2026-11-30``, ``2026-11-30T14:00:00Z``) or how long ago (``7d``,
    ``12h``, ``90m``, ``1h30m``). Raise ValueError, with what is accepted, for anything else."""
    if _DURATION.sub("", text.strip().lower().replace(" ", "")) == "":
        return now - parse_duration(text)  # only digits and units: an age (raises if zero)
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use e.g. 2026-11-30, 2026-11-30T14:00:00Z, 7d, 12h, 30m)") from None


def format_duration(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
