"""The recording writer: builds v1 frames, chains them, signs checkpoints, hands bytes to the OS.

Hot path (every keystroke and every chunk of output passes here), so it is shaped for speed:
one ``msgpack`` pack and one keyed ``blake3`` per frame, no per-frame objects, and frames are
written with a single ``writev`` per batch. Profile before changing it (``benchmarks/``).

Durability contract: frames reach the operating system (``write``) as soon as they are built,
except output, which may be held for at most ``coalesce_ms`` (<= 50 ms) to join chunks into one
frame. A ``kill -9`` therefore loses nothing older than that window. ``fsync`` follows
:class:`FsyncPolicy`. Any write error makes the writer fail closed: it raises
:class:`RecordingFailed` now and on every later call.
"""

from __future__ import annotations

import enum
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ._chain import FrameChain
from ._exceptions import RecordingFailed
from ._format import (
    MAX_CHECKPOINT_FRAMES,
    MAX_DATA_PER_FRAME,
    MAX_TEXT,
    PREAMBLE,
    FrameKind,
    Header,
    check_event_fields,
)
from ._ids import new_session_id
from ._keys import SigningKey

__all__ = [
    "FileSink",
    "FsyncPolicy",
    "RecordingWriter",
    "SealInfo",
    "SessionMeta",
    "Sink",
]

_IOV_MAX = 1024


class FsyncPolicy(enum.Enum):
    """When the writer asks the OS to put frames on stable storage.

    ``write`` already protects against the writing process dying (the kernel holds the bytes);
    ``fsync`` protects against the machine dying.
    """

    NEVER = "never"
    """Leave it to the OS (typically within 30 s). Fastest; a power cut may lose the tail."""
    CHECKPOINT = "checkpoint"
    """fsync after every checkpoint and at the seal (default): a power cut loses at most the
    frames since the last checkpoint, which were unsigned anyway."""
    ALWAYS = "always"
    """fsync after every batch of frames. Slowest; for hosts where every byte must survive power loss."""


