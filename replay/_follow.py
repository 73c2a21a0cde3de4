"""Verified frames with their place in the file, from a finished recording or one still being written.

:func:`located_frames` is :func:`replay.verify_frames` with each frame's byte offset, end and
stored chain head beside it (a :class:`Located`), which the seek index needs to jump into the
file later. It runs the verifier and :func:`replay.iter_raw` over the same bytes in lock step:
the verifier decides what is proven, the raw reader only says where it lies. A frame whose place
disagrees with the verifier (a file rewritten under us) ends the stream with an error.

With ``follow=True`` the file is read as it grows (a live session): at the end of the bytes
written so far both readers wait, polling every ``poll`` seconds, until more arrive, the seal's
signature has been read, or ``stop()`` says to give up. The chain state lives in the verifier
generator, so nothing is read or checked twice. :func:`follow` is the same without positions,
for consumers that only want verified frames (the search indexer on a live session).

Nothing here decides what may be *shown*: a live recording's newest frames are chained but not
yet signed. Put :func:`replay.only_signed` after it for that.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import NamedTuple

from recorder import PREAMBLE, Frame, FrameKind, PublicKey

from ._exceptions import SourceError
from ._reader import iter_raw
from ._verify import VerificationReport, verify_frames

__all__ = ["GrowingFile", "Located", "follow", "located_frames"]


class Located(NamedTuple):
    """A verified frame and where it lies in the recording."""

    frame: Frame
    offset: int
    """Byte offset of the frame's length prefix."""
    end: int
    """Byte offset just past its stored head: where the next frame starts."""
    head: bytes
    """The frame's chain head as stored (the verifier recomputed and compared it)."""


class GrowingFile(io.RawIOBase):
    """A read-only view of a file that may still be growing.

    ``read`` returns what is there; at the end it waits (``poll`` seconds at a time) until more is
    written or ``stop()`` returns True, and only then reports the end. It has no ``fileno`` on
    purpose: :func:`replay.iter_raw` would memory-map a file descriptor at its current size and
    never see the rest.
    """

    def __init__(self, path: Path | str, *, poll: float = 0.2, stop: Callable[[], bool] = lambda: False) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)
        self._poll = poll
        self._stop = stop
        self._pos = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a growing file is read, not mapped")

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        # The preamble is read whole (the verifier reads it with one call); after it, whatever is there.
        want = min(len(view), len(PREAMBLE) - self._pos) if self._pos < len(PREAMBLE) else 1
        got = 0
        while True:
            n = self._f.readinto(view[got:]) or 0
            got += n
            self._pos += n
            if got >= want or (got and self._pos >= len(PREAMBLE)):
                return got
            if self._stop():
                return got
            time.sleep(self._poll)

    def close(self) -> None:
        self._f.close()
        super().close()


def located_frames(
    path: Path | str,
    trusted: Iterable[PublicKey],
    *,
    follow: bool = False,
    poll: float = 0.2,
    stop: Callable[[], bool] | None = None,
    legacy_order: bool = False,
) -> Generator[Located, None, VerificationReport]:
    """Yield each verified frame of the recording at ``path`` with its place; return the report.

    ``follow``: wait for the file to grow until the seal is signed or ``stop()`` is true (checked
    whenever the reader is at the end of what was written). Raises :class:`replay.SourceError`
    if the file cannot be read, or if the bytes change under the reader.
    """
    name = str(path)
    sealed = False
    done = False

    def stopped() -> bool:
        return done or (stop is not None and stop())

    try:
        if follow:
            a: io.RawIOBase | io.BufferedReader = GrowingFile(path, poll=poll, stop=stopped)
            b: io.RawIOBase | io.BufferedReader = GrowingFile(path, poll=poll, stop=stopped)
        else:
            a = open(path, "rb")
            b = open(path, "rb")
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    try:
        verified = verify_frames(a, trusted, source=name, legacy_order=legacy_order)  # type: ignore[arg-type]
        if b.read(len(PREAMBLE)) != PREAMBLE:
            # The verifier reports what is wrong with the preamble; there is nothing to locate.
            report = _drain(verified)
            return report
        raw = iter_raw(b, len(PREAMBLE))  # type: ignore[arg-type]
        while True:
            try:
                frame = next(verified)
            except StopIteration as end:
                final: VerificationReport = end.value
                return final
            try:
                index, offset, body, head = next(raw)
            except StopIteration:
                raise SourceError(source=name, reason="the file changed while it was read") from None
            if index != frame.seq:
                raise SourceError(source=name, reason="the file changed while it was read")
            yield Located(frame, offset, offset + 4 + len(body) + len(head), head)
            if frame.kind is FrameKind.SEAL:
                sealed = True
            elif sealed and frame.kind is FrameKind.CHECKPOINT:
                done = True  # the seal is signed: nothing may follow, stop waiting for more
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    finally:
        a.close()
        b.close()


def follow(
    path: Path | str,
    trusted: Iterable[PublicKey],
    *,
    poll: float = 0.2,
    stop: Callable[[], bool] | None = None,
) -> Generator[Frame, None, VerificationReport]:
    """Yield verified frames of a recording as it is written, until its seal is signed or ``stop()``.

    The return value is the verification report of what was read (INCOMPLETE while the session
    goes on). Frames are chained but not necessarily signed yet: see :func:`replay.only_signed`.
    """
    gen = located_frames(path, trusted, follow=True, poll=poll, stop=stop)
    while True:
        try:
            item = next(gen)
        except StopIteration as end:
            report: VerificationReport = end.value
            return report
        yield item.frame


def _drain(gen: Generator[Frame, None, VerificationReport]) -> VerificationReport:
    while True:
        try:
            next(gen)
        except StopIteration as end:
            report: VerificationReport = end.value
            return report

