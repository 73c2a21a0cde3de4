"""Two bastions sharing one store: real ``zsp serve`` processes on different ports and data dirs
(the same keys, as docs/DEPLOY.md has two hosts share them) over one real PostgreSQL database,
with a real S3-compatible bucket where a test needs one; real asyncssh and OpenSSH clients.

The embedded SQLite store is one data dir's: several processes share it as the workers of one
``zsp serve --workers N`` (tests/test_workers.py), and a revocation through the CLI reaches them
(here)."""

from __future__ import annotations

import asyncio
import io
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from recorder import load_trusted_keys
from replay import verify
from tests.bastion_env import Env, keygen, make_env, tracebacks
from tests.test_bastion import wait_for
from zsp_tui.access import Actor
from zsp_tui.datadir import DataDir
from zsp_tui.models import Role

APPROVE_TWICE = """\
[settings]
request_timeout = "1h"

[[rule]]
name = "ops"
requesters = ["role:operator"]
targets = ["local", "*"]
logins = ["*"]
max_duration = "4h"
require_reason = true
approvers = ["role:approver"]
approvals = 2
"""


@dataclass
class Pair:
    a: Env
    b: Env

    def stop(self) -> None:
        for env in (self.a, self.b):
            if env.proc is not None and env.proc.stdout is not None and not env.proc.stdout.closed:
                env.stop()


def _second(a: Env, root: Path) -> Env:
    """Bastion B: a data dir of its own (its own recordings scratch) with A's keys, settings and
    policy, over the same store."""
    root.mkdir()
    shutil.copytree(a.data.root, root / "data", ignore=shutil.ignore_patterns("recordings", "cache", "*.lock", "index*"))
    (root / "data" / "recordings").mkdir(mode=0o700)
    d = DataDir(root / "data")
    return Env(root=root, data=d, svc=d.service(), keys=a.keys)


def _pair(tmp_path: Path, config: str = "") -> Pair:
    a = make_env(tmp_path / "a")
    a.configure(config)
    b = _second(a, tmp_path / "b")
    return Pair(a, b)


@pytest.fixture
def pg_pair(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch):
    """Two bastions on one PostgreSQL database (``ZSP_DATABASE_URL``, inherited by the bastions)."""
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_url)
    (tmp_path / "a").mkdir()
    pair = _pair(tmp_path)
    yield pair
    pair.stop()


async def _open(env: Env, command: str, user: str = "alice") -> tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess]:
    conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options(user))
    proc = await conn.create_process(command)
    return conn, proc


async def _ends(proc: asyncssh.SSHClientProcess, timeout: float = 30) -> float:
    """Wait for ``proc``'s channel to close; when (monotonic)."""
    await asyncio.wait_for(proc.wait_closed(), timeout)
    return time.monotonic()


