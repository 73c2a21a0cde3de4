"""What one ``zsp export`` is asked to do: the values every format's writer receives."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recorder import SigningKey

from ..datadir import DataDir
from ..models import AccessRequest, SessionRecord

__all__ = ["EXPORT_EVENT", "FORMATS", "ExportJob", "Prepared", "SelectedSession"]

FORMATS = ("bundle", "asciicast", "asciicast3", "text")
EXPORT_EVENT = "recording.export"
"""The audit event written for each exported session, before the output is put in place."""


@dataclass(frozen=True, slots=True)
class SelectedSession:
    """One session to export: its recording and what the store knows of it (None for a file
    named by path that the data dir does not know)."""

    session_id: str | None
    path: Path
    record: SessionRecord | None
    grant: AccessRequest | None


@dataclass(frozen=True, slots=True)
class ExportJob:
    data: DataDir
    sessions: tuple[SelectedSession, ...]
    format: str
    output: Path | None
    """The file (one session, or a bundle), a directory (several casts/transcripts), or None: stdout."""
    patterns: tuple[re.Pattern[bytes], ...]
    include_input: bool
    force: bool
    exporter: str
    """The zsp user exporting (``console`` in a data dir without users)."""
    via: str
    export_id: str
    key: SigningKey
    """The data dir's recording key: signs the manifest and every ``.sig``."""
    include_files: bool = False
    """Bundle only (``--files``): put the kept content of each transferred file in the bundle
    (the list of transferred files, with their hashes, is always in its manifest)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A finished output file, written to ``temp`` (same directory as ``final``) and not yet in place.

    ``zsp export`` writes the ``recording.export`` events naming ``sha256`` first and only then
    renames ``temp`` to ``final`` (or copies it to stdout when ``final`` is None): an export that
    cannot be audited leaves nothing behind.
    """

    temp: Path
    final: Path | None
    sha256: str
    session_ids: tuple[str, ...]
    signature: Path | None = None
    """A ``.sig`` written beside ``temp`` (``temp`` + ``.sig``), renamed to ``final`` + ``.sig``."""
    redacted_frames: int = 0
    """Frames ``--redact`` changed in what this file holds, and how many of their bytes."""
    redacted_bytes: int = 0
    refused_files: tuple[str, ...] = ()
    """Transferred files whose recorded content did not hash to their recorded sha256: listed in
    the bundle, their content left out (``--files``)."""

    def discard(self) -> None:
        """Remove the prepared file and its signature (an export that will not be installed)."""
        self.temp.unlink(missing_ok=True)
        if self.signature is not None:
            self.signature.unlink(missing_ok=True)
