"""Window sizes from a client other than OpenSSH are 32-bit numbers; a `local` session's PTY takes
16 bits. A hostile size is clamped: the session goes on and the bastion stays up."""

from __future__ import annotations

import asyncio

import asyncssh

from tests.bastion_env import Env


async def _read_until(proc, needle: bytes, seen: bytes = b"") -> bytes:
    async def loop() -> bytes:
        nonlocal seen
        while needle not in seen:
            data = await proc.stdout.read(65536)
            if not data:
                raise AssertionError(f"closed before {needle!r}: {seen[-300:]!r}")
            seen += data
        return seen

    return await asyncio.wait_for(loop(), 30)


async def test_huge_window_sizes_on_a_local_session(env: Env) -> None:
    env.grant()
    async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
        proc = await conn.create_process(term_type="xterm", term_size=(70_000, 70_000), encoding=None)
        proc.stdin.write(b"stty size; echo MARK-$((2*21))\r")
        seen = await _read_until(proc, b"MARK-42")
        proc.change_terminal_size(100_000, 3)
        proc.change_terminal_size(0, 0)
        proc.change_terminal_size(120, 40)
        proc.stdin.write(b"stty size; echo SIZE-$((3*3))\r")
        seen = await _read_until(proc, b"SIZE-9", seen)
        assert b"40 120" in seen.split(b"SIZE-9")[-2], seen[-200:]
        proc.stdin.write(b"exit\r")
        await asyncio.wait_for(proc.wait(), 30)
    assert env.proc is not None and env.proc.poll() is None
