"""Session ids: UUIDv7 (RFC 9562), so ids sort by creation time and file names list in order."""

from __future__ import annotations

import secrets
import time
import uuid

__all__ = ["new_session_id"]


def new_session_id(unix_ms: int | None = None) -> uuid.UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, version 7, RFC 4122 variant, 74 random bits."""
    ms = (time.time_ns() // 1_000_000 if unix_ms is None else unix_ms) & ((1 << 48) - 1)
    rand_a = secrets.randbits(12)
    rand_b = secrets.randbits(62)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)
