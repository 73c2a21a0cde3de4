"""Errors raised by :mod:`replay`.

::

    ReplayError
     └── SourceError        a recording cannot be opened or read at all (missing, unreadable)

Verification never raises for a bad recording: tampering, truncation and garbage are results
(:class:`replay.VerificationReport`), not exceptions. Exceptions are for what stops us reading.
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base class of every error raised by :mod:`replay`."""


class SourceError(ReplayError):
    """The recording could not be opened or read."""

    def __init__(self, *, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")
