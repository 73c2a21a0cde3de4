"""The wall clock jumping hours forward or back (docs/RELIABILITY.md, rows T1-T4).

A grant's end is a wall-clock time (it was approved until 14:00), but a live session's end is fixed
on the monotonic clock when it starts (``Bastion.deadline``): a wall clock stepped by NTP, an
operator or a resumed VM neither ends a session early nor lets it run past its grant. The
recording's frame times are monotonic; its checkpoints carry the wall time for people, and the
chain and signatures hold whatever that says.

The bastion runs in-process (the same ``Bastion`` as ``zsp serve``) so its clock seam can be
stepped; clients are real asyncssh connections over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from replay import Outcome, verify
from tests.bastion_env import Env, make_env
from tests.helpers import SEED_A
from zsp_tui.access import Actor
from zsp_tui.bastion import Bastion


class SteppedClock:
    """The system's wall clock, plus an offset a test steps (``settimeofday`` without root)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@contextlib.asynccontextmanager
async def stepped_bastion(tmp_path: Path) -> AsyncIterator[tuple[Env, Bastion, SteppedClock]]:
    env = make_env(tmp_path)
    clock = SteppedClock()
    bastion = Bastion(env.data)
    for svc in (bastion.svc, bastion.auth_svc, bastion.watch_svc):
        svc.clock = clock
    await bastion.start("127.0.0.1", 0)
    env.port = bastion.port
    host_pub = Path(f"{env.data.host_key_path}.pub").read_text().split()
    env.known_hosts = tmp_path / "known_hosts"
    env.known_hosts.write_text(f"[127.0.0.1]:{bastion.port} {host_pub[0]} {host_pub[1]}\n")
    try:
        yield env, bastion, clock
    finally:
        await bastion.stop()


async def _session(env: Env) -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess[bytes]]:
    conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice"))
    proc = await conn.create_process("echo started; sleep 120", encoding=None)
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"started\n"
    return conn, proc


@pytest.mark.parametrize("jump", [timedelta(hours=3), timedelta(hours=30)])
async def test_a_wall_clock_jump_forward_does_not_end_a_grant_early(tmp_path: Path, jump: timedelta) -> None:
    async with stepped_bastion(tmp_path) as (env, _bastion, clock):
        grant = env.grant(duration=timedelta(minutes=30))
        conn, proc = await _session(env)
        async with conn:
            clock.offset = jump  # now hours past the grant's end, by the wall clock
            # Long enough for the expiry check (every 0.25 s), the grant check and the sweep that
            # records expiries in the audit log (every 5 s) to run with the new time.
            await asyncio.sleep(6.5)
            assert not proc.is_closing() and proc.exit_status is None
            [live] = await asyncio.to_thread(env.svc.sessions)
            assert live.ended_at is None
            # Revocation still ends it: only the clock's say was set aside. (A liveness bound, not
            # a speed one: the revocation test of tests/test_bastion.py times it.)
            await asyncio.to_thread(env.svc.revoke, Actor("bob"), grant.id)
            await asyncio.wait_for(proc.wait_closed(), 30)
        [s] = await asyncio.to_thread(env.svc.sessions)
        assert s.end_reason == "revoked"
        assert verify(s.path, env.data.trusted_keys()).outcome is Outcome.VALID


async def test_a_wall_clock_jump_back_does_not_let_a_grant_run_late(tmp_path: Path) -> None:
    async with stepped_bastion(tmp_path) as (env, _bastion, clock):
        env.grant(duration=timedelta(seconds=4))
        conn, proc = await _session(env)
        began = time.monotonic()
        async with conn:
            clock.offset = -timedelta(hours=3)  # the grant now has 3 h 4 s left, by the wall clock
            await asyncio.wait_for(proc.wait_closed(), 60)
        took = time.monotonic() - began
        assert took < 60  # its 4 s and the watcher's tick (more on a loaded machine); not 3 hours
        [s] = await asyncio.to_thread(env.svc.sessions)
        assert s.end_reason == "expired"
        assert verify(s.path, env.data.trusted_keys()).outcome is Outcome.VALID
        audit = await asyncio.to_thread(env.svc.audit_verify, env.data.trusted_keys())
        assert audit.ok, audit.detail  # events written before and after the step: the chain holds


@pytest.mark.parametrize("step_s", [3 * 3600, -3 * 3600, -86400 * 400])
def test_wall_clock_steps_inside_a_recording_keep_its_chain_and_checkpoints_valid(tmp_path: Path, step_s: int) -> None:
    key = SigningKey.from_seed(SEED_A)
    wall = [time.time_ns()]
    w = RecordingWriter(
        FileSink(tmp_path / "stepped.zsprec"),
        key,
        SessionMeta(user="u", target="local", login="u"),
        checkpoint_frames=4,
        coalesce_ms=0,
        wall_clock=lambda: wall[0],
    )
    for i in range(40):
        if i == 20:
            wall[0] += step_s * 1_000_000_000
        w.output(b"line %d\r\n" % i)
        wall[0] += 1_000_000
    w.close(0, "exit")
    report = verify(tmp_path / "stepped.zsprec", [key.public])
    assert report.outcome is Outcome.VALID, report.detail
    assert report.signed_frames == report.frames - 1  # every frame but the last checkpoint itself
