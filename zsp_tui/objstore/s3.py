"""Recordings in an S3-compatible bucket (``[storage]`` in zsp.toml): AWS S3, MinIO, SeaweedFS...

:class:`S3Storage` is a :class:`replay.RecordingStorage` (``open`` is a seekable stream of ranged
GETs, ``stat``, ``list``) plus :meth:`S3Storage.put`, the one way a recording gets into the bucket:

* boto3's managed transfer: one PUT up to 8 MiB, multipart (8 MiB parts, 4 at once) above;
  every request retried by botocore's ``standard`` mode (exponential backoff with jitter).
* Object Lock retention in COMPLIANCE mode when ``retention_days`` > 0. The bucket must have Object
  Lock (``get_object_lock_configuration``); if it has not, ``put`` refuses with that reason rather
  than store a recording without the retention the settings promise. Retention is checked on the
  stored object after the upload.
* Verified by hash: the object is read back whole and its sha256 compared with the file's before
  ``put`` returns. Nothing is removed from local scratch on the strength of an upload unverified.

Credentials come only from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``, an instance role); a name that is not a session id never becomes a key. boto3 is
imported when a storage is made, so nothing else in zsp needs the ``s3`` extra.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from replay import SUFFIX, SourceError, StoredRecording

from ..config import ObjectStorageSettings, parse_storage_url, redact_url
from ._exceptions import ObjectStoreError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "MULTIPART_CHUNK",
    "MULTIPART_THRESHOLD",
    "S3Storage",
    "check_name",
    "parse_object_url",
    "sha256_file",
]

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""Recordings larger than this go up in parts (boto3 TransferConfig)."""
MULTIPART_CHUNK = 8 * 1024 * 1024
_CONCURRENCY = 4
_READ_CHUNK = 1024 * 1024
_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
"""A stored recording's name: a session id, as replay.LocalDirectory takes it (never a path)."""
_RETENTION_SLACK = timedelta(minutes=5)
"""A retain-until date this much earlier than asked (clock skew) still counts as applied."""


def check_name(name: str) -> str:
    """``name`` if it is a session id; :class:`SourceError` otherwise (no ``/``, no ``..``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise SourceError(source=repr(name), reason="not a recording name (a session id)")
    return name


def parse_object_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; ValueError for anything else."""
    bucket, key = parse_storage_url(url)
    if not key:
        raise ValueError(f"{url!r} names a bucket, not an object")
    return bucket, key


