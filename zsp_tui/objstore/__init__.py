"""Recordings in S3-compatible object storage (``[storage]`` in zsp.toml; issue 12).

* :class:`S3Storage` (:mod:`.s3`): a :class:`replay.RecordingStorage` over one bucket, and ``put``:
  multipart upload, retries, Object Lock retention, verified by reading the object back.
* :class:`TieredStorage` (:mod:`.tiered`): local scratch first, then the bucket
  (``DataDir.storage()`` when storage is configured).
* :class:`Uploader` (:mod:`.uploader`): moves finished recordings from scratch to the bucket,
  never losing one; :func:`mark_pending` for the bastion; :func:`upload_all` for migrations.
* :func:`materialize` (:mod:`.cache`): a verified local copy of an uploaded recording for the
  path-based readers (``DataDir.recording_path``).

boto3 is imported only when an :class:`S3Storage` is made.
"""

from __future__ import annotations

from ._exceptions import ObjectStoreError, RecordingUnavailable
from .cache import CACHE_DIR, cache_path, materialize, recording_location
from .s3 import MULTIPART_CHUNK, MULTIPART_THRESHOLD, S3Storage, check_name, parse_object_url, sha256_file
from .tiered import TieredStorage
from .uploader import PENDING, UPLOADED, UploadAllReport, Uploader, UploadPass, mark_pending, upload_all

__all__ = [
    "CACHE_DIR",
    "MULTIPART_CHUNK",
    "MULTIPART_THRESHOLD",
    "PENDING",
    "UPLOADED",
    "ObjectStoreError",
    "RecordingUnavailable",
    "S3Storage",
    "TieredStorage",
    "UploadAllReport",
    "UploadPass",
    "Uploader",
    "cache_path",
    "check_name",
    "mark_pending",
    "materialize",
    "parse_object_url",
    "recording_location",
    "sha256_file",
    "upload_all",
]
