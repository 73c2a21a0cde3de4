"""AsyncRecorder's shared worker pool: many sessions, few threads, each session still on its own.

Every recorder of a process is served by a small pool of worker threads instead of a thread of
its own. These tests hold the pool to the per-session promises: order, failure isolation, a hung
disk holding only its own session, and ``synced()`` still exact although the worker no longer
wakes the event loop after every batch.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from recorder import AsyncRecorder, FileSink, FrameKind, RecordingFailed, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, load, verify
from tests.sinks import FaultSink, GateSink, LimitedSink

META = SessionMeta(user="alice", target="local", login="alice", host="h")


def recorder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("zsp-recorder-"))


async def test_many_sessions_share_few_threads_and_keep_their_order(tmp_path: Path, key: SigningKey) -> None:
    n = 100
    paths = [tmp_path / f"s{i}.zsprec" for i in range(n)]
    recs = [AsyncRecorder(RecordingWriter(FileSink(p), key, META, autoflush=False)) for p in paths]
    sent: list[list[bytes]] = [[] for _ in range(n)]
    typed: list[list[bytes]] = [[] for _ in range(n)]
    rng = random.Random(14)
    for step in range(3000):  # interleaved across sessions, as a busy bastion's loop does
        i = rng.randrange(n)
        if step % 7 == 0:
            data = b"k%d;" % step
            typed[i].append(data)
            recs[i].input(data)
        else:
            data = os.urandom(rng.randrange(1, 200))
            sent[i].append(data)
            recs[i].output(data)
        if step % 50 == 0:
            await asyncio.sleep(0)
    assert recorder_threads() < n // 5  # not a thread per session
    infos = await asyncio.gather(*(r.close(0, "exit") for r in recs))
    for i, p in enumerate(paths):
        frames, report = load(p, [key.public])
        assert report.outcome is Outcome.VALID and report.head == infos[i].head
        assert b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT) == b"".join(sent[i])
        assert [f.data for f in frames if f.kind is FrameKind.INPUT] == typed[i]


async def test_one_failing_writer_fails_only_its_session(tmp_path: Path, key: SigningKey) -> None:
    errors: list[RecordingFailed] = []
    bad = AsyncRecorder(RecordingWriter(LimitedSink(tmp_path / "bad.zsprec", 4000), key, META, autoflush=False),
                        on_error=errors.append)
    good_errors: list[RecordingFailed] = []
    good_path = tmp_path / "good.zsprec"
    good = AsyncRecorder(RecordingWriter(FileSink(good_path), key, META, autoflush=False),
                         on_error=good_errors.append)
    with pytest.raises(RecordingFailed):
        for i in range(1000):
            good.input(b"g%d" % i)
            await good.synced()
            bad.input(b"b" * 100)
            await bad.synced()
    assert errors and "No space left" in errors[0].reason
    for i in range(100):  # the other session goes on, on the same workers
        good.input(b"after%d" % i)
        await good.synced()
    await good.close(0, "exit")
    assert not good_errors
    frames, report = load(good_path, [key.public])
    assert report.outcome is Outcome.VALID
    assert [f.data for f in frames if f.kind is FrameKind.INPUT][-1] == b"after99"


async def test_hung_disks_hold_only_their_own_sessions(tmp_path: Path, key: SigningKey) -> None:
    hung: list[tuple[GateSink, AsyncRecorder]] = []
    try:
        for i in range(4):  # more hung disks than the pool keeps workers
            sink = GateSink(tmp_path / f"hung{i}.zsprec")
            sink.gate.set()
            w = RecordingWriter(sink, key, META, autoflush=False)
            sink.gate.clear()
            sink.entered.clear()
            rec = AsyncRecorder(w)
            rec.input(b"ls\r")
            await asyncio.to_thread(sink.entered.wait, 10)  # a worker is now stuck in its write
            hung.append((sink, rec))
        p = tmp_path / "fine.zsprec"
        rec = AsyncRecorder(RecordingWriter(FileSink(p), key, META, autoflush=False))
        for i in range(20):
            rec.input(b"echo %d\r" % i)
            await asyncio.wait_for(rec.synced(), 10)  # served by another worker
        waiting = [asyncio.create_task(h.synced()) for _, h in hung]
        await asyncio.sleep(0.1)
        assert not any(t.done() for t in waiting)  # the hung sessions' input is not on disk
        await rec.close(0, "exit")
        assert verify(p, [key.public]).outcome is Outcome.VALID
    finally:
        for sink, _ in hung:
            sink.gate.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 10)
    for sink, h in hung:
        await asyncio.wait_for(h.close(0, "exit"), 10)
        assert verify(sink.name, [key.public]).outcome is Outcome.VALID


async def test_synced_is_exact_without_an_ack_per_batch(tmp_path: Path, key: SigningKey) -> None:
    """Output frames no longer wake the loop; input awaited with synced() is on disk every time."""
    n = 20
    paths = [tmp_path / f"t{i}.zsprec" for i in range(n)]
    recs = [AsyncRecorder(RecordingWriter(FileSink(p), key, META, autoflush=False, coalesce_ms=50))
            for p in paths]

    async def session(i: int) -> None:
        rec = recs[i]
        with open(paths[i], "rb") as f:
            for k in range(60):
                rec.output(os.urandom(64))  # nobody waits for these
                rec.output(b"prompt$ ")
                marker = b"<%d:%d>" % (i, k)
                rec.input(marker)
                await rec.synced()
                f.seek(0)
                assert marker in f.read()  # handed to the OS before synced() returned
                if k % 10 == 0:
                    await asyncio.sleep(0.001)

    await asyncio.gather(*(session(i) for i in range(n)))
    for rec, p in zip(recs, paths, strict=True):
        await rec.close(0, "exit")
        assert verify(p, [key.public]).outcome is Outcome.VALID


async def test_idle_sessions_all_get_timed_checkpoints(tmp_path: Path, key: SigningKey) -> None:
    """The pool's timers stand in for each thread's timed wait: every idle session is signed."""
    n = 30
    paths = [tmp_path / f"i{i}.zsprec" for i in range(n)]
    recs = [AsyncRecorder(RecordingWriter(FileSink(p), key, META, checkpoint_ms=50, coalesce_ms=10,
                                          autoflush=False)) for p in paths]
    for i, rec in enumerate(recs):
        rec.output(b"prompt %d$ " % i)
    for i, p in enumerate(paths):
        for _ in range(1000):  # no new frames arrive: only the timers can sign what is there
            r = verify(p, [key.public])
            if r.frames > 2 and r.signed_frames == r.frames - 1:
                break
            await asyncio.sleep(0.01)
        frames, r = load(p, [key.public])
        assert r.outcome is Outcome.INCOMPLETE and r.signed_frames == r.frames - 1
        assert [f.data for f in frames if f.kind is FrameKind.OUTPUT] == [b"prompt %d$ " % i]
    await asyncio.gather(*(r.close(0, "exit") for r in recs))


async def test_a_failing_checkpoint_fsync_fails_only_its_session(tmp_path: Path, key: SigningKey) -> None:
    """Checkpoint fsyncs run off the workers; an error from one still fails that session closed."""
    bad_errors: list[RecordingFailed] = []
    bad_sink = FaultSink(tmp_path / "eio.zsprec", "fsync", errno.EIO, after=1)  # the header's passes
    bad = AsyncRecorder(RecordingWriter(bad_sink, key, META, autoflush=False, checkpoint_frames=4),
                        on_error=bad_errors.append)
    good_path = tmp_path / "ok.zsprec"
    good = AsyncRecorder(RecordingWriter(FileSink(good_path), key, META, autoflush=False, checkpoint_frames=4))
    with pytest.raises(RecordingFailed):
        for i in range(1000):
            good.input(b"g%d" % i)
            await good.synced()
            bad.input(b"b%d" % i)
            await bad.synced()
            await asyncio.sleep(0.001)
    assert bad_errors and "Input/output error" in bad_errors[0].reason
    writes = bad_sink.calls["writev"]
    with pytest.raises(RecordingFailed):
        await bad.close(0, "exit")
    assert bad_sink.calls["writev"] == writes  # nothing retried after the failure
    for i in range(50):
        good.input(b"after%d" % i)
        await good.synced()
    await good.close(0, "exit")
    assert verify(good_path, [key.public]).outcome is Outcome.VALID


async def test_waiters_racing_close_are_woken_by_the_seal(tmp_path: Path, key: SigningKey) -> None:
    """A synced() or drain() still waiting when close() seals the batch it waits for returns (the
    seal is the ack: no other comes), and synced() after close() returns at once."""
    sink = GateSink(tmp_path / "race.zsprec")
    sink.gate.set()  # let the header through
    w = RecordingWriter(sink, key, META, autoflush=False, coalesce_ms=0)
    sink.gate.clear()
    sink.entered.clear()
    rec = AsyncRecorder(w, high_water=64)
    rec.output(b"first")
    await asyncio.to_thread(sink.entered.wait, 10)  # the worker is held in this write
    rec.input(b"typed")
    rec.output(b"x" * 200)  # above the high-water mark: drain() waits
    waiting = [asyncio.create_task(rec.synced()), asyncio.create_task(rec.drain())]
    await asyncio.sleep(0)
    closing = asyncio.create_task(rec.close(0, "exit"))  # queued with what they wait for
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    sink.gate.set()
    info = await asyncio.wait_for(closing, 10)
    await asyncio.wait_for(asyncio.gather(*waiting), 10)
    await asyncio.wait_for(rec.synced(), 10)
    await asyncio.wait_for(rec.drain(), 10)
    frames, report = load(sink.name, [key.public])
    assert report.outcome is Outcome.VALID and report.head == info.head
    assert [f.data for f in frames if f.kind is FrameKind.INPUT] == [b"typed"]


class _JitterSink(FileSink):
    """A disk with uneven latency: some writes and fsyncs take a few milliseconds."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        super().__init__(path, sync_dir=False)
        self.rng = rng

    def writev(self, buffers: Sequence[bytes]) -> None:
        if self.rng.random() < 0.3:
            time.sleep(self.rng.random() / 100)
        super().writev(buffers)

    def fsync(self) -> None:
        if self.rng.random() < 0.3:
            time.sleep(0.005)
        super().fsync()