def sha256_file(path: Path | str) -> tuple[str, int]:
    """(hex sha256, size) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_READ_CHUNK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class S3Storage:
    """Recordings as ``<prefix>/<session-id>.zsprec`` objects of one bucket."""

    def __init__(self, settings: ObjectStorageSettings, *, client: Any = None, max_attempts: int = 5) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.where = redact_url(settings.endpoint or "aws") + " " + settings.url
        """The bucket for people (``ENDPOINT s3://bucket/prefix``; no credential in it)."""
        self._client = client if client is not None else _make_client(settings, max_attempts)
        self._lock_enabled: bool | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def client(self) -> Any:
        """The boto3 S3 client (thread-safe)."""
        return self._client

    def key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}{SUFFIX}" if self.prefix else f"{name}{SUFFIX}"

    def object_url(self, name: str) -> str:
        """``s3://bucket/key`` of ``name``: what the store keeps as ``sessions.object_key``."""
        return f"s3://{self.bucket}/{self.key(name)}"

    # --- replay.RecordingStorage -----------------------------------------------------------

    def open(self, name: str) -> BinaryIO:
        """A seekable stream of ranged GETs (1 MiB buffered); not verified, like a local file:
        the recording's signatures are what readers check."""
        return self.open_url(self.object_url(name))

    def open_url(self, object_url: str) -> BinaryIO:
        """A seekable stream of the object at ``s3://bucket/key``."""
        bucket, key = parse_object_url(object_url)
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - every botocore failure is one SourceError
            raise SourceError(source=object_url, reason=describe(exc, self)) from None
        raw = _RangedObject(self._client, bucket, key, int(head["ContentLength"]), object_url, self)
        return io.BufferedReader(raw, buffer_size=_READ_CHUNK)

    def stat(self, name: str) -> StoredRecording | None:
        key = self.key(name)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise SourceError(source=self.object_url(name), reason=describe(exc, self)) from None
        return StoredRecording(name, int(head["ContentLength"]), f"s3://{self.bucket}/{key}")

    def list(self) -> Iterator[StoredRecording]:
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key: str = obj["Key"]
                    rest = key[len(start) :]
                    name = rest[: -len(SUFFIX)] if rest.endswith(SUFFIX) else ""
                    if "/" in rest or not _NAME.fullmatch(name) or ".." in name:
                        continue
                    yield StoredRecording(name, int(obj["Size"]), f"s3://{self.bucket}/{key}")
        except Exception as exc:  # noqa: BLE001
            raise SourceError(source=self.url, reason=describe(exc, self)) from None

    # --- writing -------------------------------------------------------------------------------

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock (asked once): False when it has no lock
        configuration or the server does not implement it; ObjectStoreError if it cannot be asked."""
        if self._lock_enabled is None:
            try:
                got = self._client.get_object_lock_configuration(Bucket=self.bucket)
            except Exception as exc:  # noqa: BLE001
                if _code(exc) not in (
                    "ObjectLockConfigurationNotFoundError",
                    "NotImplemented",
                    "InvalidRequest",
                    "MethodNotAllowed",
                ):
                    raise ObjectStoreError(where=self.where, reason=describe(exc, self)) from None
                self._lock_enabled = False
            else:
                self._lock_enabled = got.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        return self._lock_enabled

    def put(self, name: str, path: Path | str) -> tuple[str, str]:
        """Upload the recording file ``path`` as ``name``; ``(object_url, sha256)`` once the object
        is read back with the file's hash (and carries the retention asked for).
        ObjectStoreError otherwise: then the recording must stay where it is."""
        try:
            key = self.key(name)
        except SourceError as exc:
            raise ObjectStoreError(where=self.where, reason=exc.reason) from None
        url = f"s3://{self.bucket}/{key}"
        days = self.settings.retention_days
        extra: dict[str, Any] = {"ContentType": "application/octet-stream"}
        until: datetime | None = None
        if days > 0:
            if not self.object_lock_enabled():
                raise ObjectStoreError(
                    where=self.where,
                    reason=f"retention_days = {days} asks for Object Lock retention, but bucket {self.bucket} "
                    "has no Object Lock (or the server does not support it): recordings are not uploaded "
                    "without it; create the bucket with Object Lock enabled, or set retention_days = 0",
                )
            until = datetime.now(UTC) + timedelta(days=days)
            extra |= {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}
        try:
            digest, size = sha256_file(path)
        except OSError as exc:
            raise ObjectStoreError(where=str(path), reason=exc.strerror or str(exc)) from None
        extra["Metadata"] = {"sha256": digest}
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=_CONCURRENCY,
            use_threads=True,
        )
        try:
            self._client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=config)
        except Exception as exc:  # noqa: BLE001
            raise ObjectStoreError(where=url, reason=describe(exc, self)) from None
        got, got_size = self.hash_object(url)
        if (got, got_size) != (digest, size):
            raise ObjectStoreError(
                where=url,
                reason=f"read back after upload it differs from the file (sha256 {got[:16]}..., {got_size} bytes; "
                f"the file: {digest[:16]}..., {size} bytes)",
            )
        if until is not None:
            self._check_retention(url, key, until)
        return url, digest

    def _check_retention(self, url: str, key: str, until: datetime) -> None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise ObjectStoreError(where=url, reason=describe(exc, self)) from None
        mode, kept = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if mode != "COMPLIANCE" or not isinstance(kept, datetime) or kept < until - _RETENTION_SLACK:
            raise ObjectStoreError(
                where=url,
                reason=f"the bucket did not apply the retention asked for (mode {mode}, until {kept}; "
                f"asked COMPLIANCE until {until:%Y-%m-%dT%H:%M:%SZ})",
            )

    # --- reading whole objects ---------------------------------------------------------------

    def hash_object(self, object_url: str) -> tuple[str, int]:
        """(hex sha256, size) of the object, read whole; ObjectStoreError if it cannot be read."""
        h = hashlib.sha256()
        size = self.read_object(object_url, h.update)
        return h.hexdigest(), size

    def download(
        self, object_url: str, fd: int, version_id: str | None = None, max_bytes: int | None = None
    ) -> tuple[str, int]:
        """Write the object (``version_id``: that version of it) to the open file ``fd``; its
        (hex sha256, size) as read. ``max_bytes``: ObjectStoreError as soon as the object is found
        to be larger (whatever size the bucket claims for it), before more is written."""
        h = hashlib.sha256()
        written = 0

        def sink(block: bytes) -> None:
            nonlocal written
            written += len(block)
            if max_bytes is not None and written > max_bytes:
                raise ObjectStoreError(
                    where=object_url,
                    reason=f"the object is larger than the {max_bytes} bytes the local disk can spare for it; "
                    "refusing to fill the disk with it",
                )
            h.update(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]

        size = self.read_object(object_url, sink, version_id)
        return h.hexdigest(), size

    def older_versions(self, object_url: str, limit: int = 16) -> tuple[str, ...]:
        """Version ids of the object at ``object_url`` other than its current one, newest first
        (at most ``limit``); empty if the bucket keeps no versions or cannot list them. With Object
        Lock (or versioning) an overwritten recording is still there as one of these."""
        bucket, key = parse_object_url(object_url)
        try:
            got = self._client.list_object_versions(Bucket=bucket, Prefix=key, MaxKeys=limit + 1)
        except Exception:  # noqa: BLE001 - a store without versions: nothing older to offer
            return ()
        found = [
            str(v["VersionId"])
            for v in got.get("Versions", ())
            if v.get("Key") == key and v.get("VersionId") not in (None, "null") and not v.get("IsLatest")
        ]
        return tuple(found[:limit])

    def read_object(
        self, object_url: str, sink: Callable[[bytes], object], version_id: str | None = None
    ) -> int:
        """Stream the object (``version_id``: that version) into ``sink`` 1 MiB at a time; its
        size. ObjectStoreError (reason ``no such object`` for a missing one) if it cannot be read."""
        bucket, key = parse_object_url(object_url)
        size = 0
        extra = {"VersionId": version_id} if version_id else {}
        try:
            body = self._client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
            try:
                while block := body.read(_READ_CHUNK):
                    try:
                        sink(block)
                    except Exception as exc:  # the sink's own failure (a full disk) is not the store's
                        raise _SinkFailed(exc) from exc
                    size += len(block)
            finally:
                body.close()
        except _SinkFailed as failed:
            raise failed.error from None
        except Exception as exc:  # noqa: BLE001 - every botocore failure is one ObjectStoreError
            raise ObjectStoreError(where=object_url, reason=describe(exc, self)) from None
        return size


class _SinkFailed(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


class _RangedObject(io.RawIOBase):
    """A read-only, seekable view of one object: each read is one ranged GET."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, where: str, storage: S3Storage) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._size, self._pos, self._where, self._storage = size, 0, where, storage
        self.name = where

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = base + offset
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            return 0
        rng = f"bytes={self._pos}-{self._pos + n - 1}"
        try:
            body = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=rng)["Body"]
            data = body.read()
            body.close()
        except Exception as exc:  # noqa: BLE001
            raise SourceError(source=self._where, reason=describe(exc, self._storage)) from None
        got = len(data)
        if got == 0:
            return 0
        got = min(got, n)
        view[:got] = data[:got]
        self._pos += got
        return got


