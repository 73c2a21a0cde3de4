"""Hold frames back until a signature covers them: what a player may show before its verdict.

:func:`replay.verify_frames` yields a frame as soon as its chain head checks out, but a forger
without the key can recompute heads: only the next checkpoint's signature tells a genuine frame
from a forged one. :func:`only_signed` sits after ``verify_frames`` in a pipeline and releases
frames only when a checkpoint covering them has been yielded, which ``verify_frames`` does only
after that checkpoint's signature verified against a trusted key. Frames after the last good
signature (the unsigned tail of an unsealed recording, or everything from a forged frame on) are
never released; the return value says how many were withheld and why.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass

from recorder import Frame, FrameKind

__all__ = ["MAX_PENDING_BYTES", "Withheld", "only_signed"]

MAX_PENDING_BYTES = 256 * 1024 * 1024
"""Most frame data held while waiting for a signature: 4096 frames (the largest ``checkpoint_frames``)
of 64 KiB (the most zsp's writer puts in one frame). A file that needs more is not played further,
so a hostile header cannot make the player hold gigabytes."""


@dataclass(frozen=True, slots=True)
class Withheld:
    """What :func:`only_signed` did not release."""

    frames: int
    """Frames read but never covered by a verified signature."""
    first: int | None
    """Index of the first frame withheld (None: nothing was)."""
    overflow: bool
    """True if playback stopped because more than ``max_pending_bytes`` waited for a signature."""


def only_signed(
    frames: Iterable[Frame], *, max_pending_bytes: int = MAX_PENDING_BYTES
) -> Generator[Frame, None, Withheld]:
    """Yield each frame of a verified stream once a later checkpoint has signed it.

    ``frames`` must come from :func:`replay.verify_frames` (or keep its contract: a checkpoint
    frame is yielded only after its signature verified). The source is always read to its end,
    even after an overflow, so the caller's verification report is complete.
    """
    pending: list[Frame] = []
    size = 0
    withheld = 0
    first: int | None = None
    overflow = False
    for frame in frames:
        if overflow:
            withheld += 1
            continue
        if frame.kind is FrameKind.CHECKPOINT:
            yield from pending
            pending.clear()
            size = 0
            yield frame
            continue
        pending.append(frame)
        if isinstance(frame.data, bytes):
            size += len(frame.data)
        if size > max_pending_bytes:
            overflow = True
            withheld += len(pending)
            first = pending[0].seq
            pending.clear()
    if pending:
        withheld += len(pending)
        first = pending[0].seq
    return Withheld(frames=withheld, first=first, overflow=overflow)
