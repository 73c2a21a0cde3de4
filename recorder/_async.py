"""Feed a :class:`RecordingWriter` from an asyncio event loop without blocking it.

The event loop only timestamps and enqueues (a deque append under a lock); a small pool of
worker threads, shared by every recorder of the process, packs, hashes, signs and writes. One
session's frames are handled by one worker at a time, in order; frames queued while its worker
was busy are written together with one ``writev``, so the per-syscall cost falls as load rises.
A worker that serves a session whose disk is slow (an fsync at a checkpoint, a hung mount) only
holds that session: the others are served by the other workers, and a worker busy with one batch
for longer than ``_STUCK_NS`` makes the pool start another (extra workers leave when idle).

Backpressure works like ``asyncio.StreamWriter``: ``write``-style calls never block, and
``await drain()`` waits while more than ``high_water`` bytes are queued, so a slow disk slows the
session instead of growing memory.

A failed writer fails its recorder, and only it: every later call raises :class:`RecordingFailed`,
``drain`` raises it to whoever is waiting, and ``on_error`` is called on the loop so the owner can
end the session at once.

``max_bytes`` caps the input and output one session may record, so one session cannot fill the
disk: the ``output`` or ``input`` call that would pass it records nothing, calls ``on_error`` and
raises :class:`RecordingLimitReached` (as does every later one). The recording stays intact:
events and ``close`` still work, so the owner can say why the session ended and seal it.

``await synced()`` waits until everything queued so far has been handed to the OS. The bastion
awaits it before passing typed input to the target, so no command runs that is not on disk. The
worker wakes the event loop (``call_soon_threadsafe``, a self-pipe write) only when someone waits
in ``synced()`` or ``drain()``: output frames, which nobody waits for, cost no wake-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ._exceptions import RecordingFailed, RecordingLimitReached
from ._format import check_event_fields
from ._writer import FsyncPolicy, RecordingWriter, SealInfo, Sink

__all__ = ["AsyncRecorder"]

_OUTPUT, _INPUT, _RESIZE, _EVENT, _CLOSE = range(5)

_MIN_WORKERS = 2
"""Workers the pool keeps: two, so a checkpoint's fsync for one session never holds the rest."""
_MAX_WORKERS = 64
"""Upper bound on workers, reached only if that many sessions' disks hang at once."""
_STUCK_NS = 200_000_000
"""A worker busy with one batch for this long (a hung disk) makes the pool start another."""
_WATCH_NS = 100_000_000
"""How often the watch looks for workers held by a slow disk."""
_IDLE_EXIT_NS = 10_000_000_000
"""A worker beyond ``_MIN_WORKERS`` idle this long leaves."""
_KEEPER_NS = 100_000_000
"""The idle worker that keeps the timers wakes at least this often (a timer added by a worker
that a slow disk then holds is late by at most this much)."""


