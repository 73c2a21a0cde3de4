"""Recordings in S3-compatible object storage (issue 12), against a real SeaweedFS: upload verified
by hash and only then removed from scratch, never a recording lost when the store is down, and
every reader (verify, play, export, search indexing) working on an uploaded session through the
verified download cache, refusing a tampered or deleted object."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from replay import LocalDirectory, Outcome, SourceError, verify, verify_frames
from tests.export_helpers import zsp
from tests.objstore_helpers import MARKER, Deployment, deployment, record_session, storage_for
from tests.servers import S3Server, free_port
from tests.test_bastion import wait_for
from zsp_tui.objstore import (
    ObjectStoreError,
    RecordingUnavailable,
    S3Storage,
    TieredStorage,
    Uploader,
    cache_path,
    upload_all,
)


@pytest.fixture
def dep(tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    for k in ("ZSP_STORAGE_URL", "ZSP_S3_ENDPOINT", "ZSP_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    return deployment(tmp_path / "data", s3_server, s3_bucket)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _events(dep: Deployment, name: str) -> list:
    return [e for e in dep.svc.audit_events() if e.event == name]


def _upload(dep: Deployment) -> Uploader:
    up = Uploader(dep.data, service=dep.svc)
    up.run_once()
    return up


# --- the upload ------------------------------------------------------------------------------


def test_upload_stores_hash_and_key_audits_it_and_only_then_empties_scratch(dep: Deployment) -> None:
    sid = record_session(dep)
    scratch = Path(dep.row(sid).path)
    original = scratch.read_bytes()
    assert dep.row(sid).upload == "pending"

    done = Uploader(dep.data, service=dep.svc).run_once()

    assert done.uploaded == (sid,) and not done.failed
    row = dep.row(sid)
    assert row.upload == "uploaded"
    assert row.object_key == f"s3://{dep.bucket}/rec/{sid}.zsprec"
    assert row.sha256 == hashlib.sha256(original).hexdigest()
    assert not scratch.exists()
    body = dep.server.client().get_object(Bucket=dep.bucket, Key=f"rec/{sid}.zsprec")["Body"].read()
    assert body == original
    (ev,) = _events(dep, "recording.upload")
    assert ev.code == "ZSP2310I" and ev.session_id == sid
    assert ev.fields["object_key"] == row.object_key and ev.fields["sha256"] == row.sha256
    assert ev.fields["bytes"] == len(original)
    assert zsp("audit", "verify", "--data", str(dep.data.root)).code == 0


def test_a_scratch_file_the_search_indexer_still_needs_stays_until_a_later_pass(dep: Deployment) -> None:
    """The bastion's uploader is told which files its search indexer has queued (``keep``): such a
    file is uploaded and marked, but removed only by a later pass, once the indexer is done."""
    sid = record_session(dep)
    scratch = Path(dep.row(sid).path)
    busy = {scratch}
    up = Uploader(dep.data, service=dep.svc, keep=lambda p: p in busy)
    assert up.run_once().uploaded == (sid,)
    assert dep.row(sid).upload == "uploaded" and scratch.exists()
    up.run_once()
    assert scratch.exists()  # still queued: kept
    busy.clear()
    again = up.run_once()
    assert not again.uploaded and not scratch.exists()  # removed, not uploaded twice


def test_a_kept_scratch_file_is_removed_as_soon_as_the_keeper_is_done(dep: Deployment) -> None:
    """The indexer done with a file it held kicks the uploader: its thread runs a pass at once,
    not at its next poll (an hour here), and removes the scratch copy."""
    sid = record_session(dep)
    scratch = Path(dep.row(sid).path)
    busy = {scratch}
    up = Uploader(dep.data, service=dep.svc, keep=lambda p: p in busy, poll_interval=3600)
    up.start()
    try:
        wait_for(lambda: dep.row(sid).upload == "uploaded")
        time.sleep(0.2)
        assert scratch.exists()  # kept for the indexer
        busy.clear()
        up.kick()  # what the bastion's indexer does once it is done with a file
        wait_for(lambda: not scratch.exists(), 30)  # a liveness bound, far below the poll
    finally:
        up.stop()


def test_verify_play_export_and_sessions_read_an_uploaded_session(dep: Deployment, tmp_path: Path) -> None:
    sid = record_session(dep)
    _upload(dep)
    root = str(dep.data.root)
    assert not Path(dep.row(sid).path).exists()

    # zsp verify, as a new process (the CLI end to end): downloaded, checked, VALID.
    got = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "verify", "--data", root, sid[:8]],
        capture_output=True, text=True, timeout=120, env=dep.env(),
    )
    assert got.returncode == 0, got.stderr
    assert "VALID" in got.stdout
    cached = cache_path(dep.data, sid)
    assert cached.exists() and stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert _sha(cached) == dep.row(sid).sha256

    played = zsp("play", "--data", root, "--instant", sid)
    assert played.code == 0, played.err
    assert MARKER in played.out

    out = tmp_path / "evidence.tar"
    exported = zsp("export", "--data", root, "-o", str(out), sid)
    assert exported.code == 0, exported.err
    assert zsp("verify", str(out)).code == 0

    listed = zsp("sessions", "--data", root, "--json")
    (row,) = json.loads(listed.out)
    assert row["upload"] == "uploaded" and row["sha256"] == dep.row(sid).sha256
    assert row["object_key"] == f"s3://{dep.bucket}/rec/{sid}.zsprec"
    assert row["status"] == "sealed"

    # rules test reads it too (the same resolve_ref)
    assert zsp("rules", "test", "--data", root, sid).code in (0, 1)


def test_export_by_filter_and_search_index_cover_an_uploaded_session(dep: Deployment, tmp_path: Path) -> None:
    sid = record_session(dep)
    _upload(dep)
    root = str(dep.data.root)
    exported = zsp("export", "--data", root, "--user", "alice", "-o", str(tmp_path / "by-user.tar"))
    assert exported.code == 0, exported.err

    cache_path(dep.data, sid).unlink()  # the index must fetch it itself
    indexed = zsp("index", "--data", root)
    assert indexed.code == 0, indexed.err
    found = zsp("search", "--data", root, "--json", "bucket")
    assert found.code == 0, found.err
    assert sid in found.out
    again = zsp("index", "--data", root)  # nothing stale: not downloaded and indexed again
    assert "0 recording(s) indexed" in again.err


def test_sessions_lists_a_pending_upload(dep: Deployment) -> None:
    sid = record_session(dep)
    root = str(dep.data.root)
    (row,) = json.loads(zsp("sessions", "--data", root, "--json").out)
    assert row["id"] == sid and row["upload"] == "pending" and row["object_key"] is None
    table = zsp("sessions", "--data", root).out
    assert "pending upload" in table


# --- never losing a recording ------------------------------------------------------------------


def test_store_down_keeps_the_recording_pending_in_scratch_and_a_later_pass_uploads_it(dep: Deployment) -> None:
    sid = record_session(dep)
    scratch = Path(dep.row(sid).path)
    clock = [1000.0]
    down = storage_for(dep, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    up = Uploader(dep.data, down, service=dep.svc, monotonic=lambda: clock[0])

    first = up.run_once()
    assert sid in first.failed and "cannot reach the object store" in first.failed[sid]
    assert scratch.exists() and dep.row(sid).upload == "pending"
    assert up.backoff(sid) == pytest.approx(1.0)
    assert up.run_once().waiting == (sid,)  # backing off: not tried again yet

    for expected in (2.0, 4.0, 8.0):
        clock[0] += 100
        assert sid in up.run_once().failed
        assert up.backoff(sid) == pytest.approx(expected)
    for _ in range(8):
        clock[0] += 100
        up.run_once()
    assert up.backoff(sid) == pytest.approx(60.0)  # capped
    (failed,) = _events(dep, "recording.upload_failed")  # once per distinct reason, not per retry
    assert failed.code == "ZSP2311W" and failed.outcome == "failure"
    assert "cannot reach the object store" in str(failed.fields["reason"])
    assert "pending upload" in zsp("sessions", "--data", str(dep.data.root)).out

    back = Uploader(dep.data, service=dep.svc)  # the store is back
    assert back.run_once().uploaded == (sid,)
    assert not scratch.exists() and dep.row(sid).upload == "uploaded"


def test_a_stopped_store_that_comes_back_gets_the_recording(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private SeaweedFS, stopped and started again (not the shared one)."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    names = ("s3", "s3g", "master", "masterg", "volume", "volumeg", "filer", "filerg")
    ports = {n: free_port() for n in names}
    root = tmp_path / "weed"
    root.mkdir()
    own = S3Server(root=root, endpoint=f"http://127.0.0.1:{ports['s3']}", proc=None, ports=ports)
    own.start()
    try:
        bucket = own.bucket()
        dep = deployment(tmp_path / "data", own, bucket)
        sid = record_session(dep)
        own.stop()
        up = Uploader(dep.data, dep.storage(max_attempts=1), service=dep.svc, backoff_base=0.01)
        assert sid in up.run_once().failed
        assert Path(dep.row(sid).path).exists() and dep.row(sid).upload == "pending"
        own.start()
        time.sleep(0.05)
        deadline = time.monotonic() + 60
        while dep.row(sid).upload != "uploaded" and time.monotonic() < deadline:
            up.run_once()
            time.sleep(0.5)
        assert dep.row(sid).upload == "uploaded"
        assert verify(dep.data.recording_path(dep.row(sid)), dep.data.trusted_keys()).outcome is Outcome.VALID
    finally:
        own.stop()


def test_a_live_session_is_never_uploaded(dep: Deployment) -> None:
    sid = record_session(dep, end=False)
    with dep.svc.store.transaction() as tx:
        tx.set_upload(sid, "pending")  # wrongly marked: still not uploaded while live
    done = _upload(dep).run_once()
    assert not done.uploaded and Path(dep.row(sid).path).exists()
    assert dep.server.client().list_objects_v2(Bucket=dep.bucket).get("KeyCount", 0) == 0


def test_a_recording_left_by_a_crash_is_uploaded_once_its_session_is_interrupted(dep: Deployment) -> None:
    sid = record_session(dep, end=False, seal=False)
    up = Uploader(dep.data, service=dep.svc)
    assert not up.run_once().uploaded  # live: left alone
    assert dep.row(sid).upload is None
    assert dep.svc.session_interrupted(dep.row(sid), None, {})  # what the next bastion's start does
    assert up.run_once().uploaded == (sid,)
    row = dep.row(sid)
    assert row.upload == "uploaded" and row.end_reason == "interrupted"
    report = verify(dep.data.recording_path(row), dep.data.trusted_keys())
    assert report.outcome is Outcome.INCOMPLETE and report.signed_frames > 0


def test_a_scratch_copy_left_after_the_upload_is_removed_and_still_readable_before(dep: Deployment) -> None:
    sid = record_session(dep)
    scratch = Path(dep.row(sid).path)
    key, digest = dep.storage().put(sid, scratch)
    with dep.svc.store.transaction() as tx:  # the uploader stopped between marking and removing
        tx.set_upload(sid, "uploaded", object_key=key, sha256=digest)
    assert dep.data.recording_path(dep.row(sid)) == scratch  # same hash: no download needed
    done = Uploader(dep.data, service=dep.svc).run_once()
    assert done.cleaned == (sid,) and not done.uploaded and not scratch.exists()
    assert not _events(dep, "recording.upload")  # not uploaded twice


# --- reading what is in the bucket ------------------------------------------------------------


def test_a_tampered_object_is_refused_with_a_clear_error(dep: Deployment) -> None:
    sid = record_session(dep)
    _upload(dep)
    client = dep.server.client()
    key = f"rec/{sid}.zsprec"
    body = bytearray(client.get_object(Bucket=dep.bucket, Key=key)["Body"].read())
    body[200] ^= 0x01
    client.put_object(Bucket=dep.bucket, Key=key, Body=bytes(body))

    with pytest.raises(RecordingUnavailable, match="does not match the sha256 recorded at upload"):
        dep.data.recording_path(dep.row(sid))
    assert not cache_path(dep.data, sid).exists()
    assert not list(cache_path(dep.data, sid).parent.glob(".*.part"))  # nothing half-written left
    got = zsp("verify", "--data", str(dep.data.root), sid)
    assert got.code != 0
    assert "does not match the sha256 recorded at upload" in got.err and "VALID" not in got.out
    assert zsp("play", "--data", str(dep.data.root), "--instant", sid).code != 0


def test_a_changed_cache_copy_is_replaced_by_the_object(dep: Deployment) -> None:
    sid = record_session(dep)
    _upload(dep)
    cached = dep.data.recording_path(dep.row(sid))
    good = cached.read_bytes()
    cached.write_bytes(good[:-10])  # truncated (or edited) locally
    assert dep.data.recording_path(dep.row(sid)).read_bytes() == good


def test_a_deleted_object_is_a_clear_error(dep: Deployment) -> None:
    sid = record_session(dep)
    _upload(dep)
    dep.server.client().delete_object(Bucket=dep.bucket, Key=f"rec/{sid}.zsprec")
    with pytest.raises(RecordingUnavailable, match="missing from the bucket"):
        dep.data.recording_path(dep.row(sid))
    got = zsp("verify", "--data", str(dep.data.root), sid)
    assert got.code != 0 and "missing from the bucket" in got.err


def test_an_uploaded_session_without_storage_settings_is_a_clear_error(dep: Deployment) -> None:
    sid = record_session(dep)
    _upload(dep)
    text = dep.data.config_path.read_text()
    start = text.index("[storage]\n") + len("[storage]\n")
    end = text.index("\n", text.index("endpoint = ", start)) + 1
    dep.data.config_path.write_text(text[:start] + text[end:])  # [storage] as shipped: nothing set
    with pytest.raises(RecordingUnavailable, match=r"no \[storage\] settings"):
        dep.data.recording_path(dep.row(sid))


def test_the_bucket_is_a_recording_storage_of_seekable_ranged_reads(dep: Deployment) -> None:
    sid = record_session(dep, output_bytes=3 * 1024 * 1024)
    scratch = Path(dep.row(sid).path)
    original = scratch.read_bytes()
    s3 = dep.storage()
    s3.put(sid, scratch)

    with s3.open(sid) as f:
        assert f.seekable()
        f.seek(1_500_000)
        assert f.read(70_000) == original[1_500_000:1_570_000]
        f.seek(-100, io.SEEK_END)
        assert f.read() == original[-100:]
        f.seek(0)
        frames = list(verify_frames(f, dep.data.trusted_keys(), source=sid))
    assert frames
    stored = s3.stat(sid)
    assert stored is not None and stored.size == len(original) and stored.location.startswith("s3://")
    assert s3.stat(str(uuid.uuid4())) is None
    assert [r.name for r in s3.list()] == [sid]

    # Scratch first, then the bucket.
    tiered = TieredStorage(LocalDirectory(dep.data.recordings), s3)
    assert tiered.stat(sid).location == str(scratch)  # type: ignore[union-attr]
    scratch.unlink()
    assert tiered.stat(sid).location.startswith("s3://")  # type: ignore[union-attr]
    with tiered.open(sid) as f:
        assert f.read(64) == original[:64]
    assert [r.name for r in tiered.list()] == [sid]
    assert isinstance(dep.data.storage(), TieredStorage)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "..", ".hidden", "x" * 200, "a\nb"])
def test_names_that_are_not_session_ids_are_refused(dep: Deployment, name: str, tmp_path: Path) -> None:
    s3 = dep.storage()
    with pytest.raises(SourceError, match="not a recording name"):
        s3.open(name)
    with pytest.raises(SourceError, match="not a recording name"):
        s3.stat(name)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    with pytest.raises(ObjectStoreError, match="not a recording name"):
        s3.put(name, f)
    assert dep.server.client().list_objects_v2(Bucket=dep.bucket).get("KeyCount", 0) == 0


# --- large recordings, retention ------------------------------------------------------------------


def test_a_recording_over_8_mib_goes_up_in_parts_and_verifies(dep: Deployment) -> None:
    sid = record_session(dep, output_bytes=20 * 1024 * 1024)
    scratch = Path(dep.row(sid).path)
    size = scratch.stat().st_size
    digest = _sha(scratch)
    assert size > 8 * 1024 * 1024
    _upload(dep)
    row = dep.row(sid)
    assert row.upload == "uploaded" and row.sha256 == digest
    head = dep.server.client().head_object(Bucket=dep.bucket, Key=f"rec/{sid}.zsprec")
    assert head["ContentLength"] == size
    assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts: a multipart upload
    assert verify(dep.data.recording_path(row), dep.data.trusted_keys()).outcome is Outcome.VALID


def test_retention_is_put_on_each_recording_when_the_bucket_has_object_lock(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    bucket = "lock-" + uuid.uuid4().hex[:16]
    s3_server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    dep = deployment(tmp_path / "data", s3_server, bucket, retention_days=3)
    sid = record_session(dep)
    large = record_session(dep, output_bytes=10 * 1024 * 1024)  # multipart, locked too
    _upload(dep)
    assert dep.row(sid).upload == "uploaded" and dep.row(large).upload == "uploaded"
    client = s3_server.client()
    for one in (sid, large):
        head = client.head_object(Bucket=bucket, Key=f"rec/{one}.zsprec")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        left = head["ObjectLockRetainUntilDate"].timestamp() - time.time()
        assert 2.9 * 86400 < left <= 3 * 86400 + 60
    key = f"rec/{sid}.zsprec"
    head = client.head_object(Bucket=bucket, Key=key)
    with pytest.raises(Exception, match=r"AccessDenied|Access Denied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])


def test_retention_asked_of_a_bucket_without_object_lock_is_refused_plainly(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    dep = deployment(tmp_path / "data", s3_server, s3_bucket, retention_days=3)
    sid = record_session(dep)
    done = Uploader(dep.data, service=dep.svc).run_once()
    assert "has no Object Lock" in done.failed[sid] and "retention_days = 3" in done.failed[sid]
    assert dep.row(sid).upload == "pending" and Path(dep.row(sid).path).exists()
    (ev,) = _events(dep, "recording.upload_failed")
    assert "has no Object Lock" in str(ev.fields["reason"])
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


def test_wrong_credentials_fail_the_upload_and_keep_the_recording(
    dep: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(SeaweedFS creates a missing bucket on the first PUT of an admin identity, so a missing
    bucket is not a failure there; refused credentials are.)"""
    sid = record_session(dep)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    done = Uploader(dep.data, dep.storage(max_attempts=1), service=dep.svc).run_once()
    assert "access denied" in done.failed[sid]
    assert Path(dep.row(sid).path).exists() and dep.row(sid).upload == "pending"
    (ev,) = _events(dep, "recording.upload_failed")
    assert "not-the-secret" not in json.dumps(ev.fields)


