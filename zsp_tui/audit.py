"""The audit log: every state change, as a hash-chained, signed stream of events.

The log *is* a zsp recording, stored row by row in the database: frame 0 is a header naming the
log, every event is an ``event`` frame, and each transaction that adds events ends with a
checkpoint signed by the data directory's recording key. It is built with
:class:`recorder.FrameChain` and checked with :func:`replay.verify_frames`, the same chain and
verifier as session recordings. Events are appended inside the transaction that makes the
change they describe, so a change and its audit event commit together or not at all.

Every checkpoint is also handed to the sinks as an ``audit.anchor`` record (:mod:`zsp_tui.anchors`),
so that a log later cut back to an earlier checkpoint, still a valid signed prefix, can be caught.

Event names, codes and fields are stable and documented in ``docs/AUDIT.md``.
"""

from __future__ import annotations

import io
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack

from recorder import (
    PREAMBLE,
    FrameChain,
    FrameKind,
    Header,
    PublicKey,
    SigningKey,
    check_event_fields,
    new_session_id,
    pack_length,
)
from replay import Outcome, Problem, VerificationReport, verify

from .anchors import ANCHOR_CODE, ANCHOR_EVENT, Anchor, AnchorSet
from .clock import rfc3339
from .store import Tx

__all__ = ["EVENTS", "AuditEvent", "AuditLog", "AuditReport", "NewEvent"]

EVENTS: dict[str, str] = {
    # name -> code (Teleport-style: letter, 4 digits, I/W/E severity)
    "audit.start": "ZSP0001I",
    "user.login": "ZSP1000I",
    "user.login.failure": "ZSP1000W",
    "user.disconnect": "ZSP1001I",
    "user.create": "ZSP1100I",
    "user.delete": "ZSP1101I",
    "user.key.add": "ZSP1102I",
    "user.key.remove": "ZSP1103I",
    "target.create": "ZSP1200I",
    "target.delete": "ZSP1201I",
    "policy.change": "ZSP1300I",
    "session.start": "ZSP2000I",
    "session.end": "ZSP2004I",
    "session.refused": "ZSP2001W",
    "session.recording_failed": "ZSP2005E",
    "session.interrupted": "ZSP2006W",
    "upstream.host_key_mismatch": "ZSP2100E",
    "upstream.error": "ZSP2101E",
    "input.masked.excessive": "ZSP2300W",
    "recording.unsealed": "ZSP2301W",
    "recording.export": "ZSP2302I",
    "recording.upload": "ZSP2310I",
    "recording.upload_failed": "ZSP2311W",
    "session.review": "ZSP2320I",
    "session.review.refused": "ZSP2321W",
    "transfer.start": "ZSP2410I",
    "transfer.file": "ZSP2411I",
    "channel.refused": "ZSP3001W",
    "review.open": "ZSP2400I",
    "review.refused": "ZSP2401W",
    "review.replay": "ZSP2402I",
    "review.search": "ZSP2403I",
    "review.watch": "ZSP2404I",
    "review.close": "ZSP2405I",
    "rule.match": "ZSP2500W",
    "rule.hold": "ZSP2501W",
    "rule.hold.allow": "ZSP2502I",
    "rule.hold.deny": "ZSP2503W",
    "rule.terminate": "ZSP2504W",
    "rules.load": "ZSP2510I",
    "rules.invalid": "ZSP2511E",
    "session.moderation.wait": "ZSP2600I",
    "session.watch.start": "ZSP2601I",
    "session.watch.end": "ZSP2602I",
    "session.watch.refused": "ZSP2603W",
    "session.moderation.timeout": "ZSP2604W",
    "session.moderation.lapsed": "ZSP2605W",
    "session.moderation.terminate": "ZSP2606W",
    "access_request.create": "ZSP5000I",
    "access_request.approve": "ZSP5001I",
    "access_request.deny": "ZSP5002I",
    "access_request.cancel": "ZSP5003I",
    "access_request.lapse": "ZSP5004I",
    "access_request.refused": "ZSP5005W",
    "grant.start": "ZSP5100I",
    "grant.expire": "ZSP5101I",
    "grant.revoke": "ZSP5102I",
    "grant.break_glass": "ZSP5103W",
}

