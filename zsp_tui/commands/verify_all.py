"""``zsp verify --all``: every recording the data dir holds, cross-checked against the audit log.

A recording's own chain and signatures catch edits, but not a recording rewritten and signed
again with the bastion's own key, cut back to an earlier checkpoint and sealed again, deleted
whole, or planted. The audit log holds what the bastion saw at each session's end (its final head
and frame count: ``session.end``; how far an interrupted one reached: ``session.interrupted``),
and the audit head is anchored off the box (``zsp audit verify --anchor``), so the recordings are
judged against it:

============  ==============================================================================
VALID         sealed, and its head is the one audited at the session's end
LIVE          audited as started, not (yet) as ended; intact so far
INTERRUPTED   its recorder died (a killed bastion); sealed at restart with reason ``interrupted``
              and ending at the sealed head audited then, or (left unsealed: a torn tail, say)
              reaching exactly as far as audited then
INCOMPLETE    the session ended without a seal (its recording failed), as audited
TRUNCATED     it ends before what the audit log says it reached
RESIGNED      intact and signed by a trusted key, but its head is not the audited one: rewritten
CORRUPT       its chain or signatures do not verify, or it is another session's recording
MISSING       audited as started, no recording found
UNKNOWN       a recording the audit log never saw start
ORPHAN        one the audit log never saw start that holds nothing but its header: a bastion
              killed while admitting a session (the file is made before the session is stored)
============  ==============================================================================

The audit log is only as good as its head: with ``--anchor FILE`` (the anchors its checkpoints sent
off the box) it must also reach the last anchor, or it was cut back or rewritten, and ``--all``
fails (as ``zsp audit verify --anchor``).

Exit status as ``zsp verify``: 0 only if every recording is VALID, LIVE or ORPHAN and the audit
log verifies; 1 otherwise; 2 if a recording cannot be read.
"""

from __future__ import annotations

import argparse
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from recorder import FrameKind, PublicKey
from replay import Outcome, Problem, SourceError, VerificationReport, printable, verify, verify_frames

from ..anchors import AnchorFileError, AnchorRefused, read_anchors
from ..audit import AuditEvent
from ..datadir import DataDir
from ..exceptions import UsageError
from ._common import data as _data
from ._common import emit_json

__all__ = ["Audited", "CrossCheck", "State", "audited_sessions", "cross_check", "run"]


class State(enum.Enum):
    VALID = "VALID"
    LIVE = "LIVE"
    INTERRUPTED = "INTERRUPTED"
    INCOMPLETE = "INCOMPLETE"
    TRUNCATED = "TRUNCATED"
    RESIGNED = "RESIGNED"
    CORRUPT = "CORRUPT"
    MISSING = "MISSING"
    UNKNOWN = "UNKNOWN"
    ORPHAN = "ORPHAN"
    ERROR = "ERROR"


_FINE = frozenset({State.VALID, State.LIVE, State.ORPHAN})
"""Verdicts that fail nothing: an ORPHAN holds no recorded byte, so it can hide nothing."""


@dataclass(slots=True)
class Audited:
    """What the audit log says of one session (built up event by event, in log order)."""

    session_id: str
    recording: str | None = None
    """The recording's path as audited at ``session.start``."""
    ended: bool = False
    reason: str | None = None
    head: str | None = None
    """The final head audited at ``session.end`` (None: ended without a seal), or the last intact
    head found at restart (``session.interrupted``)."""
    frames: int | None = None
    interrupted: bool = False
    sealed_head: str | None = None
    """An interrupted session's recording as sealed at restart (``session.interrupted``'s
    ``sealed_head``); None if it was left unsealed."""
    sealed_frames: int | None = None


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """The verdict on one session or one recording."""

    session_id: str
    state: State
    detail: str
    location: str | None = None
    audited: Audited | None = None
    report: VerificationReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        a = self.audited
        r = self.report
        return {
            "session_id": self.session_id,
            "state": self.state.value,
            "detail": self.detail,
            "location": self.location,
            "audited_end": None if a is None else ("interrupted" if a.interrupted else a.reason),
            "audited_head": None if a is None else a.head,
            "audited_frames": None if a is None else a.frames,
            "audited_sealed_head": None if a is None else a.sealed_head,
            "outcome": None if r is None else r.outcome.value,
            "head": None if r is None or r.head is None else r.head.hex(),
            "frames": None if r is None else r.frames,
            "problem": None if r is None or r.problem is None else r.problem.value,
        }


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def audited_sessions(events: list[AuditEvent]) -> dict[str, Audited]:
    """Every session the audit log names at its start, with how it ended (if it did)."""
    out: dict[str, Audited] = {}
    for e in events:
        sid = e.session_id
        if sid is None or e.event not in ("session.start", "session.end", "session.interrupted"):
            continue
        a = out.setdefault(sid, Audited(sid))
        if e.event == "session.start":
            a.recording = _str(e.fields.get("recording"))
        elif e.event == "session.end":
            a.ended, a.interrupted = True, False
            a.reason = _str(e.fields.get("reason"))
            a.head = _str(e.fields.get("head"))
            a.frames = _int(e.fields.get("frames"))
        else:
            a.ended, a.interrupted = True, True
            a.reason = "interrupted"
            a.head = _str(e.fields.get("last_head"))
            a.frames = _int(e.fields.get("frames"))
            a.sealed_head = _str(e.fields.get("sealed_head")) if e.fields.get("sealed") is True else None
            a.sealed_frames = _int(e.fields.get("sealed_frames"))
    return out


