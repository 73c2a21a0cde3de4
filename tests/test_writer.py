"""The synchronous writer: coalescing, splitting, checkpoints, durability, fail-closed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from recorder import (
    MAX_DATA_PER_FRAME,
    FileSink,
    FrameKind,
    RecordingFailed,
    RecordingWriter,
    Resize,
    SessionMeta,
    SigningKey,
)
from replay import Outcome, load, verify
from tests.sinks import LimitedSink

META = SessionMeta(user="alice", target="local", login="alice", term="xterm", cols=80, rows=24, host="h")
MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def frames_of(path: Path, key: SigningKey):
    return load(path, [key.public])

def test_roundtrip_every_kind(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "r.zsprec"
    w = RecordingWriter(FileSink(p), key, META, coalesce_ms=0)
    w.output(b"\x1b[1mhi\xe2\x82")  # raw bytes, including a split UTF-8 sequence
    w.output(b"\xac")
    w.input(b"ls\r")
    w.resize(120, 40)
    w.event("note", "reviewer note", ticket="INC-1", count=2, flag=True)
    info = w.close(3, "exit")
    frames, report = frames_of(p, key)
    assert report.outcome is Outcome.VALID
    assert report.head == info.head and report.frames == info.frames
    kinds = [f.kind for f in frames]
    assert kinds[0] is FrameKind.HEADER and kinds[1] is FrameKind.CHECKPOINT
    assert kinds[-2:] == [FrameKind.SEAL, FrameKind.CHECKPOINT]
    out = b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT)
    assert out == b"\x1b[1mhi\xe2\x82\xac"
    assert [f.data for f in frames if f.kind is FrameKind.INPUT] == [b"ls\r"]
    assert [f.data for f in frames if f.kind is FrameKind.RESIZE] == [Resize(120, 40)]
    ev = next(f.data for f in frames if f.kind is FrameKind.EVENT)
    assert ev.type == "note" and ev.fields == {"ticket": "INC-1", "count": 2, "flag": True}
    h = frames[0].data
    assert (h.user, h.target, h.login, h.term, h.cols, h.rows) == ("alice", "local", "alice", "xterm", 80, 24)
    assert h.signer_fingerprint == key.public.fingerprint
    assert report.seal.exit_status == 3 and report.seal.output_bytes == 9 and report.seal.input_bytes == 3
    assert [f.t_us for f in frames] == sorted(f.t_us for f in frames)


def test_output_coalesces_within_window_only(tmp_path: Path, key: SigningKey) -> None:
    clock = Clock()
    p = tmp_path / "c.zsprec"
    w = RecordingWriter(FileSink(p), key, META, coalesce_ms=20, clock=clock)
    w.output(b"a")
    clock.now += 5 * MS
    w.output(b"b")  # within 20 ms of "a": same frame
    clock.now += 30 * MS
    w.output(b"c")  # window over: "ab" is written, "c" starts a new frame
    w.input(b"x")  # any other frame flushes pending output first, so order is kept
    clock.now += 1 * MS
    w.output(b"d")
    clock.now += 25 * MS
    w.tick()
    frames, report = frames_of(p, key)  # unsealed, but "d" was flushed by tick
    seq = [(f.kind, f.data) for f in frames if f.kind in (FrameKind.OUTPUT, FrameKind.INPUT)]
    assert seq == [(FrameKind.OUTPUT, b"ab"), (FrameKind.OUTPUT, b"c"), (FrameKind.INPUT, b"x"),
                   (FrameKind.OUTPUT, b"d")]
    assert report.outcome is Outcome.INCOMPLETE


def test_large_output_is_split_and_checkpointed_by_count(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "big.zsprec"
    w = RecordingWriter(FileSink(p), key, META, checkpoint_frames=4, coalesce_ms=20)
    blob = bytes(range(256)) * (MAX_DATA_PER_FRAME * 20 // 256 + 3)
    w.output(blob)  # one call building ~20 frames must still checkpoint every 4
    w.close(0, "exit")
    frames, report = frames_of(p, key)
    assert report.outcome is Outcome.VALID
    outs = [f.data for f in frames if f.kind is FrameKind.OUTPUT]
    assert b"".join(outs) == blob
    assert max(len(o) for o in outs) == MAX_DATA_PER_FRAME
    run = 0
    for f in frames:
        run = 0 if f.kind is FrameKind.CHECKPOINT else run + 1
        assert run <= 4


def test_time_based_checkpoint_on_tick(tmp_path: Path, key: SigningKey) -> None:
    clock = Clock()
    p = tmp_path / "t.zsprec"
    w = RecordingWriter(FileSink(p), key, META, checkpoint_ms=1000, coalesce_ms=0, clock=clock)
    w.input(b"a")
    _, before = frames_of(p, key)
    clock.now += 999 * MS
    w.tick()
    _, still = frames_of(p, key)
    assert still.signed_frames == before.signed_frames
    clock.now += 2 * MS
    w.tick()
    _, after = frames_of(p, key)
    assert after.signed_frames == after.frames - 1  # everything but the new checkpoint itself


def test_disk_full_fails_closed_and_stays_failed(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "full.zsprec"
    w = RecordingWriter(LimitedSink(p, limit=4000), key, META, coalesce_ms=0)
    with pytest.raises(RecordingFailed) as exc:
        for _ in range(1000):
            w.output(b"x" * 100)
    assert "No space left" in str(exc.value)
    for call in (lambda: w.output(b"y"), lambda: w.input(b"y"), lambda: w.close(0, "exit"), w.tick):
        with pytest.raises(RecordingFailed):
            call()
    r = verify(p, [key.public])
    assert r.outcome is Outcome.INCOMPLETE  # what reached the disk is intact


def test_cannot_start_on_full_disk(tmp_path: Path, key: SigningKey) -> None:
    with pytest.raises(RecordingFailed):
        RecordingWriter(LimitedSink(tmp_path / "x.zsprec", limit=10), key, META)


def test_never_reopens_an_existing_file(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "r.zsprec"
    RecordingWriter(FileSink(p), key, META).close(0, "exit")
    with pytest.raises(FileExistsError):
        FileSink(p)


def test_time_never_goes_backwards(tmp_path: Path, key: SigningKey) -> None:
    clock = Clock()
    p = tmp_path / "r.zsprec"
    w = RecordingWriter(FileSink(p), key, META, coalesce_ms=0, clock=clock)
    w.input(b"a", at_ns=clock.now + 50 * MS)
    w.input(b"b", at_ns=clock.now + 10 * MS)  # timestamps from a racing reader
    w.close(0, "exit")
    frames, report = frames_of(p, key)
    assert report.outcome is Outcome.VALID
    ts = [f.t_us for f in frames if f.kind is FrameKind.INPUT]
    assert ts == [50_000, 50_000]


def test_long_text_fields_are_clipped_not_fatal(tmp_path: Path, key: SigningKey) -> None:
    p = tmp_path / "r.zsprec"
    meta = SessionMeta(user="u" * 10_000, target="local", login="l", host="h")
    w = RecordingWriter(FileSink(p), key, meta)
    w.event("note", "m" * 10_000)
    w.close(0, "x" * 10_000)
    assert verify(p, [key.public]).outcome is Outcome.VALID


def test_stream_source(tmp_path: Path, key: SigningKey, small_recording: bytes) -> None:
    assert verify(io.BytesIO(small_recording), [key.public]).outcome is Outcome.VALID
