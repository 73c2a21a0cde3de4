"""Streaming frame reader: splits a recording into ``(index, offset, body, head)`` with bounded memory.

It trusts nothing: a length prefix above :data:`recorder.MAX_BODY_LEN` is reported, not
allocated, and at most one chunk plus one frame is held in memory whatever the file's size.
It does no cryptography; :mod:`replay._verify` does.
"""

from __future__ import annotations

import enum
import io
import mmap
import os
import stat
import struct
from collections.abc import Generator
from dataclasses import dataclass
from typing import IO

from recorder import HEAD_LEN, MAGIC, MAX_BODY_LEN, PREAMBLE

__all__ = ["Preamble", "RawFrame", "Tail", "TailKind", "iter_raw", "read_preamble"]

CHUNK = 1 << 20
_LEN = struct.Struct(">I")
_unpack_len = _LEN.unpack_from

RawFrame = tuple[int, int, memoryview, bytes]
"""``(index, byte offset, body, stored head)``; ``body`` is only valid until the next frame."""


class Preamble(enum.Enum):
    OK = "ok"
    SHORT = "short"
    """Fewer than 8 bytes, all of them a prefix of a v1 preamble (a file torn at its start)."""
    UNKNOWN_VERSION = "unknown-version"
    NOT_A_RECORDING = "not-a-recording"


def read_preamble(stream: IO[bytes]) -> tuple[Preamble, bytes]:
    data = stream.read(len(PREAMBLE))
    if data == PREAMBLE:
        return Preamble.OK, data
    if len(data) < len(PREAMBLE) and PREAMBLE.startswith(data):
        return Preamble.SHORT, data
    if len(data) == len(PREAMBLE) and data.startswith(MAGIC):
        return Preamble.UNKNOWN_VERSION, data
    return Preamble.NOT_A_RECORDING, data


class TailKind(enum.Enum):
    CLEAN = "clean"
    """The file ended exactly at a frame boundary."""
    TORN = "torn"
    """The file ended inside a frame (a crash mid-write, or truncation)."""
    OVERSIZE = "oversize"
    """A length prefix above the format's cap."""


@dataclass(frozen=True, slots=True)
class Tail:
    """How the frame stream ended."""

    kind: TailKind
    index: int
    """Index the next frame would have had."""
    offset: int
    """Byte offset where it would have started."""
    length: int = 0
    """For OVERSIZE, the length prefix found; for TORN, the bytes present."""


def _mapped(stream: IO[bytes]) -> mmap.mmap | None:
    """A read-only map of ``stream`` if it is a non-empty regular file, else None."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def iter_raw(stream: IO[bytes], offset: int = len(PREAMBLE)) -> Generator[RawFrame, None, Tail]:
    """Yield frames from ``stream`` (positioned at ``offset``, after the preamble); return how it ended.

    Regular files are memory-mapped (no copies: the verifier hashes the page cache directly;
    the mapping is file-backed, so it costs no anonymous memory). Pipes and other streams are
    read in chunks of :data:`CHUNK`, holding at most one chunk plus one frame.
    """
    mapped = _mapped(stream)
    if mapped is not None and stream.tell() == offset:
        # Not closed explicitly: the consumer may still hold a view of the last body. The map
        # is released (and its descriptor closed) when the last view goes away.
        return (yield from _iter_buffer(mapped, offset))
    return (yield from _iter_stream(stream, offset))


def _iter_buffer(buf: mmap.mmap, pos: int) -> Generator[RawFrame, None, Tail]:
    view = memoryview(buf)
    end = len(buf)
    index = 0
    while True:
        if end - pos < 4:
            if end == pos:
                return Tail(TailKind.CLEAN, index, pos)
            return Tail(TailKind.TORN, index, pos, end - pos)
        (n,) = _unpack_len(buf, pos)
        if n > MAX_BODY_LEN:
            return Tail(TailKind.OVERSIZE, index, pos, n)
        body_end = pos + 4 + n
        stop = body_end + HEAD_LEN
        if stop > end:
            return Tail(TailKind.TORN, index, pos, end - pos)
        yield index, pos, view[pos + 4 : body_end], buf[body_end:stop]
        pos = stop
        index += 1


def _iter_stream(stream: IO[bytes], offset: int) -> Generator[RawFrame, None, Tail]:
    read = stream.read
    buf = b""
    view = memoryview(buf)
    pos = 0
    base = offset  # file offset of buf[0]
    eof = False
    index = 0
    while True:
        end = len(buf)
        if end - pos < 4:
            if not eof:
                more = read(CHUNK)
                if more:
                    buf = buf[pos:] + more
                    view = memoryview(buf)
                    base += pos
                    pos = 0
                    continue
                eof = True
            if end == pos:
                return Tail(TailKind.CLEAN, index, base + pos)
            return Tail(TailKind.TORN, index, base + pos, end - pos)
        (n,) = _unpack_len(buf, pos)
        if n > MAX_BODY_LEN:
            return Tail(TailKind.OVERSIZE, index, base + pos, n)
        body_end = pos + 4 + n
        stop = body_end + HEAD_LEN
        if stop > end:
            if not eof:
                more = read(max(CHUNK, stop - end))
                if more:
                    buf = buf[pos:] + more
                    view = memoryview(buf)
                    base += pos
                    pos = 0
                    continue
                eof = True
            return Tail(TailKind.TORN, index, base + pos, end - pos)
        yield index, base + pos, view[pos + 4 : body_end], buf[body_end:stop]
        pos = stop
        index += 1
