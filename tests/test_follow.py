"""Following a recording while it is written: frames appear as they are written, verified, and the
follow ends at the seal (or when told to stop), whatever sizes the file grows by."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from recorder import FileSink, Frame, FrameKind, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, VerificationReport, follow, load, located_frames
from tests.helpers import write_recording


def _drain(gen) -> tuple[list[Frame], VerificationReport]:  # type: ignore[no-untyped-def]
    frames = []
    try:
        while True:
            frames.append(next(gen))
    except StopIteration as end:
        return frames, end.value


def test_frames_appear_as_written_and_the_follow_ends_at_the_seal(tmp_path: Path, key: SigningKey) -> None:
    path = tmp_path / "live.zsprec"
    started = threading.Event()
    done = threading.Event()
    seen_at: dict[bytes, float] = {}
    written_at: dict[bytes, float] = {}

    def writer() -> None:
        w = RecordingWriter(
            FileSink(path, sync_dir=False),
            key,
            SessionMeta(user="alice", target="db1", login="root", cols=80, rows=24),
            checkpoint_ms=50,
            coalesce_ms=0,
        )
        started.set()
        for i in range(25):
            chunk = b"chunk-%02d\r\n" % i
            w.output(chunk)
            w.flush()
            written_at[chunk] = time.monotonic()
            time.sleep(0.02)
            w.tick()
        w.close(0, "exit")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    gen = follow(path, [key.public], poll=0.01)
    frames: list[Frame] = []
    before_end = 0
    try:
        while True:
            frame = next(gen)
            frames.append(frame)
            if frame.kind is FrameKind.OUTPUT and isinstance(frame.data, bytes):
                seen_at[frame.data] = time.monotonic()
                before_end += not done.is_set()
    except StopIteration as end:
        report = end.value
    t.join(10)
    assert report.outcome is Outcome.VALID
    assert [f.data for f in frames if f.kind is FrameKind.OUTPUT] == [b"chunk-%02d\r\n" % i for i in range(25)]
    assert before_end >= 20  # seen while the session was still going, not after it
    lag = sorted(seen_at[c] - written_at[c] for c in written_at)
    assert lag[len(lag) // 2] < 0.5
    assert frames[-1].kind is FrameKind.CHECKPOINT and frames[-2].kind is FrameKind.SEAL
    full, full_report = load(path, [key.public])
    assert frames == full and full_report.head == report.head


@pytest.mark.parametrize("seed", range(6))
def test_any_growth_pattern_yields_the_same_frames(tmp_path: Path, key: SigningKey, seed: int) -> None:
    """The file grows in random pieces, splitting the preamble, length prefixes and heads."""
    whole = write_recording(tmp_path / "src.zsprec", key, seed=seed, frames=60).read_bytes()
    path = tmp_path / "growing.zsprec"
    path.write_bytes(b"")
    rnd = random.Random(seed)

    def grow() -> None:
        pos = 0
        with open(path, "ab", buffering=0) as f:
            while pos < len(whole):
                n = rnd.choice([1, 2, 3, 5, 31, 200, 4096])
                f.write(whole[pos : pos + n])
                pos += n
                time.sleep(rnd.choice([0, 0, 0.001, 0.01]))

    t = threading.Thread(target=grow)
    t.start()
    items, report = _drain(located_frames(path, [key.public], follow=True, poll=0.002))
    t.join(10)
    expected, expected_report = load(tmp_path / "src.zsprec", [key.public])
    assert [i.frame for i in items] == expected
    assert report.outcome is Outcome.VALID and report.head == expected_report.head
    # the places are right: each frame's bytes are where it says
    for item in items:
        assert whole[item.end - 32 : item.end] == item.head
    assert items[-1].end == len(whole)


def test_stop_ends_an_unsealed_follow(tmp_path: Path, key: SigningKey) -> None:
    path = write_recording(tmp_path / "cut.zsprec", key, frames=30, seal=False)
    stop_at = time.monotonic() + 0.5
    t0 = time.monotonic()
    frames, report = _drain(follow(path, [key.public], poll=0.01, stop=lambda: time.monotonic() > stop_at))
    assert 0.4 < time.monotonic() - t0 < 5
    assert report.outcome is Outcome.INCOMPLETE
    assert frames == load(path, [key.public])[0]


def test_a_forged_frame_appended_while_following_ends_it_corrupt(tmp_path: Path, key: SigningKey) -> None:
    """An attacker appending to a live file cannot make the follow hang or accept the frame."""
    whole = write_recording(tmp_path / "src.zsprec", key, frames=20, seal=False).read_bytes()
    path = tmp_path / "live.zsprec"
    path.write_bytes(whole)

    def forge() -> None:
        time.sleep(0.2)
        with open(path, "ab") as f:
            f.write(b"\x00\x00\x00\x05hello" + bytes(32))

    t = threading.Thread(target=forge)
    t.start()
    frames, report = _drain(follow(path, [key.public], poll=0.01, stop=lambda: False))
    t.join()
    assert report.outcome is Outcome.CORRUPT
    assert frames == load(tmp_path / "src.zsprec", [key.public])[0]