class _Pool:
    """Worker threads shared by all recorders of the process, and the queue of recorders to serve.

    ``cond``'s lock guards the pool and every recorder's queue, counters and flags. A recorder is
    in ``ready`` (or being served) at most once (``_scheduled``), so its items are written in order
    by one worker at a time. ``timers`` is a heap of ``(due_ns, seq, recorder)`` for checkpoint
    and coalescing deadlines of idle recorders; an entry is stale unless it equals the recorder's
    ``_timer``. One idle worker, the keeper, sleeps on ``keeper_cond`` until the earliest timer
    (at most ``_KEEPER_NS``); the other idle workers sleep on ``cond`` until work is scheduled,
    so a timer wakes one thread, not all of them.
    """

    def __init__(self, min_workers: int = _MIN_WORKERS, max_workers: int = _MAX_WORKERS) -> None:
        lock = threading.Lock()
        self.cond = threading.Condition(lock)
        self.keeper_cond = threading.Condition(lock)
        self.ready: deque[AsyncRecorder] = deque()
        self.timers: list[tuple[int, int, AsyncRecorder]] = []
        self._seq = itertools.count()
        self._min = min_workers
        self._max = max(min_workers, max_workers)
        self.workers = 0
        self._idle = 0  # idle workers on cond (the keeper not counted)
        self._keeper = False  # an idle worker waits on keeper_cond
        self._keeper_wake = 0  # when it wakes by itself (monotonic ns)
        self._busy: dict[int, int] = {}  # worker id -> monotonic ns it took its current batch
        self._ids = itertools.count()
        self._watching = False

    def schedule(self, rec: AsyncRecorder) -> None:
        """Queue ``rec`` for a worker (caller holds ``cond``; ``rec`` was not scheduled)."""
        self.ready.append(rec)
        if self._idle:
            self.cond.notify()
        elif self._keeper:
            self.keeper_cond.notify()
        elif self.workers < self._min:
            self._spawn()

    def add_timer(self, rec: AsyncRecorder, due: int) -> None:
        """Serve ``rec`` again at monotonic ``due`` ns (caller, a worker, holds ``cond``).

        Nobody is woken: the calling worker looks at the timers when it next goes idle, and the
        keeper wakes at least every ``_KEEPER_NS`` in case that worker is held by a slow disk.
        """
        if rec._timer is not None and rec._timer <= due:
            return  # an earlier one is set: serving early only ticks, which recomputes this
        rec._timer = due
        heapq.heappush(self.timers, (due, next(self._seq), rec))

    def _spawn(self) -> None:
        if not self._watching:
            self._watching = True
            threading.Thread(target=self._watch, name="zsp-recorder-watch", daemon=True).start()
        self.workers += 1
        n = next(self._ids)
        threading.Thread(target=self._work, args=(n,), name=f"zsp-recorder-{n}", daemon=True).start()

    def _due(self, now: int) -> None:
        """Move recorders whose timer is due to ``ready`` (caller holds ``cond``)."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            due, _, rec = heapq.heappop(timers)
            if rec._timer != due:
                continue  # stale
            rec._timer = None
            if not rec._scheduled and not rec._stopped:
                rec._scheduled = True
                self.ready.append(rec)

    def _idle_wait(self, now: int) -> None:
        """Sleep until work is scheduled or a timer is due (caller holds ``cond``)."""
        top = self.timers[0][0] if self.timers else None
        if not self._keeper:
            wake = now + _KEEPER_NS if top is None else min(top, now + _KEEPER_NS)
            self._keeper = True
            self._keeper_wake = wake
            self.keeper_cond.wait(max(wake - now, 0) / 1e9)
            self._keeper = False
        else:
            # An earlier timer than the keeper will wake for (added since it went to sleep):
            # this worker keeps it. Otherwise it waits for work.
            wake = top if top is not None and top < self._keeper_wake else now + _IDLE_EXIT_NS
            self._idle += 1
            self.cond.wait(max(wake - now, 0) / 1e9)
            self._idle -= 1

    def _watch(self) -> None:
        """Start another worker when recorders wait while the workers are held by slow disks
        (busy with one batch for ``_STUCK_NS``): without it, two hung disks would stall every
        session of the process. Fewer than ``_MIN_WORKERS`` unstuck workers count as held."""
        while True:
            time.sleep(_WATCH_NS / 1e9)
            with self.cond:
                if not self.ready or self._idle or self._keeper or self.workers >= self._max:
                    continue
                now = time.monotonic_ns()
                stuck = sum(1 for since in self._busy.values() if now - since >= _STUCK_NS)
                if self.workers - stuck < self._min:
                    self._spawn()

    def _work(self, me: int) -> None:
        cond = self.cond
        busy = self._busy
        while True:
            with cond:
                busy.pop(me, None)
                idle_since = time.monotonic_ns()
                while True:
                    now = time.monotonic_ns()
                    self._due(now)
                    if self.ready:
                        break
                    if self.workers > self._min and now - idle_since >= _IDLE_EXIT_NS:
                        self.workers -= 1
                        return
                    self._idle_wait(now)
                rec = self.ready.popleft()
                items = list(rec._queue)
                rec._queue.clear()
                busy[me] = time.monotonic_ns()
            rec._serve(items)


_FSYNC_THREADS = 4
"""Threads that run checkpoint fsyncs (a slow one holds a thread, not a recorder worker)."""


class _DeferredSyncSink:
    """A sink whose ``fsync`` runs on the fsync threads while the worker goes on.

    Used for :attr:`FsyncPolicy.CHECKPOINT` only (``ALWAYS`` keeps its fsync before ``synced()``
    returns). A checkpoint's frames are handed to the OS first, as before; their fsync follows a
    moment later on another thread, and covers everything written before it starts, so a request
    made while one is still queued is already served. ``close`` waits for the fsyncs in flight.
    A failed fsync fails the recording: ``error`` is set, ``on_error`` is called (the recorder
    wakes its worker, which fails the session), and every later call raises it.
    """

    def __init__(self, sink: Sink, on_error: Callable[[], None]) -> None:
        self._sink = sink
        self.name = sink.name
        self._on_error = on_error
        self._cond = threading.Condition()
        self._queued = False
        self._inflight = 0
        self.error: OSError | None = None

    def writev(self, buffers: Sequence[bytes]) -> None:
        if self.error is not None:
            raise self.error
        self._sink.writev(buffers)

    def fsync(self) -> None:
        if self.error is not None:
            raise self.error
        with self._cond:
            if self._queued:
                return
            self._queued = True
            self._inflight += 1
        try:
            _fsync_executor().submit(self._run)
        except RuntimeError:  # the executor is shut down (the interpreter is exiting): fsync here
            self._run()

    def _run(self) -> None:
        with self._cond:
            self._queued = False
        try:
            self._sink.fsync()
        except OSError as exc:
            self.error = exc
            self._on_error()
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            while self._inflight:
                self._cond.wait()
        try:
            self._sink.close()
        finally:
            if self.error is not None:
                raise self.error


_POOL = _Pool()
_FSYNC: concurrent.futures.ThreadPoolExecutor | None = None
_FSYNC_LOCK = threading.Lock()


def _fsync_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _FSYNC
    with _FSYNC_LOCK:
        if _FSYNC is None:
            _FSYNC = concurrent.futures.ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="zsp-fsync")
        return _FSYNC


def _reset_pool_in_child() -> None:
    # A forked child has none of the parent's workers (and maybe a held lock): start afresh.
    global _POOL, _FSYNC, _FSYNC_LOCK
    _POOL = _Pool()
    _FSYNC = None
    _FSYNC_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pool_in_child)


class AsyncRecorder:
    """Backpressured front of a writer for one session, served by the shared worker pool."""

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
        self._pool = _POOL
        self._lock = self._pool.cond  # guards the fields below that the worker touches
        self._queue: deque[tuple[Any, ...]] = deque()
        self._pending = 0
        self._scheduled = False  # in the pool's ready queue or being served
        self._stopped = False  # sealed or failed: never served again
        self._timer: int | None = None  # pool-clock ns of this recorder's live timer entry
        self._sync_wait = False  # a synced() waits: ack every batch
        self._drain_wait = False  # a drain() waits: ack once pending is at the low-water mark
        self._failed: RecordingFailed | None = None
        self._closing = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._done: asyncio.Future[SealInfo] = self._loop.create_future()
        self._queued = 0  # items queued so far (event loop side)
        self._written = 0  # items the worker has handed to the OS (updated under the lock)
        self._acked = asyncio.Event()
        self._synced_sink: _DeferredSyncSink | None = None
        if writer.fsync_policy is FsyncPolicy.CHECKPOINT:
            writer.wrap_sink(self._defer_fsync)
        with self._lock:
            # A writer with a deadline already (nothing should, but a timed checkpoint must not be
            # missed) is served once, which arms its timer.
            self._scheduled = True
            self._pool.schedule(self)

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
        admit, rather than a worker failing the recording with it later."""
        check_event_fields(fields)
        self._put((_EVENT, self._clock(), type, message, fields), 64 + len(message))

    async def drain(self) -> None:
        """Wait until the queue is below the low-water mark; raise if recording has failed."""
        if self._failed is not None:
            raise self._failed
        while self._pending > self._high:
            with self._lock:
                if self._pending <= self._high:
                    break
                self._drain_wait = True
                self._drained.clear()
            await self._drained.wait()
            if self._failed is not None:
                raise self._failed

    async def synced(self) -> None:
        """Wait until every item queued before this call has been written to the OS."""
        target = self._queued
        while True:
            if self._failed is not None:
                raise self._failed
            with self._lock:
                # Checked and flagged under the worker's lock: a batch written after this sees
                # the flag and acks; one written before it is counted here.
                if self._written >= target:
                    break
                self._sync_wait = True
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

    # --- event loop side --------------------------------------------------------------------

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
        with self._lock:
            self._queue.append(item)
            self._pending += size
            if not self._scheduled and not self._stopped:
                self._scheduled = True
                self._pool.schedule(self)
        self._queued += 1

    def _defer_fsync(self, sink: Sink) -> Sink:
        self._synced_sink = _DeferredSyncSink(sink, self._wake)
        return self._synced_sink

    def _wake(self) -> None:
        """Serve this recorder soon (a deferred fsync failed: the worker fails the session)."""
        with self._lock:
            if not self._scheduled and not self._stopped:
                self._scheduled = True
                self._pool.schedule(self)

    def _ack(self, drained: bool) -> None:
        self._sync_wait = False  # set again under the lock by a synced() still short of its target
        self._acked.set()
        if drained:
            self._drain_wait = False
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
        elif info is not None:
            # Sealed: everything queued is written. A synced() or drain() still waiting (a task
            # that raced close()) returns instead of waiting for an ack that never comes.
            self._acked.set()
            self._drained.set()
            if not self._done.done():
                self._done.set_result(info)

    # --- worker side ------------------------------------------------------------------------

    def _serve(self, items: list[tuple[Any, ...]]) -> None:
        """Write ``items`` (one worker at a time per recorder), tick, and hand the recorder back."""
        w = self._writer
        size = 0
        sealed: SealInfo | None = None
        failure: RecordingFailed | None = None
        deadline: int | None = None
        try:
            synced = self._synced_sink
            if synced is not None and synced.error is not None:
                err = synced.error
                raise RecordingFailed(path=w.name, reason=err.strerror or str(err))
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
                    sealed = w.close(item[2], item[3], item[1])
                    break
            if sealed is None:
                deadline = w.tick()
        except RecordingFailed as exc:
            failure = exc
        except Exception as exc:  # noqa: BLE001 - any bug here must fail this session closed, not hang it
            failure = RecordingFailed(path=w.name, reason=f"internal error: {exc!r}")
        pool = self._pool
        ack: bool | None = None  # None: no wake-up; else whether drain() waiters may go on
        with pool.cond:
            self._pending -= size
            if sealed is not None or failure is not None:
                if sealed is not None:
                    self._written += len(items)  # a synced() waiting for the last items returns
                self._stopped = True
                self._scheduled = False
                self._queue.clear()
                self._timer = None
            else:
                self._written += len(items)
                drained = self._drain_wait and self._pending <= self._low
                if self._sync_wait or drained:
                    ack = drained
                if deadline is not None:
                    pool.add_timer(self, time.monotonic_ns() + max(0, deadline - self._clock()))
                synced = self._synced_sink
                if self._queue or (synced is not None and synced.error is not None):
                    # Still scheduled: served after the others waiting. A deferred fsync that
                    # failed while this batch was written found the recorder scheduled, so its
                    # _wake() did nothing: the next serve fails the session now, not at the next
                    # frame or timer.
                    pool.ready.append(self)
                else:
                    self._scheduled = False
        try:
            if sealed is not None or failure is not None:
                self._loop.call_soon_threadsafe(self._finish, sealed, failure)
            elif ack is not None:
                self._loop.call_soon_threadsafe(self._ack, ack)
        except RuntimeError:
            pass  # the owner's loop is closed: nobody is left to tell
