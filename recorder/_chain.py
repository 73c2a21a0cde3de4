"""The hash chain and its signatures, apart from any storage: what recordings and the audit log share.

A :class:`FrameChain` turns ``(kind, data, t_us)`` into the exact bytes of a v1 frame and keeps the
running head. :class:`recorder.RecordingWriter` feeds it from a live session into a file; the
audit log feeds it from SQLite transactions, resuming from the last stored ``(seq, head)``. Both
produce streams that :func:`replay.verify_frames` checks, so there is one chain, not two.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgpack
from blake3 import blake3

from ._format import FrameKind, checkpoint_message, genesis, pack_length
from ._keys import SigningKey

__all__ = ["FrameChain"]


class FrameChain:
    """Running state of one chain: next ``seq`` and the current head."""

    __slots__ = ("_key", "_pack", "head", "seq", "session_id")

    def __init__(self, session_id: uuid.UUID, key: SigningKey, *, seq: int = 0, head: bytes | None = None) -> None:
        self.session_id = session_id
        self._key = key
        self.seq = seq
        self.head = genesis(session_id) if head is None else head
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def frame(self, kind: int, data: Any, t_us: int) -> tuple[bytes, bytes, bytes]:
        """Build the next frame; returns ``(length prefix, body, head)`` as they go on disk."""
        body: bytes = self._pack([kind, self.seq, t_us, data])
        self.head = head = blake3(body, key=self.head).digest()
        self.seq += 1
        return pack_length(len(body)), body, head

    def checkpoint(self, t_us: int, wall_us: int) -> tuple[bytes, bytes, bytes]:
        """Sign the current head (that of frame ``seq - 1``) in a checkpoint frame."""
        index = self.seq - 1
        sig = self._key.sign(checkpoint_message(self.session_id, index, self.head, wall_us))
        return self.frame(FrameKind.CHECKPOINT, {"index": index, "wall_us": wall_us, "sig": sig}, t_us)
