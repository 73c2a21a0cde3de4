"""Scratch first, then the bucket: the data dir's recordings when ``[storage]`` is configured.

A session records into local scratch (``DATA/recordings``) and stays there until the uploader has
put it in the bucket and read it back; so a recording is found in scratch while it is live or
pending, and in the bucket once uploaded. :class:`TieredStorage` answers the three
:class:`replay.RecordingStorage` questions in that order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from replay import LocalDirectory, StoredRecording

from .s3 import S3Storage

__all__ = ["TieredStorage"]


class TieredStorage:
    """``scratch`` (a local directory) first, then ``bucket``."""

    def __init__(self, scratch: LocalDirectory, bucket: S3Storage) -> None:
        self.scratch = scratch
        self.bucket = bucket

    def open(self, name: str) -> BinaryIO:
        if self.scratch.stat(name) is not None:
            return self.scratch.open(name)
        return self.bucket.open(name)

    def stat(self, name: str) -> StoredRecording | None:
        return self.scratch.stat(name) or self.bucket.stat(name)

    def list(self) -> Iterator[StoredRecording]:
        seen: set[str] = set()
        for stored in self.scratch.list():
            seen.add(stored.name)
            yield stored
        for stored in self.bucket.list():
            if stored.name not in seen:
                yield stored