_HEADER_EXTRA = {"log": "audit"}
_CHECKPOINT_EVERY = 256
Scalar = str | int | bool | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; ``time`` and ``seq`` are assigned by the log."""

    event: str
    actor: str
    via: str
    """``console`` (the bastion host's CLI), ``ssh``, ``system`` (sweeper) or ``policy``."""
    message: str
    outcome: str = "success"
    target: str | None = None
    login: str | None = None
    grant_id: str | None = None
    session_id: str | None = None
    fields: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    event: str
    code: str
    time: datetime
    actor: str
    via: str
    outcome: str
    message: str
    target: str | None
    login: str | None
    grant_id: str | None
    session_id: str | None
    fields: dict[str, Scalar]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": self.event,
            "code": self.code,
            "time": rfc3339(self.time),
            "seq": self.seq,
            "actor": self.actor,
            "via": self.via,
            "outcome": self.outcome,
            "target": self.target,
            "login": self.login,
            "grant_id": self.grant_id,
            "session_id": self.session_id,
            "message": self.message,
        }
        for k, v in self.fields.items():
            out.setdefault(k, v)
        return out


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    events: int
    signed: int
    last_checkpoint: datetime | None
    detail: str
    report: VerificationReport


_CORE = ("type", "code", "time_us", "actor", "via", "outcome", "target", "login", "grant_id", "session_id")


