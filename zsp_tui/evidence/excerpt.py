"""The audit excerpt of a bundle: the events of the exported sessions and their grants, with the
stretch of the chain and the checkpoint signature that prove each one (docs/EXPORT.md).

The audit log is one hash chain; an excerpt keeps its header (frame 0) and, for every event of
interest, the frames from it through the first checkpoint after it, with the stored head of
the frame before (``prev_head``), so a verifier recomputes every head and checks each checkpoint's
signature without the rest of the log. Runs that touch are merged into one segment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from recorder import FrameKind, Header, decode_body, parse_data

from ..audit import AuditEvent, AuditLog
from ..exceptions import ExportRefused

__all__ = ["EXCERPT_FORMAT", "Excerpt", "build_excerpt"]

EXCERPT_FORMAT = "zsp-audit-excerpt"


@dataclass(frozen=True, slots=True)
class Excerpt:
    data: bytes
    """``audit/excerpt.zsplog``: the msgpack map."""
    log_id: str | None
    """None when the audit log is empty (a data dir where nothing was ever audited)."""
    signer: str
    """The audit log's signer as an OpenSSH key line (from its header)."""
    signer_fingerprint: str
    events: tuple[AuditEvent, ...]
    """The events the excerpt is for, in seq order (``audit/events.jsonl``)."""


class _Segment:
    __slots__ = ("end", "frames", "prev_head")

    def __init__(self, prev_head: bytes) -> None:
        self.prev_head = prev_head
        self.frames: list[list[bytes]] = []
        self.end = -1


def _wanted(data: Any, sessions: frozenset[str], grants: frozenset[str]) -> bool:
    if not isinstance(data, dict):
        return False
    return data.get("session_id") in sessions or data.get("grant_id") in grants


def build_excerpt(rows: Iterable[tuple[int, bytes, bytes]], sessions: Iterable[str], grants: Iterable[str]) -> Excerpt:
    """The excerpt for ``sessions`` and ``grants`` from the audit rows (``tx.audit_rows()``), read
    once in order; only the frames kept are held in memory."""
    want_s = frozenset(sessions)
    want_g = frozenset(g for g in grants if g)
    header: list[bytes] | None = None
    log_id = signer = fingerprint = ""
    segments: list[_Segment] = []
    current: _Segment | None = None
    events: list[AuditEvent] = []
    prev_head = b""
    for seq, body, head in rows:
        kind, _, _, data = decode_body(body)
        if seq == 0:
            value = parse_data(kind, data) if kind == FrameKind.HEADER else None
            if not isinstance(value, Header):
                raise ExportRefused(session_id=None, reason="the audit log does not start with its header")
            header = [body, head]
            log_id, signer, fingerprint = str(value.session_id), value.signer, value.signer_fingerprint
            prev_head = head
            continue
        wanted = kind == FrameKind.EVENT and _wanted(data, want_s, want_g)
        if current is None and wanted:
            if segments and segments[-1].end == seq - 1:
                current = segments.pop()  # touches the previous run: one segment
            else:
                current = _Segment(prev_head)
        if current is not None:
            current.frames.append([body, head])
            current.end = seq
            if wanted:
                events.append(AuditLog._event(seq, data))
            if kind == FrameKind.CHECKPOINT:
                segments.append(current)
                current = None
        prev_head = head
    if current is not None:
        raise ExportRefused(session_id=None, reason="the audit log ends with events no checkpoint signs")
    packed = msgpack.packb(
        {
            "format": EXCERPT_FORMAT,
            "version": 1,
            "header": header,  # None: the log has no frames yet (nothing was ever audited)
            "segments": [{"prev_head": s.prev_head, "frames": s.frames} for s in segments],
        },
        use_bin_type=True,
    )
    return Excerpt(packed, log_id or None, signer, fingerprint, tuple(events))
