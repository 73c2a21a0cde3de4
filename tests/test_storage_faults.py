"""Storage faults (docs/RELIABILITY.md, rows S1-S5): ENOSPC and EIO on write and on fsync fail
closed; slow storage slows the session down instead of dropping frames or buffering without bound;
a full recordings disk refuses new sessions.

The real full disk is a small tmpfs mounted over the data dir's ``recordings/`` (root only; CI
runs as root): a real ``zsp serve`` writing through the kernel's real ENOSPC. EIO cannot be had
from a stock kernel without a device-mapper error target, so EIO (and ENOSPC from fsync, which
tmpfs never returns) comes from a storage wrapper over a real file (tests/sinks.py), as
Boundary's LimitedSpaceFS does; every byte it accepts lands in a real file the real verifier reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from recorder import FileSink, FrameKind, FsyncPolicy, RecordingFailed, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, load, verify
from tests.bastion_env import Env, make_env, tracebacks
from tests.helpers import SEED_A
from tests.sinks import FaultSink
from zsp_tui.bastion import Bastion

META = SessionMeta(user="u", target="local", login="u")

# --- the writer: every fault on every call fails closed ------------------------------------------


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("op", ["writev", "fsync"])
@pytest.mark.parametrize("after", [1, 3, 7])
def test_a_write_or_fsync_error_fails_closed_and_is_never_retried(
    tmp_path: Path, op: str, err: int, after: int
) -> None:
    key = SigningKey.from_seed(SEED_A)
    p = tmp_path / "faulty.zsprec"
    sink = FaultSink(p, op, err, after)
    # fsync after every batch, and a checkpoint every 4 frames, so a fault in either comes soon.
    w = RecordingWriter(sink, key, META, coalesce_ms=0, fsync=FsyncPolicy.ALWAYS, checkpoint_frames=4)
    with pytest.raises(RecordingFailed) as caught:
        for i in range(1000):
            w.output(b"burst %d\r\n" % i)
    assert os.strerror(err) in caught.value.reason
    calls = dict(sink.calls)
    # Failed for good: nothing more is accepted, nothing retried (no fsync-retry-and-ignore).
    for again in (lambda: w.output(b"y"), lambda: w.input(b"y"), w.tick, lambda: w.close(0, "exit")):
        with pytest.raises(RecordingFailed):
            again()
    assert sink.calls == calls
    report = verify(p, [key.public])
    assert report.outcome is Outcome.INCOMPLETE  # never VALID: it has no seal
    # What reached the file is intact up to its last complete frame.
    frames, again_report = load(p, [key.public])
    assert again_report.frames == len(frames) == report.frames


# --- the bastion, on a real full disk ------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` mounted on ``path`` (skipped, saying why, where mounting is not allowed)."""
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True, text=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root, as in CI): {p.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _events(env: Env, name: str) -> list[Any]:
    return [e for e in env.svc.audit_events() if e.event == name]


def test_a_real_full_disk_ends_the_session_and_then_refuses_new_ones(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmin_free_bytes = 262144\n")
    with small_disk(env.data.recordings, "2m"):
        env.start()
        try:
            env.grant()
            p = env.ssh("alice", "local", "head -c 20000000 /dev/urandom | od -v", timeout=60)
            assert p.returncode != 0 and "recording failed" in p.stderr
            assert "No space left on device" in p.stderr
            # Output stopped with the recording: no more than the disk (and the relay's window) held.
            assert len(p.stdout) < 8 * 1024 * 1024
            [s] = env.svc.sessions()
            assert s.end_reason == "recording-failed" and s.head is None
            report = verify(s.path, env.data.trusted_keys())
            assert report.outcome is Outcome.INCOMPLETE and report.frames > 10
            end = _events(env, "session.end")[-1]
            assert end.outcome == "failure" and end.fields["reason"] == "recording-failed"
            # The disk is full: the low-disk refusal holds for the next session; nothing runs.
            q = env.ssh("alice", "local", "echo should-not-run")
            assert q.returncode == 1 and "should-not-run" not in q.stdout and "short of disk space" in q.stderr
            assert _events(env, "session.refused")[-1].fields["reason"] == "disk-space"
            assert len(env.svc.sessions()) == 1
        finally:
            env.stop()
    assert not tracebacks(env.output), tracebacks(env.output)


# --- the bastion in-process, with a faulty or slow disk under it --------------------------------


@contextlib.asynccontextmanager
async def bastion_over(tmp_path: Path, sink: type[FileSink], monkeypatch: Any) -> AsyncIterator[tuple[Env, Bastion]]:
    env = make_env(tmp_path)
    env.grant()
    monkeypatch.setattr("zsp_tui.bastion.server.FileSink", sink)
    bastion = Bastion(env.data)
    await bastion.start("127.0.0.1", 0)
    env.port = bastion.port
    host_pub = Path(f"{env.data.host_key_path}.pub").read_text().split()
    env.known_hosts = tmp_path / "known_hosts"
    env.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {host_pub[0]} {host_pub[1]}\n")
    try:
        yield env, bastion
    finally:
        await bastion.stop()


class _EioOnFsync(FileSink):
    """A disk whose device starts failing: fsync returns EIO from the third call (the header's
    checkpoint and the first timed one pass)."""

    fsyncs = 0

    def fsync(self) -> None:
        type(self).fsyncs += 1
        if type(self).fsyncs > 2:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync()


async def test_eio_on_fsync_ends_the_session_within_seconds(tmp_path: Path, monkeypatch: Any) -> None:
    _EioOnFsync.fsyncs = 0
    async with bastion_over(tmp_path, _EioOnFsync, monkeypatch) as (env, _bastion):
        opts = env.asyncssh_options("alice")
        async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
            proc = await conn.create_process("while :; do echo tick; sleep 0.05; done", encoding=None)
            await asyncio.wait_for(proc.wait_closed(), 20)  # checkpoints every 2 s at most, each fsync'd
            err = await proc.stderr.read()
        assert b"recording failed" in err and b"Input/output error" in err
        [s] = await asyncio.to_thread(env.svc.sessions)
        assert s.end_reason == "recording-failed" and s.head is None
        assert verify(s.path, env.data.trusted_keys()).outcome is Outcome.INCOMPLETE


class _SlowDisk(FileSink):
    """Every write takes 30 ms (a slow or contended disk)."""

    def writev(self, buffers: Any) -> None:
        time.sleep(0.03)
        super().writev(buffers)


async def test_slow_storage_slows_the_session_and_drops_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    """Every byte the operator received is in the recording, in order, and what waited in memory
    for the disk stayed under the recorder's high-water mark: its bounded queue pushed back on the
    target instead of dropping frames or queueing without bound."""
    async with bastion_over(tmp_path, _SlowDisk, monkeypatch) as (env, bastion):
        opts = env.asyncssh_options("alice")
        peak = 0
        done = asyncio.Event()

        async def sample() -> None:  # what the live session's recorder holds in memory, unwritten
            nonlocal peak
            while not done.is_set():
                for live in list(bastion.live):
                    peak = max(peak, live.recorder.pending_bytes)
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
            proc = await conn.create_process("head -c 3000000 /dev/urandom | od -v", encoding=None)
            received = await asyncio.wait_for(proc.stdout.read(), 120)
            await asyncio.wait_for(proc.wait_closed(), 30)
        done.set()
        await sampler
        assert len(received) > 10_000_000
        # The disk lagged (output queued for it), yet what waited stayed bounded by the recorder's
        # high-water mark (4 MiB) and one read: it reaches the mark (about 3.9 MB here) and the
        # session is slowed down instead.
        assert (256 << 10) < peak <= (4 << 20) + (1 << 20), peak
        [s] = await asyncio.to_thread(env.svc.sessions)
        frames, report = load(s.path, env.data.trusted_keys())
        assert report.outcome is Outcome.VALID
        assert b"".join(f.data for f in frames if f.kind is FrameKind.OUTPUT) == received
