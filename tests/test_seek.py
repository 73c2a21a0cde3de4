"""Seeking through keyframes shows exactly what a full replay shows, and the cache is never trusted.

The reference is the simplest possible player: every signed frame from the verifier, in order,
into a fresh emulator. Recordings mix scrolling text, cursor addressing, colours, wide
characters, the alternate screen, resizes, typed and masked input and random bytes.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import FileSink, Header, RecordingWriter, Resize, SessionMeta, SigningKey
from replay import (
    Seeker,
    SourceError,
    build_index,
    load_index,
    only_signed,
    save_index,
    verify,
    verify_frames,
)
from replay._terminal import Screen, Terminal
from tests.helpers import FakeClock, fixed_session_id, frame_spans, split_frames

PIECES = [
    b"plain text ",
    b"line\r\n",
    b"\x1b[31mred\x1b[0m ",
    b"\x1b[1;44mbold on blue\x1b[m",
    b"\x1b[H\x1b[2J",
    b"\x1b[5;10Hxy",
    b"\x1b[?1049h\x1b[Halt screen\x1b[2;1Hrow two",
    b"\x1b[?1049l",
    b"\x1b[2;5r\x1b[5;1H\n\n\n\x1b[r",
    b"\xe4\xb8\xad\xe6\x96\x87\xf0\x9f\x98\x80",
    b"\x1b[K\x1b[1J\x1b[3P\x1b[2@",
    b"\x1b]0;title\x07\x1b[6n",
    b"\x1b7\x1b[10;10Hsaved\x1b8",
    b"\xff\xfe\x9b",
    b"\x1b[",  # split escape: continued by the next chunk
    b"\t\x08\x08tab",
]


def write_mixed(path: Path, key: SigningKey, seed: int, n: int = 300, *, seal: bool = True) -> Path:
    rnd = random.Random(seed)
    clock = FakeClock(step_ns=1_000)
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="root", cols=40, rows=12),
        session_id=fixed_session_id(seed),
        checkpoint_frames=7,
        coalesce_ms=0,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    t = 10**12
    for _ in range(n):
        t += rnd.choice([1_000, 50_000, 300_000, 3_000_000])
        r = rnd.random()
        if r < 0.75:
            w.output(b"".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 4))) + rnd.randbytes(rnd.randint(0, 3)),
                     at_ns=t)
        elif r < 0.85:
            w.input(rnd.choice([b"ls\r", b"x", b"secret", b"\x1b[A"]), at_ns=t)
        elif r < 0.93:
            w.resize(rnd.randint(10, 90), rnd.randint(3, 30), at_ns=t)
        else:
            w.event("input.masked", "masked", at_ns=t, bytes=rnd.randint(1, 20))
    if seal:
        w.close(0, "exit", at_ns=t + 1000)
    else:
        w.flush()
        w.abandon()
    return path


def reference(path: Path, key: SigningKey, t_us: int) -> tuple[Screen, int]:
    """The screen after every signed frame with time <= t_us, replayed from the start, and the last
    such frame (of any kind) below ``signed_frames``."""
    signed = verify(path, [key.public]).signed_frames
    term: Terminal | None = None
    last = 0
    with open(path, "rb") as f:
        for frame in only_signed(verify_frames(f, [key.public])):
            if frame.t_us > t_us:
                break
            if isinstance(frame.data, Header):
                term = Terminal(frame.data.cols or 80, frame.data.rows or 24)
            elif term is not None and isinstance(frame.data, bytes) and frame.kind.name == "OUTPUT":
                term.feed(frame.data)
            elif term is not None and isinstance(frame.data, Resize) and frame.data.cols and frame.data.rows:
                term.resize(frame.data.cols, frame.data.rows)
            if frame.seq < signed:
                last = frame.seq
    assert term is not None
    return term.screen(), last


def _seeker(path: Path, key: SigningKey, every_bytes: int = 300, every_us: int = 700_000) -> Seeker:
    report = verify(path, [key.public])
    return Seeker(path, build_index(path, [key.public], report, every_bytes=every_bytes, every_us=every_us))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), points=st.lists(st.floats(0, 1.05), min_size=5, max_size=15))
def test_seek_equals_full_replay(tmp_path_factory: pytest.TempPathFactory, key: SigningKey, seed: int,
                                 points: list[float]) -> None:
    path = write_mixed(tmp_path_factory.mktemp("seek") / "r.zsprec", key, seed, n=120)
    seeker = _seeker(path, key)
    assert len(seeker.index.keyframes) > 3
    end = seeker.duration_us
    for p in points:
        t = int(p * end)
        assert seeker.screen_at(t) == reference(path, key, t), t
    # every keyframe's own moment, and just before it
    for kf in seeker.index.keyframes[1:6]:
        assert seeker.screen_at(kf.t_us) == reference(path, key, kf.t_us)
        assert seeker.screen_at(kf.t_us - 1) == reference(path, key, kf.t_us - 1)


def test_seek_by_frame_and_across_resizes_and_alternate_screen(tmp_path: Path, key: SigningKey) -> None:
    path = write_mixed(tmp_path / "r.zsprec", key, 7, n=400)
    seeker = _seeker(path, key)
    alt = sizes = 0
    with open(path, "rb") as f:
        frames = list(only_signed(verify_frames(f, [key.public])))
    for frame in frames[1:]:
        if frame.kind.name == "CHECKPOINT":
            continue
        screen, seq = seeker.frame_at(frame.seq)
        assert seq == frame.seq
        ref, _ = reference(path, key, frame.t_us)
        if frame.t_us == frames[min(frame.seq + 1, len(frames) - 1)].t_us:
            continue  # another frame at the same microsecond: by time the reference includes it
        assert screen == ref
        alt += screen.alternate
        sizes += isinstance(frame.data, Resize)
    assert alt and sizes  # both were crossed


def test_unsigned_tail_is_never_reached_by_a_seek(tmp_path: Path, key: SigningKey) -> None:
    """A recording cut after its last checkpoint was lost: the frames after the last good
    signature are in no keyframe and no seek shows them."""
    path = write_mixed(tmp_path / "r.zsprec", key, 3, n=100, seal=False)
    data = path.read_bytes()
    spans = frame_spans(data)
    bodies = split_frames(data)
    last_ckpt = max(i for i, b in enumerate(bodies) if msgpack.unpackb(b)[0] == 5)
    path.write_bytes(data[: spans[last_ckpt][0]])  # the last checkpoint is lost: the frames before it are unsigned
    report = verify(path, [key.public])
    assert report.frames > report.signed_frames + 1
    seeker = _seeker(path, key)
    assert seeker.index.shown == report.signed_frames
    for kf in seeker.index.keyframes:
        assert kf.frame < report.signed_frames
    _screen, seq = seeker.screen_at(10**15)
    assert seq == report.signed_frames - 1
    assert seeker.screen_at(10**15)[0] == reference(path, key, 10**15)[0]


def test_cache_round_trip_and_rebuild_on_garbage(tmp_path: Path, key: SigningKey, other_key: SigningKey) -> None:
    path = write_mixed(tmp_path / "r.zsprec", key, 5)
    report = verify(path, [key.public])
    cache = tmp_path / "cache" / "seek" / f"{report.header.session_id}.seek"
    small = {"every_bytes": 300, "every_us": 700_000}
    s1 = Seeker.open(path, [key.public], report, cache=cache, **small)
    assert cache.exists()
    loaded = load_index(cache)
    assert loaded is not None and loaded.matches(report, path.stat().st_size)
    want = [s1.screen_at(t) for t in range(0, s1.duration_us, s1.duration_us // 17)]

    good = cache.read_bytes()
    other = write_mixed(tmp_path / "o.zsprec", key, 6)
    other_report = verify(other, [key.public])
    other_cache = tmp_path / "other.seek"
    Seeker.open(other, [key.public], other_report, cache=other_cache)
    doc = msgpack.unpackb(good)
    doc["keyframes"][1][4] = b"\x00garbage state"
    bad_state = msgpack.packb(doc)
    doc = msgpack.unpackb(good)
    doc["size"] += 1
    bad_size = msgpack.packb(doc)
    doc = msgpack.unpackb(good)
    doc["head"] = bytes(32)
    bad_head = msgpack.packb(doc)
    variants = {
        "garbage": os.urandom(5000),
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "other session": other_cache.read_bytes(),
        "wrong size": bad_size,
        "wrong head": bad_head,
        "not a map": msgpack.packb([1, 2, 3]),
        "huge claims": msgpack.packb({"format": "zsp-seek", "version": 1, "keyframes": [[0] * 6] * 3}),
    }
    for name, blob in variants.items():
        cache.write_bytes(blob)
        s = Seeker.open(path, [key.public], report, cache=cache, **small)
        got = [s.screen_at(t) for t in range(0, s.duration_us, s.duration_us // 17)]
        assert got == want, name
        assert cache.read_bytes() == good, name  # rebuilt and rewritten
    # A keyframe whose state the emulator refuses (well-formed index, damaged snapshot): the seek
    # starts from an earlier keyframe instead, slower but right.
    cache.write_bytes(bad_state)
    index = load_index(cache)
    assert index is not None
    t = index.keyframes[1].t_us
    assert Seeker(path, index).screen_at(t) == reference(path, key, t)


def test_unwritable_cache_dir_keeps_the_index_in_memory(tmp_path: Path, key: SigningKey) -> None:
    path = write_mixed(tmp_path / "r.zsprec", key, 8)
    report = verify(path, [key.public])
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the directory should be")
    s = Seeker.open(path, [key.public], report, cache=blocker / "seek" / "x.seek")
    assert s.screen_at(s.duration_us) == reference(path, key, s.duration_us)


def test_a_recording_changed_after_verification_is_not_shown(tmp_path: Path, key: SigningKey) -> None:
    path = write_mixed(tmp_path / "r.zsprec", key, 9)
    seeker = _seeker(path, key, every_bytes=10**9, every_us=10**12)  # only the header keyframe
    data = bytearray(path.read_bytes())
    i = data.index(b"plain text")
    data[i : i + 5] = b"PLAIN"
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="changed"):
        seeker.screen_at(seeker.duration_us)
    # The index is built again only from a file that still matches what was verified.
    stale = dataclasses.replace(verify(path, [key.public]), head=bytes(32))
    with pytest.raises(SourceError, match="changed"):
        build_index(path, [key.public], stale)


def test_save_and_load_are_inverse(tmp_path: Path, key: SigningKey) -> None:
    path = write_mixed(tmp_path / "r.zsprec", key, 10)
    seeker = _seeker(path, key)
    assert save_index(seeker.index, tmp_path / "i.seek")
    again = load_index(tmp_path / "i.seek")
    assert again is not None and again.keyframes == seeker.index.keyframes


# --- the CLI: --instant, --from, the cache in the data dir --------------------------------------


def _zsp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, env=env, timeout=120)


@pytest.fixture
def datadir_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, ZSP_DATA=str(tmp_path / "data"))
    assert _zsp("init", env=env).returncode == 0
    return env


def _record_into(data: Path, seed: int) -> str:
    from zsp_tui.datadir import DataDir

    d = DataDir(data)
    sid = fixed_session_id(seed)
    write_mixed(d.recordings / f"{sid}.zsprec", d.signing_key(), seed)
    return str(sid)


def _expected_lines(path: Path, key: SigningKey, t_us: int) -> bytes:
    from replay import printable

    screen, _ = reference(path, key, t_us)
    lines = [printable(x) for x in screen.lines]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(x + "\n" for x in lines).encode()


def test_instant_prints_the_screen_and_from_lands_on_the_moment(tmp_path: Path, datadir_env: dict[str, str]) -> None:
    from zsp_tui.datadir import DataDir

    data = Path(datadir_env["ZSP_DATA"])
    sid = _record_into(data, 21)
    path = DataDir(data).recordings / f"{sid}.zsprec"
    key = DataDir(data).signing_key()
    p = _zsp("play", sid, "--instant", env=datadir_env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == _expected_lines(path, key, 10**15)
    assert b"\x1b" not in p.stdout and b"VALID" in p.stderr
    cache = data / "cache" / "seek" / f"{sid}.seek"
    assert cache.exists()

    dur = verify(path, [key.public]).duration_us
    for frac in (0.1, 0.37, 0.5, 0.93):
        t = int(dur * frac) // 1000 * 1000
        p = _zsp("play", sid, "--from", f"{t / 1e6:.3f}", env=datadir_env)  # stdout is a pipe: text
        assert p.returncode == 0, p.stderr
        assert p.stdout == _expected_lines(path, key, t), frac
    mm = int(dur / 1e6 * 0.5)
    p = _zsp("play", sid, "--from", f"{mm // 60:02d}:{mm % 60:02d}", env=datadir_env)
    assert p.stdout == _expected_lines(path, key, mm * 1_000_000)
    p2 = _zsp("play", sid, "--from", f"0:{mm // 60:02d}:{mm % 60:02d}", env=datadir_env)
    assert p2.stdout == p.stdout

    # A cache that is garbage changes nothing: not the screen, not the verdict.
    before_verify = _zsp("verify", sid, env=datadir_env)
    cache.write_bytes(b"\x93garbage" * 100)
    p3 = _zsp("play", sid, "--instant", env=datadir_env)
    assert p3.stdout == _expected_lines(path, key, 10**15) and p3.returncode == 0
    cache.write_bytes(b"\x93garbage" * 100)
    after_verify = _zsp("verify", sid, env=datadir_env)
    assert (after_verify.returncode, after_verify.stdout) == (before_verify.returncode, before_verify.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "99:00:00"], b"past the end"),
        (["--from", "-3"], b"negative"),
        (["--from", "1:75"], b"below 60"),
        (["--from", "abc"], b"bad time"),
        (["--speed", "-2"], b"--speed"),
        (["--speed", "0"], b"--speed"),
        (["--idle-limit", "-1"], b"--idle-limit"),
    ],
)
def test_bad_arguments_are_one_clear_line(datadir_env: dict[str, str], args: list[str], message: bytes) -> None:
    sid = _record_into(Path(datadir_env["ZSP_DATA"]), 22)
    p = _zsp("play", sid, *args, env=datadir_env)
    assert p.returncode == 2
    assert message in p.stderr and b"Traceback" not in p.stderr
    assert p.stderr.count(b"\n") == 1 and p.stdout == b""


def test_unknown_session_and_unreadable_file(tmp_path: Path, datadir_env: dict[str, str]) -> None:
    p = _zsp("play", "0123456789abcdef", env=datadir_env)
    assert p.returncode == 2 and b"no session" in p.stderr and b"Traceback" not in p.stderr
    p = _zsp("play", str(tmp_path / "missing.zsprec"), env=datadir_env)
    assert p.returncode == 2 and b"cannot read" in p.stderr and b"Traceback" not in p.stderr
    d = tmp_path / "dir.zsprec"
    d.mkdir()
    p = _zsp("play", str(d), env=datadir_env)
    assert p.returncode == 2 and b"Traceback" not in p.stderr and p.stderr.count(b"\n") == 1


def test_a_cache_others_may_write_is_not_read(tmp_path: Path, key: SigningKey) -> None:
    """Keyframe screens are not proven by anything: a cache file another account could have written
    is rebuilt, never read."""
    path = write_mixed(tmp_path / "r.zsprec", key, 12)
    report = verify(path, [key.public])
    cache = tmp_path / "c.seek"
    Seeker.open(path, [key.public], report, cache=cache)
    assert load_index(cache) is not None and cache.stat().st_mode & 0o777 == 0o600
    for mode in (0o666, 0o620, 0o602):
        cache.chmod(mode)
        assert load_index(cache) is None
        Seeker.open(path, [key.public], report, cache=cache)  # rebuilt, written again privately
        assert cache.stat().st_mode & 0o777 == 0o600 and load_index(cache) is not None