async def test_random_interleavings_of_waits_and_close_never_hang(tmp_path: Path, key: SigningKey) -> None:
    """Liveness under the races the lazy ack could lose: per session, two output relays in drain()
    and an input relay in synced() (as the bastion's relay runs them) over a jittery disk with
    checkpoint fsyncs on the fsync threads, then close(). Every wait has a generous bound (30 s):
    a lost wake-up shows as a TimeoutError, not as a slow test."""
    bound = 30

    async def session(i: int) -> None:
        rng = random.Random(i)
        p = tmp_path / f"r{i}.zsprec"
        high = rng.choice([1024, 4096, 65536])
        w = RecordingWriter(_JitterSink(p, random.Random(-i)), key, META, autoflush=False,
                            checkpoint_frames=rng.choice([2, 8, 64]), checkpoint_ms=rng.choice([5, 50]),
                            coalesce_ms=rng.choice([0, 1, 10]))
        rec = AsyncRecorder(w, high_water=high)
        typed = 0

        async def output(rounds: int) -> None:
            for _ in range(rounds):
                rec.output(os.urandom(rng.randrange(1, high)))
                await asyncio.wait_for(rec.drain(), bound)
                if rng.random() < 0.2:
                    await asyncio.sleep(0)

        async def typing(rounds: int) -> None:
            nonlocal typed
            for _ in range(rounds):
                rec.input(b"k")
                typed += 1
                await asyncio.wait_for(rec.synced(), bound)
                if rng.random() < 0.5:
                    await asyncio.sleep(rng.random() / 500)

        await asyncio.gather(output(rng.randrange(20, 80)), output(rng.randrange(20, 80)),
                             typing(rng.randrange(5, 40)))
        info = await asyncio.wait_for(rec.close(0, "exit"), bound)
        frames, report = load(p, [key.public])
        assert report.outcome is Outcome.VALID and report.head == info.head
        assert sum(len(f.data) for f in frames if f.kind is FrameKind.INPUT) == typed

    for round_ in range(2):
        await asyncio.gather(*(session(round_ * 100 + i) for i in range(25)))
