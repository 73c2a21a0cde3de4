"""What the operator typed is never invisible: blind input is shown, marked, and masked input is a count."""

from __future__ import annotations

from pathlib import Path

from recorder import Event, FileSink, Frame, FrameKind, RecordingWriter, SessionMeta, SigningKey
from replay import TypedTracker
from tests.helpers import FakeClock, fixed_session_id
from tests.test_play_pty import Pty, _checks, _env


def _feed(t: TypedTracker, *frames: tuple[FrameKind, object, int]) -> None:
    for i, (kind, data, t_us) in enumerate(frames):
        t.feed(Frame(i + 1, kind, t_us, data))  # type: ignore[arg-type]


def test_echoed_input_is_shown_plain() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.INPUT, b"ls -l", 10), (FrameKind.OUTPUT, b"l", 11), (FrameKind.OUTPUT, b"s -l", 12))
    assert t.describe(13) == "ls -l"


def test_input_that_never_echoed_is_marked() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.OUTPUT, b"Password: ", 5), (FrameKind.INPUT, b"hunter2\r", 10))
    assert t.describe(11) == "hunter2\\r"  # too early to tell
    assert t.describe(10 + 600_000) == "hunter2\\r (not echoed)"
    _feed(t, (FrameKind.OUTPUT, b"\r\nWelcome\r\n$ ", 20))
    assert t.describe(21) == "hunter2\\r (not echoed)"


def test_control_keys_are_escaped_and_runs_start_again_after_enter() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.INPUT, b"\x1b[A\x1b]52;c;x\x07", 1), (FrameKind.OUTPUT, b"", 2))
    assert "\x1b" not in t.describe(3) and "\\x1b[A" in t.describe(3)
    _feed(t, (FrameKind.INPUT, b"\r", 4), (FrameKind.INPUT, b"pwd", 5), (FrameKind.OUTPUT, b"pwd", 6))
    assert t.describe(7) == "pwd"


def test_masked_input_is_a_count_never_the_bytes() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.EVENT, Event("input.masked", "masked", {"bytes": 9}), 1))
    assert t.describe(2) == "masked, 9 bytes"
    _feed(t, (FrameKind.INPUT, b"x", 3), (FrameKind.OUTPUT, b"x", 4))
    assert t.describe(5) == "x"


def test_long_runs_keep_their_end() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.INPUT, b"a" * 100 + b"END", 1), (FrameKind.OUTPUT, b"a" * 100 + b"END", 2))
    assert t.describe(3).startswith("…") and t.describe(3).endswith("END")


def test_dump_and_load_round_trip() -> None:
    t = TypedTracker()
    _feed(t, (FrameKind.INPUT, b"secret", 1), (FrameKind.OUTPUT, b"no", 2))
    again = TypedTracker.load(t.dump())
    assert again.describe(3) == t.describe(3) == "secret (not echoed)"


def test_the_player_shows_blind_and_masked_input(tmp_path: Path, key: SigningKey) -> None:
    clock = FakeClock(step_ns=2_000_000)
    rec = tmp_path / "blind.zsprec"
    w = RecordingWriter(
        FileSink(rec, sync_dir=False), key, SessionMeta(user="a", target="t", login="root", cols=80, rows=24),
        session_id=fixed_session_id(31), checkpoint_frames=4, coalesce_ms=0, clock=clock.mono, wall_clock=clock.wall,
    )
    w.output(b"$ stty -echo; read x\r\n")
    w.input(b"typed-blind\r")
    w.output(b"\r\n$ ")
    now = clock.mono()
    w.event("input.masked", "masked", at_ns=now + 3_000_000_000, bytes=12)
    w.output(b"sudo: done\r\n$ ", at_ns=now + 6_000_000_000)
    w.close(0, "exit", at_ns=now + 6_100_000_000)
    signer = tmp_path / "s.pub"
    signer.write_text(key.public.openssh + "\n")
    pty = Pty(["--signer", str(signer), str(rec)], _env(tmp_path))
    try:
        pty.read_until(b"typed: typed-blind\\r (not echoed)")
        pty.read_until(b"typed: masked, 12 bytes")
        pty.read_until(b"end: q quit")
        pty.send(b"q")
        _checks(pty, pty.finish(), 0)
    finally:
        pty.close()