# --- the background thread, and uploading a whole data dir --------------------------------------


def test_the_uploader_thread_uploads_when_kicked_and_stops(dep: Deployment) -> None:
    up = Uploader(dep.data, service=dep.svc, poll_interval=3600)
    up.start()
    try:
        sid = record_session(dep)
        up.kick()
        deadline = time.monotonic() + 30
        while dep.row(sid).upload != "uploaded" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dep.row(sid).upload == "uploaded"
    finally:
        up.stop()
    assert up._thread is None


def test_upload_all_moves_every_ended_recording_of_a_data_dir(dep: Deployment) -> None:
    done = [record_session(dep, pending=False) for _ in range(3)]
    live = record_session(dep, end=False)
    seen: list[str] = []
    report = upload_all(dep.data, dep.storage(), service=dep.svc, progress=lambda r, n: seen.append(r.id))
    assert sorted(report.uploaded) == sorted(done) == sorted(seen)
    assert report.skipped == (live,) and not report.failed
    for sid in done:
        assert dep.row(sid).upload == "uploaded"
    assert dep.row(live).upload is None and Path(dep.row(live).path).exists()


def test_storage_commands_upload_and_report(dep: Deployment) -> None:
    sid = record_session(dep, pending=False)
    root = str(dep.data.root)
    status = zsp("storage", "status", "--data", root)
    assert status.code == 0, status.err
    assert f"s3://{dep.bucket}/rec" in status.out and "1 to upload" in status.out
    got = zsp("storage", "upload", "--data", root)
    assert got.code == 0, got.err
    assert dep.row(sid).upload == "uploaded"
    status = json.loads(zsp("storage", "status", "--data", root, "--json").out)
    assert status["uploaded"] == 1 and status["pending"] == 0 and status["local"] == 0


def test_import_of_zsp_does_not_load_boto3() -> None:
    code = "import sys, zsp_tui.cli, zsp_tui.indexing, zsp_tui.objstore; print('boto3' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert got.stdout.strip() == "False", got.stderr


def test_bucket_storage_is_not_needed_without_storage_settings(tmp_path: Path) -> None:
    from zsp_tui.datadir import DataDir

    d = DataDir(tmp_path / "plain")
    d.init()
    assert isinstance(d.storage(), LocalDirectory)
    with pytest.raises(ObjectStoreError, match=r"no \[storage\]"):
        Uploader(d)


def test_s3_storage_reports_an_unreachable_store_as_one_line(dep: Deployment) -> None:
    down = storage_for(dep, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SourceError, match="cannot reach the object store"):
        down.open(str(uuid.uuid4()))
    assert isinstance(down, S3Storage)