class Sink(Protocol):
    """Where frames go. :class:`FileSink` in production; tests wrap it to inject faults."""

    name: str

    def writev(self, buffers: Sequence[bytes]) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """An append-only file created exclusively (an existing recording is never reopened)."""

    def __init__(self, path: Path | str, *, sync_dir: bool = True) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        if sync_dir:
            # The directory entry must survive a crash too, or the file could vanish whole.
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def writev(self, buffers: Sequence[bytes]) -> None:
        bufs = list(buffers)
        while bufs:
            batch = bufs[:_IOV_MAX]
            written = os.writev(self._fd, batch)
            total = sum(len(b) for b in batch)
            if written == total:
                del bufs[: len(batch)]
                continue
            # Partial write (signal, nearly full disk): drop what went out and retry the rest.
            while written:
                n = len(bufs[0])
                if written >= n:
                    written -= n
                    bufs.pop(0)
                else:
                    bufs[0] = bufs[0][written:]
                    written = 0

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What the caller knows about a session when recording starts."""

    user: str
    target: str
    login: str
    grant_id: str | None = None
    term: str = ""
    cols: int = 0
    rows: int = 0
    command: str | None = None
    host: str = field(default_factory=socket.gethostname)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SealInfo:
    """What a closed recording proves: its id, length and final chain head."""

    session_id: uuid.UUID
    frames: int
    head: bytes
    output_bytes: int
    input_bytes: int
    sink: str
    exit_status: int | None = None
    """As written in the seal (clamped to -255..255)."""
    reason: str = ""
    """Why the session ended, as written in the seal."""

    @property
    def head_hex(self) -> str:
        return self.head.hex()


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class RecordingWriter:
    """Writes one session's recording. Not thread-safe: one owner (a thread or an AsyncRecorder).

    All timestamps are monotonic nanoseconds (``at_ns``), taken by the caller when the bytes
    were seen; omitted, the writer reads its clock. The header, and a checkpoint signing it,
    are written before the constructor returns, so a recording that cannot be started raises
    here, before any byte of the session flows.
    """

    def __init__(
        self,
        sink: Sink,
        key: SigningKey,
        meta: SessionMeta,
        *,
        session_id: uuid.UUID | None = None,
        checkpoint_frames: int = 256,
        checkpoint_ms: int = 2000,
        coalesce_ms: int = 20,
        fsync: FsyncPolicy = FsyncPolicy.CHECKPOINT,
        autoflush: bool = True,
        clock: Callable[[], int] = time.monotonic_ns,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if not 1 <= checkpoint_frames <= MAX_CHECKPOINT_FRAMES:
            raise ValueError(f"checkpoint_frames must be in [1, {MAX_CHECKPOINT_FRAMES}]")
        if not 1 <= checkpoint_ms <= 5000:
            raise ValueError("checkpoint_ms must be in [1, 5000]")
        if not 0 <= coalesce_ms <= 50:
            raise ValueError("coalesce_ms must be in [0, 50]")
        self._sink = sink
        self._key = key
        self._clock = clock
        self._wall = wall_clock
        self._fsync = fsync
        self._autoflush = autoflush
        self._ckpt_frames = checkpoint_frames
        self._ckpt_ns = checkpoint_ms * 1_000_000
        self._coalesce_ns = coalesce_ms * 1_000_000
        self._out: list[bytes] = []
        self._sync_due = False
        self._failed: RecordingFailed | None = None
        self._closed = False
        self._last_t = 0
        self._unsigned = 0
        self._unsigned_since = 0
        self._pend = bytearray()
        self._pend_t = 0
        self._pend_since = 0
        self.output_bytes = 0
        self.input_bytes = 0

        self.session_id = session_id or new_session_id()
        self._start_ns = clock()
        self.header = Header(
            session_id=self.session_id,
            user=_clip(meta.user),
            target=_clip(meta.target),
            login=_clip(meta.login),
            grant_id=meta.grant_id,
            started_at_us=wall_clock() // 1000,
            term=_clip(meta.term),
            cols=meta.cols,
            rows=meta.rows,
            command=None if meta.command is None else _clip(meta.command),
            host=_clip(meta.host),
            signer=key.public.openssh,
            signer_fingerprint=key.public.fingerprint,
            checkpoint_frames=checkpoint_frames,
            checkpoint_ms=checkpoint_ms,
            coalesce_ms=coalesce_ms,
            extra=dict(meta.extra),
        )
        self._chain = FrameChain(self.session_id, key)
        self._out.append(PREAMBLE)
        self._frame(FrameKind.HEADER, self.header.to_map(), 0)
        self._checkpoint(0)
        self.flush()

    # --- public API -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._sink.name

    @property
    def frames(self) -> int:
        """Frames built so far (including any not yet flushed)."""
        return self._chain.seq

    @property
    def head(self) -> bytes:
        """Chain head of the last frame built."""
        return self._chain.head

    def output(self, data: bytes, at_ns: int | None = None) -> None:
        """Record bytes the session printed. May be held up to ``coalesce_ms`` to join chunks."""
        self._check()
        at = self._clock() if at_ns is None else at_ns
        self.output_bytes += len(data)
        if not self._pend and (not self._coalesce_ns or len(data) >= MAX_DATA_PER_FRAME // 2) and (
            len(data) <= MAX_DATA_PER_FRAME
        ):
            # Fast path: nothing held and nothing to join (or a chunk big enough on its own):
            # one frame straight from the caller's bytes, no copy through the join buffer.
            self._frame(FrameKind.OUTPUT, data, self._t(at))
            self._after(at)
            return
        if self._pend and (at - self._pend_since >= self._coalesce_ns):
            self._emit_pending()
        view = memoryview(data)
        while view:
            room = MAX_DATA_PER_FRAME - len(self._pend)
            if not self._pend:
                self._pend_since = at
                self._pend_t = self._t(at)
            self._pend += view[:room]
            view = view[room:]
            if len(self._pend) >= MAX_DATA_PER_FRAME:
                self._emit_pending()
        if self._pend and not self._coalesce_ns:
            self._emit_pending()
        self._after(at)

    def input(self, data: bytes, at_ns: int | None = None) -> None:
        """Record bytes the operator typed (or sent on stdin)."""
        self._check()
        at = self._clock() if at_ns is None else at_ns
        self._emit_pending()
        self.input_bytes += len(data)
        t = self._t(at)
        for i in range(0, len(data), MAX_DATA_PER_FRAME):
            self._frame(FrameKind.INPUT, data[i : i + MAX_DATA_PER_FRAME], t)
        self._after(at)

    def resize(self, cols: int, rows: int, at_ns: int | None = None) -> None:
        self._check()
        at = self._clock() if at_ns is None else at_ns
        self._emit_pending()
        self._frame(FrameKind.RESIZE, [max(0, min(cols, 65535)), max(0, min(rows, 65535))], self._t(at))
        self._after(at)

    def event(self, type: str, message: str, at_ns: int | None = None, **fields: str | int | bool | None) -> None:
        """Record something that happened to the session (warning, expiry, masked input, note).
        ValueError for a field the format does not admit (nothing is written)."""
        check_event_fields(fields)
        self._check()
        at = self._clock() if at_ns is None else at_ns
        self._emit_pending()
        body: dict[str, Any] = {k: (_clip(v) if isinstance(v, str) else v) for k, v in fields.items()}
        body["type"] = _clip(type)
        body["message"] = _clip(message)
        self._frame(FrameKind.EVENT, body, self._t(at))
        self._after(at)

    def tick(self, at_ns: int | None = None) -> int | None:
        """Do time-driven work (flush aged output, sign a due checkpoint, write out).

        Returns the monotonic time (ns) by which ``tick`` should be called again, or None if
        nothing is pending. Callers without their own frames to write call it on a timer.
        """
        self._check()
        at = self._clock() if at_ns is None else at_ns
        if self._pend and at - self._pend_since >= self._coalesce_ns:
            self._emit_pending()
        if self._unsigned and at - self._unsigned_since >= self._ckpt_ns:
            self._checkpoint(self._t(at))
        self.flush()
        return self.next_deadline()

    def next_deadline(self) -> int | None:
        deadlines = []
        if self._pend:
            deadlines.append(self._pend_since + self._coalesce_ns)
        if self._unsigned:
            deadlines.append(self._unsigned_since + self._ckpt_ns)
        return min(deadlines) if deadlines else None

    @property
    def fsync_policy(self) -> FsyncPolicy:
        return self._fsync

    def wrap_sink(self, wrap: Callable[[Sink], Sink]) -> None:
        """Put ``wrap(sink)`` in the sink's place (:class:`AsyncRecorder` moves checkpoint fsyncs
        off its shared workers this way). Call it before any frame after the header."""
        self._sink = wrap(self._sink)

    def flush(self) -> None:
        """Hand every built frame to the OS (and fsync per policy)."""
        if not self._out:
            return
        out, self._out = self._out, []
        try:
            self._sink.writev(out)
            if self._fsync is FsyncPolicy.ALWAYS or (self._sync_due and self._fsync is FsyncPolicy.CHECKPOINT):
                self._sink.fsync()
        except OSError as exc:
            self._fail(exc.strerror or str(exc))
        self._sync_due = False

    def close(self, exit_status: int | None, reason: str, at_ns: int | None = None) -> SealInfo:
        """Seal the recording: flush output, write the seal and the checkpoint that signs it."""
        self._check()
        at = self._clock() if at_ns is None else at_ns
        self._emit_pending()
        t = self._t(at)
        sealed_status = exit_status if exit_status is None else max(-255, min(exit_status, 255))
        sealed_reason = _clip(reason)
        self._frame(
            FrameKind.SEAL,
            {
                "exit_status": sealed_status,
                "reason": sealed_reason,
                "frames": self._chain.seq,
                "output_bytes": self.output_bytes,
                "input_bytes": self.input_bytes,
                "wall_us": self._wall() // 1000,
            },
            t,
        )
        self._checkpoint(t)
        if self._fsync is not FsyncPolicy.NEVER:
            self._sync_due = True
        self.flush()
        self._closed = True
        try:
            self._sink.close()
        except OSError as exc:
            self._fail(exc.strerror or str(exc))
        return SealInfo(
            session_id=self.session_id,
            frames=self._chain.seq,
            head=self._chain.head,
            output_bytes=self.output_bytes,
            input_bytes=self.input_bytes,
            sink=self._sink.name,
            exit_status=sealed_status,
            reason=sealed_reason,
        )

    def abandon(self) -> None:
        """Close the sink without a seal (the recording stays INCOMPLETE). For error paths."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sink.close()
        except OSError as exc:
            self._fail(exc.strerror or str(exc))

    # --- internals --------------------------------------------------------------------------

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise RecordingFailed(path=self._sink.name, reason="recording already closed")

    def _fail(self, reason: str) -> None:
        self._failed = RecordingFailed(path=self._sink.name, reason=reason)
        raise self._failed

    def _t(self, at_ns: int) -> int:
        t = (at_ns - self._start_ns) // 1000
        if t < self._last_t:
            t = self._last_t
        self._last_t = t
        return t

    def _frame(self, kind: int, data: Any, t_us: int) -> None:
        self._out += self._chain.frame(kind, data, t_us)
        if kind != FrameKind.CHECKPOINT:
            if not self._unsigned:
                self._unsigned_since = self._clock()
            self._unsigned += 1
            # Count-based checkpoints are taken here, inside bursts that build many frames in one
            # call; the seal's signature is written by close() itself.
            if self._unsigned >= self._ckpt_frames and kind != FrameKind.SEAL:
                self._checkpoint(t_us)

    def _emit_pending(self) -> None:
        if self._pend:
            data = bytes(self._pend)
            self._pend.clear()
            self._frame(FrameKind.OUTPUT, data, self._pend_t)

    def _checkpoint(self, t_us: int) -> None:
        # Output still held for coalescing was seen before this checkpoint: it goes out first, so
        # the checkpoint covers it and no frame after a checkpoint carries an earlier time. (A
        # held chunk written after the checkpoint made honest sessions verify ``time-backwards``.)
        if self._pend:
            self._emit_pending()
            if not self._unsigned:  # emitting it reached the frame count and signed already
                return
        t_us = self._last_t = max(t_us, self._last_t)
        self._out += self._chain.checkpoint(t_us, self._wall() // 1000)
        self._unsigned = 0
        self._sync_due = True

    def _after(self, at: int) -> None:
        if self._unsigned and at - self._unsigned_since >= self._ckpt_ns:
            self._checkpoint(self._t(at))
        if self._autoflush:
            self.flush()
