"""``zsp serve --workers N``: N bastion processes on one port (SO_REUSEPORT) under a supervising
parent, sharing the SQLite store; real ``zsp serve`` subprocesses, real asyncssh clients."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from tests.bastion_env import Env, make_env
from tests.test_bastion import wait_for


def _pids(env: Env) -> list[int]:
    """The worker pids the parent's ready line names."""
    line = next(x for x in env.output if "listening on" in x)
    found = re.search(r"workers: ([\d, ]+)\)", line)
    assert found, line
    return [int(p) for p in found.group(1).split(", ")]


def _owner_pid(owner: str) -> int:
    return int(owner.rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _run(env: Env, command: str) -> asyncssh.SSHCompletedProcess:
    async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
        return await conn.run(command, check=False)


@pytest.fixture
def workers(tmp_path: Path):
    env = make_env(tmp_path)
    env.start(args=("--workers", "2"))
    yield env
    if env.proc is not None and env.proc.stdout is not None and not env.proc.stdout.closed:
        env.stop()  # unless the test did


async def test_connections_land_on_every_worker(workers: Env) -> None:
    env = workers
    pids = _pids(env)
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    env.grant()
    results = await asyncio.gather(*(_run(env, f"echo hello-{i}") for i in range(24)))
    assert [r.stdout for r in results] == [f"hello-{i}\n" for i in range(24)]
    sessions = await asyncio.to_thread(env.svc.sessions)
    assert len(sessions) == 24 and all(s.end_reason for s in sessions)
    # The kernel spread them over both listening workers (24 connections on one: p = 2**-23).
    assert {_owner_pid(s.owner) for s in sessions} == set(pids)


async def test_a_killed_worker_is_restarted_and_its_session_closed_as_interrupted(workers: Env) -> None:
    env = workers
    pids = _pids(env)
    env.grant()
    # Live sessions until one is on each worker; then kill -9 the first worker mid-session.
    clients = []
    for _ in range(16):
        conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice"))
        proc = await conn.create_process("echo up; sleep 60")
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)) == "up\n"
        clients.append((conn, proc))
        live = await asyncio.to_thread(env.svc.sessions)
        if {_owner_pid(s.owner) for s in live} == set(pids):
            break
    victim = pids[0]
    doomed = [s for s in await asyncio.to_thread(env.svc.sessions) if _owner_pid(s.owner) == victim]
    assert doomed
    os.kill(victim, signal.SIGKILL)
    # Connections queued on the dying listener are reset (unless net.ipv4.tcp_migrate_req=1);
    # once it is gone, the other worker alone answers, and the dead one is replaced.
    await asyncio.to_thread(wait_for, lambda: not _alive(victim), 10)
    r = await _run(env, "echo still-here")
    assert r.stdout == "still-here\n"

    def restarted() -> bool:
        ps = subprocess.run(["pgrep", "-f", "--", f"--worker-of={env.proc.pid}"], capture_output=True, text=True)
        now = {int(p) for p in ps.stdout.split()}
        return victim not in now and len(now) == 2

    await asyncio.to_thread(wait_for, restarted, 20)
    # The restarted worker closed what the dead one left live as interrupted; the others run on.
    def closed() -> bool:
        by_id = {s.id: s for s in env.svc.sessions()}
        return all(by_id[s.id].end_reason == "interrupted" for s in doomed)

    await asyncio.to_thread(wait_for, closed, 20)
    by_id = {s.id: s for s in await asyncio.to_thread(env.svc.sessions)}
    survivors = [by_id[s.id] for s in by_id.values() if _owner_pid(s.owner) == pids[1] and s.command == "echo up; sleep 60"]
    assert survivors and all(s.ended_at is None for s in survivors)
    results = await asyncio.gather(*(_run(env, f"echo again-{i}") for i in range(8)))
    assert [r.stdout for r in results] == [f"again-{i}\n" for i in range(8)]
    for conn, _ in clients:
        conn.close()
        await conn.wait_closed()
    assert env.proc is not None and env.proc.poll() is None
    env.stop()
    assert any(f"pid {victim}) exited with status -9" in line for line in env.output), env.output


async def test_sigterm_to_the_parent_stops_every_worker_and_ends_their_sessions(workers: Env) -> None:
    env = workers
    pids = _pids(env)
    env.grant()
    conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice"))
    proc = await conn.create_process("echo up; sleep 60")
    assert (await asyncio.wait_for(proc.stdout.readline(), 10)) == "up\n"
    assert env.proc is not None
    t0 = time.monotonic()
    env.proc.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(env.proc.wait, 30)
    assert status == 0 and time.monotonic() - t0 < 15
    assert not any(_alive(p) for p in pids)
    [s] = await asyncio.to_thread(env.svc.sessions)
    assert s.end_reason == "shutdown" and s.head is not None  # sealed, not interrupted
    conn.close()
    await conn.wait_closed()


async def test_the_per_user_session_cap_holds_across_workers(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.configure("[bastion]\nmax_sessions_per_user = 3\n")
    env.start(args=("--workers", "2"))
    try:
        env.grant()

        async def one(i: int) -> tuple[str, str]:
            async with asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice")) as conn:
                r = await conn.run(f"echo in-{i}; sleep 3", check=False)
                return str(r.stdout), str(r.stderr)

        results = await asyncio.gather(*(one(i) for i in range(10)))
        admitted = [out for out, _ in results if out.startswith("in-")]
        refused = [err for out, err in results if not out]
        assert len(admitted) == 3 and len(refused) == 7, results
        assert all("open sessions (limit)" in err for err in refused)
        sessions = await asyncio.to_thread(env.svc.sessions)
        assert len(sessions) == 3  # a refused session leaves no row (nor recording)
        assert len(list(env.data.recordings.glob("*.zsprec"))) == 3
    finally:
        env.stop()


def test_a_worker_that_cannot_start_stops_the_service_with_its_reason(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.data.db_path.write_bytes(b"not a database at all" * 100)
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "serve", "--data", str(env.data.root), "--listen", "127.0.0.1:0",
         "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 1
    assert "exited before listening 5 times in a row" in p.stderr and "file is not a database" in p.stderr
    assert "restarting it in" in p.stderr and "Traceback" not in p.stderr


def test_a_second_supervisor_on_the_same_data_dir_is_refused(workers: Env) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "serve", "--data", str(workers.data.root), "--listen", "127.0.0.1:0",
         "--workers", "2"],
        capture_output=True, text=True, timeout=30,
    )
    assert p.returncode == 2 and "another zsp serve" in p.stderr
    assert all(_alive(pid) for pid in _pids(workers))


def test_per_source_caps_are_divided_among_workers() -> None:
    from zsp_tui.bastion.server import Limits, per_worker

    lim = per_worker(Limits(max_auth_failures_per_source=20, max_unauthenticated_per_source=5), 2)
    assert lim.max_auth_failures_per_source == 10 and lim.max_unauthenticated_per_source == 3
    assert lim.max_sessions_per_user == Limits().max_sessions_per_user  # counted in the store instead
    assert per_worker(Limits(), 1) == Limits()
