"""Redaction that stays verifiable: replace matching bytes in a recording's output and input.

Every byte a pattern matches becomes ``*``, so a frame's data keeps its length (the seal's
counts still hold). A frame whose data changed gets a new body, ``[kind, seq, t_us, data]``
re-encoded with the same kind, seq and time, but keeps its ORIGINAL stored head; every other
byte of the file is copied unchanged. The list of changed frames (:class:`Redaction`, with the
original heads) is what a verifier needs (``replay.verify(..., redacted=...)``): the chain goes
on from each original head, so every signature still holds and proves that no other frame
changed.

Matching is over each direction as one stream (output bytes in frame order; input bytes in frame
order), so a secret split across frames (SSH packets split anywhere) is found. Patterns are
applied one after another, each to the result of the ones before (``re.sub`` semantics: a
pattern's matches are found before any of them is replaced). Then they run once more over the
text as a terminal shows it, escape sequences left out (:func:`_apply_shown`), so a secret printed
in colour (``grep --color``) is found too.

Streaming, in bounded memory (two passes over the source):

1. verify the source (it must be VALID or INCOMPLETE) and copy each direction's bytes to a
   temporary file;
2. run every pattern over the memory-mapped stream (exact whole-stream ``re`` semantics, with
   no maximum match length: the regex engine reads the page cache, not a copy); each pattern
   writes its ``*`` into a second mapped copy that the next pattern reads;
3. copy the source frame by frame, re-checking its chain as it goes, re-encoding the frames
   whose bytes differ in the final stream.

Memory is one frame plus the mapped pages the kernel keeps; temporary disk is at most three
times a direction's bytes. A recording with more than :data:`MAX_REDACT_BYTES` of output and
input together is refused.
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

import msgpack
from blake3 import blake3

from recorder import (
    PREAMBLE,
    FormatViolation,
    FrameKind,
    Header,
    PublicKey,
    decode_body,
    genesis,
    pack_length,
    parse_data,
)

from ._exceptions import ReplayError
from ._reader import TailKind, iter_raw
from ._verify import Outcome, Problem, RedactedFrame, VerificationReport, verify_frames

__all__ = ["MAX_REDACT_BYTES", "REPLACEMENT", "Redaction", "RedactionError", "RedactionResult", "redact_recording"]


class Writable(Protocol):
    """Where a redacted copy goes: anything with ``write`` (a file, a hashing writer)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


REPLACEMENT = b"*"
"""What every matched byte becomes."""

MAX_REDACT_BYTES = 512 << 20
"""Output and input bytes (together) above which a recording is refused for redaction."""

_REDACTABLE = (FrameKind.OUTPUT, FrameKind.INPUT)
_STAR = REPLACEMENT[0]


class RedactionError(ReplayError):
    """A recording that cannot be redacted: CORRUPT, too large, unreadable, or changed meanwhile."""

    def __init__(self, *, source: str, reason: str, report: VerificationReport | None = None) -> None:
        self.source = source
        self.reason = reason
        self.report = report
        super().__init__(f"{source}: {reason}")


@dataclass(frozen=True, slots=True)
class Redaction:
    """One frame whose data was changed by redaction."""

    frame: int
    kind: FrameKind
    """``FrameKind.OUTPUT`` or ``FrameKind.INPUT``."""
    length: int
    """Length of the frame's data (the same before and after)."""
    original_head: bytes
    """The frame's stored head, unchanged in the redacted file."""
    redacted_bytes: int
    """How many bytes of the frame's data were replaced."""

    @property
    def listed(self) -> RedactedFrame:
        """What the verifier is given for this frame."""
        return RedactedFrame(original_head=self.original_head, kind=self.kind, length=self.length)

    def to_json(self) -> dict[str, object]:
        """The manifest entry of an evidence bundle (docs/EXPORT.md)."""
        return {
            "frame": self.frame,
            "kind": self.kind.name.lower(),
            "length": self.length,
            "original_head": self.original_head.hex(),
            "redacted_bytes": self.redacted_bytes,
        }


