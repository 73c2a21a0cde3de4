"""Audit anchors: each audit checkpoint's signed head, sent to the sinks, read back to prove length.

The chained audit log proves that what it holds is intact, but not that it is whole: a log whose
tail is cut back to an earlier checkpoint is still a valid, signed prefix. So every checkpoint of
the log also goes out to the configured sinks as an ``audit.anchor`` record (the frame it signs,
that frame's head, the signed wall time, the signer and the signature itself), out of reach of
whoever later edits the database. ``zsp audit verify --anchor FILE`` reads those records back
(:func:`read_anchors`, the lines a JSON Lines sink wrote) and the log must reach the last of them
with exactly that head (:meth:`zsp_tui.audit.AuditLog.verify`).

An anchor is only as good as its signature: :meth:`Anchor.signed_by` checks it against the
trusted keys with the same message a checkpoint signs (docs/FORMAT.md section 3.2), so a forged
or foreign anchor is refused rather than believed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder import PublicKey, checkpoint_message

__all__ = [
    "ANCHOR_CODE",
    "ANCHOR_EVENT",
    "Anchor",
    "AnchorFileError",
    "AnchorRefused",
    "AnchorSet",
    "parse_anchor",
    "read_anchors",
]

ANCHOR_EVENT = "audit.anchor"
ANCHOR_CODE = "ZSP0002I"
_MAX_LINE = 1 << 20


class AnchorFileError(ValueError):
    """The anchor file cannot be read or holds a line that is not a well-formed anchor."""

    def __init__(self, *, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


class AnchorRefused(AnchorFileError):
    """An anchor's signature does not verify with a trusted key: it is not believed."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """One audit checkpoint as a sink received it."""

    log_id: uuid.UUID
    """The audit log's id (its header's session id)."""
    index: int
    """The frame the checkpoint signs (the checkpoint itself is frame ``index + 1``)."""
    head: bytes
    """Chain head of frame ``index``: it covers the whole log up to that frame."""
    wall_us: int
    """Signed wall-clock time of the checkpoint, microseconds since the epoch."""
    signer_fingerprint: str
    signature: bytes
    line: int = 0
    """Line of the anchor file it was read from (0: made here, not read)."""

    def fields(self) -> dict[str, str | int]:
        """The anchor's own fields in an ``audit.anchor`` record."""
        return {
            "log_id": str(self.log_id),
            "index": self.index,
            "head": self.head.hex(),
            "wall_us": self.wall_us,
            "signer_fingerprint": self.signer_fingerprint,
            "signature": self.signature.hex(),
        }

    def signed_by(self, trusted: Iterable[PublicKey]) -> PublicKey | None:
        """The trusted key that signed this anchor at its wall time and that it names, if any."""
        message = checkpoint_message(self.log_id, self.index, self.head, self.wall_us)
        for key in trusted:
            if (
                key.fingerprint == self.signer_fingerprint
                and key.valid_at(self.wall_us)
                and key.verify(self.signature, message)
            ):
                return key
        return None


def _int(obj: dict[str, Any], name: str) -> int:
    v = obj.get(name)
    if type(v) is not int or v < 0 or v >= 1 << 64:
        raise ValueError(f"{name} must be an integer in 0..2^64-1")
    return v


def _hex(obj: dict[str, Any], name: str, size: int) -> bytes:
    v = obj.get(name)
    if not isinstance(v, str) or len(v) != 2 * size:
        raise ValueError(f"{name} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise ValueError(f"{name} must be {2 * size} hex digits") from None


def parse_anchor(obj: dict[str, Any], line: int = 0) -> Anchor:
    """An ``audit.anchor`` record (already JSON-decoded); raise ValueError naming the bad field."""
    log_id = obj.get("log_id")
    try:
        lid = uuid.UUID(log_id) if isinstance(log_id, str) else None
    except ValueError:
        lid = None
    if lid is None or str(lid) != log_id:
        raise ValueError("log_id must be a UUID in canonical form")
    fp = obj.get("signer_fingerprint")
    if not isinstance(fp, str) or not fp.startswith("SHA256:"):
        raise ValueError("signer_fingerprint must be SHA256:...")
    return Anchor(
        log_id=lid,
        index=_int(obj, "index"),
        head=_hex(obj, "head", 32),
        wall_us=_int(obj, "wall_us"),
        signer_fingerprint=fp,
        signature=_hex(obj, "signature", 64),
        line=line,
    )


@dataclass(frozen=True, slots=True)
class AnchorSet:
    """What an anchor file proves: its last anchor, and which logs it names."""

    count: int
    last: Anchor
    """The anchor with the highest index: the log must reach it."""
    log_ids: frozenset[uuid.UUID]
    heads: dict[int, tuple[bytes, int]]
    """Every anchored frame: index -> (head, line of its first anchor). The log must match each."""
    fork: tuple[Anchor, int] | None = None
    """An anchor giving another head for a frame already anchored (with that anchor's line): two
    signed histories, so the log was cut back and written again."""


def read_anchors(path: Path, trusted: Iterable[PublicKey]) -> AnchorSet:
    """Read and check every ``audit.anchor`` record in a JSON Lines file (other events are skipped).

    A line that is not a JSON object, or an anchor record with a bad field, is an
    :class:`AnchorFileError`; an anchor whose signature is not by a trusted key (forged, or by
    another signer than it names) is an :class:`AnchorRefused`. A file we cannot read whole, or
    without any anchor, proves nothing and is an error too. Reads line by line: sink files grow.
    """
    keys = tuple(trusted)
    count = 0
    last: Anchor | None = None
    log_ids: set[uuid.UUID] = set()
    heads: dict[int, tuple[bytes, int]] = {}
    fork: tuple[Anchor, int] | None = None
    try:
        with open(path, "rb") as f:
            n = 0
            while True:
                raw = f.readline(_MAX_LINE + 1)
                if not raw:
                    break
                n += 1
                if len(raw) > _MAX_LINE:
                    raise AnchorFileError(path=path, line=n, reason="line too long")
                anchor = _anchor_line(path, n, raw)
                if anchor is None:
                    continue
                if anchor.signed_by(keys) is None:
                    raise AnchorRefused(
                        path=path,
                        line=n,
                        reason=f"{ANCHOR_EVENT} for index {anchor.index} refused: its signature does not verify "
                        f"with a trusted key named {anchor.signer_fingerprint} (forged, or another signer)",
                    )
                count += 1
                log_ids.add(anchor.log_id)
                seen = heads.setdefault(anchor.index, (anchor.head, n))
                if seen[0] != anchor.head and fork is None:
                    fork = (anchor, seen[1])
                if last is None or anchor.index > last.index:
                    last = anchor
    except OSError as exc:
        raise AnchorFileError(path=path, line=None, reason=exc.strerror or str(exc)) from None
    if last is None:
        raise AnchorFileError(path=path, line=None, reason=f"no {ANCHOR_EVENT} records")
    return AnchorSet(count=count, last=last, log_ids=frozenset(log_ids), heads=heads, fork=fork)


def _anchor_line(path: Path, n: int, raw: bytes) -> Anchor | None:
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AnchorFileError(path=path, line=n, reason="not a JSON object") from None
    if not isinstance(obj, dict):
        raise AnchorFileError(path=path, line=n, reason="not a JSON object")
    if obj.get("event") != ANCHOR_EVENT:
        return None
    try:
        return parse_anchor(obj, n)
    except ValueError as exc:
        raise AnchorFileError(path=path, line=n, reason=f"bad {ANCHOR_EVENT} record: {exc}") from None