OTHER_HOST = ("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', "bastion-b")
"""Runs a bastion as another host would: its own host name (a UTS namespace), so its sessions'
owner is ``serve:bastion-b:PID``."""


def _control(env: Env, user: str, *command: str) -> subprocess.CompletedProcess[str]:
    return env.ssh(user, "zsp", *command)


# --- PostgreSQL: two bastions, one store --------------------------------------------------------


async def test_a_grant_approved_on_one_bastion_is_honoured_by_the_other(pg_pair: Pair) -> None:
    a, b = pg_pair.a, pg_pair.b
    a.start()
    b.start()
    asked = _control(a, "alice", "request", "local", "--for", "30m", "--reason", "deploy")
    assert asked.returncode == 0, asked.stderr
    rid = next(w for w in asked.stdout.split() if w.startswith("r-"))
    refused = b.ssh("alice", "local", "echo no")
    assert refused.returncode != 0 and "no active grant" in refused.stderr
    approved = _control(b, "bob", "approve", rid)
    assert approved.returncode == 0, approved.stderr
    for env in (a, b):
        r = env.ssh("alice", "local", "echo via-$0")
        assert r.returncode == 0 and r.stdout.startswith("via-"), r.stderr
    sessions = await asyncio.to_thread(a.svc.sessions)
    assert len(sessions) == 2 and len({s.owner for s in sessions}) == 2
    assert {Path(s.path).parent for s in sessions} == {a.data.recordings, b.data.recordings}


async def test_a_revoke_on_one_bastion_ends_a_session_on_the_other_within_2_s(pg_pair: Pair) -> None:
    a, b = pg_pair.a, pg_pair.b
    a.start()
    b.start()
    grant = a.grant()
    conn, proc = await _open(b, "echo up; sleep 60")
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == "up\n"
        t0 = time.monotonic()
        revoked = await asyncio.to_thread(_control, a, "bob", "revoke", grant.id, "--reason", "incident")
        t_revoked = time.monotonic()
        assert revoked.returncode == 0, revoked.stderr
        ended = await _ends(proc, 10)
    finally:
        conn.close()
        await conn.wait_closed()
    # Measured from the revoke's commit (the control command returned) and from its start.
    print(f"revoke on A -> session on B closed: {ended - t_revoked:.3f} s after the revoke returned, "
          f"{ended - t0:.3f} s after it was sent")
    assert ended - t_revoked < 2.0
    [s] = await asyncio.to_thread(b.svc.sessions)
    assert s.end_reason == "revoked"


async def test_a_bastion_killed_mid_session_leaves_a_recording_closed_and_uploaded_on_its_restart(
    tmp_path: Path, postgres_url: str, s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_url)
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    (tmp_path / "a").mkdir()
    storage = f'[storage]\nurl = "s3://{s3_bucket}/rec"\nendpoint = "{s3_server.endpoint}"\nregion = "us-east-1"\n'
    pair = _pair(tmp_path, storage)
    a, b = pair.a, pair.b
    try:
        a.start()
        b.start(prefix=OTHER_HOST)
        a.grant()
        conn, proc = await _open(b, "while true; do echo tick; sleep 0.01; done")
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == "tick\n"
        [s] = await asyncio.to_thread(a.svc.sessions)
        assert s.owner.startswith("serve:bastion-b:")
        await asyncio.to_thread(wait_for, lambda: Path(s.path).stat().st_size > 4000)
        b.stop(signal.SIGKILL)
        conn.close()
        # A, another host on the shared store, leaves B's session alone, even restarted.
        a.stop()
        a.start()
        r = await asyncio.to_thread(a.ssh, "alice", "local", "echo still")
        assert r.stdout == "still\n", r.stderr
        row = next(x for x in await asyncio.to_thread(a.svc.sessions) if x.id == s.id)
        assert row.ended_at is None and Path(s.path).exists()
        # B's restart closes it as interrupted, and uploads it (verified), then clears scratch.
        b.output.clear()
        b.start(prefix=OTHER_HOST)

        def uploaded():
            x = next(x for x in a.svc.sessions() if x.id == s.id)
            return x if x.upload == "uploaded" else None

        row = await asyncio.to_thread(wait_for, uploaded, 30)
        assert row.end_reason == "interrupted" and row.object_key and row.sha256
        # Scratch is cleared once the search indexer (a child process since issue 14) is done with
        # the file: by the upload itself, or by the uploader's next pass.
        await asyncio.to_thread(wait_for, lambda: not Path(s.path).exists(), 90)  # a liveness bound: removed once indexed
        key = row.object_key.split("/", 3)[3]
        body = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert __import__("hashlib").sha256(body).hexdigest() == row.sha256
        # What was uploaded is the recording as the restart sealed it: VALID, reason interrupted.
        uploaded_report = verify(io.BytesIO(body), load_trusted_keys(b.data.allowed_signers_path))
        assert uploaded_report.valid and uploaded_report.seal.reason == "interrupted", uploaded_report
        # And the sealed session on A is uploaded too.
        sealed = next(x for x in await asyncio.to_thread(a.svc.sessions) if x.id != s.id)
        await asyncio.to_thread(
            wait_for, lambda: next(x for x in a.svc.sessions() if x.id == sealed.id).upload == "uploaded", 30
        )
    finally:
        pair.stop()


async def test_concurrent_approvals_through_both_bastions_count_once(pg_pair: Pair) -> None:
    a, b = pg_pair.a, pg_pair.b
    for env in (a, b):
        env.data.policy_path.write_text(APPROVE_TWICE)
    carol = keygen(a.root / "carol_ed25519", "carol")
    a.svc.add_user(Actor("alice"), "carol", frozenset({Role.APPROVER}), [Path(f"{carol}.pub").read_text()])
    a.keys["carol"] = carol
    a.start()
    b.start()
    asked = _control(a, "alice", "request", "local", "--for", "30m", "--reason", "x")
    rid = next(w for w in asked.stdout.split() if w.startswith("r-"))
    # bob approves eight times at once, through both bastions: one approval of the two needed.
    results = await asyncio.gather(
        *(asyncio.to_thread(_control, env, "bob", "approve", rid) for env in (a, b, a, b, a, b, a, b))
    )
    assert sum(r.returncode == 0 for r in results) >= 1
    req = await asyncio.to_thread(a.svc.get, rid)
    assert len(req.approvals) == 1 and req.state.value == "pending"
    done = _control(b, "carol", "approve", rid)
    assert done.returncode == 0, done.stderr
    req = await asyncio.to_thread(a.svc.get, rid)
    assert req.state.value == "approved" and sorted(req.approvals) == ["bob", "carol"]


async def test_the_audit_chain_verifies_after_interleaved_writes_from_both(pg_pair: Pair) -> None:
    a, b = pg_pair.a, pg_pair.b
    a.start()
    b.start()
    a.grant()

    async def work(env: Env, i: int) -> None:
        await asyncio.to_thread(_control, env, "alice", "request", "local", "--for", "5m", "--reason", f"r{i}")
        await asyncio.to_thread(env.ssh, "alice", "local", f"echo {i}")

    await asyncio.gather(*(work(env, i) for i in range(6) for env in (a, b)))
    verified = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "audit", "verify", "--data", str(a.data.root)],
        capture_output=True, text=True, timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    events = await asyncio.to_thread(a.svc.audit_events)
    assert sum(e.event == "session.start" for e in events) == 12


