"""Grant enforcement that must not depend on the database answering.

These run the bastion in-process (the same ``Bastion`` that ``zsp serve`` runs) so that a fault
can be injected into its database path: the watcher's database calls hang, as they would behind a
stuck disk or a locked SQLite file. Clients are real asyncssh connections over loopback.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh

from recorder import FileSink
from replay import load
from tests.bastion_env import make_env
from zsp_tui.bastion import Bastion


async def test_expiry_needs_no_database(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    grant = env.grant(duration=timedelta(seconds=3))
    bastion = Bastion(env.data)
    await bastion.start("127.0.0.1", 0)
    env.port = bastion.port
    host_pub = Path(f"{env.data.host_key_path}.pub").read_text().split()
    env.known_hosts = tmp_path / "known_hosts"
    env.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {host_pub[0]} {host_pub[1]}\n")
    hung = asyncio.Event()

    async def database_hangs(fn: Any, *args: Any) -> Any:
        await hung.wait()  # never set: the watcher's database never answers

    try:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            proc = await conn.create_process("echo started; sleep 60", encoding=None)
            assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"started\n"
            bastion.watch_db = database_hangs  # type: ignore[method-assign]
            await asyncio.wait_for(proc.wait_closed(), 10)
            ended = time.time()
        assert grant.ends_at is not None
        # Ended by the expiry check that needs no database, on time; not by the 5 s deadline of
        # the database check (reason "error").
        assert ended - grant.ends_at.timestamp() < 1.5
        [session] = await asyncio.to_thread(env.svc.sessions)
        assert session.end_reason == "expired"
        frames, _report = load(session.path, env.data.trusted_keys())
        events = [f.data.type for f in frames if f.kind.name == "EVENT"]
        assert "grant.expired" in events
    finally:
        bastion.watch_db = Bastion.watch_db.__get__(bastion)  # type: ignore[method-assign]
        await bastion.stop()


class _HangingSink(FileSink):
    """A recordings disk that stops answering while ``hang`` is set (a stuck NFS mount, a full
    queue): writes wait until ``release``."""

    hang = threading.Event()
    release = threading.Event()

    def writev(self, buffers: Any) -> None:
        if _HangingSink.hang.is_set():
            _HangingSink.release.wait(20)
        super().writev(buffers)


async def test_typed_input_reaches_the_target_only_once_recorded(tmp_path: Path, monkeypatch: Any) -> None:
    env = make_env(tmp_path)
    env.grant()
    monkeypatch.setattr("zsp_tui.bastion.server.FileSink", _HangingSink)
    _HangingSink.hang.clear()
    _HangingSink.release.clear()
    bastion = Bastion(env.data)
    await bastion.start("127.0.0.1", 0)
    env.port = bastion.port
    host_pub = Path(f"{env.data.host_key_path}.pub").read_text().split()
    env.known_hosts = tmp_path / "known_hosts"
    env.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {host_pub[0]} {host_pub[1]}\n")
    # `local` may run as an unprivileged account: give it a directory it can write.
    shared = Path(tempfile.mkdtemp(prefix="zsp-input-"))
    shared.chmod(0o777)
    out = shared / "typed"
    try:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            proc = await conn.create_process(f"echo ready; cat > {out}", encoding=None)
            assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"
            _HangingSink.hang.set()  # the disk stops answering
            proc.stdin.write(b"rm -rf /srv/data\n")
            await asyncio.sleep(1.0)
            # Not on disk, so not at the target either.
            assert not out.exists() or out.read_bytes() == b""
            _HangingSink.release.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (out.exists() and out.read_bytes()):
                await asyncio.sleep(0.05)
            assert out.read_bytes() == b"rm -rf /srv/data\n"
            proc.stdin.write_eof()
            await asyncio.wait_for(proc.wait_closed(), 10)
        [session] = await asyncio.to_thread(env.svc.sessions)
        frames, report = load(session.path, env.data.trusted_keys())
        assert report.valid
        assert b"".join(f.data for f in frames if f.kind.name == "INPUT") == b"rm -rf /srv/data\n"
    finally:
        _HangingSink.hang.clear()
        _HangingSink.release.set()
        await bastion.stop()


async def test_a_channel_closed_while_it_is_admitted_leaves_the_connection_alone(tmp_path: Path) -> None:
    """The client closes a channel while the bastion is still looking it up (a slow database):
    the connection and its other channels go on (a closed channel used to crash the handler, and
    asyncssh then closed the whole connection)."""
    env = make_env(tmp_path)
    env.grant()
    bastion = Bastion(env.data)
    await bastion.start("127.0.0.1", 0)
    env.port = bastion.port
    host_pub = Path(f"{env.data.host_key_path}.pub").read_text().split()
    env.known_hosts = tmp_path / "known_hosts"
    env.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {host_pub[0]} {host_pub[1]}\n")
    slow = asyncio.Event()
    original = bastion.auth_db

    async def slow_lookup(lane: str, fn: Any, *args: Any) -> Any:
        if slow.is_set():
            await asyncio.sleep(0.5)
        return await original(lane, fn, *args)

    bastion.auth_db = slow_lookup  # type: ignore[method-assign]
    try:
        async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
            slow.set()
            for _ in range(3):
                proc = await conn.create_process("sleep 30")
                proc.close()  # before the bastion has even found the target
                await proc.wait_closed()
            await asyncio.sleep(1.5)
            slow.clear()
            r = await asyncio.wait_for(conn.run("echo still-here", check=False), 10)
            assert r.stdout == "still-here\n"
    finally:
        await bastion.stop()
