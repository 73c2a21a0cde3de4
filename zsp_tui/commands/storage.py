"""``zsp storage status|upload``: the data dir's recordings and its object storage (``[storage]``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import ObjectStorageSettings, parse_storage_url, redact_url
from ..datadir import DataDir
from ..exceptions import UsageError
from ..models import SessionRecord
from ._common import data, emit_json, say

__all__ = ["register", "storage_settings"]


def storage_settings(d: DataDir, to: str | None = None, endpoint: str | None = None) -> ObjectStorageSettings:
    """The bucket to use: ``to`` (``s3://bucket/prefix``) if given, else the data dir's ``[storage]``;
    UsageError if neither. ``endpoint`` overrides the endpoint (for ``to``: else the settings')."""
    configured = d.settings().storage
    if to is not None:
        try:
            bucket, prefix = parse_storage_url(to)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        base = configured or ObjectStorageSettings(bucket, prefix)
        chosen = replace(base, bucket=bucket, prefix=prefix)
    elif configured is not None:
        chosen = configured
    else:
        raise UsageError(
            f"no object storage: set [storage] url in {d.config_path} (or ZSP_STORAGE_URL), "
            "or give --to s3://BUCKET/PREFIX"
        )
    return replace(chosen, endpoint=endpoint) if endpoint else chosen


def _state(s: SessionRecord) -> str:
    if s.ended_at is None:
        return "live"
    if s.upload in ("pending", "uploaded"):
        return s.upload
    return "local" if Path(s.path).is_file() else "missing"


def cmd_status(args: argparse.Namespace) -> int:
    from ..objstore import ObjectStoreError, S3Storage

    d = data(args)
    settings = storage_settings(d)
    svc = d.service()
    counts = {"live": 0, "local": 0, "pending": 0, "uploaded": 0, "missing": 0}
    for s in svc.sessions():
        counts[_state(s)] += 1
    storage = S3Storage(settings, max_attempts=2)
    problem: str | None = None
    lock: bool | None = None
    try:
        lock = storage.object_lock_enabled()
    except ObjectStoreError as exc:
        problem = exc.reason
    out: dict[str, Any] = {
        "url": settings.url,
        "endpoint": redact_url(settings.endpoint) if settings.endpoint else None,
        "reachable": problem is None,
        "problem": problem,
        "object_lock": lock,
        "retention_days": settings.retention_days,
        **counts,
    }
    if args.json:
        emit_json(out)
        return 0 if problem is None else 1
    say(f"object storage: {settings.url}" + (f" at {out['endpoint']}" if out["endpoint"] else ""))
    if problem is not None:
        say(f"  NOT REACHABLE: {problem}")
    else:
        say(f"  object lock: {'yes' if lock else 'no'}; retention_days = {settings.retention_days}")
        if settings.retention_days and not lock:
            say("  uploads are refused: retention_days asks for Object Lock, which this bucket does not have")
    waiting = counts["local"] + counts["pending"]
    say(
        f"recordings: {counts['uploaded']} uploaded, {waiting} to upload ({counts['pending']} pending, "
        f"{counts['local']} local only), {counts['live']} live"
        + (f", {counts['missing']} missing from scratch" if counts["missing"] else "")
    )
    return 0 if problem is None else 1


def cmd_upload(args: argparse.Namespace) -> int:
    from ..objstore import S3Storage, upload_all

    d = data(args)
    d.require()
    storage = S3Storage(storage_settings(d, args.to, args.endpoint))

    def progress(record: SessionRecord, size: int) -> None:
        print(f"zsp storage: uploaded {record.id} ({size} bytes)", file=sys.stderr)

    report = upload_all(d, storage, progress=progress)
    for sid, reason in sorted(report.failed.items()):
        say(f"zsp storage: {sid}: not uploaded: {reason} (it stays in scratch)", file=sys.stderr)
    say(
        f"zsp storage: {len(report.uploaded)} recording(s) uploaded to {storage.url} ({report.bytes} bytes)"
        + (f", {len(report.failed)} failed" if report.failed else "")
        + (f", {len(report.skipped)} skipped (live, or not in this data dir)" if report.skipped else ""),
        file=sys.stderr,
    )
    return 1 if report.failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "storage",
        help="object storage of recordings: status, upload",
        description="Recordings in S3-compatible object storage ([storage] in zsp.toml). Sessions record to "
        "local scratch; each finished recording is uploaded, read back and compared by sha256, and only then "
        "removed from scratch (the bastion does this as sessions end).",
    )
    ssub = p.add_subparsers(dest="storage_command", metavar="COMMAND", required=True)
    s = ssub.add_parser(
        "status", parents=[common], help="the bucket, whether it is reachable, and what waits for upload"
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)
    u = ssub.add_parser(
        "upload",
        parents=[common],
        help="upload every ended session's recording not in the bucket yet",
        description="Upload every ended session's recording that is not in the bucket yet (local-only ones "
        "too: a data dir moving to object storage), verified by hash, then removed from scratch. Live "
        "sessions are left alone.",
    )
    u.add_argument("--to", metavar="S3_URL", help="s3://bucket/prefix (default: [storage] url)")
    u.add_argument("--endpoint", metavar="URL", help="the S3 endpoint (default: [storage] endpoint)")
    u.set_defaults(func=cmd_upload)