async def test_a_lost_database_refuses_new_sessions_and_ends_live_ones_after_the_grace(
    tmp_path: Path, postgres_cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_cluster.database())
    (tmp_path / "a").mkdir()
    pair = _pair(tmp_path, "[bastion]\nstore_grace = 3\n")
    a, b = pair.a, pair.b
    try:
        a.start()
        b.start()
        a.grant()
        conn, proc = await _open(b, "echo up; sleep 60")
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == "up\n"
        await asyncio.to_thread(postgres_cluster.stop)
        t_down = time.monotonic()
        try:
            refused = await asyncio.to_thread(a.ssh, "alice", "local", "echo no", timeout=30)
            assert refused.returncode != 0 and "cannot reach its database" in refused.stderr, refused.stderr
            ended = await _ends(proc, 30)
            err = await proc.stderr.read()
            assert "this session ends in 3 s" in err and "could not check grants for 3 s" in err
            assert "postgresql://" not in err and "127.0.0.1" not in err  # the store's address stays on the bastion
            lasted = ended - t_down
            print(f"database stopped -> live session ended after {lasted:.2f} s (store_grace = 3)")
            assert 2.5 < lasted < 3 + 5 + 2  # the grace, plus at most one check's deadline
        finally:
            await asyncio.to_thread(postgres_cluster.start)
        conn.close()
        # The store is back: new sessions start again on both, and the ended session is stored.
        for env in (a, b):
            r = await asyncio.to_thread(wait_for, lambda env=env: (x := env.ssh("alice", "local", "echo back")).returncode == 0 and x, 30)
            assert r.stdout == "back\n"
        [first] = [s for s in await asyncio.to_thread(a.svc.sessions) if s.command == "echo up; sleep 60"]
        await asyncio.to_thread(
            wait_for, lambda: next(s for s in a.svc.sessions() if s.id == first.id).end_reason == "error", 30
        )
    finally:
        pair.stop()
    assert any("cannot check grants" in line for line in b.output)
    assert not tracebacks(a.output + b.output), tracebacks(a.output + b.output)


# --- SQLite: the workers of one zsp serve ----------------------------------------------------------


async def test_a_revoke_through_the_cli_ends_a_session_on_a_worker_within_2_s(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.start(args=("--workers", "2"))
    try:
        grant = env.grant()
        conn, proc = await _open(env, "echo up; sleep 60")
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == "up\n"
        t_sent = time.monotonic()
        revoked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "zsp_tui", "revoke", grant.id, "--as", "bob", "--reason", "x",
             "--data", str(env.data.root)],
            capture_output=True, text=True,
        )
        t_revoked = time.monotonic()
        assert revoked.returncode == 0, revoked.stderr
        ended = await _ends(proc, 10)
        conn.close()
        print(f"zsp revoke -> session on a worker closed {ended - t_revoked:.3f} s after it returned, "
              f"{ended - t_sent:.3f} s after it was started (polling, SQLite)")
        assert ended - t_revoked < 2.0
    finally:
        env.stop()


def test_a_grant_change_on_the_store_wakes_a_listening_bastion_at_once(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN zsp_grants (bastion/notify.py) hears the PostgreSQL store's NOTIFY on approve and revoke."""
    import threading

    from zsp_tui.bastion.notify import GrantNotices

    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_url)
    (tmp_path / "a").mkdir()
    env = make_env(tmp_path / "a")
    woke = threading.Event()
    notices = GrantNotices(postgres_url, woke.set)
    try:
        assert notices.listening.wait(10)
        woke.clear()
        t0 = time.monotonic()
        grant = env.grant()  # request + approve
        assert woke.wait(2), "no notification for an approval"
        woke.clear()
        env.svc.revoke(Actor("bob"), grant.id, "test")
        assert woke.wait(2), "no notification for a revoke"
        assert time.monotonic() - t0 < 2 and notices.received >= 2
    finally:
        notices.close()
    assert not notices.listening.is_set()
