"""Recording format v1: the byte layout, the hash chain and the signed messages.

This module is the single source of truth for what a ``.zsprec`` file contains; ``docs/FORMAT.md``
describes the same thing in prose, and the golden files under ``tests/data/golden`` pin it.

A file is an 8-byte preamble followed by frames. Each frame on disk is::

    uint32 big-endian  N            length of the body
    byte[N]            body         msgpack array [kind, seq, t_us, data]
    byte[32]           head         blake3(body, key=head of the previous frame)

The head of frame 0 (the header) is keyed with ``genesis(session_id)``, so a frame cannot be moved
between sessions or files. Checkpoint frames carry an Ed25519 signature over
``(session id, index, head, wall clock)`` of the frame before them; a sealed recording ends with a
seal frame followed by the checkpoint that signs it.

Encoding is on the keystroke path, so it avoids per-frame objects beyond what msgpack needs.
Decoding validates every field with ``if ...: raise`` because it runs on untrusted files.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

import msgpack
from blake3 import blake3

__all__ = [
    "HEAD_LEN",
    "MAGIC",
    "MAX_BODY_LEN",
    "MAX_CHECKPOINT_FRAMES",
    "MAX_DATA_PER_FRAME",
    "PREAMBLE",
    "VERSION",
    "Checkpoint",
    "Event",
    "FormatViolation",
    "Frame",
    "FrameData",
    "FrameKind",
    "Header",
    "Resize",
    "Seal",
    "chain_head",
    "checkpoint_message",
    "decode_body",
    "genesis",
    "pack_length",
    "parse_data",
]

MAGIC = b"ZSPREC\x00"
"""First seven bytes of every recording."""

VERSION = 1
"""The format version this module reads and writes; the eighth byte of the file."""

PREAMBLE = MAGIC + bytes([VERSION])

HEAD_LEN = 32
"""Length of the blake3 chain head stored after each frame body."""

MAX_BODY_LEN = 1 << 20
"""Largest frame body a reader accepts (1 MiB). Longer length prefixes are corrupt, not allocated."""

MAX_DATA_PER_FRAME = 64 * 1024
"""Largest input/output payload the writer puts in one frame; larger chunks are split."""

MAX_CHECKPOINT_FRAMES = 4096
"""Upper bound a header may declare for frames between checkpoints."""

_U64 = (1 << 64) - 1

MAX_TEXT = 4096
"""Longest string accepted in a header, event or seal field (characters)."""

GENESIS_DOMAIN = b"zsp-recording-v1 genesis\x00"
CHECKPOINT_DOMAIN = b"zsp-recording-v1 checkpoint\x00"

_LEN = struct.Struct(">I")
_CHECKPOINT_FIELDS = struct.Struct(">QQ")


class FrameKind(enum.IntEnum):
    """The kind of a frame; the first element of every frame body."""

    HEADER = 0
    OUTPUT = 1
    INPUT = 2
    RESIZE = 3
    EVENT = 4
    CHECKPOINT = 5
    SEAL = 6


_KINDS = frozenset(int(k) for k in FrameKind)


class FormatViolation(ValueError):
    """A frame body is not a well-formed v1 frame. ``reason`` says which rule it breaks."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Header:
    """Frame 0: who, where and how the session was recorded, and by which key."""

    session_id: uuid.UUID
    """Time-sortable session id (UUIDv7); bound into the genesis of the chain."""
    user: str
    """The zsp user (or local account for ``zsp record``) whose session this is."""
    target: str
    """Target name, ``local`` for a shell on the recording host."""
    login: str
    """Remote login (account on the target)."""
    grant_id: str | None
    """The grant that allowed the session; None for console recordings."""
    started_at_us: int
    """Wall-clock start, microseconds since the Unix epoch (UTC)."""
    term: str
    """Terminal type (TERM), empty when the session had no PTY."""
    cols: int
    rows: int
    signer: str
    """The signer's public key as an OpenSSH line (``ssh-ed25519 AAAA...``)."""
    signer_fingerprint: str
    """``SHA256:...`` fingerprint of ``signer``, as ``ssh-keygen -l`` prints it."""
    checkpoint_frames: int
    """The writer signs a checkpoint after at most this many unsigned frames."""
    checkpoint_ms: int
    """...or after this many milliseconds with unsigned frames pending."""
    coalesce_ms: int
    """Output arriving within this window may share one frame."""
    command: str | None = None
    """The command run (exec sessions, ``zsp record -- CMD``); None for a login shell."""
    host: str = ""
    """Host name of the machine that wrote the recording."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Header keys this version does not define; kept (and signed) but not interpreted."""

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            version=VERSION,
            session_id=str(self.session_id),
            user=self.user,
            target=self.target,
            login=self.login,
            grant_id=self.grant_id,
            started_at_us=self.started_at_us,
            term=self.term,
            cols=self.cols,
            rows=self.rows,
            command=self.command,
            host=self.host,
            signer=self.signer,
            signer_fingerprint=self.signer_fingerprint,
            checkpoint_frames=self.checkpoint_frames,
            checkpoint_ms=self.checkpoint_ms,
            coalesce_ms=self.coalesce_ms,
        )
        return out


