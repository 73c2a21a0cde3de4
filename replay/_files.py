"""Recorded file transfers (SFTP, modern scp) as values: what ``zsp files``, ``zsp play``, the
search index and the review app list.

:func:`files` reads verified, signed frames (``only_signed(verify_frames(...))``) once and
returns each ``sftp.file`` event (a handle that moved data was closed) and each
``sftp.file_incomplete`` one (the session ended with it open) as a :class:`TransferredFile`,
in recording order. With ``content=True`` it also keeps the ``sftp.data`` chunks of each file
(matched by exact path and direction, as docs/FORMAT.md section 3.4 says), and
:meth:`TransferredFile.content` reassembles them, checked against the recorded sha256 when the
recording says it holds all of it.

Paths are the peers' bytes: hostile text. ``path`` is exact (``path_bytes`` when the recording
had to keep them as base64); show either only through :func:`replay.printable`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from recorder import Event, Frame, FrameKind

from ._exceptions import ContentMismatch
from ._printable import printable

__all__ = ["PROTOCOL_EVENTS", "TransferredFile", "files"]

PROTOCOL_EVENTS = frozenset({"sftp.op", "sftp.reply", "sftp.data", "sftp.data_capped"})
"""The per-packet events of a file transfer: evidence in the recording, but not moments a
reviewer looks for. Timelines and asciicast markers show the files (``sftp.file``) instead of the
thousands of these a large transfer writes."""

_DIRECTIONS = frozenset({"upload", "download", "both"})


@dataclass(frozen=True, slots=True)
class TransferredFile:
    """One file read or written through the bastion, as its ``sftp.file`` (or
    ``sftp.file_incomplete``) event recorded it."""

    index: int
    """Its place among the session's transferred files, from 0 (``zsp files --extract`` names by it)."""
    path: str
    """The path as the operator's client sent it, decoded as UTF-8 (exact unless ``path_bytes``)."""
    path_bytes: bytes | None
    """The exact bytes of the path when they are not UTF-8 or too long for ``path`` (else None)."""
    direction: str
    """``upload``, ``download`` or ``both``."""
    size: int
    """Bytes of the file that crossed (for an incomplete one, the most that crossed either way)."""
    sha256: str
    """Hex digest of the whole file; empty when it was not accessed front to back (``hash_note``)."""
    content_kept: int
    """Bytes of its content the recording holds in ``sftp.data`` frames."""
    content_complete: bool
    """The recording holds all of it, so :meth:`content` is the file itself."""
    frame: int
    """The frame of the event (``zsp play --from`` and the search index point at it)."""
    t_us: int
    """Its time: microseconds since the session started."""
    finished: bool = True
    """False for ``sftp.file_incomplete``: the session ended while the file was open."""
    hash_note: str = ""
    """Why there is no whole-file hash, when there is none."""
    chunks: tuple[tuple[int, bytes], ...] = field(default=(), repr=False, compare=False)
    """The kept content as recorded: ``(offset, bytes)`` in recording order (``files(content=True)``)."""
    content_read: bool = field(default=False, repr=False, compare=False)
    """Whether ``chunks`` were gathered (``files(content=True)``): :meth:`content` needs them."""

    @property
    def shown_path(self) -> str:
        """The path as one line, safe to print (control characters escaped)."""
        return printable(self.path_bytes if self.path_bytes is not None else self.path)

    def content(self) -> bytes:
        """The kept content, in offset order, from offset 0 up to its first gap.

        Raises :class:`ContentMismatch` when the recording says the content is complete and it
        does not hash to ``sha256`` (a gap, an overlap that changes it, a frame edited before
        signing is impossible, but a recording made by a faulty bastion is not). Raises
        ValueError if the chunks were not gathered (``files(..., content=False)``)."""
        if not self.content_read:
            raise ValueError("content not gathered: list the files with files(frames, content=True)")
        out = bytearray()
        for offset, data in sorted(self.chunks, key=lambda c: c[0]):
            if offset > len(out):
                break  # a gap: what follows is not contiguous with the start
            if offset < len(out):
                overlap = len(out) - offset
                if out[offset : offset + min(overlap, len(data))] != data[:overlap]:
                    if self.content_complete:
                        raise ContentMismatch(index=self.index, expected=self.sha256, actual="")
                    break
                data = data[overlap:]
            out += data
        if self.content_complete:
            actual = hashlib.sha256(out).hexdigest()
            if actual != self.sha256 or len(out) != self.size:
                raise ContentMismatch(index=self.index, expected=self.sha256, actual=actual)
        return bytes(out)


def _key(fields: dict[str, Any]) -> tuple[str, str]:
    """How a path is matched between events: its exact bytes when recorded, else its text."""
    raw = fields.get("path_b64")
    if isinstance(raw, str):
        return ("b64", raw)
    path = fields.get("path")
    return ("text", path if isinstance(path, str) else "")


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _path_bytes(fields: dict[str, Any]) -> bytes | None:
    raw = fields.get("path_b64")
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def files(frames: Iterable[Frame], *, content: bool = False) -> list[TransferredFile]:
    """The files transferred in a recording, in the order their events were recorded.

    ``frames`` should be verified and signed (``only_signed(verify_frames(...))``): nothing else
    is evidence. ``content``: keep each file's ``sftp.data`` chunks for :meth:`TransferredFile.content`
    (held in memory; without it the chunks are skipped undecoded)."""
    pending: dict[tuple[tuple[str, str], str], list[tuple[int, bytes]]] = {}
    out: list[TransferredFile] = []
    for frame in frames:
        if frame.kind is not FrameKind.EVENT:
            continue
        ev = frame.data
        if not isinstance(ev, Event) or not ev.type.startswith("sftp."):
            continue
        f = ev.fields
        if ev.type == "sftp.data":
            if not content:
                continue
            direction = _str(f.get("direction"))
            try:
                data = base64.b64decode(_str(f.get("data")), validate=True)
            except (binascii.Error, ValueError):
                continue  # not content the bastion wrote: left out, and a complete file then fails its hash
            pending.setdefault((_key(f), direction), []).append((_int(f.get("offset")), data))
        elif ev.type in ("sftp.file", "sftp.file_incomplete"):
            key = _key(f)
            finished = ev.type == "sftp.file"
            if finished:
                direction = _str(f.get("direction"))
                size = _int(f.get("size"))
            else:
                up, down = _int(f.get("uploaded")), _int(f.get("downloaded"))
                direction = "both" if up and down else "upload" if up else "download"
                size = max(up, down)
            if direction not in _DIRECTIONS:
                direction = "?"
            chunks: list[tuple[int, bytes]] = []
            for d in ("upload", "download"):
                taken = pending.pop((key, d), [])
                if direction in (d, "both"):
                    chunks.extend(taken)
            out.append(
                TransferredFile(
                    index=len(out),
                    path=_str(f.get("path")),
                    path_bytes=_path_bytes(f),
                    direction=direction,
                    size=size,
                    sha256=_str(f.get("sha256")) if finished else "",
                    content_kept=_int(f.get("content_kept")),
                    content_complete=finished and f.get("content_complete") is True,
                    frame=frame.seq,
                    t_us=frame.t_us,
                    finished=finished,
                    hash_note=_str(f.get("hash_note")),
                    chunks=tuple(chunks),
                    content_read=content,
                )
            )
    return out
