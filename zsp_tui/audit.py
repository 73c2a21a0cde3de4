"""The audit log: every state change, as a hash-chained, signed stream of events.

The log *is* a zsp recording, stored row by row in the database: frame 0 is a header naming the
log, every event is an ``event`` frame, and each transaction that adds events ends with a
checkpoint signed by the data directory's recording key. It is built with
:class:`recorder.FrameChain` and checked with :func:`replay.verify_frames`, the same chain and
verifier as session recordings. Events are appended inside the transaction that makes the
change they describe, so a change and its audit event commit together or not at all.

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

from recorder import PREAMBLE, FrameChain, FrameKind, Header, PublicKey, SigningKey, new_session_id, pack_length
from replay import Outcome, Problem, VerificationReport, verify

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
    "upstream.host_key_mismatch": "ZSP2100E",
    "upstream.error": "ZSP2101E",
    "channel.refused": "ZSP3001W",
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
        """Add ``events`` (and a checkpoint signing them) to the log, inside ``tx``."""
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
                rows.append(self._checkpoint(chain, t_us, now))
                unsigned = 0
        rows.append(self._checkpoint(chain, t_us, now))
        tx.audit_append(rows)
        return out

    def _checkpoint(self, chain: FrameChain, t_us: int, now: datetime) -> tuple[int, bytes, bytes, str, str]:
        seq = chain.seq
        _, body, head = chain.checkpoint(t_us, int(now.timestamp() * 1_000_000))
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

    def verify(self, tx: Tx, trusted: list[PublicKey]) -> AuditReport:
        """Check the whole chain and every signature; ``ok`` only if every event is signed."""
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
