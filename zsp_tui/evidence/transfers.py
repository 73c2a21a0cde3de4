"""The transferred files of the sessions in a bundle: listed always, their content with ``--files``.

Each recording is read once, from the exporter's own copy, as it is verified and before any
redaction (:func:`verify_with_files`): every ``sftp.file``/``sftp.file_incomplete`` event a signature covers
becomes one manifest entry (:func:`replay.transfer_entry`, the same rule the
verifiers apply). With ``--files`` the kept content of each complete file is assembled on disk
(:func:`replay.spool_files`) and put in the bundle as ``files/NNNN-DIRECTION-BASENAME`` only if it
hashes to the recorded sha256; content that does not is left out and said so (``content_note``,
and :attr:`Transfers.refused` for the command's message). At most
:data:`replay.TRANSFER_CONTENT_LIMIT` bytes of content go in one bundle.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder import Event, Frame, FrameKind, PublicKey
from replay import (
    FILE_EVENTS,
    TRANSFER_CONTENT_LIMIT,
    SourceError,
    SpooledFile,
    VerificationReport,
    spool_files,
    transfer_content_name,
    transfer_entry,
    transfer_sha256sums,
    verify_frames,
)

from .files import Digests, digests_file

__all__ = ["SessionFiles", "Transfers", "collect", "verify_with_files"]

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


def verify_with_files(
    spool: Path, trusted: Sequence[PublicKey], files_dir: Path, *, content: bool
) -> tuple[VerificationReport, SessionFiles]:
    """Verify the recording at ``spool`` and read its file events in the same pass (an export
    reads each recording once: on a 70 MB one a second pass cost as much as the verification);
    with ``content`` spool each complete file's content into ``files_dir`` (made here).

    Which frames a signature covers is known only at the end of the pass, so every chained file
    event is gathered and those past ``report.signed_frames`` are dropped afterwards: not
    evidence, as replay.only_signed leaves them out. A file's content frames come before its
    event, so a signed event's content is the same as if only signed frames had been read."""
    raw: list[tuple[int, int, str, dict[str, Any]]] = []
    done: list[VerificationReport] = []

    def gather(gen: Generator[Frame, None, VerificationReport]) -> Iterator[Frame]:
        while True:
            try:
                fr = next(gen)
            except StopIteration as stop:
                done.append(stop.value)
                return
            if fr.kind is FrameKind.EVENT and isinstance(fr.data, Event) and fr.data.type in FILE_EVENTS:
                raw.append((fr.seq, fr.t_us, fr.data.type, dict(fr.data.fields)))
            yield fr

    spooled: list[SpooledFile] = []
    try:
        with open(spool, "rb") as f:
            frames = gather(verify_frames(f, trusted, source=str(spool)))
            if content:
                files_dir.mkdir()
                spooled = spool_files(frames, files_dir)
            for _ in frames:  # to the end (spool_files may stop at the last file): the report
                pass
    except OSError as exc:
        raise SourceError(source=str(spool), reason=exc.strerror or str(exc)) from None
    report = done[0]
    if report.header is None:
        return report, SessionFiles((), {})
    sid, started = str(report.header.session_id), report.header.started_at_us
    signed = [r for r in raw if r[0] < report.signed_frames]
    entries = tuple(transfer_entry(sid, started, i, *r) for i, r in enumerate(signed))
    kept: dict[int, SpooledFile] = {}
    for sf in spooled:
        if sf.file.frame < report.signed_frames:
            kept[sf.file.frame] = sf
        elif sf.content is not None:
            sf.content.unlink(missing_ok=True)
    return report, SessionFiles(entries, kept)


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
