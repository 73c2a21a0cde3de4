"""Sealing a recording whose writer died: resume its chain from a verified end, append only a seal.

A bastion killed with ``kill -9`` leaves its recordings unsealed (INCOMPLETE ``no-seal``). At the
next start the bastion verifies each one (``replay.verify``, which this package cannot import: the
caller hands over what it proved as a :class:`ChainEnd`) and, when the file ends exactly at a
frame boundary with nothing wrong, appends a seal whose reason is ``interrupted`` and the
checkpoint that signs it. Nothing already in the file is read back, changed or cut: the original
bytes stay a byte-exact prefix, and the new frames continue the chain (``seq`` and head) from the
last intact frame, signed with the key the recording's header names (the only key its verifier
accepts for its checkpoints).

The seal carries, besides the counts every seal has, keys a v1 verifier ignores (FORMAT.md 3.3):
``session_frames``, ``session_signed_frames`` and ``session_head`` (how far the session itself
wrote and signed, so frames signed only at recovery are told apart) and ``recovered_by``.

Two steps, so the caller can verify the result before any byte is written: :func:`interrupted_seal`
builds the frames, :func:`append_at_end` writes them in one ``write`` at the verified end of the
file and fsyncs it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ._chain import FrameChain
from ._exceptions import RecordingFailed, ResumeRefused
from ._format import MAX_TEXT, FrameKind
from ._keys import SigningKey
from ._writer import SealInfo

__all__ = ["INTERRUPTED", "ChainEnd", "ResumedSeal", "append_at_end", "interrupted_seal"]

INTERRUPTED = "interrupted"
"""The seal reason of a recording sealed after its writer died."""


@dataclass(frozen=True, slots=True)
class ChainEnd:
    """Where a verified, unsealed recording ends (every field as the verifier computed it)."""

    session_id: uuid.UUID
    signer: str
    """The header's ``signer`` (``ssh-ed25519 AAAA...``): the only key its checkpoints may use."""
    frames: int
    """Intact frames; the next frame's ``seq``."""
    signed_frames: int
    """Frames covered by the last checkpoint of the session's own (0: none)."""
    head: bytes
    """Head of the last intact frame."""
    t_us: int
    """Time of the last intact frame; the seal is not earlier."""
    output_bytes: int
    input_bytes: int
    checkpoint_frames: int
    """The header's limit on non-checkpoint frames between checkpoints."""
    size: int
    """Length of the file verified, in bytes: it must end exactly at the last intact frame."""

    @property
    def unsigned(self) -> int:
        """Non-checkpoint frames after the last checkpoint (the header counts)."""
        return self.frames - self.signed_frames - 1 if self.signed_frames else self.frames


@dataclass(frozen=True, slots=True)
class ResumedSeal:
    """The frames to append (one buffer) and what the sealed recording will then prove."""

    data: bytes
    info: SealInfo
    size: int
    """Length the file must have before ``data`` is appended (the verified end)."""


def interrupted_seal(
    end: ChainEnd,
    key: SigningKey,
    *,
    recovered_by: str,
    wall_clock: Callable[[], int] = time.time_ns,
) -> ResumedSeal:
    """Build the seal (reason ``interrupted``) and the checkpoint signing it, continuing ``end``'s chain.

    :class:`ResumeRefused` if ``key`` is not the recording's signer: a checkpoint by any other key
    would not verify (FORMAT.md 4, step 5.6), and a recording is never re-signed under a new header.
    If the frames left unsigned already reach the header's limit, a checkpoint is written first so
    the seal does not break the ``missing-signature`` rule (it signs the same frames the seal's
    checkpoint would)."""
    if key.public.openssh != end.signer:
        raise ResumeRefused(
            reason=f"the recording is signed by another key than the bastion's ({key.public.fingerprint})"
        )
    chain = FrameChain(end.session_id, key, seq=end.frames, head=end.head)
    wall_us = wall_clock() // 1000
    parts: list[bytes] = []
    if end.unsigned + 1 > end.checkpoint_frames:
        parts += chain.checkpoint(end.t_us, wall_us)
    frames = chain.seq
    parts += chain.frame(
        FrameKind.SEAL,
        {
            "exit_status": None,
            "reason": INTERRUPTED,
            "frames": frames,
            "output_bytes": end.output_bytes,
            "input_bytes": end.input_bytes,
            "wall_us": wall_us,
            "session_frames": end.frames,
            "session_signed_frames": end.signed_frames,
            "session_head": end.head.hex(),
            "recovered_by": recovered_by[:MAX_TEXT],
        },
        end.t_us,
    )
    parts += chain.checkpoint(end.t_us, wall_us)
    info = SealInfo(
        session_id=end.session_id,
        frames=chain.seq,
        head=chain.head,
        output_bytes=end.output_bytes,
        input_bytes=end.input_bytes,
        sink="",
        exit_status=None,
        reason=INTERRUPTED,
    )
    return ResumedSeal(data=b"".join(parts), info=info, size=end.size)


def append_at_end(fd: int, seal: ResumedSeal, *, name: str = "") -> None:
    """Append ``seal.data`` to the file open on ``fd`` (``O_APPEND``) in one ``write``, then fsync it.

    :class:`ResumeRefused` (nothing written) unless the file is exactly ``seal.size`` bytes long:
    it changed since it was verified. :class:`RecordingFailed` if the write or fsync fails; a short
    write leaves a torn tail after the original bytes, which a verifier reports as such."""
    try:
        size = os.fstat(fd).st_size
    except OSError as exc:
        raise RecordingFailed(path=name or None, reason=exc.strerror or str(exc)) from None
    if size != seal.size:
        raise ResumeRefused(reason=f"the file changed since it was verified ({size} bytes, not {seal.size})")
    view = memoryview(seal.data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        raise RecordingFailed(path=name or None, reason=exc.strerror or str(exc)) from None