def _make_client(settings: ObjectStorageSettings, max_attempts: int) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ObjectStoreError(
            where=settings.url, reason="boto3 is not installed (pip install 'zsp[s3]')"
        ) from None
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        s3={"addressing_style": "path"} if settings.endpoint else {},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=settings.endpoint, region_name=settings.region or None, config=config)


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def describe(exc: BaseException, storage: S3Storage | None = None) -> str:
    """One stable line for a boto3/botocore failure: the same cause gives the same text (failures
    are audited once per distinct reason), with no request id, URL query or credential in it."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:  # boto3 wraps the cause (S3UploadFailedError)
        seen.add(id(cur))
        endpoint = redact_url(storage.settings.endpoint or "AWS") if storage else "the endpoint"
        if isinstance(cur, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
            return f"cannot reach the object store at {endpoint}"
        if isinstance(cur, ReadTimeoutError):
            return f"the object store at {endpoint} timed out"
        if isinstance(cur, (NoCredentialsError, PartialCredentialsError)):
            return "no credentials for the object store (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws)"
        if isinstance(cur, ClientError):
            code = _code(cur) or "error"
            message = cur.response.get("Error", {}).get("Message") or ""
            if code in ("404", "NoSuchKey", "NotFound"):
                return "no such object"
            if code == "NoSuchBucket":
                bucket = storage.bucket if storage else "the bucket"
                return f"bucket {bucket} does not exist"
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
                return f"access denied ({code})"
            return f"{code}: {message}".rstrip(": ")
        cur = cur.__cause__ or cur.__context__
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:300]
