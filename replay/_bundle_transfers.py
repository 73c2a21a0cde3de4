"""The transferred files of an evidence bundle (manifest version 2, docs/EXPORT.md): how each
``sftp.file`` / ``sftp.file_incomplete`` event of a recording becomes one entry of the manifest's
``transfers.files``, and the name its content gets in the bundle.

The exporter (zsp_tui/evidence/bundle.py) and :func:`replay.verify_bundle` both build entries
with :func:`transfer_entry`, so the signed manifest can be compared field by field with the
recording, the source of truth. The standalone verify.py implements the same rules from
docs/EXPORT.md on its own.

Names: ``files/NNNN-DIRECTION-BASENAME``, ``NNNN`` the entry's place in the list from 1, the
basename reduced to ``[A-Za-z0-9._-]`` (no leading dot, at most 80 characters): a recorded path
never chooses where anything lands when the bundle is extracted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FILE_EVENTS",
    "TRANSFER_CONTENT_LIMIT",
    "TRANSFER_KEYS",
    "transfer_content_name",
    "transfer_entry",
    "transfer_sha256sums",
]

FILE_EVENTS = frozenset({"sftp.file", "sftp.file_incomplete"})
TRANSFER_CONTENT_LIMIT = 1 << 30
"""At most this many bytes of transferred files' content in one bundle (``--files``): files past
it are listed with their hash only. A verifier refuses a manifest claiming a larger limit."""
_DIRECTIONS = frozenset({"upload", "download", "both"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
TRANSFER_KEYS = frozenset(
    {
        "session_id",
        "index",
        "frame",
        "t_us",
        "time",
        "event",
        "direction",
        "size",
        "sha256",
        "hash_note",
        "recorded_path",
        "recorded_path_b64",
        "content_kept",
        "content_complete",
    }
)
"""The keys :func:`transfer_entry` derives from the recording; the exporter adds ``content`` and
``content_note``."""


def _n(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def _rfc3339_us(time_us: int) -> str:
    """As the audit log writes times; ``""`` for one no calendar holds (a faulty recording)."""
    try:
        return datetime.fromtimestamp(time_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError, OSError):
        return ""


def transfer_entry(
    session_id: str, started_at_us: int, index: int, frame: int, t_us: int, event: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The manifest entry of one file event (its recorded ``fields``), ``index`` its place among the
    session's file events. Values a faulty recording gives the wrong type become ``""``/``0``."""
    finished = event == "sftp.file"
    if finished:
        direction = _s(fields.get("direction"))
        size = _n(fields.get("size"))
    else:
        up, down = _n(fields.get("uploaded")), _n(fields.get("downloaded"))
        direction = "both" if up and down else "upload" if up else "download"
        size = max(up, down)
    b64 = fields.get("path_b64")
    return {
        "session_id": session_id,
        "index": index,
        "frame": frame,
        "t_us": t_us,
        "time": _rfc3339_us(started_at_us + t_us),
        "event": event,
        "direction": direction if direction in _DIRECTIONS else "?",
        "size": size,
        "sha256": _s(fields.get("sha256")) if finished else "",
        "hash_note": _s(fields.get("hash_note")),
        "recorded_path": _s(fields.get("path")),
        "recorded_path_b64": b64 if isinstance(b64, str) else None,
        "content_kept": _n(fields.get("content_kept")),
        "content_complete": finished and fields.get("content_complete") is True,
    }


def transfer_sha256sums(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """``HEX  files/NAME`` for each entry with content: its recorded sha256, for ``sha256sum -c``."""
    return [f"{e['sha256']}  {e['content']}" for e in entries if e.get("content") is not None]


def transfer_content_name(number: int, entry: Mapping[str, Any]) -> str:
    """Where the content of the ``number``-th entry (from 1) goes in the bundle."""
    base = _UNSAFE.sub("_", _s(entry.get("recorded_path")).rsplit("/", 1)[-1]).lstrip(".")[:80] or "file"
    direction = _UNSAFE.sub("_", _s(entry.get("direction"))) or "file"
    return f"files/{number:04d}-{direction}-{base}"