class _RowStream(io.RawIOBase):
    """The audit rows as the byte stream of a recording, read lazily (bounded memory)."""

    def __init__(self, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        self._chunks = self._gen(rows)
        self._buf = b""

    @staticmethod
    def _gen(rows: Iterable[tuple[int, bytes, bytes]]) -> Iterator[bytes]:
        yield PREAMBLE
        for _seq, body, head in rows:
            yield pack_length(len(body)) + body + head

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class AuditLog:
    """Appends to and reads the chained audit log kept in a store transaction."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    def _chain(self, tx: Tx, now: datetime) -> tuple[FrameChain, int, int, list[tuple[int, bytes, bytes, str, str]]]:
        """Resume the chain from its last row, creating the log (header + checkpoint) if empty."""
        rows: list[tuple[int, bytes, bytes, str, str]] = []
        tail = tx.audit_tail()
        now_us = int(now.timestamp() * 1_000_000)
        if tail is None:
            log_id = new_session_id()
            tx.set_meta("audit_id", str(log_id))
            tx.set_meta("audit_started_us", str(now_us))
            chain = FrameChain(log_id, self._key)
            header = Header(
                session_id=log_id,
                user="zsp",
                target="audit",
                login="",
                grant_id=None,
                started_at_us=now_us,
                term="",
                cols=0,
                rows=0,
                command=None,
                host=socket.gethostname(),
                signer=self._key.public.openssh,
                signer_fingerprint=self._key.public.fingerprint,
                checkpoint_frames=_CHECKPOINT_EVERY,
                checkpoint_ms=5000,
                coalesce_ms=0,
                extra=dict(_HEADER_EXTRA),
            )
            _, body, head = chain.frame(FrameKind.HEADER, header.to_map(), 0)
            rows.append((0, body, head, rfc3339(now), "audit.header"))
            return chain, now_us, 0, rows
        seq, body, head = tail
        start_us = int(tx.get_meta("audit_started_us") or "0")
        log_id = uuid.UUID(tx.get_meta("audit_id") or "")
        last_t = msgpack.unpackb(body)[2]
        return FrameChain(log_id, self._key, seq=seq + 1, head=head), start_us, last_t, rows

    def append(self, tx: Tx, events: list[NewEvent], now: datetime) -> list[AuditEvent]:
        """Add ``events`` (and a checkpoint signing them) to the log, inside ``tx``.

        Returns what the sinks get once ``tx`` commits: the events, each checkpoint's
        ``audit.anchor`` record after the events it signs.
        """
        if not events:
            return []
        chain, start_us, last_t, rows = self._chain(tx, now)
        t_us = max(last_t, int(now.timestamp() * 1_000_000) - start_us)
        time_us = int(now.timestamp() * 1_000_000)
        out: list[AuditEvent] = []
        unsigned = len(rows)
        for ev in events:
            code = EVENTS.get(ev.event)
            if code is None:
                raise ValueError(f"unknown audit event {ev.event}")
            data: dict[str, Scalar] = {k: v for k, v in ev.fields.items() if k not in _CORE}
            # A field the format does not admit would make the whole log unverifiable: refused
            # here (the change it describes is rolled back with it), never written.
            check_event_fields({k: v for k, v in data.items() if k != "message"})
            data.update(
                type=ev.event,
                message=ev.message,
                code=code,
                time_us=time_us,
                actor=ev.actor,
                via=ev.via,
                outcome=ev.outcome,
                target=ev.target,
                login=ev.login,
                grant_id=ev.grant_id,
                session_id=ev.session_id,
            )
            seq = chain.seq
            _, body, head = chain.frame(FrameKind.EVENT, data, t_us)
            rows.append((seq, body, head, rfc3339(now), ev.event))
            out.append(self._event(seq, data))
            unsigned += 1
            if unsigned >= _CHECKPOINT_EVERY:
                rows.append(self._checkpoint(chain, t_us, now, out))
                unsigned = 0
        rows.append(self._checkpoint(chain, t_us, now, out))
        tx.audit_append(rows)
        return out

    def _checkpoint(
        self, chain: FrameChain, t_us: int, now: datetime, out: list[AuditEvent]
    ) -> tuple[int, bytes, bytes, str, str]:
        """Sign the chain so far; its anchor joins ``out``, so the sinks get it after the commit."""
        seq, signed_head, wall_us = chain.seq, chain.head, int(now.timestamp() * 1_000_000)
        _, body, head = chain.checkpoint(t_us, wall_us)
        anchor = Anchor(
            log_id=chain.session_id,
            index=seq - 1,
            head=signed_head,
            wall_us=wall_us,
            signer_fingerprint=self._key.public.fingerprint,
            signature=msgpack.unpackb(body)[3]["sig"],
        )
        out.append(
            AuditEvent(
                seq=seq,
                event=ANCHOR_EVENT,
                code=ANCHOR_CODE,
                time=datetime.fromtimestamp(wall_us / 1e6, UTC),
                actor="system",
                via="system",
                outcome="success",
                message=f"audit log checkpoint: frames 0..{seq - 1} signed, head {signed_head.hex()[:16]}",
                target=None,
                login=None,
                grant_id=None,
                session_id=None,
                fields=dict(anchor.fields()),
            )
        )
        return seq, body, head, rfc3339(now), "audit.checkpoint"

    @staticmethod
    def _event(seq: int, data: dict[str, Any]) -> AuditEvent:
        fields = {k: v for k, v in data.items() if k not in _CORE and k != "message"}
        return AuditEvent(
            seq=seq,
            event=str(data["type"]),
            code=str(data["code"]),
            time=datetime.fromtimestamp(int(data["time_us"]) / 1e6, UTC),
            actor=str(data["actor"]),
            via=str(data["via"]),
            outcome=str(data["outcome"]),
            message=str(data["message"]),
            target=data.get("target"),
            login=data.get("login"),
            grant_id=data.get("grant_id"),
            session_id=data.get("session_id"),
            fields=fields,
        )

    def events(self, tx: Tx, since: datetime | None = None) -> Iterator[AuditEvent]:
        """Events in order (unverified: run :meth:`verify` to check the chain)."""
        for seq, body, _head in tx.audit_rows():
            kind, _, _, data = msgpack.unpackb(body)
            if kind != FrameKind.EVENT or not isinstance(data, dict) or "time_us" not in data:
                continue
            ev = self._event(seq, data)
            if since is None or ev.time >= since:
                yield ev

    def newest(
        self,
        tx: Tx,
        *,
        before: int | None = None,
        limit: int = 200,
        actor: str = "",
        event_prefix: str = "",
        since: datetime | None = None,
    ) -> list[AuditEvent]:
        """Up to ``limit`` events below seq ``before``, newest first, of ``actor`` (exact; any if
        empty) whose name starts with ``event_prefix``, at or after ``since`` (unverified). Reads
        the log backwards a chunk at a time, so the newest page of a long log costs one chunk."""
        out: list[AuditEvent] = []
        cursor = before
        chunk = max(limit, 256)
        while len(out) < limit:
            rows = tx.audit_page(cursor, chunk, event_prefix=event_prefix, since=since)
            for seq, body, _head in rows:
                kind, _, _, data = msgpack.unpackb(body)
                if kind != FrameKind.EVENT or not isinstance(data, dict) or "time_us" not in data:
                    continue
                ev = self._event(seq, data)
                if actor and ev.actor != actor:
                    continue
                out.append(ev)
                if len(out) >= limit:
                    break
            if len(rows) < chunk:
                break
            cursor = rows[-1][0]
        return out

    def verify(self, tx: Tx, trusted: list[PublicKey], anchors: AnchorSet | None = None) -> AuditReport:
        """Check the whole chain and every signature; ``ok`` only if every event is signed.

        Without ``anchors`` a log cut back to one of its checkpoints still passes (a signed
        prefix is intact); with them, the log must also reach the last anchor with its exact head.
        """
        report = self._verify(tx, trusted)
        if anchors is None or not report.ok:
            return report
        return self._reaches(tx, report, anchors)

    def _reaches(self, tx: Tx, report: AuditReport, anchors: AnchorSet) -> AuditReport:
        """``report`` (an intact log), failed unless the log reaches the last anchor with its head."""
        last = anchors.last
        header = report.report.header
        log_id = header.session_id if header else None
        where = f"anchor (line {last.line}: frame {last.index}, head {last.head.hex()[:16]}..., signed "
        where += f"{rfc3339(datetime.fromtimestamp(last.wall_us / 1e6, UTC))})"

        def failed(detail: str) -> AuditReport:
            return AuditReport(False, report.events, report.signed, report.last_checkpoint, detail, report.report)

        if log_id is None:
            return failed(f"CUT: the log is empty, but the anchors show it reached the {where}")
        foreign = sorted(str(i) for i in anchors.log_ids if i != log_id)
        if foreign:
            return failed(f"the anchors name audit log {', '.join(foreign)}, but this log is {log_id}: log replaced?")
        if last.index >= report.signed:
            return failed(
                f"CUT: the log ends at frame {report.events - 1} (signed up to {report.signed - 1}), before the "
                f"last {where}: it was cut back or rolled back"
            )
        if anchors.fork is not None:
            a, first = anchors.fork
            return failed(
                f"REWRITTEN: anchors on lines {first} and {a.line} give two heads for frame {a.index}: "
                "the log was cut back and written again"
            )
        # Every anchored frame must carry the anchored head, and be followed by its checkpoint.
        heads = anchors.heads
        expect_checkpoint: int | None = None
        for seq, body, head in tx.audit_rows(since_seq=min(heads)):
            if expect_checkpoint is not None:
                if msgpack.unpackb(body)[0] != FrameKind.CHECKPOINT:
                    return failed(f"REWRITTEN: frame {seq} is not the checkpoint anchored on line {expect_checkpoint}")
                expect_checkpoint = None
            anchored = heads.get(seq)
            if anchored is not None:
                if head != anchored[0]:
                    return failed(
                        f"REWRITTEN: frame {seq} does not have the head anchored on line {anchored[1]}: "
                        "the log was cut back and written again, or edited"
                    )
                expect_checkpoint = anchored[1]
            if seq >= last.index + 1:
                break
        return AuditReport(
            True,
            report.events,
            report.signed,
            report.last_checkpoint,
            f"{report.detail}; reaches the last of {anchors.count} anchors: {where}",
            report.report,
        )

    def _verify(self, tx: Tx, trusted: list[PublicKey]) -> AuditReport:
        report = verify(io.BufferedReader(_RowStream(tx.audit_rows())), trusted)
        wall = report.last_checkpoint_wall_us
        last = None if wall is None else datetime.fromtimestamp(wall / 1e6, UTC)
        events = max(0, report.frames)
        if report.outcome is Outcome.INCOMPLETE and report.problem is Problem.EMPTY:
            return AuditReport(True, 0, 0, None, "audit log is empty", report)
        if report.outcome is Outcome.CORRUPT:
            return AuditReport(
                False,
                events,
                report.signed_frames,
                last,
                f"CORRUPT at seq {report.bad_frame}: {report.problem.value if report.problem else ''}: {report.detail}",
                report,
            )
        if report.problem is Problem.NO_SEAL and report.signed_frames == report.frames - 1:
            return AuditReport(True, events, report.signed_frames, last, "chain intact, every event signed", report)
        return AuditReport(
            False,
            events,
            report.signed_frames,
            last,
            f"{report.outcome.value}: {report.detail} (signed up to seq {report.signed_frames - 1})",
            report,
        )
