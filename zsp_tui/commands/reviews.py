"""Signed reviews: ``zsp review-mark SESSION [--note TEXT...] --as REVIEWER``.

The attestation (who, when, the note, the recording's verified head) goes into the audit chain as
a ``session.review`` event, signed by its checkpoint (:mod:`zsp_tui.reviews`). ``zsp sessions
--unreviewed`` lists what still needs a review; ``ssh zsp@BASTION review-mark ...`` does the same
as this, as the key's user.
"""

from __future__ import annotations

import argparse

from replay import printable

from ..clock import rfc3339
from ..models import Review
from ..reviews import mark_reviewed
from ._common import actor, add_as, data, emit_json

__all__ = ["register", "review_json", "review_line"]


def review_line(r: Review) -> str:
    """One escaped line: the attestation as recorded."""
    note = f": {r.note}" if r.note else ""
    return printable(
        f"session {r.session_id} reviewed by {r.reviewer} at {rfc3339(r.at)[:19]}Z "
        f"({r.outcome}, {r.frames} frames, head {r.head[:16]}...){note}; signed into the audit log"
    )


def review_json(r: Review) -> dict[str, object]:
    return {
        "session_id": r.session_id,
        "reviewer": r.reviewer,
        "at": rfc3339(r.at),
        "outcome": r.outcome,
        "frames": r.frames,
        "head": r.head,
        "note": r.note,
    }


def cmd_review_mark(args: argparse.Namespace) -> int:
    d = data(args)
    svc = d.service()
    review = mark_reviewed(d, svc, actor(args), args.session, args.note or "")
    if args.json:
        emit_json(review_json(review))
    else:
        print(review_line(review))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "review-mark",
        parents=[common],
        help="attest that you reviewed a session (signed into the audit log; never your own)",
        description=(
            "Verify the session's recording and record, in the signed audit chain, that you reviewed "
            "it: who, when, your note and the recording's chain head. Never your own session; once "
            "per reviewer. `zsp sessions --unreviewed` lists what still needs a review."
        ),
    )
    p.add_argument("session", metavar="SESSION", help="a session id, or a unique start or end of one")
    p.add_argument("--note", default="", help="what you checked (the rest of the words; no quotes needed)")
    p.add_argument("--json", action="store_true", help="the attestation as JSON")
    add_as(p, required=True, help="the reviewer (never the session's operator)")
    p.set_defaults(func=cmd_review_mark)
