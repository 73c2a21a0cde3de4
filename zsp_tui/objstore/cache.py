"""Local files for uploaded recordings: the verified download cache.

Most readers (``zsp verify``, ``play``, ``export``, ``rules test``, the search indexer, the review
app's replay) work on a file path: they seek, re-read and hand the path on. For a session whose
recording is in the bucket, :func:`materialize` gives them one: ``DATA/cache/recordings/<id>.zsprec``
(mode 0600), downloaded once and used only while its sha256 is the one the store recorded at upload.
A copy that differs is downloaded again; an object that differs too, or is gone, is
:class:`RecordingUnavailable`: never a silent read of something else. Sessions not uploaded (local
only, live, or pending) are their scratch file, as before.

:func:`recording_location` says where that file is (or would be) without downloading anything:
for listings and index coverage, which must not fetch every recording.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from replay import SUFFIX, printable

from ._exceptions import ObjectStoreError, RecordingUnavailable
from .s3 import S3Storage, sha256_file

if TYPE_CHECKING:
    from ..datadir import DataDir
    from ..models import SessionRecord

__all__ = ["CACHE_DIR", "cache_path", "materialize", "recording_location"]

CACHE_DIR = Path("cache") / "recordings"
UPLOADED = "uploaded"
MIN_FREE_DEFAULT = 1 << 30
"""``[bastion] min_free_bytes``'s default (bastion.Limits; not imported: it loads asyncssh)."""

def cache_path(d: DataDir, session_id: str) -> Path:
    """Where the downloaded copy of ``session_id``'s recording is kept."""
    return d.root / CACHE_DIR / f"{session_id}{SUFFIX}"


def recording_location(d: DataDir, record: SessionRecord) -> Path:
    """The local file that holds (or, once downloaded, will hold) ``record``'s recording."""
    if record.upload == UPLOADED:
        return cache_path(d, record.id)
    return Path(record.path)


def materialize(d: DataDir, record: SessionRecord, storage: S3Storage | None = None) -> Path:
    """A local file with ``record``'s recording, as uploaded (see the module docstring).

    ``storage``: the bucket to read from (default: the data dir's ``[storage]``). The object is
    the one the row names (``object_key``), whatever the current settings' prefix."""
    if record.upload != UPLOADED:
        return Path(record.path)
    where = record.object_key or "(no object key)"
    if not record.object_key or not record.sha256:
        raise RecordingUnavailable(
            session_id=record.id, where=where, reason="the store marks it uploaded but names no object or sha256"
        )
    want = record.sha256.lower()
    cached = cache_path(d, record.id)
    if _digest(cached) == want:
        return cached
    scratch = Path(record.path)
    if _digest(scratch) == want:  # uploaded, not yet removed from scratch (the uploader stopped between)
        return scratch
    if storage is None:
        settings = d.settings().storage
        if settings is None:
            raise RecordingUnavailable(
                session_id=record.id,
                where=where,
                reason="it was uploaded to object storage, but this data dir has no [storage] settings "
                "(zsp.toml, or ZSP_STORAGE_URL and ZSP_S3_ENDPOINT) to read it with",
            )
        storage = S3Storage(settings)
    cached.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # What the download may take of the disk: never so much that the bastion (same data dir)
    # would refuse sessions or fail the recordings it is writing, whatever the bucket sends.
    budget = _spare_bytes(d, cached.parent)
    tmp = cached.with_name(f".{record.id}.{os.getpid()}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            got, _ = storage.download(record.object_key, fd, max_bytes=budget)
            if got != want:
                # Overwritten in the bucket. With Object Lock (or versioning) the version uploaded
                # is still there under the newer one: that one, by its hash, and only that one.
                newest = got
                for version in storage.older_versions(record.object_key):
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.ftruncate(fd, 0)
                    got, _ = storage.download(record.object_key, fd, version, max_bytes=budget)
                    if got == want:
                        # Readable, but someone wrote over evidence: said every time it is read.
                        print(
                            f"zsp: warning: {printable(record.object_key)} was overwritten in the bucket (its "
                            f"newest version has sha256 {newest[:16]}...); reading the version uploaded "
                            f"({printable(str(version))}), whose sha256 matches the store's",
                            file=sys.stderr,
                        )
                        break
            os.fsync(fd)
        finally:
            os.close(fd)
        if got != want:
            raise RecordingUnavailable(
                session_id=record.id,
                where=record.object_key,
                reason=f"the object does not match the sha256 recorded at upload (recorded {want[:16]}..., "
                f"the object's {got[:16]}...): it was changed in the bucket; refusing to read it",
            )
        os.replace(tmp, cached)
    except ObjectStoreError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, RecordingUnavailable):
            raise
        reason = exc.reason
        if reason == "no such object":
            reason = "the object is missing from the bucket (deleted?); the recording cannot be read"
        raise RecordingUnavailable(session_id=record.id, where=record.object_key, reason=reason) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return cached


def _spare_bytes(d: DataDir, where: Path) -> int:
    """Bytes a download into ``where`` may use: its file system's free space less the bastion's
    ``min_free_bytes`` (what new sessions and the recordings in progress need)."""
    try:
        keep = int(d.settings().bastion.get("min_free_bytes", MIN_FREE_DEFAULT))
    except Exception:  # noqa: BLE001 - unreadable settings: the default reserve
        keep = MIN_FREE_DEFAULT
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return 0
    return max(0, free - keep)


def _digest(path: Path) -> str | None:
    """sha256 of a regular file (hashed on every use: a copy changed since is never trusted);
    None if there is none."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return sha256_file(path)[0]
    except OSError:
        return None
