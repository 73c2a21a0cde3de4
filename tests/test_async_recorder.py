"""AsyncRecorder: the event loop never waits on the disk, memory is bounded, failures surface."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from recorder import AsyncRecorder, FileSink, FrameKind, RecordingFailed, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, load, verify
from tests.sinks import GateSink, LimitedSink, SlowSink

META = SessionMeta(user="alice", target="local", login="alice", host="h")


def read_all(path: Path, key: SigningKey):
    return load(path, [key.public])

async def test_records_everything_in_order(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "a.zsprec"
    rec = AsyncRecorder(RecordingWriter(FileSink(p), key, META, autoflush=False))
    sent = []
    for i in range(2000):
        chunk = os.urandom(1 + i % 300)
        sent.append(chunk)
        rec.output(chunk)
        if i % 10 == 0:
            rec.input(b"%d" % i)
        await rec.drain()
    rec.resize(100, 30)
    rec.event("grant.warning", "grant ends in 5 minutes", seconds_left=300)
    info = await rec.close(0, "exit")
    frames, report = read_all(p, key)
    assert report.outcome is Outcome.VALID and report.head == info.head
    assert b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT) == b"".join(sent)
    assert [f.data for f in frames if f.kind is FrameKind.INPUT] == [b"%d" % i for i in range(0, 2000, 10)]
    assert frames[-3].kind is FrameKind.EVENT


async def test_backpressure_bounds_queued_bytes_on_slow_storage(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "slow.zsprec"
    high = 256 * 1024
    rec = AsyncRecorder(RecordingWriter(SlowSink(p, 0.005), key, META, autoflush=False), high_water=high)
    chunk = b"z" * 16384
    peak = 0
    for _ in range(400):  # 6.4 MB through a disk that takes 5 ms per write
        rec.output(chunk)
        peak = max(peak, rec.pending_bytes)
        await rec.drain()
    await rec.close(0, "exit")
    assert peak <= high + len(chunk)
    _, report = read_all(p, key)
    assert report.outcome is Outcome.VALID and report.seal.output_bytes == 400 * len(chunk)


async def test_event_loop_runs_while_the_disk_hangs(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "gate.zsprec"
    sink = GateSink(p)
    sink.gate.set()  # let the header through
    w = RecordingWriter(sink, key, META, autoflush=False)
    sink.gate.clear()
    sink.entered.clear()
    rec = AsyncRecorder(w)
    rec.output(b"first")
    await asyncio.to_thread(sink.entered.wait, 10)  # the worker is now stuck in write()
    ran = []

    async def other_work() -> None:
        ran.append(True)

    for _ in range(100):  # the loop keeps serving other coroutines and accepting output
        await other_work()
        rec.output(b"more")
    assert len(ran) == 100
    sink.gate.set()
    await rec.close(0, "exit")
    assert verify(p, [key.public]).outcome is Outcome.VALID


async def test_disk_full_fails_closed(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "full.zsprec"
    errors: list[RecordingFailed] = []
    rec = AsyncRecorder(RecordingWriter(LimitedSink(p, 20_000), key, META, autoflush=False),
                        on_error=errors.append)
    with pytest.raises(RecordingFailed):
        for _ in range(10_000):
            rec.output(b"x" * 512)
            await rec.drain()
            await asyncio.sleep(0)
    assert errors and "No space left" in errors[0].reason
    with pytest.raises(RecordingFailed):
        rec.output(b"after")
    with pytest.raises(RecordingFailed):
        await rec.close(0, "exit")
    assert verify(p, [key.public]).outcome is Outcome.INCOMPLETE


async def test_idle_session_gets_a_timed_checkpoint(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "idle.zsprec"
    rec = AsyncRecorder(RecordingWriter(FileSink(p), key, META, checkpoint_ms=50, coalesce_ms=10,
                                        autoflush=False))
    rec.output(b"prompt$ ")
    snap = tmp_path / "snap.zsprec"
    for _ in range(500):  # poll: no new frames arrive, the worker's timer must sign them
        await asyncio.sleep(0.01)
        shutil.copy(p, snap)
        r = verify(snap, [key.public])
        if r.signed_frames == r.frames - 1 and r.frames > 2:
            break
        snap.unlink()
    frames, r = read_all(snap, key)
    assert r.outcome is Outcome.INCOMPLETE
    assert [f.data for f in frames if f.kind is FrameKind.OUTPUT] == [b"prompt$ "]
    assert r.signed_frames == r.frames - 1
    await rec.close(0, "exit")


async def test_synced_waits_for_the_disk_and_reports_failure(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "gate.zsprec"
    sink = GateSink(p)
    sink.gate.set()
    w = RecordingWriter(sink, key, META, autoflush=False)
    sink.gate.clear()
    rec = AsyncRecorder(w)
    rec.input(b"rm -rf /tmp/x\r")
    waiter = asyncio.create_task(rec.synced())
    await asyncio.sleep(0.2)
    assert not waiter.done()  # the keystroke is not on disk yet, so it must not be relayed
    sink.gate.set()
    await asyncio.wait_for(waiter, 10)
    await rec.close(0, "exit")

    p2 = tmp_path / "full.zsprec"
    rec2 = AsyncRecorder(RecordingWriter(LimitedSink(p2, 3000), key, META, autoflush=False))
    with pytest.raises(RecordingFailed):
        for _ in range(100):
            rec2.input(b"y" * 100)
            await rec2.synced()
