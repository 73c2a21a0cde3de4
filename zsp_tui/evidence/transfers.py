"""The transferred files of the sessions in a bundle: listed always, their content with ``--files``.

Each recording is read once more, from the exporter's own copy (the bytes that were verified),
before any redaction: every ``sftp.file``/``sftp.file_incomplete`` event a signature covers
becomes one manifest entry (:func:`replay.transfer_entry`, the same rule the
verifiers apply). With ``--files`` the kept content of each complete file is assembled on disk
(:func:`replay.spool_files`) and put in the bundle as ``files/NNNN-DIRECTION-BASENAME`` only if it
hashes to the recorded sha256; content that does not is left out and said so (``content_note``,
and :attr:`Transfers.refused` for the command's message). At most
:data:`replay.TRANSFER_CONTENT_LIMIT` bytes of content go in one bundle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder import Event, Frame, FrameKind, PublicKey
from replay import (
    FILE_EVENTS,
    TRANSFER_CONTENT_LIMIT,
    SpooledFile,
    VerificationReport,
    spool_files,
    transfer_content_name,
    transfer_entry,
    transfer_sha256sums,
    verify_frames,
)

from .files import Digests, digests_file

__all__ = ["SessionFiles", "Transfers", "collect", "session_files"]

NOT_ASKED = "not included: exported without --files"


@dataclass(frozen=True, slots=True)
class SessionFiles:
    """One session's file events as manifest entries (without ``content``), and with ``--files``
    the spooled content (or why there is none) of each, by frame."""

    entries: tuple[dict[str, Any], ...]
    content: dict[int, SpooledFile]


@dataclass(frozen=True, slots=True)
class Transfers:
    """What a bundle says of transferred files: the manifest's ``transfers`` and the files to add."""

    entries: tuple[dict[str, Any], ...]
    members: dict[str, tuple[Path, Digests]]
    """Bundle path -> (spooled content, its digests)."""
    refused: tuple[str, ...]
    """One line per file whose recorded content did not hash to its recorded sha256 (escaped later)."""
    included: bool

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``transfers``; ``sha256sums`` is a ``sha256sum -c`` list of ``files/`` with
        the recorded hashes, for a responder with nothing but coreutils (docs/EXPORT.md)."""
        return {
            "content": self.included,
            "content_limit": TRANSFER_CONTENT_LIMIT,
            "files": list(self.entries),
            "sha256sums": transfer_sha256sums(self.entries),
        }


def session_files(
    spool: Path, trusted: Sequence[PublicKey], sid: str, report: VerificationReport, work: Path, *, content: bool
) -> SessionFiles:
    """Read the recording at ``spool`` (verified as ``report``) for its file events; with
    ``content`` spool each complete file's content into a new directory under ``work``."""
    if report.header is None:
        return SessionFiles((), {})
    started = report.header.started_at_us
    raw: list[tuple[int, int, str, dict[str, Any]]] = []

    def signed(frames: Iterator[Frame]) -> Iterator[Frame]:
        for fr in frames:
            if fr.seq >= report.signed_frames:
                continue  # not covered by a signature: not evidence, as replay.only_signed leaves it out
            if fr.kind is FrameKind.EVENT and isinstance(fr.data, Event) and fr.data.type in FILE_EVENTS:
                raw.append((fr.seq, fr.t_us, fr.data.type, dict(fr.data.fields)))
            yield fr

    spooled: dict[int, SpooledFile] = {}
    with open(spool, "rb") as f:
        frames = signed(verify_frames(f, trusted, source=str(spool)))
        if content:
            directory = work / f"files-{sid}"
            directory.mkdir()
            for s in spool_files(frames, directory):
                spooled[s.file.frame] = s
        else:
            for _ in frames:
                pass
    entries = tuple(transfer_entry(sid, started, i, seq, t, ev, fields) for i, (seq, t, ev, fields) in enumerate(raw))
    return SessionFiles(entries, spooled)


def collect(sessions: Sequence[SessionFiles], *, include: bool) -> Transfers:
    """Number every session's entries in bundle order, name and cap the content."""
    entries: list[dict[str, Any]] = []
    members: dict[str, tuple[Path, Digests]] = {}
    refused: list[str] = []
    total = 0
    for s in sessions:
        for e in s.entries:
            entry = dict(e)
            name = transfer_content_name(len(entries) + 1, entry)
            entry["content"], entry["content_note"] = None, NOT_ASKED
            if include:
                spooled = s.content.get(entry["frame"])
                path = spooled.content if spooled is not None else None
                entry["content_note"] = spooled.note if spooled is not None else "no content in the recording"
                if spooled is not None and spooled.mismatch:
                    refused.append(f"file {len(entries) + 1} of session {entry['session_id']}: {spooled.note}")
                if path is not None:
                    d = digests_file(path)
                    if total + d.size > TRANSFER_CONTENT_LIMIT:
                        limit = TRANSFER_CONTENT_LIMIT
                        entry["content_note"] = f"over the bundle's content limit ({limit} bytes): hash only"
                    else:
                        total += d.size
                        entry["content"], entry["content_note"] = name, ""
                        members[name] = (path, d)
            entries.append(entry)
    return Transfers(tuple(entries), members, tuple(refused), include)
