"""Where recordings are kept: one small interface, so readers never assume a local directory.

Everything in :mod:`replay` reads a recording as a binary stream (``verify_frames``, the seek
index, the scanner); :class:`RecordingStorage` is how a caller finds and opens those streams by
session id. :class:`LocalDirectory` is the embedded default (``DATA/recordings/<id>.zsprec``); an
S3-compatible store implements the same three methods (``open`` returning a seekable stream of
ranged reads), and nothing in the replay pipeline changes.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ._exceptions import SourceError

__all__ = ["SUFFIX", "LocalDirectory", "RecordingStorage", "StoredRecording"]

SUFFIX = ".zsprec"
_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
"""What a stored recording's name may be: a session id (a UUID), never a path."""


@dataclass(frozen=True, slots=True)
class StoredRecording:
    """One recording as the storage sees it (not verified: nothing here is evidence)."""

    name: str
    """The session id the recording is stored under."""
    size: int
    location: str
    """Where it is, for people: a path, or an object URL."""


class RecordingStorage(Protocol):
    """Recordings by session id."""

    def open(self, name: str) -> BinaryIO:
        """A binary, seekable stream of the recording; :class:`SourceError` if it cannot be read."""
        ...

    def stat(self, name: str) -> StoredRecording | None:
        """The recording stored under ``name``, or None if there is none."""
        ...

    def list(self) -> Iterator[StoredRecording]:
        """Every recording stored, in no particular order."""
        ...


class LocalDirectory:
    """Recordings as ``<root>/<session-id>.zsprec`` files (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        """The file for ``name``; :class:`SourceError` for a name that is not a session id (no
        ``/``, no ``..``: a name never reaches outside the directory)."""
        if not _NAME.fullmatch(name) or ".." in name:
            raise SourceError(source=repr(name), reason="not a recording name (a session id)")
        return self.root / f"{name}{SUFFIX}"

    def open(self, name: str) -> BinaryIO:
        path = self.path(name)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise SourceError(source=str(path), reason=exc.strerror or str(exc)) from None

    def stat(self, name: str) -> StoredRecording | None:
        path = self.path(name)
        try:
            st = os.stat(path, follow_symlinks=False)  # a planted symlink is not a recording
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return StoredRecording(name, st.st_size, str(path))

    def list(self) -> Iterator[StoredRecording]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SourceError(source=str(self.root), reason=exc.strerror or str(exc)) from None
        for entry in entries:
            name = entry.name[: -len(SUFFIX)] if entry.name.endswith(SUFFIX) else ""
            if not _NAME.fullmatch(name) or ".." in name:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield StoredRecording(name, st.st_size, entry.path)
