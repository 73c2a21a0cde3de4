"""Honest sessions verify VALID whatever the interleaving of output, input, resize, event and tick.

zsp 0.1.0's writer signed a due checkpoint while an output chunk was still held for coalescing,
then wrote the chunk after it with its earlier time: honest sessions that printed periodically
verified CORRUPT (time-backwards). These tests pin the fix (the held chunk goes out before the
checkpoint that covers it) and how recordings of the old writer are told apart from tampering.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import MAX_DATA_PER_FRAME, FileSink, FrameKind, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, Problem, load, verify
from tests.helpers import SEED_A

META = SessionMeta(user="alice", target="local", login="alice", term="xterm", cols=80, rows=24, host="h")
MS = 1_000_000
KEY = SigningKey.from_seed(SEED_A, comment="test-a")
LONG = os.environ.get("ZSP_LONG") == "1"


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


class LegacyWriter(RecordingWriter):
    """The 0.1.0 writer's checkpoint, verbatim: it did not write held output first."""

    def _checkpoint(self, t_us: int) -> None:
        self._out += self._chain.checkpoint(t_us, self._wall() // 1000)
        self._unsigned = 0
        self._sync_due = True


def _issue_case(tmp_path: Path, cls: type[RecordingWriter] = RecordingWriter) -> Path:
    """Output at 2.110 s held for coalescing, ticks at 2.120 s and 2.130 s, first frame at 0.1 s."""
    clock = Clock()
    start = clock.now
    path = tmp_path / f"{cls.__name__}.zsprec"
    w = cls(FileSink(path), KEY, META, clock=clock)
    for at_ms, op in [(100, "out"), (120, "tick"), (2110, "out"), (2120, "tick"), (2130, "tick"), (2500, "out")]:
        clock.now = start + at_ms * MS
        if op == "out":
            w.output(b"tick\r\n")
        else:
            w.tick()
    clock.now = start + 2600 * MS
    w.close(0, "exit")
    return path


def test_held_output_goes_out_before_the_checkpoint_that_covers_it(tmp_path: Path) -> None:
    frames, report = load(_issue_case(tmp_path), [KEY.public])
    assert report.outcome is Outcome.VALID, report
    times = [f.t_us for f in frames]
    assert times == sorted(times)
    kinds = [f.kind for f in frames]
    # The chunk seen at 2.110 s is written, then the checkpoint due at 2.120 s signs it.
    i = times.index(2_110_000)
    assert kinds[i] is FrameKind.OUTPUT and kinds[i + 1] is FrameKind.CHECKPOINT
    assert b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT) == b"tick\r\n" * 3


# --- arbitrary interleavings on a fake clock ------------------------------------------------------

_SIZES = st.one_of(
    st.integers(1, 64), st.integers(65, 4096), st.sampled_from([MAX_DATA_PER_FRAME // 2, MAX_DATA_PER_FRAME + 7])
)
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["output", "output", "output", "input", "resize", "event", "tick", "tick"]),
        # ms the clock moves before the op: mostly within the coalescing and checkpoint windows
        st.one_of(st.sampled_from([0, 1, 5, 10, 15, 25, 40]), st.integers(0, 2500), st.just(2010)),
        st.integers(0, 40),  # ms the caller's timestamp lags the clock (AsyncRecorder stamps on enqueue)
        _SIZES,
    ),
    max_size=40,
)


