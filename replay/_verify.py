"""The verifier: three outcomes, never a false VALID.

* **VALID**: the file is a v1 recording, every frame is chained, every checkpoint and the seal
  are signed by a trusted key, the seal's counts match, and nothing follows the seal's signature.
* **INCOMPLETE**: everything present is intact, but the recording was never sealed (the writer
  died, or the file was cut): we report how many frames are intact and how many are signed.
* **CORRUPT**: something present is wrong; we report the first bad frame, its offset and why.

:func:`verify_frames` is a generator that yields each frame once it is proven part of the
chain, so the player, search indexer and exporter read and verify in one pass. Its return value
is the :class:`VerificationReport`. It is the hot path of ``zsp verify``: keep per-frame work to
one ``unpackb``, one keyed ``blake3`` and a few comparisons.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from blake3 import blake3

from recorder import (
    VERSION,
    ChainEnd,
    Checkpoint,
    FormatViolation,
    Frame,
    FrameKind,
    Header,
    PublicKey,
    Seal,
    checkpoint_message,
    decode_body,
    genesis,
    parse_data,
)

from ._exceptions import SourceError
from ._reader import Preamble, TailKind, iter_raw, read_preamble

__all__ = ["Outcome", "Problem", "RedactedFrame", "VerificationReport", "load", "verify", "verify_frames"]

_OUTPUT = FrameKind.OUTPUT
_INPUT = FrameKind.INPUT
_CHECKPOINT = FrameKind.CHECKPOINT
_SEAL = FrameKind.SEAL
_HEADER = FrameKind.HEADER
_KINDS = {int(k): k for k in FrameKind}


class Outcome(enum.Enum):
    VALID = "VALID"
    INCOMPLETE = "INCOMPLETE"
    CORRUPT = "CORRUPT"


class Problem(enum.Enum):
    """Why a recording is not VALID. The value is the stable code printed by ``--json``."""

    NOT_A_RECORDING = "not-a-recording"
    UNKNOWN_VERSION = "unknown-version"
    MALFORMED = "malformed"
    OVERSIZE = "oversize-frame"
    SEQUENCE = "sequence-gap"
    HASH_MISMATCH = "hash-mismatch"
    TIME_BACKWARDS = "time-backwards"
    NO_HEADER = "no-header"
    UNTRUSTED_SIGNER = "untrusted-signer"
    BAD_SIGNATURE = "bad-signature"
    MISSING_SIGNATURE = "missing-signature"
    SEAL_MISMATCH = "seal-mismatch"
    AFTER_SEAL = "data-after-seal"
    # INCOMPLETE reasons
    EMPTY = "empty"
    TORN = "torn-tail"
    NO_SEAL = "no-seal"
    UNSIGNED_SEAL = "unsigned-seal"


@dataclass(frozen=True, slots=True)
class RedactedFrame:
    """What a redaction list (an evidence bundle's manifest) says of one frame whose data was
    replaced: its kind, its data length, and the head it had before (still stored after it).

    The verifier accepts such a frame's changed body only if the frame keeps ``original_head``,
    its seq, kind and data length: the chain then continues from the original head, so every
    other frame, and every signature, still proves that nothing else changed."""

    original_head: bytes
    kind: FrameKind
    """``FrameKind.OUTPUT`` or ``FrameKind.INPUT``: no other kind can be redacted."""
    length: int
    """Length of the frame's data (unchanged by redaction: matched bytes become ``*``)."""


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """The result of verifying one recording."""

    source: str
    outcome: Outcome
    frames: int
    """Frames read and proven part of the chain (intact)."""
    signed_frames: int
    """Frames covered by the last good signature (frames 0 .. signed_frames-1)."""
    duration_us: int
    """Time offset of the last intact frame."""
    header: Header | None
    seal: Seal | None
    head: bytes | None
    """Chain head of the last intact frame; for VALID the final head of the recording."""
    last_checkpoint_wall_us: int | None
    """Wall-clock time of the last good signature, microseconds since the epoch."""
    problem: Problem | None = None
    bad_frame: int | None = None
    """CORRUPT: index of the first bad frame (None: the preamble). INCOMPLETE: first missing frame."""
    bad_offset: int | None = None
    detail: str = ""
    legacy_order: tuple[int, ...] = ()
    """Frames accepted under ``legacy_order=True``: output written after the checkpoint that was
    meant to cover it, by zsp 0.1.0's writer (FORMAT.md, "Recordings of zsp 0.1.0")."""
    redacted_frames: tuple[int, ...] = ()
    """Frames accepted with a changed body under ``redacted=``: their data is not original, but
    their kind, position and length are, and every other frame is proven unchanged."""
    output_bytes: int = 0
    """Bytes of the intact output frames (what a seal's ``output_bytes`` must say)."""
    input_bytes: int = 0
    """Bytes of the intact input frames."""

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID

    @property
    def signer_fingerprint(self) -> str | None:
        return self.header.signer_fingerprint if self.header else None

    def chain_end(self) -> ChainEnd | None:
        """Where the intact chain ends, for sealing an unsealed recording at restart
        (:func:`recorder.interrupted_seal`); None if there is no intact frame to resume from.
        ``bad_offset`` is where the intact bytes end (a no-seal report puts it at end of file)."""
        h = self.header
        if h is None or self.head is None or self.bad_offset is None:
            return None
        return ChainEnd(
            session_id=h.session_id,
            signer=h.signer,
            frames=self.frames,
            signed_frames=self.signed_frames,
            head=self.head,
            t_us=self.duration_us,
            output_bytes=self.output_bytes,
            input_bytes=self.input_bytes,
            checkpoint_frames=h.checkpoint_frames,
            size=self.bad_offset,
        )

    def to_json(self) -> dict[str, object]:
        h = self.header
        return {
            "source": self.source,
            "outcome": self.outcome.value,
            "frames": self.frames,
            "signed_frames": self.signed_frames,
            "duration_s": round(self.duration_us / 1e6, 6),
            "session_id": str(h.session_id) if h else None,
            "user": h.user if h else None,
            "target": h.target if h else None,
            "login": h.login if h else None,
            "started_at_us": h.started_at_us if h else None,
            "signer_fingerprint": self.signer_fingerprint,
            "head": self.head.hex() if self.head else None,
            "last_checkpoint_wall_us": self.last_checkpoint_wall_us,
            "exit_status": self.seal.exit_status if self.seal else None,
            "end_reason": self.seal.reason if self.seal else None,
            "problem": self.problem.value if self.problem else None,
            "bad_frame": self.bad_frame,
            "bad_offset": self.bad_offset,
            "detail": self.detail,
            "legacy_order_frames": list(self.legacy_order),
            "redacted_frames": list(self.redacted_frames),
        }


class _State:
    """Mutable bookkeeping of one verification; turned into a report at the end."""

    __slots__ = (
        "ckpt_wall",
        "duration",
        "frames",
        "head",
        "header",
        "in_bytes",
        "legacy",
        "out_bytes",
        "redacted",
        "seal",
        "signed",
        "source",
    )

    def __init__(self, source: str) -> None:
        self.source = source
        self.frames = 0
        self.signed = 0
        self.duration = 0
        self.header: Header | None = None
        self.seal: Seal | None = None
        self.head: bytes | None = None
        self.ckpt_wall: int | None = None
        self.legacy: list[int] = []
        self.redacted: list[int] = []
        self.out_bytes = 0
        self.in_bytes = 0

    def report(
        self,
        outcome: Outcome,
        problem: Problem | None = None,
        frame: int | None = None,
        offset: int | None = None,
        detail: str = "",
    ) -> VerificationReport:
        return VerificationReport(
            source=self.source,
            outcome=outcome,
            frames=self.frames,
            signed_frames=self.signed,
            duration_us=self.duration,
            header=self.header,
            seal=self.seal,
            head=self.head,
            last_checkpoint_wall_us=self.ckpt_wall,
            problem=problem,
            bad_frame=frame,
            bad_offset=offset,
            detail=detail,
            legacy_order=tuple(self.legacy),
            redacted_frames=tuple(self.redacted),
            output_bytes=self.out_bytes,
            input_bytes=self.in_bytes,
        )


def verify_frames(
    stream: IO[bytes],
    trusted: Iterable[PublicKey],
    *,
    source: str = "<stream>",
    legacy_order: bool = False,
    redacted: Mapping[int, RedactedFrame] | None = None,
) -> Generator[Frame, None, VerificationReport]:
    """Yield each frame of ``stream`` once it is proven chained; return the verification report.

    A frame is yielded after its chain head checks out, so a consumer never sees a frame that
    does not belong to this recording; signatures (which cover many frames) are only known good
    at the next checkpoint, so a consumer that needs signed data must wait for the report.

    ``legacy_order`` accepts the one time inversion zsp 0.1.0's writer made in honest sessions
    (an output frame written right after the checkpoint that fell due while it was held for
    coalescing, so carrying an earlier time), when it is exactly that and a later signature
    covers it. The frames are listed in the report. Off by default: the format forbids it.

    ``redacted`` lists frames whose data was replaced by redaction (an evidence bundle's
    manifest): such a frame must still carry its original stored head, seq, kind and data
    length, and the chain continues from that head; every frame not listed is checked as
    always, so a change anywhere else is still a ``hash-mismatch`` at that frame. Frame 0 and
    frames other than output/input can never be listed (``malformed``), nor frames the
    recording does not reach. Listed frames are named in ``redacted_frames``.
    """
    st = _State(source)
    trusted = tuple(trusted)
    trusted_raw = {k.raw for k in trusted}
    corrupt = Outcome.CORRUPT

    status, _ = read_preamble(stream)
    if status is Preamble.SHORT:
        return st.report(Outcome.INCOMPLETE, Problem.EMPTY, 0, 0, "file ends inside the preamble")
    if status is Preamble.UNKNOWN_VERSION:
        return st.report(corrupt, Problem.UNKNOWN_VERSION, None, 0, "unknown format version")
    if status is Preamble.NOT_A_RECORDING:
        return st.report(corrupt, Problem.NOT_A_RECORDING, None, 0, "not a zsp recording (bad magic)")

    head = b""
    sid: uuid.UUID = uuid.UUID(int=0)
    signer: PublicKey | None = None
    windows: tuple[PublicKey, ...] = ()  # the signer's allowed_signers entries, if all are time-bounded
    last_t = 0
    data_t = 0  # time of the last frame that is not a checkpoint
    prev_kind = -1
    coalesce_us = 0
    unsigned = 0
    max_unsigned = 0
    sealed = False  # a seal frame was read
    final = False  # ...and the checkpoint signing it
    out_bytes = 0
    in_bytes = 0
    # Redacted frames, in order: ``index == next_redacted`` is the only per-frame cost they add.
    pending = sorted(redacted, reverse=True) if redacted else []
    next_redacted = pending.pop() if pending else -1
    if next_redacted < 0 and redacted:
        detail = f"redacted frame {next_redacted} is not in the recording"
        return st.report(corrupt, Problem.MALFORMED, None, 0, detail)

    raw = iter_raw(stream)
    while True:
        try:
            index, offset, body, stored = next(raw)
        except StopIteration as stop:
            tail = stop.value
            break
        if final:
            return st.report(corrupt, Problem.AFTER_SEAL, index, offset, "frame after the seal's signature")

        if index == 0:
            if next_redacted == 0:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, _NOT_REDACTABLE % 0)
            # The header is decoded first: the key of its head derives from its session id.
            try:
                kind, seq, t, data = decode_body(body)
            except FormatViolation as exc:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, exc.reason)
            if seq != 0:
                return st.report(corrupt, Problem.SEQUENCE, 0, offset, f"expected frame 0, found {seq}")
            if kind != _HEADER:
                return st.report(corrupt, Problem.NO_HEADER, 0, offset, "first frame is not a header")
            if type(data) is not dict:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, "header data must be a map")
            version = data.get("version")
            if type(version) is not int or version != VERSION:
                return st.report(corrupt, Problem.UNKNOWN_VERSION, 0, offset, "unknown header version")
            try:
                header = parse_data(kind, data)
            except FormatViolation as exc:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, exc.reason)
            if not isinstance(header, Header):  # parse_data returns a Header for HEADER frames
                return st.report(corrupt, Problem.MALFORMED, 0, offset, "bad header")
            sid = header.session_id
            head = genesis(sid)
            computed = blake3(body, key=head).digest()
            if computed != stored:
                return st.report(corrupt, Problem.HASH_MISMATCH, 0, offset, "header does not match its chain head")
            try:
                signer = PublicKey.from_openssh(header.signer)
            except ValueError as exc:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, f"header signer: {exc}")
            if signer.openssh != header.signer or signer.fingerprint != header.signer_fingerprint:
                return st.report(corrupt, Problem.MALFORMED, 0, offset, "signer or its fingerprint is not canonical")
            st.header = header
            if signer.raw not in trusted_raw:
                return st.report(
                    corrupt, Problem.UNTRUSTED_SIGNER, 0, offset, f"signer {signer.fingerprint} is not trusted"
                )
            entries = tuple(k for k in trusted if k.raw == signer.raw)
            if all(k.bounded for k in entries):
                windows = entries
            max_unsigned = header.checkpoint_frames
            coalesce_us = header.coalesce_ms * 1000
            head = st.head = computed
            last_t = st.duration = t
            st.frames = 1
            unsigned = 1
            yield Frame(0, _HEADER, t, header)
            continue

        # Every later frame: the chain first, so a changed byte is reported as what it is.
        computed = blake3(body, key=head).digest()
        if index == next_redacted and redacted is not None:
            why = _check_redacted(index, body, stored, redacted[index], computed)
            if why is not None:
                return st.report(corrupt, why[0], index, offset, why[1])
            computed = stored  # the original head: the chain and the signatures go on from it
            st.redacted.append(index)
            next_redacted = pending.pop() if pending else -1
        elif computed != stored:
            problem, detail = _diagnose(body, index)
            return st.report(corrupt, problem, index, offset, detail)
        try:
            kind, seq, t, data = decode_body(body)
        except FormatViolation as exc:
            return st.report(corrupt, Problem.MALFORMED, index, offset, exc.reason)
        if seq != index:
            return st.report(corrupt, Problem.SEQUENCE, index, offset, _seq_detail(index, seq))
        if t < last_t:
            legacy = kind == _OUTPUT and prev_kind == _CHECKPOINT and data_t <= t and last_t - t < coalesce_us
            if not (legacy and legacy_order):
                detail = f"time {t} us after {last_t} us"
                if legacy:
                    detail += (
                        " (the pattern of zsp 0.1.0's checkpoint-ordering fault in honest sessions:"
                        " check the rest with `zsp verify --legacy-order`)"
                    )
                return st.report(corrupt, Problem.TIME_BACKWARDS, index, offset, detail)
            st.legacy.append(index)
        prev_kind = kind
        if kind != _CHECKPOINT:
            data_t = t
        prev_head = head
        head = computed

        if kind == _OUTPUT or kind == _INPUT:
            if type(data) is not bytes:
                return st.report(corrupt, Problem.MALFORMED, index, offset, "input/output data must be bytes")
            if sealed:
                return st.report(corrupt, Problem.AFTER_SEAL, index, offset, "data after the seal")
            if kind == _OUTPUT:
                out_bytes += len(data)
            else:
                in_bytes += len(data)
            unsigned += 1
            if unsigned > max_unsigned:
                return st.report(
                    corrupt, Problem.MISSING_SIGNATURE, index, offset, f"over {max_unsigned} frames unsigned"
                )
            # max: after a legacy-order frame, later ones still compare with the checkpoint's time
            last_t = st.duration = max(t, last_t)
            st.out_bytes, st.in_bytes = out_bytes, in_bytes
            st.head = head
            st.frames = index + 1
            yield Frame(index, _KINDS[kind], t, data)
            continue

        try:
            value = parse_data(kind, data)
        except FormatViolation as exc:
            return st.report(corrupt, Problem.MALFORMED, index, offset, exc.reason)
        if kind == _HEADER:
            return st.report(corrupt, Problem.MALFORMED, index, offset, "second header")

        if isinstance(value, Checkpoint):
            if value.index != index - 1:
                return st.report(corrupt, Problem.MALFORMED, index, offset, "checkpoint names the wrong frame")
            message = checkpoint_message(sid, value.index, prev_head, value.wall_us)
            if signer is None or not signer.verify(value.signature, message):
                return st.report(corrupt, Problem.BAD_SIGNATURE, index, offset, "checkpoint signature does not verify")
            if windows and not any(k.valid_at(value.wall_us) for k in windows):
                return st.report(
                    corrupt,
                    Problem.UNTRUSTED_SIGNER,
                    index,
                    offset,
                    f"signer {signer.fingerprint} is not trusted at the checkpoint's signed time "
                    f"{_utc(value.wall_us)} (outside its allowed_signers valid-after/valid-before)",
                )
            st.signed = index
            st.ckpt_wall = value.wall_us
            unsigned = 0
            if sealed:
                final = True
        else:
            if sealed:
                return st.report(corrupt, Problem.AFTER_SEAL, index, offset, "frame between the seal and its signature")
            unsigned += 1
            if unsigned > max_unsigned:
                return st.report(
                    corrupt, Problem.MISSING_SIGNATURE, index, offset, f"over {max_unsigned} frames unsigned"
                )
            if isinstance(value, Seal):
                if value.frames != index or value.output_bytes != out_bytes or value.input_bytes != in_bytes:
                    return st.report(
                        corrupt,
                        Problem.SEAL_MISMATCH,
                        index,
                        offset,
                        f"seal counts ({value.frames} frames, {value.output_bytes}/{value.input_bytes} bytes out/in) "
                        f"disagree with the recording ({index}, {out_bytes}/{in_bytes})",
                    )
                sealed = True
                st.seal = value
        last_t = st.duration = t
        st.head = head
        st.frames = index + 1
        yield Frame(index, _KINDS[kind], t, value)

    if tail.kind is TailKind.OVERSIZE:
        return st.report(
            corrupt, Problem.OVERSIZE, tail.index, tail.offset, f"length prefix {tail.length} exceeds the format's cap"
        )
    if next_redacted >= 0:  # listed, never reached
        return st.report(
            corrupt,
            Problem.MALFORMED,
            next_redacted,
            tail.offset,
            f"redacted frame {next_redacted} is not in the recording (it has {st.frames} intact frames)",
        )
    if final:
        if tail.kind is TailKind.TORN:
            return st.report(corrupt, Problem.AFTER_SEAL, tail.index, tail.offset, "bytes after the seal's signature")
        return st.report(Outcome.VALID)
    if st.frames == 0 and tail.kind is TailKind.CLEAN:
        return st.report(Outcome.INCOMPLETE, Problem.EMPTY, 0, tail.offset, "no frames")
    if tail.kind is TailKind.TORN:
        return st.report(
            Outcome.INCOMPLETE, Problem.TORN, tail.index, tail.offset, f"file ends inside frame {tail.index}"
        )
    if sealed:
        return st.report(Outcome.INCOMPLETE, Problem.UNSIGNED_SEAL, tail.index, tail.offset, "seal is not signed")
    return st.report(Outcome.INCOMPLETE, Problem.NO_SEAL, tail.index, tail.offset, "recording was never sealed")