def _judge_sealed_at_restart(
    a: Audited, r: VerificationReport, verdict: Callable[[State, str], CrossCheck]
) -> CrossCheck:
    """An interrupted session whose recording the restart sealed (reason ``interrupted``)."""
    head = r.head.hex() if r.head else None
    sealed = a.sealed_frames if a.sealed_frames is not None else -1
    if r.frames < sealed:
        return verdict(
            State.TRUNCATED,
            f"{r.outcome.value} with {r.frames} intact frames, but sealed at restart with {sealed} "
            f"(head {(a.sealed_head or '-')[:16]})",
        )
    if r.outcome is Outcome.VALID and head == a.sealed_head and r.frames == sealed:
        own = f"frames 0..{a.frames - 1} written by the session" if a.frames else "the session's frames"
        return verdict(
            State.INTERRUPTED,
            f"its recorder died; sealed at restart (reason {r.seal.reason if r.seal else '?'}), {own}, as audited",
        )
    return verdict(
        State.RESIGNED,
        f"{r.outcome.value} with {r.frames} frames and head {(head or '-')[:16]}, but sealed at restart with "
        f"{sealed} frames, head {(a.sealed_head or '-')[:16]}: written after the session ended",
    )


def _judge(a: Audited, r: VerificationReport, location: str) -> CrossCheck:
    """One audited session against its recording's verification report."""
    sid = a.session_id

    def verdict(state: State, detail: str) -> CrossCheck:
        return CrossCheck(sid, state, detail, location, a, r)

    head = r.head.hex() if r.head else None
    if r.outcome is Outcome.CORRUPT:
        where = "the preamble" if r.bad_frame is None else f"frame {r.bad_frame}"
        return verdict(State.CORRUPT, f"at {where}: {r.problem.value if r.problem else ''}: {r.detail}")
    if r.header is not None and str(r.header.session_id) != sid:
        return verdict(State.CORRUPT, f"wrong-session: the file holds session {r.header.session_id}")
    if not a.ended:
        if r.outcome is Outcome.VALID:
            return verdict(State.LIVE, f"sealed ({r.frames} frames), its end not yet audited")
        return verdict(State.LIVE, f"not ended; intact up to frame {r.frames - 1}")
    if a.interrupted and a.sealed_head is not None:
        return _judge_sealed_at_restart(a, r, verdict)
    if a.interrupted:
        if a.frames is not None and r.frames < a.frames:
            return verdict(State.TRUNCATED, f"{r.frames} intact frames, but {a.frames} when it was found interrupted")
        if r.outcome is Outcome.VALID and head == a.head and r.frames == a.frames:
            # Sealed just before the bastion died, its end not yet stored: whole, as found at restart.
            return verdict(State.VALID, f"{r.frames} frames, sealed; its end was found at restart (interrupted)")
        if r.outcome is Outcome.VALID or head != a.head or (a.frames is not None and r.frames != a.frames):
            return verdict(
                State.RESIGNED,
                f"{r.outcome.value} with {r.frames} frames and head {(head or '-')[:16]}, but found interrupted at "
                f"{a.frames} frames, head {(a.head or '-')[:16]}: written after the session ended",
            )
        return verdict(State.INTERRUPTED, f"its recorder died; intact up to frame {r.frames - 1}, as audited")
    if a.head is None:
        if r.outcome is Outcome.VALID:
            return verdict(State.RESIGNED, f"sealed, but its session ended without a seal ({a.reason}): sealed later")
        return verdict(
            State.INCOMPLETE, f"ended {a.reason} without a seal, as audited; intact up to frame {r.frames - 1}"
        )
    if r.outcome is not Outcome.VALID:
        return verdict(
            State.TRUNCATED,
            f"{r.outcome.value} ({r.problem.value if r.problem else ''}) with {r.frames} frames, but audited as sealed "
            f"with {a.frames if a.frames is not None else '?'} frames at head {a.head[:16]}",
        )
    if head != a.head:
        return verdict(
            State.RESIGNED,
            f"sealed and signed, but its head {(head or '-')[:16]} ({r.frames} frames) is not the head audited at its "
            f"end {a.head[:16]} ({a.frames if a.frames is not None else '?'} frames): rewritten and signed again",
        )
    return verdict(State.VALID, f"{r.frames} frames, ended {a.reason}; head as audited")


