"""Shared by the object storage tests: a data dir whose ``[storage]`` names a real SeaweedFS
bucket, and ended sessions with real recordings (written by ``recorder``) in its store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta, new_session_id
from replay import verify
from tests.servers import S3Server
from zsp_tui.access import AccessService
from zsp_tui.config import ObjectStorageSettings
from zsp_tui.datadir import DataDir
from zsp_tui.models import SessionRecord, session_owner
from zsp_tui.objstore import S3Storage, mark_pending

__all__ = ["Deployment", "deployment", "record_session", "storage_for"]

MARKER = "hello from the bucket"


@dataclass
class Deployment:
    data: DataDir
    svc: AccessService
    server: S3Server
    bucket: str
    prefix: str = "rec"

    @property
    def settings(self) -> ObjectStorageSettings:
        return self.data.settings().storage  # type: ignore[return-value]

    def storage(self, **kw: object) -> S3Storage:
        return S3Storage(self.settings, **kw)  # type: ignore[arg-type]

    def row(self, sid: str) -> SessionRecord:
        got = self.svc.session(sid)
        assert got is not None
        return got

    def env(self) -> dict[str, str]:
        """Environment for a ``zsp`` subprocess: this checkout, the bucket's credentials."""
        import zsp_tui

        env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSP_", "AWS_"))}
        env["PYTHONPATH"] = str(Path(zsp_tui.__file__).resolve().parents[1])
        return env | self.server.env()


def deployment(root: Path, server: S3Server, bucket: str, *, retention_days: int = 0, endpoint: str | None = None
               ) -> Deployment:
    """An initialised data dir whose zsp.toml stores recordings in ``bucket`` (prefix ``rec``)."""
    d = DataDir(root)
    d.init()
    text = d.config_path.read_text()
    lines = f'[storage]\nurl = "s3://{bucket}/rec"\nendpoint = "{endpoint or server.endpoint}"\n'
    if retention_days:
        lines += f"retention_days = {retention_days}\n"
    d.config_path.write_text(text.replace("[storage]\n", lines, 1))
    return Deployment(d, d.service(), server, bucket)


def storage_for(dep: Deployment, endpoint: str) -> S3Storage:
    """The deployment's bucket settings at another endpoint (a closed port: the store is down)."""
    s = dep.settings
    return S3Storage(ObjectStorageSettings(s.bucket, s.prefix, endpoint, s.region, s.retention_days), max_attempts=1)


def record_session(
    dep: Deployment,
    *,
    end: bool = True,
    pending: bool = True,
    seal: bool = True,
    output_bytes: int = 0,
    text: str = MARKER,
) -> str:
    """A session recorded by ``recorder`` into scratch, started in the store and (``end``) ended
    with its recording's final head and (``pending``) marked for upload. ``output_bytes``: that
    much more output (incompressible), for large recordings. Returns its id."""
    d = dep.data
    sid = new_session_id()
    path = d.recordings / f"{sid}.zsprec"
    meta = SessionMeta(user="alice", target="db1", login="postgres", term="xterm", cols=80, rows=24)
    w = RecordingWriter(FileSink(path, sync_dir=False), d.signing_key(), meta, session_id=sid)
    t = 1_000_000_000
    w.output(f"$ echo {text}\r\n{text}\r\n".encode(), at_ns=t)
    chunk = 64 * 1024
    sent = 0
    while sent < output_bytes:
        t += 1_000_000
        w.output(os.urandom(chunk), at_ns=t)
        sent += chunk
    if seal:
        w.close(0, "exit")
    else:
        w.tick(at_ns=t + 60_000_000_000)
        w.flush()
        w.abandon()
    record = SessionRecord(
        id=str(sid),
        user="alice",
        target="db1",
        login="postgres",
        grant_id=None,
        command=None,
        client="127.0.0.1:40000",
        path=str(path),
        started_at=datetime.now(UTC),
        owner=session_owner("serve"),
    )
    dep.svc.session_started(record)
    if end:
        report = verify(path, d.trusted_keys())
        head = report.head.hex() if seal and report.head is not None else None
        dep.svc.session_ended(record, 0 if seal else None, "exit", head)
        if pending:
            with dep.svc.store.transaction() as tx:
                mark_pending(tx, str(sid))
    return str(sid)
