"""Errors raised by :mod:`replay`.

::

    ReplayError
     ├── SourceError        a recording cannot be opened or read at all (missing, unreadable)
     ├── QueryError         a search query that cannot be searched for (empty, only punctuation)
     ├── SearchIndexError   the search index cannot be opened, read or written
     └── ContentMismatch    a transferred file's kept content is not what its sha256 says

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


class QueryError(ReplayError):
    """A search query with nothing to search for: empty, or punctuation only."""

    def __init__(self, *, query: str, reason: str) -> None:
        self.query = query
        self.reason = reason
        super().__init__(f"search query {query!r}: {reason}")


class SearchIndexError(ReplayError):
    """The search index (derived data) could not be opened, read or written."""

    def __init__(self, *, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"search index {path}: {reason}")


class ContentMismatch(ReplayError):
    """The content a recording keeps of a transferred file does not hash to its recorded sha256
    (or has a gap where the recording says it is complete)."""

    def __init__(self, *, index: int, expected: str, actual: str) -> None:
        self.index = index
        self.expected = expected
        self.actual = actual
        super().__init__(f"file #{index}: content hashes to {actual or '(gap)'}, the recording says {expected}")