@settings(
    max_examples=1000 if LONG else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=_OPS,
    coalesce_ms=st.sampled_from([50, 20, 1, 0]),
    checkpoint_ms=st.sampled_from([30, 2000, 1]),
    checkpoint_frames=st.sampled_from([1, 2, 5, 256]),
    stamp=st.booleans(),
)
def test_any_interleaving_verifies_valid(
    tmp_path_factory, ops, coalesce_ms: int, checkpoint_ms: int, checkpoint_frames: int, stamp: bool
) -> None:
    path = tmp_path_factory.mktemp("order") / "r.zsprec"
    clock = Clock()
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        KEY,
        META,
        clock=clock,
        coalesce_ms=coalesce_ms,
        checkpoint_ms=checkpoint_ms,
        checkpoint_frames=checkpoint_frames,
    )
    out, inp = bytearray(), bytearray()
    last_at = clock.now
    for n, (op, advance_ms, lag_ms, size) in enumerate(ops):
        clock.now += advance_ms * MS
        # Stamped times never go backwards (one queue, in order) and never lead the clock.
        at = max(last_at, clock.now - lag_ms * MS) if stamp else None
        last_at = at or clock.now
        data = bytes([65 + n % 26]) * size
        if op == "output":
            w.output(data, at)
            out += data
        elif op == "input":
            w.input(data[:64], at)
            inp += data[:64]
        elif op == "resize":
            w.resize(80 + n, 24, at)
        elif op == "event":
            w.event("note", f"event {n}", at, n=n)
        else:
            w.tick()
        # Every prefix on disk is an honest, unfinished recording: never CORRUPT.
        prefix = verify(path, [KEY.public])
        assert prefix.outcome is not Outcome.CORRUPT, (n, op, prefix)
    clock.now += 1 * MS
    w.close(0, "exit")
    frames, report = load(path, [KEY.public])
    assert report.outcome is Outcome.VALID, report
    assert b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT) == bytes(out)
    assert b"".join(f.data for f in frames if f.kind is FrameKind.INPUT) == bytes(inp)
    assert [f.t_us for f in frames] == sorted(f.t_us for f in frames)


