"""Shared test helpers: deterministic recordings and frame offsets."""

from __future__ import annotations

import io
import itertools
import random
import re
import time
import uuid
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import Preamble, iter_raw, read_preamble

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))


class FakeClock:
    """Monotonic and wall clocks that advance by a fixed step per reading."""

    def __init__(self, step_ns: int = 1_000_000, wall_start_ns: int = 1_790_000_000 * 10**9) -> None:
        self._mono = itertools.count(10**12, step_ns)
        self._wall = itertools.count(wall_start_ns, step_ns)

    def mono(self) -> int:
        return next(self._mono)

    def wall(self) -> int:
        return next(self._wall)


def fixed_session_id(seed: int) -> uuid.UUID:
    """A deterministic UUIDv7 (fixed time, the seed in the random bits)."""
    ms = 1_790_000_000_000
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0b10 << 62) | (seed & ((1 << 62) - 1)))


def write_recording(
    path: Path,
    key: SigningKey,
    *,
    seed: int = 0,
    frames: int = 40,
    session_id: uuid.UUID | None = None,
    seal: bool = True,
    checkpoint_frames: int = 8,
    coalesce_ms: int = 0,
) -> Path:
    """A deterministic recording with a mix of every frame kind."""
    rnd = random.Random(seed)
    clock = FakeClock()
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="alice", target="db1", login="postgres", grant_id="g-1", term="xterm-256color",
                    cols=80, rows=24, host="bastion"),
        session_id=session_id or fixed_session_id(seed),
        checkpoint_frames=checkpoint_frames,
        coalesce_ms=coalesce_ms,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    for i in range(frames):
        r = rnd.random()
        if r < 0.5:
            w.output(rnd.randbytes(rnd.randint(1, 60)))
        elif r < 0.8:
            w.input(rnd.randbytes(rnd.randint(1, 4)))
        elif r < 0.9:
            w.resize(rnd.randint(20, 200), rnd.randint(10, 60))
        else:
            w.event("note", f"event {i}", n=i, ok=True)
    if seal:
        w.close(0, "exit")
    else:
        w.flush()
        w.abandon()
    return path


def frame_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of every complete frame in ``data``."""
    stream = io.BytesIO(data)
    status, _ = read_preamble(stream)
    assert status is Preamble.OK
    spans = []
    gen = iter_raw(stream)
    for _index, offset, body, _head in gen:
        spans.append((offset, offset + 4 + len(body) + 32))
    return spans


def frame_at(spans: list[tuple[int, int]], pos: int) -> int | None:
    """Index of the frame containing byte ``pos``; None for the preamble."""
    for i, (a, b) in enumerate(spans):
        if a <= pos < b:
            return i
    return None


def split_frames(data: bytes) -> list[bytes]:
    """The bodies of every complete frame."""
    import struct

    bodies = []
    for a, _end in frame_spans(data):
        (n,) = struct.unpack_from(">I", data, a)
        bodies.append(data[a + 4 : a + 4 + n])
    return bodies


def rechain(bodies: list[bytes], session_id: uuid.UUID) -> bytes:
    """Rebuild a file from bodies with every stored head recomputed: what a forger can do
    without the signing key."""
    import struct

    from recorder import PREAMBLE, chain_head, genesis

    head = genesis(session_id)
    out = [PREAMBLE]
    for body in bodies:
        head = chain_head(head, body)
        out += [struct.pack(">I", len(body)), body, head]
    return b"".join(out)


def read_until(chan, buf: bytes, needle: bytes, timeout: float = 15) -> bytes:
    """Read a paramiko channel until ``needle`` is in what was read (``buf`` included)."""
    end = time.monotonic() + timeout
    while needle not in buf:
        if time.monotonic() > end:
            raise AssertionError(f"never saw {needle!r} in {buf[-300:]!r}")
        if chan.recv_ready():
            buf += chan.recv(65536)
        else:
            time.sleep(0.02)
    return buf


def exec_sh(chan, seen: bytes = b"") -> None:
    """Replace the login shell with sh (which reads lines in canonical mode), waiting for each
    shell's prompt: input typed ahead of bash's first prompt can be flushed and lost. ``seen``:
    what the caller already read from the channel (the login shell's prompt may be in it)."""
    for step in (b"", b"exec sh\r"):
        chan.send(step)
        buf, seen = seen, b""
        end = time.monotonic() + 15
        while not re.search(rb"[#$] $", buf):
            if time.monotonic() > end:
                raise AssertionError(f"no shell prompt in {buf[-300:]!r}")
            buf += chan.recv(65536) if chan.recv_ready() else b""
            time.sleep(0.02)