def _header_only(read: Callable[[], BinaryIO], trusted: list[PublicKey], report: VerificationReport) -> bool:
    """Whether an unsealed recording holds only its header (and the checkpoint that signs it)."""
    if report.outcome is not Outcome.INCOMPLETE or report.problem is not Problem.NO_SEAL or report.frames > 2:
        return False
    kinds: set[FrameKind] = set()
    with read() as f:
        gen = verify_frames(f, trusted)
        try:
            while True:
                kinds.add(next(gen).kind)
        except StopIteration:
            pass
    return kinds <= {FrameKind.HEADER, FrameKind.CHECKPOINT}


def cross_check(data: DataDir, trusted: list[PublicKey], events: list[AuditEvent]) -> list[CrossCheck]:
    """Every audited session and every stored recording, judged (sorted by session id)."""
    storage = data.storage()
    audited = audited_sessions(events)
    stored = {s.name: s for s in storage.list()}
    out: list[CrossCheck] = []
    for sid in sorted(audited.keys() | stored.keys()):
        a = audited.get(sid)
        s = stored.get(sid)
        source: Path | None = None
        if s is None and a is not None and a.recording and Path(a.recording).is_file():
            source = Path(a.recording)  # `zsp record -o FILE`: outside the recordings directory
        if a is None:
            if s is None:  # pragma: no cover - the union holds only names from one side
                continue
            where = s.location
        elif s is None and source is None:
            out.append(CrossCheck(sid, State.MISSING, "audited as started; no recording found", a.recording, a))
            continue
        else:
            where = s.location if s is not None else str(source)
        try:
            if source is not None:
                report = verify(source, trusted)
            else:
                with storage.open(sid) as f:
                    report = verify(f, trusted)
        except SourceError as exc:
            out.append(CrossCheck(sid, State.ERROR, f"cannot be read: {exc.reason}", where, a))
            continue
        if a is None:  # (then it was found in storage: ``source`` is for audited paths only)
            if _header_only(functools.partial(storage.open, sid), trusted, report):
                state, detail = State.ORPHAN, "a header and nothing else, never audited: a session that never started"
            else:
                state, detail = State.UNKNOWN, f"{report.outcome.value}, but the audit log never saw it start"
            out.append(CrossCheck(sid, state, detail, where, None, report))
            continue
        out.append(_judge(a, report, where))
    return out


def run(args: argparse.Namespace, trusted: list[PublicKey]) -> int:
    """The ``--all`` command: the audit log's own verdict, then one line per session."""
    data = _data(args)
    svc = data.service()
    audit_keys = trusted or [data.signing_key().public]
    anchors = None
    anchors_failed: str | None = None
    if args.anchor:
        try:
            anchors = read_anchors(Path(args.anchor), audit_keys)
        except AnchorRefused as exc:
            anchors_failed = str(exc)  # a forged anchor is evidence of tampering with the sink
        except AnchorFileError as exc:
            raise UsageError(f"--anchor {exc}") from None
    audit = svc.audit_verify(audit_keys, anchors)
    if anchors_failed is not None:
        audit = replace(audit, ok=False, detail=anchors_failed)
    results = cross_check(data, trusted, svc.audit_events())
    worst = 0 if audit.ok else 1
    for c in results:
        if c.state is State.ERROR:
            worst = 2
        elif c.state not in _FINE:
            worst = max(worst, 1)
    if args.json:
        counts: dict[str, int] = {}
        for c in results:
            counts[c.state.value] = counts.get(c.state.value, 0) + 1
        emit_json(
            {
                "audit": {"ok": audit.ok, "frames": audit.events, "signed": audit.signed, "detail": audit.detail},
                "counts": counts,
                "recordings": [c.to_json() for c in results],
            }
        )
        return worst
    state = "OK" if audit.ok else "FAILED"
    print(printable(f"audit log {state}: {audit.events} frames, signed up to {audit.signed}: {audit.detail}"))
    for c in results:
        print(
            printable(f"{c.state.value:<11} {c.session_id}  {c.detail}" + (f"  ({c.location})" if c.location else ""))
        )
    tally = ", ".join(f"{n} {s.value}" for s in State if (n := sum(1 for c in results if c.state is s)))
    print(printable(f"{len(results)} session(s): {tally or 'none'}"))
    return worst
