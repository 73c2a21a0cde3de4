"""Adversarial tests of issue 12 (PostgreSQL store, S3 recording storage, several bastions and
workers): a malicious bucket, a careless operator, real servers and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import asyncssh
import pytest

from tests.bastion_env import make_env, tracebacks
from tests.objstore_helpers import Deployment, deployment, record_session
from tests.servers import PostgresCluster, S3Server, free_port
from tests.test_store_postgres import zsp_at
from zsp_tui.objstore import RecordingUnavailable, Uploader, cache_path

# --- the store's password -----------------------------------------------------------------------

SECRET = "s3cr3t-Pw"

_QUERY_PASSWORD_URLS = [
    "postgresql://zsp@127.0.0.1:{port}/zsp?password=" + SECRET,
    "postgresql://zsp@127.0.0.1:{port}/zsp?sslmode=disable&password=" + SECRET,
    "postgresql://zsp@127.0.0.1:{port}/zsp?pass%77ord=" + SECRET,  # libpq decodes the keyword too
    "postgresql://zsp@127.0.0.1:{port}/zsp?sslpassword=" + SECRET,
]


@pytest.mark.parametrize("template", _QUERY_PASSWORD_URLS)
def test_a_password_given_as_a_url_query_parameter_is_never_printed(tmp_path: Path, template: str) -> None:
    """libpq takes ``?password=`` as well as ``user:password@``: an unreachable store named so must
    not print the password (the CLI's error, migrate's refusal, redact_url itself)."""
    from zsp_tui.config import redact_url

    url = template.format(port=free_port())
    assert SECRET not in redact_url(url)
    d = tmp_path / "d"
    assert zsp_at(d, "init").returncode == 0
    p = zsp_at(d, "sessions", env={"ZSP_DATABASE_URL": url})
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert SECRET not in p.stderr + p.stdout, p.stderr
    p = zsp_at(d, "migrate", "--to", url)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert SECRET not in p.stderr + p.stdout, p.stderr


def test_a_query_parameter_password_is_scrubbed_from_the_drivers_own_error_text() -> None:
    """The store and the search index scrub their password from psycopg's messages; one given as
    ``?password=`` too."""
    from zsp_tui.exceptions import StoreError
    from zsp_tui.store.postgres import PostgresStore

    url = f"postgresql://zsp@127.0.0.1:{free_port()}/zsp?password={SECRET}%zz"  # libpq quotes a bad token
    from zsp_tui.store.pg_search import PostgresSearchIndex

    with pytest.raises(StoreError) as got:
        PostgresStore(url)
    assert SECRET not in str(got.value) and SECRET not in repr(got.value)
    with pytest.raises(Exception) as other:
        PostgresSearchIndex(url)
    assert SECRET not in str(other.value) and SECRET not in repr(other.value)


# --- a malicious or compromised bucket ----------------------------------------------------------


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    for k in ("ZSP_STORAGE_URL", "ZSP_S3_ENDPOINT", "ZSP_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    return s3_server


@pytest.fixture
def dep(tmp_path: Path, s3_env: S3Server, s3_bucket: str) -> Deployment:
    return deployment(tmp_path / "data", s3_env, s3_bucket)


def _upload(dep: Deployment) -> None:
    Uploader(dep.data, service=dep.svc).run_once()


def test_a_recording_overwritten_in_a_locked_bucket_is_read_from_its_locked_version(
    tmp_path: Path, s3_env: S3Server
) -> None:
    """Object Lock keeps the uploaded version however the key is overwritten (the bastion's own
    credentials may PUT): the evidence must stay readable through zsp, from the version whose
    sha256 the store recorded, not be refused because a newer version sits on top of it."""
    bucket = "lock-" + uuid.uuid4().hex[:16]
    s3_env.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    dep = deployment(tmp_path / "data", s3_env, bucket, retention_days=1)
    sid, other = record_session(dep), record_session(dep, text="another session")
    _upload(dep)
    client = s3_env.client()
    good = client.get_object(Bucket=bucket, Key=f"rec/{sid}.zsprec")["Body"].read()
    # Overwritten twice: with another VALID recording, then with garbage.
    client.put_object(Bucket=bucket, Key=f"rec/{sid}.zsprec", Body=client.get_object(
        Bucket=bucket, Key=f"rec/{other}.zsprec")["Body"].read())
    client.put_object(Bucket=bucket, Key=f"rec/{sid}.zsprec", Body=b"\0" * 4096)
    path = dep.data.recording_path(dep.row(sid))
    assert path.read_bytes() == good
    cache_path(dep.data, sid).unlink()  # the CLI downloads it again, and says what it found
    got = zsp_at(dep.data.root, "verify", sid, env=dep.env())
    assert got.returncode == 0 and "VALID" in got.stdout, got.stderr
    assert "was overwritten in the bucket" in got.stderr and "reading the version uploaded" in got.stderr


def test_an_oversized_object_is_not_downloaded_past_the_disk_the_bastion_needs(dep: Deployment) -> None:
    """A bucket that serves a huge object under a recording's key (it claims any Content-Length
    it likes) must not fill the data dir's disk on the way to the hash check: the bastion on that
    disk would refuse sessions and fail the recordings in progress. The download stops at the
    bastion's ``min_free_bytes`` reserve and leaves nothing behind."""
    import shutil

    sid = record_session(dep)
    _upload(dep)
    free = shutil.disk_usage(dep.data.root).free
    text = dep.data.config_path.read_text()
    assert "\n[bastion]\n" in text
    reserve = free - 24 * 1024 * 1024  # 24 MiB to spare
    dep.data.config_path.write_text(text.replace("\n[bastion]\n", f"\n[bastion]\nmin_free_bytes = {reserve}\n", 1))
    big = os.urandom(1024 * 1024) * 160  # 160 MiB
    dep.server.client().put_object(Bucket=dep.bucket, Key=f"rec/{sid}.zsprec", Body=big)
    with pytest.raises(RecordingUnavailable, match=r"larger than the \d+ bytes the local disk can spare"):
        dep.data.recording_path(dep.row(sid))
    assert not [p for p in cache_path(dep.data, sid).parent.iterdir()]  # no partial download left