@dataclass(frozen=True, slots=True)
class RedactionResult:
    redactions: tuple[Redaction, ...]
    """Every changed frame, in frame order (empty: the output is a byte-for-byte copy)."""
    report: VerificationReport
    """The verification report of the original recording."""

    @property
    def redacted(self) -> Mapping[int, RedactedFrame]:
        """``redacted=`` for :func:`replay.verify` of the redacted copy."""
        return {r.frame: r.listed for r in self.redactions}

    @property
    def redacted_bytes(self) -> int:
        return sum(r.redacted_bytes for r in self.redactions)


def redact_recording(
    source: IO[bytes],
    out: Writable,
    patterns: Sequence[re.Pattern[bytes]],
    trusted: Iterable[PublicKey],
    *,
    tmpdir: str | os.PathLike[str] | None = None,
) -> RedactionResult:
    """Write to ``out`` a copy of the recording ``source`` with every match of ``patterns`` in its
    output and input replaced by ``*`` (module docstring); return what changed.

    ``source`` must be seekable (it is read twice) and verify VALID or INCOMPLETE with
    ``trusted``; anything else raises :class:`RedactionError` (a :class:`ReplayError`) before a
    byte is written. ``tmpdir`` holds the temporary stream files (default: the system's).
    """
    for p in patterns:
        if not isinstance(p.pattern, bytes):
            raise TypeError("redaction patterns must be compiled from bytes")
    name = str(getattr(source, "name", "<stream>"))
    if not source.seekable():
        raise RedactionError(source=name, reason="the recording must be a seekable file to be redacted")
    trusted = tuple(trusted)
    with tempfile.TemporaryDirectory(prefix="zsp-redact-", dir=tmpdir) as tmp:
        report, streams = _collect(source, name, trusted, tmp)
        finals = {
            kind: _apply_shown(_apply(path, patterns, tmp), patterns, tmp, name) for kind, path in streams.items()
        }
        try:
            # a direction no pattern changed is copied as it is (None: nothing to compare)
            maps = {kind: None if path == streams[kind] else _map(path) for kind, path in finals.items()}
            try:
                redactions = _rewrite(source, out, name, report, maps)
            finally:
                for m in maps.values():
                    if m is not None:
                        m.close()
        except OSError as exc:
            raise RedactionError(source=name, reason=exc.strerror or str(exc)) from None
    return RedactionResult(redactions=redactions, report=report)


def _collect(
    source: IO[bytes], name: str, trusted: tuple[PublicKey, ...], tmp: str
) -> tuple[VerificationReport, dict[FrameKind, str]]:
    """Pass 1: verify, and write each direction's bytes to its own temporary file."""
    paths = {k: os.path.join(tmp, f"{k.name.lower()}.0") for k in _REDACTABLE}
    total = 0
    try:
        source.seek(0)
        with open(paths[FrameKind.OUTPUT], "wb") as fo, open(paths[FrameKind.INPUT], "wb") as fi:
            write = {FrameKind.OUTPUT: fo.write, FrameKind.INPUT: fi.write}
            gen = verify_frames(source, trusted, source=name)
            try:
                while True:
                    frame = next(gen)
                    data = frame.data
                    if type(data) is bytes and frame.kind in write:
                        total += len(data)
                        if total > MAX_REDACT_BYTES:
                            raise RedactionError(
                                source=name,
                                reason=f"more than {MAX_REDACT_BYTES >> 20} MiB of output and input: "
                                "too large to redact",
                            )
                        write[frame.kind](data)
            except StopIteration as stop:
                report: VerificationReport = stop.value
    except OSError as exc:
        raise RedactionError(source=name, reason=exc.strerror or str(exc)) from None
    if report.outcome is Outcome.CORRUPT:
        where = "the preamble" if report.bad_frame is None else f"frame {report.bad_frame}"
        code = report.problem.value if report.problem else "corrupt"
        raise RedactionError(
            source=name, reason=f"CORRUPT at {where}: {code}: {report.detail}; not redacted", report=report
        )
    return report, paths


