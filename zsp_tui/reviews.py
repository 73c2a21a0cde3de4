"""Signed reviews: a reviewer attests that they reviewed a session (``zsp review-mark``).

SOC 2 and HIPAA evidence asks that a human looked at each privileged session. An attestation here
is a ``session.review`` event in the audit chain, signed by the chain's checkpoint like every
event: who reviewed, when, their note, and the chain head of the recording as they verified it,
so it names exactly the bytes reviewed. An evidence export of the session carries it in its audit
excerpt, verifiable offline. The recording is verified first (a CORRUPT one, or one that is not
the session named, is never attested), and the access service refuses a reviewer's own sessions,
live sessions, a head that is not the one stored at the session's end, and a second attestation
by the same reviewer (:meth:`~zsp_tui.access.AccessService.attest_review`).
"""

from __future__ import annotations

from replay import Outcome, ReplayError, verify

from .access import AccessService, Actor
from .datadir import DataDir
from .exceptions import ReviewRefused, UsageError
from .models import Review
from .session_ref import identity_problem, resolve_ref

__all__ = ["mark_reviewed"]


def mark_reviewed(d: DataDir, svc: AccessService, actor: Actor, ref: str, note: str = "") -> Review:
    """Verify the recording of the session ``ref`` names (an id, or a unique start or end of one)
    and attest ``actor``'s review of it. ReviewRefused if it does not verify as that session."""
    if "/" in ref:
        raise UsageError("review-mark names a session (its id, or a unique start or end of it), not a file")
    resolved = resolve_ref(d, ref)
    sid = resolved.session_id
    if sid is None:  # pragma: no cover - a reference without "/" always names a session
        raise UsageError(f"{ref!r} names no session")
    trusted = d.trusted_keys() or [d.signing_key().public]
    try:
        report = verify(resolved.path, trusted)
    except ReplayError as exc:
        raise ReviewRefused(session_id=sid, reason=f"its recording cannot be read ({exc})") from None
    problem = identity_problem(resolved, report)
    if problem is not None:
        raise ReviewRefused(session_id=sid, reason=problem)
    if report.outcome is Outcome.CORRUPT or report.head is None:
        why = f"{report.problem.value if report.problem else 'corrupt'}: {report.detail}"
        raise ReviewRefused(session_id=sid, reason=f"its recording is CORRUPT ({why})")
    return svc.attest_review(
        actor, sid, head=report.head.hex(), outcome=report.outcome.value, frames=report.frames, note=note
    )
