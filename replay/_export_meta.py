"""What an exported asciicast or transcript says about its session: :class:`ExportMeta`.

The recording is the evidence; this is the context a reader needs beside it (who, where, under
which grant, approved by whom, how it ended, what verification found). Fields the recording
itself proves (header, seal, verification) come from the :class:`replay.VerificationReport`; the
rest (the grant's reason and approvers, the store's end time) from the bastion's store, given by
the caller (:func:`export_meta`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ._exceptions import ReplayError
from ._verify import Outcome, VerificationReport

__all__ = ["ExportMeta", "export_meta"]


@dataclass(frozen=True, slots=True)
class ExportMeta:
    """The context of one exported session (every string exactly as stored: writers escape)."""

    session_id: str
    user: str
    target: str
    login: str
    grant_id: str | None
    reason: str | None
    """The grant's reason (None: no grant, or the store does not know it)."""
    approved_by: tuple[str, ...]
    """Whose approvals the grant counted (``policy:RULE`` for an automatic approval)."""
    started_at: datetime
    """UTC, from the recording's header."""
    ended_at: datetime | None
    """UTC: the seal's time, else the store's end time; None if neither is known."""
    exit_status: int | None
    end_reason: str | None
    outcome: Outcome
    """VALID or INCOMPLETE (a CORRUPT recording is never exported)."""
    signer_fingerprint: str
    final_head: str | None
    """Hex chain head of the last intact frame (for VALID, the sealed head)."""
    command: str | None = None
    """The exec command line (``ssh host CMD``); None for a login shell."""
    detail: str = ""
    """Why an INCOMPLETE recording is incomplete (the verifier's words)."""
    frames: int = 0
    """Intact frames of the recording."""
    signed_frames: int = 0
    """Frames covered by a verified signature: only these are exported."""
    redacted_frames: int = 0
    """Frames whose bytes ``--redact`` replaced with ``*``."""

    @property
    def unsigned_frames(self) -> int:
        """Intact frames after the last signature (an unsealed recording's tail): not exported.
        Frame ``signed_frames`` is the checkpoint holding that signature."""
        if not self.signed_frames:
            return self.frames
        return max(0, self.frames - self.signed_frames - 1)

    @property
    def duration(self) -> timedelta | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


def _utc(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def export_meta(
    report: VerificationReport,
    *,
    reason: str | None = None,
    approved_by: Sequence[str] = (),
    ended_at: datetime | None = None,
    exit_status: int | None = None,
    end_reason: str | None = None,
    redacted_frames: int = 0,
) -> ExportMeta:
    """The metadata of a verified recording; the keyword arguments are what the store adds (the
    recording's own seal wins over the store for the end time, exit status and end reason)."""
    h = report.header
    if h is None or report.outcome is Outcome.CORRUPT:
        raise ReplayError(f"{report.source}: only a VALID or INCOMPLETE recording can be exported")
    seal = report.seal
    if seal is not None:
        ended_at = _utc(seal.wall_us)
        exit_status = seal.exit_status
        end_reason = seal.reason
    elif ended_at is not None and ended_at.tzinfo is None:
        ended_at = ended_at.replace(tzinfo=UTC)
    return ExportMeta(
        session_id=str(h.session_id),
        user=h.user,
        target=h.target,
        login=h.login,
        grant_id=h.grant_id,
        reason=reason,
        approved_by=tuple(approved_by),
        started_at=_utc(h.started_at_us),
        ended_at=None if ended_at is None else ended_at.astimezone(UTC),
        exit_status=exit_status,
        end_reason=end_reason,
        outcome=report.outcome,
        signer_fingerprint=h.signer_fingerprint,
        final_head=report.head.hex() if report.head else None,
        command=h.command,
        detail=report.detail,
        frames=report.frames,
        signed_frames=report.signed_frames,
        redacted_frames=redacted_frames,
    )
