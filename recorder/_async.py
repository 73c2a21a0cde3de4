"""Feed a :class:`RecordingWriter` from an asyncio event loop without blocking it.

The event loop only timestamps and enqueues (a deque append under a lock); one worker thread
packs, hashes, signs and writes. Frames queued while the worker is busy are written together
with one ``writev``, so the per-syscall cost falls as load rises. Backpressure works like
``asyncio.StreamWriter``: ``write``-style calls never block, and ``await drain()`` waits while more
than ``high_water`` bytes are queued, so a slow disk slows the session instead of growing memory.

A failed writer fails the recorder: every later call raises :class:`RecordingFailed`, ``drain``
raises it to whoever is waiting, and ``on_error`` is called on the loop so the owner can end the
session at once.

``max_bytes`` caps the input and output one session may record, so one session cannot fill the
disk: the ``output`` or ``input`` call that would pass it records nothing, calls ``on_error`` and
raises :class:`RecordingLimitReached` (as does every later one). The recording stays intact:
events and ``close`` still work, so the owner can say why the session ended and seal it.

``await synced()`` waits until everything queued so far has been handed to the OS. The bastion
awaits it before passing typed input to the target, so no command runs that is not on disk.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._exceptions import RecordingFailed, RecordingLimitReached
from ._format import check_event_fields
from ._writer import RecordingWriter, SealInfo

__all__ = ["AsyncRecorder"]

_OUTPUT, _INPUT, _RESIZE, _EVENT, _CLOSE = range(5)


class AsyncRecorder:
    """Thread-backed, backpressured front of a writer for one session."""

    def __init__(
        self,
        writer: RecordingWriter,
        *,
        high_water: int = 4 << 20,
        on_error: Callable[[RecordingFailed], None] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        max_bytes: int | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be at least 0")
        self._writer = writer
        self._max_bytes = max_bytes
        self._recorded = 0  # input and output bytes accepted so far
        self._limited: RecordingLimitReached | None = None
        self._high = high_water
        self._low = high_water // 2
        self._on_error = on_error
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._cond = threading.Condition()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._pending = 0
        self._failed: RecordingFailed | None = None
        self._closing = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._done: asyncio.Future[SealInfo] = self._loop.create_future()
        self._queued = 0  # items queued so far (event loop side)
        self._written = 0  # items the worker has handed to the OS
        self._acked = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"zsp-recorder-{writer.session_id}", daemon=True)
        self._thread.start()

    @property
    def session_id(self) -> Any:
        return self._writer.session_id

    @property
    def failed(self) -> RecordingFailed | None:
        return self._failed

    @property
    def pending_bytes(self) -> int:
        return self._pending

    @property
    def recorded_bytes(self) -> int:
        """Input and output bytes accepted so far (what ``max_bytes`` limits)."""
        return self._recorded

    def output(self, data: bytes) -> None:
        self._count(len(data))
        self._put((_OUTPUT, self._clock(), data), len(data))

    def input(self, data: bytes) -> None:
        self._count(len(data))
        self._put((_INPUT, self._clock(), data), len(data))

    def resize(self, cols: int, rows: int) -> None:
        self._put((_RESIZE, self._clock(), cols, rows), 16)

    def charge(self, size: int) -> None:
        """Count ``size`` bytes recorded in another form (input sealed in an event) against
        ``max_bytes``; raises :class:`RecordingLimitReached` past it, as ``input`` would."""
        self._count(size)

    def event(self, type: str, message: str, **fields: str | int | bool | None) -> None:
        """Queue an event; ValueError at once (nothing queued) for a field the format does not
        admit, rather than a writer thread failing the recording with it later."""
        check_event_fields(fields)
        self._put((_EVENT, self._clock(), type, message, fields), 64 + len(message))

    async def drain(self) -> None:
        """Wait until the queue is below the low-water mark; raise if recording has failed."""
        if self._failed is not None:
            raise self._failed
        while self._pending > self._high:
            self._drained.clear()
            await self._drained.wait()
            if self._failed is not None:
                raise self._failed

    async def synced(self) -> None:
        """Wait until every item queued before this call has been written to the OS."""
        target = self._queued
        while self._written < target:
            if self._failed is not None:
                raise self._failed
            self._acked.clear()
            await self._acked.wait()
        if self._failed is not None:
            raise self._failed

    async def close(self, exit_status: int | None, reason: str) -> SealInfo:
        """Write everything queued, seal, and wait for the worker to finish."""
        if self._failed is not None:
            raise self._failed
        if not self._closing:
            self._put((_CLOSE, self._clock(), exit_status, reason), 0)
            self._closing = True
        return await asyncio.shield(self._done)

    # --- worker thread ----------------------------------------------------------------------

    def _count(self, size: int) -> None:
        if self._failed is not None:
            raise self._failed
        if self._limited is not None:
            raise self._limited
        if self._max_bytes is not None and self._recorded + size > self._max_bytes:
            self._limited = RecordingLimitReached(path=self._writer.name, limit=self._max_bytes)
            if self._on_error is not None:
                self._on_error(self._limited)
            raise self._limited
        self._recorded += size

    def _put(self, item: tuple[Any, ...], size: int) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closing:
            raise RecordingFailed(path=self._writer.name, reason="recorder is closing")
        with self._cond:
            self._queue.append(item)
            self._pending += size
            self._cond.notify()
        self._queued += 1

    def _run(self) -> None:
        w = self._writer
        try:
            while True:
                with self._cond:
                    while not self._queue:
                        deadline = w.next_deadline()
                        if deadline is None:
                            self._cond.wait()
                        else:
                            wait = (deadline - self._clock()) / 1e9
                            if wait <= 0 or not self._cond.wait(wait):
                                break
                    items = list(self._queue)
                    self._queue.clear()
                size = 0
                for item in items:
                    op = item[0]
                    if op == _OUTPUT:
                        w.output(item[2], item[1])
                        size += len(item[2])
                    elif op == _INPUT:
                        w.input(item[2], item[1])
                        size += len(item[2])
                    elif op == _RESIZE:
                        w.resize(item[2], item[3], item[1])
                        size += 16
                    elif op == _EVENT:
                        w.event(item[2], item[3], item[1], **item[4])
                        size += 64 + len(item[3])
                    else:
                        info = w.close(item[2], item[3], item[1])
                        self._loop.call_soon_threadsafe(self._finish, info, None)
                        return
                w.tick()
                with self._cond:
                    self._pending -= size
                    low = self._pending <= self._low
                if items:
                    self._loop.call_soon_threadsafe(self._ack, len(items), low)
        except RecordingFailed as exc:
            self._loop.call_soon_threadsafe(self._finish, None, exc)
        except Exception as exc:  # noqa: BLE001 - any bug here must fail the session closed, not hang it
            failure = RecordingFailed(path=w.name, reason=f"internal error: {exc!r}")
            self._loop.call_soon_threadsafe(self._finish, None, failure)

    def _ack(self, count: int, low: bool) -> None:
        self._written += count
        self._acked.set()
        if low:
            self._drained.set()

    def _finish(self, info: SealInfo | None, exc: RecordingFailed | None) -> None:
        if exc is not None:
            self._failed = exc
            self._drained.set()
            self._acked.set()
            if not self._done.done():
                self._done.set_exception(exc)
                # Mark retrieved: the owner learns of the failure through on_error/drain/close.
                self._done.exception()
            if self._on_error is not None:
                self._on_error(exc)
        elif info is not None and not self._done.done():
            self._done.set_result(info)
