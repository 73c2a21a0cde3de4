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
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from recorder import Event, Frame, FrameKind

from ._exceptions import ContentMismatch
from ._printable import printable

__all__ = ["PROTOCOL_EVENTS", "SpooledFile", "TransferredFile", "files", "spool_files"]

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
        out = io.BytesIO()
        agreed = _assemble(sorted(self.chunks, key=lambda c: c[0]), out)
        if not agreed and self.content_complete:
            raise ContentMismatch(index=self.index, expected=self.sha256, actual="")
        data = out.getvalue()
        if self.content_complete:
            actual = hashlib.sha256(data).hexdigest()
            if actual != self.sha256 or len(data) != self.size:
                raise ContentMismatch(index=self.index, expected=self.sha256, actual=actual)
        return data


@dataclass(frozen=True, slots=True)
class SpooledFile:
    """A transferred file and, when the recording holds all of it and it hashes to its recorded
    sha256, a file on disk with its content (:func:`spool_files`)."""

    file: TransferredFile
    content: Path | None
    """The file's complete content, checked against ``file.sha256``; None: see ``note``."""
    note: str = ""
    """Why there is no content (capped, cut, no hash, or a content that does not match its hash)."""
    mismatch: bool = False
    """The recording says it holds all of the file, and what it holds does not hash to its sha256."""


def _assemble(chunks: Iterable[tuple[int, bytes]], out: BinaryIO) -> bool:
    """Write ``chunks`` (sorted by offset) to ``out`` from offset 0 up to their first gap; where two
    overlap they must agree. False when they do not (``out`` then holds what came before)."""
    length = 0
    for offset, data in chunks:
        if offset > length:
            break  # a gap: what follows is not contiguous with the start
        if offset < length:
            overlap = length - offset
            n = min(overlap, len(data))
            out.seek(offset)
            prior = out.read(n)
            out.seek(length)
            if prior != data[:n]:
                return False
            data = data[overlap:]
        out.write(data)
        length += len(data)
    return True


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


_ChunkKey = tuple[tuple[str, str], str]


def _transfers(
    frames: Iterable[Frame], on_data: Callable[[_ChunkKey, int, bytes], None] | None
) -> Iterator[tuple[TransferredFile, list[tuple[_ChunkKey, bool]]]]:
    """Each ``sftp.file``/``sftp.file_incomplete`` as a value (no chunks), with the chunk keys its
    event closes: ``(key, True)`` for chunks of the file, ``(key, False)`` for chunks of the same
    path in the other direction, which end with it too. ``on_data`` receives each ``sftp.data``
    chunk (None: they are skipped undecoded)."""
    index = 0
    for frame in frames:
        if frame.kind is not FrameKind.EVENT:
            continue
        ev = frame.data
        if not isinstance(ev, Event) or not ev.type.startswith("sftp."):
            continue
        f = ev.fields
        if ev.type == "sftp.data":
            if on_data is None:
                continue
            try:
                data = base64.b64decode(_str(f.get("data")), validate=True)
            except (binascii.Error, ValueError):
                continue  # not content the bastion wrote: left out, and a complete file then fails its hash
            on_data((_key(f), _str(f.get("direction"))), _int(f.get("offset")), data)
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
            keys = [((key, d), direction in (d, "both")) for d in ("upload", "download")]
            yield (
                TransferredFile(
                    index=index,
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
                ),
                keys,
            )
            index += 1


def files(frames: Iterable[Frame], *, content: bool = False) -> list[TransferredFile]:
    """The files transferred in a recording, in the order their events were recorded.

    ``frames`` should be verified and signed (``only_signed(verify_frames(...))``): nothing else
    is evidence. ``content``: keep each file's ``sftp.data`` chunks for :meth:`TransferredFile.content`
    (held in memory; without it the chunks are skipped undecoded; :func:`spool_files` keeps them on disk)."""
    pending: dict[_ChunkKey, list[tuple[int, bytes]]] = {}

    def add(key: _ChunkKey, offset: int, data: bytes) -> None:
        pending.setdefault(key, []).append((offset, data))

    out: list[TransferredFile] = []
    for f, keys in _transfers(frames, add if content else None):
        chunks: list[tuple[int, bytes]] = []
        for key, mine in keys:
            taken = pending.pop(key, [])
            if mine:
                chunks.extend(taken)
        out.append(replace(f, chunks=tuple(chunks), content_read=content))
    return out


def spool_files(frames: Iterable[Frame], directory: Path) -> list[SpooledFile]:
    """:func:`files` with content, kept on disk instead of in memory: what an export uses.

    Each ``sftp.data`` chunk is appended to a log file in ``directory`` (memory holds only where
    each chunk is); when its file's event comes, a complete file is assembled as
    :meth:`TransferredFile.content` does into ``directory/N.content`` and kept only if it hashes to
    the recorded sha256 and size. ``directory`` must exist and be private to the caller."""
    logs: dict[_ChunkKey, tuple[Path, list[tuple[int, int, int]]]] = {}
    made = 0

    def add(key: _ChunkKey, offset: int, data: bytes) -> None:
        nonlocal made
        entry = logs.get(key)
        if entry is None:
            made += 1
            entry = logs[key] = (directory / f"{made}.chunks", [])
        with open(entry[0], "ab") as log:
            entry[1].append((offset, log.tell(), len(data)))
            log.write(data)

    out: list[SpooledFile] = []
    for f, keys in _transfers(frames, add):
        refs: list[tuple[int, Path, int, int]] = []
        for key, mine in keys:
            entry = logs.pop(key, None)
            if entry is None:
                continue
            if mine:
                refs.extend((offset, entry[0], pos, n) for offset, pos, n in entry[1])
            else:
                entry[0].unlink(missing_ok=True)
        try:
            out.append(_spooled(f, sorted(refs, key=lambda r: r[0]), directory))
        finally:
            for log_path in {r[1] for r in refs}:
                log_path.unlink(missing_ok=True)
    for log_path, _refs in logs.values():
        log_path.unlink(missing_ok=True)
    return out


def _spooled(f: TransferredFile, refs: list[tuple[int, Path, int, int]], directory: Path) -> SpooledFile:
    if not f.finished:
        return SpooledFile(f, None, "the session ended while the file was open: no whole-file hash")
    if not f.sha256:
        return SpooledFile(f, None, f"no whole-file hash ({f.hash_note or 'not accessed front to back'})")
    if not f.content_complete:
        return SpooledFile(f, None, f"the recording keeps {f.content_kept} of its {f.size} bytes: hash only")
    target = directory / f"{f.index}.content"
    handles: dict[Path, BinaryIO] = {}

    def chunks() -> Iterator[tuple[int, bytes]]:
        for offset, log_path, pos, n in refs:
            log = handles.get(log_path)
            if log is None:
                log = handles[log_path] = open(log_path, "rb")  # closed below
            log.seek(pos)
            yield offset, log.read(n)

    try:
        with open(target, "w+b") as out:
            agreed = _assemble(chunks(), out)
            out.seek(0)
            sha = hashlib.sha256()
            size = 0
            while block := out.read(1 << 20):
                sha.update(block)
                size += len(block)
    finally:
        for h in handles.values():
            h.close()
    if not agreed or size != f.size or sha.hexdigest() != f.sha256:
        target.unlink()
        return SpooledFile(
            f,
            None,
            "its recorded content does not hash to its recorded sha256 (a faulty recording): not exported",
            mismatch=True,
        )
    return SpooledFile(f, target)