def _map(path: str) -> mmap.mmap | None:
    """A read-only map of a stream file (None when it is empty: nothing to map)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _apply(path: str, patterns: Sequence[re.Pattern[bytes]], tmp: str) -> str:
    """Run the patterns in turn over one direction's stream; return the file of the result.

    Each pattern reads the result of the ones before from a read-only map and writes its ``*``
    into a copy (``re.sub`` semantics: lookarounds see the text the pattern was given)."""
    current = path
    for n, pattern in enumerate(patterns, 1):
        src = _map(current)
        if src is None:
            return current
        dst_path = f"{path[:-2]}.{n}"
        dst: mmap.mmap | None = None
        try:
            for m in pattern.finditer(src):
                start, end = m.span()
                if start == end:
                    continue
                if dst is None:
                    shutil.copyfile(current, dst_path)
                    with open(dst_path, "r+b") as f:  # the map keeps its own descriptor
                        dst = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
                dst[start:end] = REPLACEMENT * (end - start)
        finally:
            if dst is not None:
                dst.flush()
                dst.close()
            src.close()
        if dst is not None:
            if current != path:
                os.unlink(current)
            current = dst_path
    return current


_ESCAPE = re.compile(
    rb"\x1b(?:"
    rb"\[[0-?]{0,256}[ -/]{0,16}[@-~]"  # CSI: colour (SGR), cursor and erase sequences
    rb"|[\]PX^_][^\x07\x1b]{0,4096}(?:\x07|\x1b\\)?"  # OSC (titles, links), DCS, SOS, PM, APC
    rb"|[ -/]{0,16}[0-~]"  # two-byte escapes (charset designation, keypad modes, save/restore cursor)
    rb")"
    rb"|\x9b[0-?]{0,256}[ -/]{0,16}[@-~]"  # 8-bit CSI
)
"""The escape sequences a terminal does not show as text (ECMA-48), bounded so that an unended one
cannot swallow the stream."""
MAX_ESCAPES = 16_000_000
"""Escape sequences in one direction above which matching the shown text is refused (its map of
runs takes 16 bytes per sequence)."""


def _apply_shown(path: str, patterns: Sequence[re.Pattern[bytes]], tmp: str, name: str) -> str:
    """Run the patterns again over the stream as a terminal shows its text: escape sequences left
    out, so ``\x1b[31mred\x1b[0m plain`` is matched by ``red plain``. A match's shown bytes become
    ``*`` in the stream (the escape sequences between them are kept, so the layout is unchanged).

    The shown text is written to a temporary file; ``runs`` maps it back to the stream: run ``i``
    starts at ``shown[i]`` in the shown text and at ``raw[i]`` in the stream, and lasts until the
    next run's shown start. Cursor movement is not emulated: text drawn out of order on the screen
    is matched in the order it was sent."""
    src = _map(path)
    if src is None:
        return path
    shown: array[int] = array("Q")
    raw: array[int] = array("Q")
    view_path = f"{path}.shown"
    try:
        with open(view_path, "wb") as view:
            at = 0  # in the stream
            written = 0  # in the shown text
            for m in _ESCAPE.finditer(src):
                start, end = m.span()
                if start > at:
                    shown.append(written)
                    raw.append(at)
                    view.write(src[at:start])
                    written += start - at
                at = end
                if len(shown) > MAX_ESCAPES:
                    raise RedactionError(
                        source=name,
                        reason=f"more than {MAX_ESCAPES:,} escape sequences in one direction: too many to match "
                        "the text as the terminal shows it",
                    )
            if not shown and at == 0:
                return path  # no escape sequence at all: the byte patterns saw the shown text already
            if at < len(src):
                shown.append(written)
                raw.append(at)
                view.write(src[at:])
                written += len(src) - at
    finally:
        src.close()
    if written == 0:
        return path
    result = path
    dst: mmap.mmap | None = None
    view_map: mmap.mmap | None = None
    try:
        with open(view_path, "r+b") as f:
            view_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        for pattern in patterns:
            spans = [m.span() for m in pattern.finditer(view_map) if m.end() > m.start()]
            for start, end in spans:
                if dst is None:
                    result = f"{path}.s"
                    shutil.copyfile(path, result)
                    with open(result, "r+b") as f:
                        dst = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
                view_map[start:end] = REPLACEMENT * (end - start)  # the next pattern sees the stars
                i = bisect.bisect_right(shown, start) - 1
                while i < len(shown) and shown[i] < end:
                    run_end = shown[i + 1] if i + 1 < len(shown) else written
                    lo, hi = max(start, shown[i]), min(end, run_end)
                    if lo < hi:
                        a = raw[i] + (lo - shown[i])
                        dst[a : a + (hi - lo)] = REPLACEMENT * (hi - lo)
                    i += 1
    finally:
        if view_map is not None:
            view_map.close()
        if dst is not None:
            dst.flush()
            dst.close()
        os.unlink(view_path)
    return result


def _rewrite(
    source: IO[bytes],
    out: Writable,
    name: str,
    report: VerificationReport,
    finals: Mapping[FrameKind, mmap.mmap | None],
) -> tuple[Redaction, ...]:
    """Pass 2: copy the recording, re-encoding the frames whose bytes changed.

    The chain is checked again as the frames are copied, and must end at the head pass 1
    verified: a file changed between the passes is refused, not redacted."""
    changed = f"{name}: the recording changed while it was being redacted"
    source.seek(0)
    preamble = source.read(len(PREAMBLE))
    out.write(preamble)
    if report.frames == 0:  # INCOMPLETE `empty`: nothing to redact; copy what is there
        shutil.copyfileobj(source, out)
        return ()
    pos = {k: 0 for k in _REDACTABLE}
    redactions: list[Redaction] = []
    head = b""
    raw = iter_raw(source)
    pack = msgpack.Packer(use_bin_type=True).pack
    intact = report.frames
    while True:
        try:
            index, _, body, stored = next(raw)
        except StopIteration as stop:
            tail = stop.value
            break
        if index >= intact:
            raise RedactionError(source=name, reason=changed)
        if index == 0:
            try:
                kind, _, _, data = decode_body(body)
                header = parse_data(kind, data)
            except FormatViolation:
                raise RedactionError(source=name, reason=changed) from None
            if not isinstance(header, Header):
                raise RedactionError(source=name, reason=changed)
            head = genesis(header.session_id)
        if blake3(body, key=head).digest() != stored:
            raise RedactionError(source=name, reason=changed)
        head = stored
        new_body: bytes | None = None
        if index > 0:
            kind, seq, t_us, data = decode_body(body)
            if kind == FrameKind.OUTPUT or kind == FrameKind.INPUT:
                fk = FrameKind(kind)
                start = pos[fk]
                end = pos[fk] = start + len(data)
                final = finals[fk]
                if final is not None:
                    new = final[start:end]
                    if new != data:
                        new_body = pack([kind, seq, t_us, new])
                        redactions.append(
                            Redaction(
                                frame=index,
                                kind=fk,
                                length=len(data),
                                original_head=stored,
                                redacted_bytes=new.count(_STAR) - data.count(_STAR),
                            )
                        )
        if new_body is None:
            out.write(pack_length(len(body)))
            out.write(body)
        else:
            out.write(pack_length(len(new_body)))
            out.write(new_body)
        out.write(stored)
        if index == intact - 1:
            if head != report.head:
                raise RedactionError(source=name, reason=changed)
    torn = report.problem is Problem.TORN
    if tail.index != intact or tail.kind is not (TailKind.TORN if torn else TailKind.CLEAN):
        raise RedactionError(source=name, reason=changed)
    if torn:
        # An INCOMPLETE recording cut inside a frame: the torn bytes are copied as they are.
        source.seek(tail.offset)
        rest = source.read(tail.length)
        if len(rest) != tail.length:
            raise RedactionError(source=name, reason=changed)
        out.write(rest)
    return tuple(redactions)
