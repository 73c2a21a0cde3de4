"""Adversarial tests of issue 12 (PostgreSQL store, S3 recording storage, several bastions and
workers): a malicious bucket, a careless operator, real servers and real clients."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.objstore_helpers import Deployment, deployment, record_session
from tests.servers import S3Server, free_port
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
    got = zsp_at(dep.data.root, "verify", sid, env=dep.env())
    assert got.returncode == 0 and "VALID" in got.stdout, got.stderr


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