# --- a database that hangs instead of refusing -----------------------------------------------------


def _cluster_pids(cluster: PostgresCluster) -> list[int]:
    """The postmaster and every backend of ``cluster``."""
    master = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
    kids = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False).stdout.split()
    return [master, *map(int, kids)]


async def test_a_frozen_database_refuses_new_sessions_and_ends_live_ones_after_the_grace(
    tmp_path: Path, postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stops answering without closing anything (SIGSTOP: a hung host, a network
    partition): a new session must not start on grants nobody can check, and a live one must end
    after the grace plus at most one check's deadline, not hang on with revocations unseen."""
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_cluster.database())
    env = make_env(tmp_path / "a")
    env.configure("[bastion]\nstore_grace = 3\n")
    env.start()
    frozen: list[int] = []
    try:
        env.grant()
        conn = await asyncssh.connect("127.0.0.1", username="local", **env.asyncssh_options("alice"))
        proc = await conn.create_process("echo up; sleep 120")
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == "up\n"
        frozen = _cluster_pids(postgres_cluster)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()

        async def ended() -> float:
            await proc.wait_closed()
            return time.monotonic() - t0

        live = asyncio.create_task(ended())
        refused = await asyncio.to_thread(env.ssh, "alice", "local", "echo should-not-run", timeout=60)
        took = time.monotonic() - t0
        assert "should-not-run" not in refused.stdout and refused.returncode != 0
        lasted = await asyncio.wait_for(live, 40)
        print(f"frozen database -> live session ended after {lasted:.2f} s (store_grace = 3); "
              f"a new one refused after {took:.2f} s: {refused.stderr.strip()[-200:]}")
        assert lasted < 3 + 5 + 2, lasted
        conn.close()
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        env.stop()
    assert not tracebacks(env.output), tracebacks(env.output)


# --- text PostgreSQL cannot store --------------------------------------------------------------------


async def test_a_nul_byte_in_a_command_is_refused_as_such_not_as_a_database_outage(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL text cannot hold NUL. A grant holder sending ``echo a\\0b`` (or a control
    command with a NUL in its reason) was told the bastion cannot reach its database, and the
    bastion's operator was told the store fails and new sessions are refused: a false outage alarm
    anyone with a key can raise at will. The request is refused for what it is, and the store is
    not blamed."""
    monkeypatch.setenv("ZSP_DATABASE_URL", postgres_url)
    env = make_env(tmp_path / "a")
    env.configure("")
    env.start()
    try:
        env.grant()
        opts = env.asyncssh_options("alice")
        async with asyncssh.connect("127.0.0.1", username="local", **opts) as conn:
            r = await asyncio.wait_for(conn.run("echo a\x00b"), 20)
            assert r.exit_status != 0 and "NUL" in str(r.stderr), r.stderr
            assert "database" not in str(r.stderr)
            ok = await asyncio.wait_for(conn.run("echo fine"), 20)
            assert ok.stdout == "fine\n"
        async with asyncssh.connect("127.0.0.1", username="zsp", **opts) as conn:
            r = await asyncio.wait_for(conn.run("request local --for 5m --reason a\x00b"), 20)
            assert r.exit_status != 0 and "database" not in str(r.stderr), r.stderr
    finally:
        env.stop()
    out = "".join(env.output)
    assert "the store fails" not in out and "Traceback" not in out, out


# --- the uploader killed mid-multipart -----------------------------------------------------------


def test_an_uploader_killed_mid_multipart_leaves_the_recording_pending_and_the_next_pass_completes(
    dep: Deployment,
) -> None:
    """SIGKILL while parts are in flight: the row stays pending, the scratch file stays, and the
    next pass uploads the whole recording, verified, under the same key."""
    import sys

    sid = record_session(dep, output_bytes=40 * 1024 * 1024)
    scratch = Path(dep.row(sid).path)
    script = (
        "import sys; from pathlib import Path; from zsp_tui.datadir import DataDir\n"
        "from zsp_tui.objstore import Uploader\n"
        "print('go', flush=True); Uploader(DataDir(Path(sys.argv[1]))).run_once()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(dep.data.root)], env=dep.env(),
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "go\n"
    client = dep.server.client()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not client.list_multipart_uploads(Bucket=dep.bucket).get("Uploads"):
        time.sleep(0.02)
    assert child.poll() is None, "the uploader finished before it could be killed mid-upload"
    child.kill()
    child.wait()
    child.stdout.close()
    assert dep.row(sid).upload == "pending" and scratch.is_file()
    done = Uploader(dep.data, service=dep.svc).run_once()
    assert done.uploaded == (sid,), done
    row = dep.row(sid)
    assert row.upload == "uploaded" and not scratch.exists()
    assert dep.data.recording_path(row).stat().st_size > 40 * 1024 * 1024
    left = client.list_multipart_uploads(Bucket=dep.bucket).get("Uploads", [])
    print(f"incomplete multipart uploads left in the bucket after the kill: {len(left)}")