@dataclass(frozen=True, slots=True)
class Resize:
    """The terminal changed size."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to the session other than terminal bytes.

    ``type`` is a dotted name (``grant.warning``, ``grant.expired``, ``input.masked``,
    ``upstream.error``, ``note``); ``fields`` holds its details (strings, integers, booleans).
    """

    type: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signature over the chain head of frame ``index`` (the frame just before this one)."""

    index: int
    wall_us: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Seal:
    """The session ended; the frame after the seal must be the checkpoint that signs it."""

    exit_status: int | None
    """Exit status of the remote command or shell; negative for a signal; None if unknown."""
    reason: str
    """Why the session ended: ``exit``, ``signal``, ``expired``, ``revoked``, ``error``..."""
    frames: int
    """Number of frames before the seal (so the seal's own index)."""
    output_bytes: int
    input_bytes: int
    wall_us: int
    extra: dict[str, str | int | bool | None] = field(default_factory=dict)
    """Keys FORMAT.md does not name, with plain scalar values (others are ignored, as the format
    says): a seal written at recovery carries ``session_frames``, ``session_signed_frames``,
    ``session_head`` and ``recovered_by``. Unverified claims: only the counts above are checked."""


FrameData: TypeAlias = bytes | Header | Resize | Event | Checkpoint | Seal


class Frame(NamedTuple):
    """One decoded frame. A NamedTuple, not a dataclass: readers build millions of these."""

    seq: int
    """Position in the recording (frame 0 is the header)."""
    kind: FrameKind
    t_us: int
    """Microseconds since the session started (monotonic clock, never decreasing)."""
    data: FrameData


def genesis(session_id: uuid.UUID) -> bytes:
    """The key that chains frame 0: derived from the session id, so frames cannot move between sessions."""
    return blake3(GENESIS_DOMAIN + session_id.bytes).digest()


def chain_head(prev: bytes, body: bytes | memoryview) -> bytes:
    """Head of a frame: blake3 of its body keyed with the previous head."""
    return blake3(body, key=prev).digest()


def checkpoint_message(session_id: uuid.UUID, index: int, head: bytes, wall_us: int) -> bytes:
    """The exact bytes an Ed25519 checkpoint signature covers."""
    return CHECKPOINT_DOMAIN + session_id.bytes + _CHECKPOINT_FIELDS.pack(index, wall_us) + head


def pack_length(n: int) -> bytes:
    return _LEN.pack(n)


# --- decoding (untrusted input) -------------------------------------------------------------

# msgpack >= 1.0 bounds every length by the size of the input and decodes with raw=False and
# strict_map_key=True by default; bodies are at most MAX_BODY_LEN, so the defaults are safe and
# passing keyword arguments would cost a third of the decode time on the verify hot path.
# Extension types (and msgpack Timestamps) decode to objects that no field check accepts.
_unpackb = msgpack.unpackb


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """Maps with a repeated key are refused: two readers could disagree on which value counts."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise FormatViolation("map has a repeated key")
    return out


def decode_body(body: bytes | memoryview) -> tuple[int, int, int, Any]:
    """Split a frame body into ``(kind, seq, t_us, raw data)``; raise FormatViolation if it is not one.

    Only the envelope is checked here; :func:`parse_data` checks the data of non-byte kinds.
    """
    try:
        obj = _unpackb(body, object_pairs_hook=_pairs)
    except FormatViolation:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FormatViolation(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if type(obj) is not list or len(obj) != 4:
        raise FormatViolation("frame body is not a 4-element array")
    kind, seq, t_us, data = obj
    if type(kind) is not int or kind not in _KINDS:
        raise FormatViolation(f"unknown frame kind {kind!r}")
    if type(seq) is not int or seq < 0:
        raise FormatViolation("frame index is not a non-negative integer")
    if type(t_us) is not int or not 0 <= t_us < 1 << 63:
        raise FormatViolation("frame time is not a non-negative integer")
    return kind, seq, t_us, data


def _text(m: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    if key not in m:
        raise FormatViolation(f"missing field {key!r}")
    value = m[key]
    if value is None and optional:
        return None
    if type(value) is not str:
        raise FormatViolation(f"field {key!r} must be a string")
    if len(value) > MAX_TEXT:
        raise FormatViolation(f"field {key!r} is longer than {MAX_TEXT} characters")
    return value


def _int(m: dict[str, Any], key: str, lo: int, hi: int, *, optional: bool = False) -> Any:
    if key not in m:
        raise FormatViolation(f"missing field {key!r}")
    value = m[key]
    if value is None and optional:
        return None
    if type(value) is not int or not lo <= value <= hi:
        raise FormatViolation(f"field {key!r} must be an integer in [{lo}, {hi}]")
    return value


_HEADER_KEYS = frozenset(
    "version session_id user target login grant_id started_at_us term cols rows command host "
    "signer signer_fingerprint checkpoint_frames checkpoint_ms coalesce_ms".split()
)


def _header(m: dict[str, Any]) -> Header:
    version = m.get("version")
    if type(version) is not int or version != VERSION:
        raise FormatViolation(f"unknown header version {version!r}")
    text = _text(m, "session_id")
    try:
        sid = uuid.UUID(text)
    except ValueError:
        raise FormatViolation("field 'session_id' is not a UUID") from None
    if str(sid) != text:
        raise FormatViolation("field 'session_id' is not a canonical lowercase UUID")
    return Header(
        session_id=sid,
        user=_text(m, "user"),
        target=_text(m, "target"),
        login=_text(m, "login"),
        grant_id=_text(m, "grant_id", optional=True),
        started_at_us=_int(m, "started_at_us", 0, _U64),
        term=_text(m, "term"),
        cols=_int(m, "cols", 0, 65535),
        rows=_int(m, "rows", 0, 65535),
        command=_text(m, "command", optional=True),
        host=_text(m, "host"),
        signer=_text(m, "signer"),
        signer_fingerprint=_text(m, "signer_fingerprint"),
        checkpoint_frames=_int(m, "checkpoint_frames", 1, MAX_CHECKPOINT_FRAMES),
        checkpoint_ms=_int(m, "checkpoint_ms", 1, 5000),
        coalesce_ms=_int(m, "coalesce_ms", 0, 50),
        extra={k: _plain(k, v) for k, v in m.items() if k not in _HEADER_KEYS},
    )


_PLAIN_SCALARS = (str, int, float, bool, bytes, type(None))


def _plain(key: str, value: Any, depth: int = 0) -> Any:
    """Header keys from a newer writer must still be plain msgpack data (no extension types)."""
    if type(value) in _PLAIN_SCALARS:
        return value
    if depth < 8 and type(value) is list:
        return [_plain(key, v, depth + 1) for v in value]
    if depth < 8 and type(value) is dict:
        return {k: _plain(key, v, depth + 1) for k, v in value.items()}
    raise FormatViolation(f"header field {key!r} holds a value of type {type(value).__name__}")


def _scalar_fields(m: dict[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in m.items():
        if key in skip:
            continue
        if value is not None and type(value) not in (str, int, bool):
            raise FormatViolation(f"event field {key!r} must be a string, integer or boolean")
        if type(value) is str and len(value) > MAX_TEXT:
            raise FormatViolation(f"event field {key!r} is longer than {MAX_TEXT} characters")
        out[key] = value
    return out


_EVENT_SKIP = frozenset({"type", "message"})


def check_event_fields(fields: dict[str, Any]) -> None:
    """ValueError unless every field of an event to be written is one the format admits (a
    string, an integer in msgpack's range, a boolean or None, under a string key): a writer must
    refuse a bad field, not write a frame every verifier then calls ``malformed``."""
    for key, value in fields.items():
        if type(key) is not str or key in _EVENT_SKIP:
            raise ValueError(f"event field name {key!r} is not allowed")
        if value is not None and type(value) not in (str, int, bool):
            kind = type(value).__name__
            raise ValueError(f"event field {key!r} must be a string, integer, boolean or None, not {kind}")
        if type(value) is int and not -(2**63) <= value < 2**64:
            raise ValueError(f"event field {key!r} is out of range for an integer")


def parse_data(kind: int, data: Any) -> FrameData:
    """Check and convert the data element of a frame of ``kind``."""
    if kind == FrameKind.OUTPUT or kind == FrameKind.INPUT:
        if type(data) is not bytes:
            raise FormatViolation("input/output data must be a byte string")
        return data
    if kind == FrameKind.RESIZE:
        if type(data) is not list or len(data) != 2 or any(type(v) is not int or not 0 <= v <= 65535 for v in data):
            raise FormatViolation("resize data must be [cols, rows]")
        return Resize(cols=data[0], rows=data[1])
    if type(data) is not dict:
        raise FormatViolation(f"{FrameKind(kind).name.lower()} data must be a map")
    if kind == FrameKind.HEADER:
        return _header(data)
    if kind == FrameKind.EVENT:
        return Event(
            type=_text(data, "type"),
            message=_text(data, "message"),
            fields=_scalar_fields(data, _EVENT_SKIP),
        )
    if kind == FrameKind.CHECKPOINT:
        sig = data.get("sig")
        if type(sig) is not bytes or len(sig) != 64:
            raise FormatViolation("checkpoint signature must be 64 bytes")
        return Checkpoint(
            index=_int(data, "index", 0, _U64),
            wall_us=_int(data, "wall_us", 0, _U64),
            signature=sig,
        )
    # FrameKind.SEAL: decode_body admits no other kind. Counts are checked against the recording
    # by the verifier (seal-mismatch); here only their type and the u64 range.
    return Seal(
        exit_status=_int(data, "exit_status", -255, 255, optional=True),
        reason=_text(data, "reason"),
        frames=_int(data, "frames", 0, _U64),
        output_bytes=_int(data, "output_bytes", 0, _U64),
        input_bytes=_int(data, "input_bytes", 0, _U64),
        wall_us=_int(data, "wall_us", 0, _U64),
        extra={k: v for k, v in data.items() if k not in _SEAL_KEYS and _kept_scalar(k, v)},
    )


_SEAL_KEYS = frozenset({"exit_status", "reason", "frames", "output_bytes", "input_bytes", "wall_us"})


def _kept_scalar(key: Any, value: Any) -> bool:
    """Whether an unnamed seal key is kept in :attr:`Seal.extra` (never a reason to refuse the seal)."""
    if type(key) is not str:
        return False
    if type(value) is str:
        return len(value) <= MAX_TEXT
    return value is None or type(value) in (int, bool)