class MemorySink:
    name = "<memory>"

    def __init__(self) -> None:
        self.buf = bytearray()

    def writev(self, buffers) -> None:
        for b in buffers:
            self.buf += b

    def fsync(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_every_short_sequence_around_the_windows_verifies_valid() -> None:
    """Exhaustive where hypothesis would have to be lucky: every sequence of three operations whose
    gaps straddle the coalescing (50 ms) and checkpoint (30 ms) windows, written and verified."""
    gaps = (0, 10, 25, 35, 60)
    ops = ("output", "input", "tick")
    checked = 0
    for seq in itertools.product(ops, repeat=3):
        for times in itertools.product(gaps, repeat=3):
            clock = Clock()
            sink = MemorySink()
            w = RecordingWriter(sink, KEY, META, clock=clock, coalesce_ms=50, checkpoint_ms=30)
            for op, gap in zip(seq, times, strict=True):
                clock.now += gap * MS
                if op == "output":
                    w.output(b"o")
                elif op == "input":
                    w.input(b"i")
                elif op == "event":
                    w.event("note", "n")
                else:
                    w.tick()
            clock.now += MS
            w.close(0, "exit")
            report = verify(io.BytesIO(bytes(sink.buf)), [KEY.public])
            assert report.outcome is Outcome.VALID, (seq, times, report)
            checked += 1
    assert checked == 3**3 * 5**3


# --- recordings the 0.1.0 writer made ----------------------------------------------------------


def test_old_writer_recordings_are_reported_with_their_pattern(tmp_path: Path) -> None:
    path = _issue_case(tmp_path, LegacyWriter)
    report = verify(path, [KEY.public])
    assert report.outcome is Outcome.CORRUPT and report.problem is Problem.TIME_BACKWARDS
    assert "checkpoint-ordering fault" in report.detail and "--legacy-order" in report.detail
    legacy = verify(path, [KEY.public], legacy_order=True)
    assert legacy.outcome is Outcome.VALID, legacy
    assert legacy.legacy_order == (report.bad_frame,)
    assert legacy.to_json()["legacy_order_frames"] == [report.bad_frame]


def test_legacy_order_accepts_nothing_else(tmp_path: Path) -> None:
    """Only the exact fault: an output frame right after a checkpoint, no earlier than the frame
    before that checkpoint, within the coalescing window; anything else stays CORRUPT."""

    def build(name: str, steps: list[tuple[int, str]], cls: type[RecordingWriter] = LegacyWriter) -> Path:
        clock = Clock()
        start = clock.now
        path = tmp_path / name
        w = cls(FileSink(path), KEY, META, clock=clock, coalesce_ms=20)
        for at_ms, op in steps:
            clock.now = start + at_ms * MS
            if op == "out":
                w.output(b"x")
            elif op == "in":
                w.input(b"y")
            else:
                w.tick()
        clock.now += 500 * MS
        w.close(0, "exit")
        return path

    # The legacy pattern itself.
    ok = build("ok.zsprec", [(100, "out"), (120, "tick"), (2110, "out"), (2120, "tick"), (2130, "tick")])
    assert verify(ok, [KEY.public], legacy_order=True).outcome is Outcome.VALID
    # Signed by the key, so only the time rule decides: other inversions stay CORRUPT.
    def crafted(name: str, kind: FrameKind, back_us: int, gap_frame: bool, checkpoint_after_ms: int = 10) -> Path:
        clock = Clock()
        path = tmp_path / name
        w = RecordingWriter(FileSink(path), KEY, META, clock=clock, coalesce_ms=20)
        clock.now += 1000 * MS
        w.output(b"a")
        w.tick(clock.now + 30 * MS)
        clock.now += 2000 * MS
        w.input(b"b")
        clock.now += checkpoint_after_ms * MS
        w._checkpoint(w._t(clock.now))
        if gap_frame:
            w.resize(100, 30, clock.now)
        w._frame(kind, b"late", w._last_t - back_us)
        if kind is FrameKind.OUTPUT:
            w.output_bytes += 4
        else:
            w.input_bytes += 4
        clock.now += 100 * MS
        w.close(0, "exit")
        return path

    control = crafted("control.zsprec", FrameKind.OUTPUT, 5_000, gap_frame=False)
    assert verify(control, [KEY.public], legacy_order=True).outcome is Outcome.VALID  # the pattern itself
    for name, kind, back, gap, after in [
        ("input.zsprec", FrameKind.INPUT, 5_000, False, 10),  # the old writer only ever held output
        ("wide.zsprec", FrameKind.OUTPUT, 25_000, False, 40),  # further back than the coalescing window
        ("deep.zsprec", FrameKind.OUTPUT, 15_000, False, 10),  # earlier than the frame before the checkpoint
        ("late.zsprec", FrameKind.OUTPUT, 5_000, True, 10),  # not right after the checkpoint
    ]:
        path = crafted(name, kind, back, gap, after)
        report = verify(path, [KEY.public], legacy_order=True)
        assert report.outcome is Outcome.CORRUPT and report.problem is Problem.TIME_BACKWARDS, (name, report)
    # A changed byte: chain broken, whatever legacy_order says.
    data = bytearray(ok.read_bytes())
    data[-40] ^= 1
    forged = tmp_path / "forged.zsprec"
    forged.write_bytes(bytes(data))
    assert verify(forged, [KEY.public], legacy_order=True).outcome is Outcome.CORRUPT


def test_verify_cli_legacy_order_flag(tmp_path: Path) -> None:
    path = _issue_case(tmp_path, LegacyWriter)
    signer = tmp_path / "signer.pub"
    signer.write_text(KEY.public.openssh + "\n")
    base = [sys.executable, "-m", "zsp_tui", "verify", "--data", str(tmp_path / "none"), "--signer", str(signer)]
    plain = subprocess.run([*base, str(path)], capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stdout.startswith("CORRUPT") and "--legacy-order" in plain.stdout
    legacy = subprocess.run([*base, "--legacy-order", str(path)], capture_output=True, text=True)
    assert legacy.returncode == 0, legacy.stdout + legacy.stderr
    assert legacy.stdout.startswith("VALID") and "legacy-order-frames=" in legacy.stdout