_NOT_REDACTABLE = "frame %d is listed as redacted, but only output and input frames can be"
_REDACTABLE = frozenset({int(FrameKind.OUTPUT), int(FrameKind.INPUT)})


def _check_redacted(
    index: int, body: memoryview, stored: bytes, listed: RedactedFrame, computed: bytes
) -> tuple[Problem, str] | None:
    """Why a frame listed as redacted is not an honest redaction of the original, or None.
    ``computed``: the body's head from the previous head (equal to ``stored``: the frame is unchanged)."""
    if stored != listed.original_head:
        return Problem.HASH_MISMATCH, f"redacted frame {index} does not carry its original head"
    changed = f"redacted frame {index} changed more than its data"
    if listed.kind not in _REDACTABLE:
        return Problem.MALFORMED, _NOT_REDACTABLE % index
    try:
        kind, seq, _, data = decode_body(body)
    except FormatViolation as exc:
        return Problem.MALFORMED, f"{changed}: {exc.reason}"
    if kind not in _REDACTABLE:
        return Problem.MALFORMED, _NOT_REDACTABLE % index
    if seq != index or kind != listed.kind or type(data) is not bytes or len(data) != listed.length:
        return Problem.MALFORMED, f"{changed} (its position, kind or length differs from the list)"
    if computed == stored:  # its original bytes: a redaction that never happened
        return Problem.MALFORMED, f"frame {index} is listed as redacted but is unchanged"
    return None


def _utc(wall_us: int) -> str:
    try:
        return datetime.fromtimestamp(wall_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{wall_us} us since the epoch"


def _seq_detail(index: int, seq: int) -> str:
    what = "missing frame(s)" if seq > index else "repeated or reordered frame"
    return f"expected frame {index}, found {seq} ({what})"


def _diagnose(body: memoryview, index: int) -> tuple[Problem, str]:
    """Why a frame's head does not match: a frame out of place, or changed bytes."""
    try:
        seq = decode_body(body)[1]
    except FormatViolation:
        seq = index
    if seq != index:
        return Problem.SEQUENCE, _seq_detail(index, seq)
    return Problem.HASH_MISMATCH, "frame does not match its chain head"


def verify(
    source: Path | str | BinaryIO,
    trusted: Iterable[PublicKey],
    *,
    legacy_order: bool = False,
    redacted: Mapping[int, RedactedFrame] | None = None,
) -> VerificationReport:
    """Verify a whole recording (a path or a binary stream) and return the report."""
    if isinstance(source, (str, Path)):
        name = str(source)
        try:
            f = open(source, "rb")
        except OSError as exc:
            raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
        with f:
            return _drain(verify_frames(f, trusted, source=name, legacy_order=legacy_order, redacted=redacted), name)
    name = getattr(source, "name", "<stream>")
    gen = verify_frames(source, trusted, source=name, legacy_order=legacy_order, redacted=redacted)
    return _drain(gen, "<stream>")


def load(
    source: Path | str, trusted: Iterable[PublicKey], *, legacy_order: bool = False
) -> tuple[list[Frame], VerificationReport]:
    """Every chained frame of a recording, in memory, and its report (small files, tests, tools)."""
    name = str(source)
    frames: list[Frame] = []
    try:
        with open(source, "rb") as f:
            gen = verify_frames(f, trusted, source=name, legacy_order=legacy_order)
            try:
                while True:
                    frames.append(next(gen))
            except StopIteration as stop:
                report: VerificationReport = stop.value
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
    return frames, report


def _drain(gen: Generator[Frame, None, VerificationReport], name: str) -> VerificationReport:
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        report: VerificationReport = stop.value
        return report
    except OSError as exc:
        raise SourceError(source=name, reason=exc.strerror or str(exc)) from None
