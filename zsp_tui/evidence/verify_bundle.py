#!/usr/bin/env python3
"""verify.py: check a zsp evidence bundle offline, without zsp.

    python3 verify.py [--allowed-signers FILE] [--json] [BUNDLE.tar | DIRECTORY]

With no path, the directory this script is in is checked (run it from an extracted bundle).
Needs Python 3.9 or later with the packages blake3, msgpack and cryptography
(``pip install blake3 msgpack cryptography``); nothing from zsp.

What it checks, in this order (the first failure is the verdict, CORRUPT, with its reason):

1. the tar is safe to read: regular files only, under one top directory, no absolute paths,
   ``..``, links or devices, no name twice, nothing but zeros after the last member; and the four
   files every bundle has are there;
2. ``manifest.json.sig`` is an SSHSIG (OpenSSH ``PROTOCOL.sshsig``) over ``manifest.json`` for
   the namespace ``evidence@zsp``, by a key trusted for that namespace;
3. the manifest is a ``zsp-evidence-bundle`` version 1 or 2 naming that key as its signer;
4. every file is listed in the manifest exactly once with its size, sha256 and blake3, and in
   ``SHA256SUMS``, and every hash matches;
5. ``allowed_signers`` holds exactly the manifest's ``signers``;
6. every recording verifies (zsp recording format v1, FORMAT.md section 4: hash chain,
   checkpoint signatures, seal) with the frames the manifest lists as redacted, and is what the
   manifest says (outcome, frames, final head, signer); (version 2) the manifest's ``transfers``
   are exactly the recordings' signed ``sftp.file``/``sftp.file_incomplete`` events, and each file
   in ``files/`` is the content of one of them, under the name the rule gives it (never a path
   from the recording), hashing to the sha256 the recording gives it;
7. the audit excerpt: its chain, every checkpoint signature, that no event of the exported
   sessions or their grants is left out, ``audit/events.jsonl`` equal to the signed events, and
   each recording's final head equal to the one its ``session.end`` event names;
8. ``sessions/`` and ``grants/`` name the exported sessions and their grants, and agree with the
   recordings and the audit events.

Trust: without ``--allowed-signers`` the bundle's own ``allowed_signers`` is trusted, which
proves the bundle is consistent and unchanged since it was signed, but not who signed it: compare
the signer fingerprint printed with the bastion's, obtained out of band, or pin it with
``--allowed-signers FILE``.

Redaction: frames listed in the manifest as redacted carry replaced bytes (``*``); the verifier
proves that they kept their place, kind and length, that they did change, and that every other
frame is original.

Exit status: 0 VALID, 1 INCOMPLETE (a recording was never sealed) or CORRUPT, 2 cannot read.
Every string taken from the bundle is printed with control characters escaped (``\\xNN``);
``--json`` prints the exact values.
"""

from __future__ import annotations

import os
import sys

# Run as a script, Python puts the script's directory first on sys.path: nothing in that directory
# (a bundle's own files; in zsp's source tree, zsp_tui/evidence/select.py) may shadow a module.
if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__)):
    sys.path.pop(0)

import argparse
import base64
import binascii
import hashlib
import json
import re
import stat
import struct
import tarfile
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import IO, Any

try:
    import blake3
    import msgpack
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as _missing:  # pragma: no cover - depends on the machine
    sys.stderr.write(
        f"verify.py: {_missing}\nverify.py needs Python 3.9+ with blake3, msgpack and cryptography: "
        "pip install blake3 msgpack cryptography\n"
    )
    sys.exit(2)

UTC = timezone.utc  # noqa: UP017 - datetime.UTC is Python 3.11+, this file runs on 3.9

VALID, INCOMPLETE, CORRUPT = "VALID", "INCOMPLETE", "CORRUPT"

# =========================================================================== the recording format
# docs/FORMAT.md (zsp recording format v1), section 4, step by step.

PREAMBLE = b"ZSPREC\x00\x01"
MAGIC = PREAMBLE[:7]
FORMAT_VERSION = 1
MAX_BODY = 1024 * 1024
HEAD_LEN = 32
MAX_TEXT = 4096
MAX_NEST = 8
T_LIMIT = 2**63
U64_MAX = 2**64 - 1
K_HEADER, K_OUTPUT, K_INPUT, K_RESIZE, K_EVENT, K_CHECKPOINT, K_SEAL = range(7)
KIND_NAMES = {K_OUTPUT: "output", K_INPUT: "input"}
GENESIS_TAG = b"zsp-recording-v1 genesis\x00"
CHECKPOINT_TAG = b"zsp-recording-v1 checkpoint\x00"
SIGNATURE_NAMESPACE = "session-recording@zsp"
EVIDENCE_NAMESPACE = "evidence@zsp"

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Bad(Exception):
    """A rule is broken: ``code`` is the problem, ``detail`` says which rule."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def _need(cond: bool, detail: str, code: str = "malformed") -> None:
    if not cond:
        raise Bad(code, detail)


def _is_int(v: Any) -> bool:
    return type(v) is int  # a bool is not an integer


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _text(v: Any) -> bool:
    """A string value the format names: str of at most 4096 code points."""
    return type(v) is str and len(v) <= MAX_TEXT


class TrustedKey:
    """An Ed25519 key trusted to sign, maybe only within a window (allowed_signers
    ``valid-after``/``valid-before``, Unix seconds, both ends included)."""

    __slots__ = ("principals", "raw", "valid_after", "valid_before")

    def __init__(
        self, raw: bytes, valid_after: int | None = None, valid_before: int | None = None, principals: str = ""
    ) -> None:
        self.raw = raw
        self.valid_after = valid_after
        self.valid_before = valid_before
        self.principals = principals

    @property
    def bounded(self) -> bool:
        return self.valid_after is not None or self.valid_before is not None

    def valid_at(self, wall_us: int) -> bool:
        t = wall_us // 1_000_000
        if self.valid_after is not None and t < self.valid_after:
            return False
        return self.valid_before is None or t <= self.valid_before

    @property
    def openssh(self) -> str:
        return "ssh-ed25519 " + base64.b64encode(key_wire(self.raw)).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)


def key_wire(raw: bytes) -> bytes:
    return _string(b"ssh-ed25519") + _string(raw)


def fingerprint(raw: bytes) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_wire(raw)).digest()).decode("ascii").rstrip("=")


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _ssh_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("short ssh string")
    (n,) = struct.unpack_from(">I", buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise ValueError("short ssh string")
    return buf[pos : pos + n], pos + n


def ed25519_raw(blob: bytes) -> bytes:
    """The 32 raw key bytes of an ssh-ed25519 wire encoding (nothing may follow)."""
    kt, pos = _ssh_string(blob, 0)
    raw, pos = _ssh_string(blob, pos)
    if kt != b"ssh-ed25519" or len(raw) != 32 or pos != len(blob):
        raise ValueError("not an ssh-ed25519 key")
    return raw


def _b64_canonical(text: str) -> bytes:
    """Base64 that must be exactly what standard, padded encoding produces."""
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64") from None
    if base64.b64encode(blob).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return blob


# --------------------------------------------------------------------------- decoding


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if type(k) is not str:
            raise Bad("malformed", "map key is not a string")
        if k in d:
            raise Bad("malformed", "map repeats a key")
        d[k] = v
    return d


def _ext_hook(code: int, data: bytes) -> Any:
    raise Bad("malformed", f"extension type {code}")


def _no_ext(v: Any) -> None:
    if isinstance(v, (msgpack.ExtType, msgpack.Timestamp)):
        raise Bad("malformed", "extension type")
    if isinstance(v, list):
        for x in v:
            _no_ext(x)
    elif isinstance(v, dict):
        for x in v.values():
            _no_ext(x)


def decode_body(body: bytes) -> tuple[int, int, int, Any]:
    """One msgpack object, plain values, a 4-element array [kind, seq, t_us, data] with a known
    kind and integer seq and t_us (FORMAT.md section 3)."""
    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=False,
            use_list=True,
            object_pairs_hook=_pairs_hook,
            ext_hook=_ext_hook,
            timestamp=0,
        )
    except Bad:
        raise
    except Exception as e:  # noqa: BLE001 - invalid msgpack, invalid UTF-8, trailing bytes: a format error
        raise Bad("malformed", f"body is not one msgpack object: {type(e).__name__}") from None
    _no_ext(obj)
    _need(isinstance(obj, list) and len(obj) == 4, "body is not a 4-element array")
    kind, seq, t_us, data = obj
    _need(_is_int(kind) and K_HEADER <= kind <= K_SEAL, "kind is not one of the kinds 0..6")
    _need(_is_int(seq) and seq >= 0, "seq is not a non-negative integer")
    _need(_int_in(t_us, 0, T_LIMIT - 1), "t_us is not an integer in 0..2^63-1")
    return kind, seq, t_us, data


def _body_seq(body: bytes) -> int | None:
    try:
        return decode_body(body)[1]
    except Bad:
        return None


# --------------------------------------------------------------------------- data rules


def _plain(v: Any, depth: int = 0) -> bool:
    """nil, bool, int, float, str, bin, and arrays or maps of these nested at most 8 deep."""
    if v is None or type(v) in (bool, int, float, str, bytes):
        return True
    if isinstance(v, (list, dict)):
        if depth >= MAX_NEST:
            return False
        items = v if isinstance(v, list) else v.values()
        return all(_plain(x, depth + 1) for x in items)
    return False


HEADER_TEXT = ("session_id", "user", "target", "login", "term", "host", "signer", "signer_fingerprint")
HEADER_TEXT_OR_NIL = ("grant_id", "command")
HEADER_INT = ("version", "started_at_us", "cols", "rows", "checkpoint_frames", "checkpoint_ms", "coalesce_ms")
HEADER_KEYS = set(HEADER_TEXT + HEADER_TEXT_OR_NIL + HEADER_INT)


def check_header_version(d: Any) -> None:
    """A header map whose ``version`` is not the integer 1 is ``unknown-version``."""
    if isinstance(d, dict):
        v = d.get("version")
        _need(_is_int(v) and v == FORMAT_VERSION, "header version is not 1", "unknown-version")


def check_header_rules(d: Any) -> bytes:
    """Section 3.1 rules other than the signer's content. Returns the session id's 16 bytes."""
    _need(isinstance(d, dict), "header data is not a map")
    for k in HEADER_TEXT:
        _need(_text(d.get(k)), f"header: {k} missing or not a string of at most {MAX_TEXT} code points")
    for k in HEADER_TEXT_OR_NIL:
        _need(k in d and (d[k] is None or _text(d[k])), f"header: {k} missing or not a string or nil")
    for k in HEADER_INT:
        _need(_is_int(d.get(k)), f"header: {k} missing or not an integer")
    _need(_int_in(d["started_at_us"], 0, U64_MAX), "header: started_at_us out of range")
    _need(_UUID_RE.fullmatch(d["session_id"]) is not None, "header: session_id is not a canonical UUID")
    _need(_int_in(d["cols"], 0, 65535) and _int_in(d["rows"], 0, 65535), "header: cols/rows out of range")
    _need(_int_in(d["checkpoint_frames"], 1, 4096), "header: checkpoint_frames out of range")
    _need(_int_in(d["checkpoint_ms"], 1, 5000), "header: checkpoint_ms out of range")
    _need(_int_in(d["coalesce_ms"], 0, 50), "header: coalesce_ms out of range")
    for k, v in d.items():
        if k not in HEADER_KEYS:
            _need(_plain(v), "header: a key does not hold a plain msgpack value")
    return uuid.UUID(d["session_id"]).bytes


def check_header_signer(d: dict[str, Any]) -> tuple[bytes, Ed25519PublicKey]:
    """``signer`` must be exactly ``ssh-ed25519 <base64>`` and ``signer_fingerprint`` match it."""
    text = d["signer"]
    _need(text.startswith("ssh-ed25519 ") and text.count(" ") == 1, "header: signer is not 'ssh-ed25519 <b64>'")
    try:
        raw = ed25519_raw(_b64_canonical(text.split(" ", 1)[1]))
        pub = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise Bad("malformed", "header: signer is not a valid ssh-ed25519 key") from None
    _need(d["signer_fingerprint"] == fingerprint(raw), "header: signer_fingerprint does not match signer")
    return raw, pub


def check_event(d: Any) -> None:
    _need(isinstance(d, dict), "event data is not a map")
    _need(_text(d.get("type")), "event: type missing or not a string")
    _need(_text(d.get("message")), "event: message missing or not a string")
    for v in d.values():
        _need(v is None or type(v) in (bool, int) or _text(v), "event: a field is not str, int, bool or nil")


def check_checkpoint(d: Any) -> None:
    _need(isinstance(d, dict), "checkpoint data is not a map")
    _need(_int_in(d.get("index"), 0, U64_MAX), "checkpoint: index missing or not a u64")
    _need(_int_in(d.get("wall_us"), 0, U64_MAX), "checkpoint: wall_us missing or not a u64")
    _need(type(d.get("sig")) is bytes and len(d["sig"]) == 64, "checkpoint: sig is not bin(64)")


def check_seal(d: Any) -> None:
    _need(isinstance(d, dict), "seal data is not a map")
    _need("exit_status" in d, "seal: exit_status missing")
    es = d.get("exit_status")
    _need(es is None or _int_in(es, -255, 255), "seal: exit_status is not nil or -255..255")
    _need(_text(d.get("reason")), "seal: reason missing or not a string")
    for k in ("frames", "output_bytes", "input_bytes", "wall_us"):
        _need(_int_in(d.get(k), 0, U64_MAX), f"seal: {k} missing or not a u64")


def check_data(kind: int, data: Any) -> None:
    """Section 3 data rules of a frame after frame 0."""
    if kind == K_HEADER:
        raise Bad("malformed", "a second header")
    if kind in (K_OUTPUT, K_INPUT):
        _need(type(data) is bytes, "output/input data is not bin")
    elif kind == K_RESIZE:
        _need(
            isinstance(data, list) and len(data) == 2 and all(_int_in(x, 0, 65535) for x in data),
            "resize data is not [cols, rows] with integers 0..65535",
        )
    elif kind == K_EVENT:
        check_event(data)
    elif kind == K_CHECKPOINT:
        check_checkpoint(data)
    else:
        check_seal(data)


def checkpoint_message(sid16: bytes, index: int, wall_us: int, head: bytes) -> bytes:
    return CHECKPOINT_TAG + sid16 + struct.pack(">QQ", index, wall_us) + head


def _head(key: bytes, body: bytes) -> bytes:
    return blake3.blake3(body, key=key).digest()


# --------------------------------------------------------------------------- the verifier


class Redacted:
    """A frame the manifest lists as redacted: its original head, kind and data length."""

    __slots__ = ("kind", "length", "original_head")

    def __init__(self, original_head: bytes, kind: int, length: int) -> None:
        self.original_head = original_head
        self.kind = kind
        self.length = length


class Result:
    """The verdict on one recording (the fields of zsp's VerificationReport that matter here)."""

    def __init__(self) -> None:
        self.outcome = CORRUPT
        self.problem: str | None = None
        self.frame: int | None = None
        """CORRUPT: the bad frame (None: the preamble); INCOMPLETE: the first missing frame."""
        self.offset: int | None = None
        self.frames = 0
        """Intact frames."""
        self.signed = 0
        """Frames 0 .. signed-1 are covered by the last good signature."""
        self.signed_wall_us: int | None = None
        self.head: bytes | None = None
        """Chain head of the last intact frame (for VALID, the recording's final head)."""
        self.header: dict[str, Any] | None = None
        self.redacted_frames: list[int] = []
        self.detail = ""
        self.end_reason: str | None = None
        """The seal's reason (``interrupted``: sealed when the bastion restarted after a crash)."""

    def to_json(self) -> dict[str, Any]:
        h = self.header or {}
        return {
            "session_id": h.get("session_id"),
            "outcome": self.outcome,
            "problem": self.problem,
            "bad_frame": self.frame if self.outcome == CORRUPT else None,
            "bad_offset": self.offset,
            "frames": self.frames,
            "signed_frames": self.signed,
            "head": self.head.hex() if self.head else None,
            "last_checkpoint_wall_us": self.signed_wall_us,
            "signer_fingerprint": h.get("signer_fingerprint"),
            "redacted_frames": list(self.redacted_frames),
            "detail": self.detail,
            "end_reason": self.end_reason if self.outcome == VALID else None,
        }


def _read_exact(f: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def verify_recording(
    f: IO[bytes],
    trusted: Iterable[TrustedKey],
    redacted: dict[int, Redacted] | None = None,
    events: list[tuple[int, int, dict[str, Any]]] | None = None,
) -> Result:
    """Verify one recording read from ``f`` (streamed: one frame in memory at a time).

    ``trusted``: keys trusted for ``session-recording@zsp``. ``redacted``: frames whose data was
    replaced (a bundle's manifest); each must keep its original stored head, seq, kind and data
    length, and the chain goes on from that head. ``events``: receives ``(seq, t_us, data)`` of each
    intact file event (``sftp.file``, ``sftp.file_incomplete``), signed or not (compare seq with
    ``Result.signed``)."""
    trusted = list(trusted)
    redacted = dict(redacted or {})
    r = Result()
    pending = sorted(redacted)
    start = _read_exact(f, len(PREAMBLE))
    # 1. preamble
    if len(start) < len(PREAMBLE) and PREAMBLE.startswith(start):
        r.outcome, r.problem, r.frame, r.offset = INCOMPLETE, "empty", 0, 0
        r.detail = "file is a proper prefix of the preamble"
        return r
    if start[:7] != MAGIC:
        r.problem, r.offset, r.detail = "not-a-recording", 0, "bad magic"
        return r
    if start[7] != FORMAT_VERSION:
        r.problem, r.offset, r.detail = "unknown-version", 0, f"preamble version {start[7]}"
        return r
    if pending and pending[0] < 0:
        r.problem, r.offset, r.detail = "malformed", 0, f"redacted frame {pending[0]} is not in the recording"
        return r

    pos = len(PREAMBLE)
    i = 0
    prev_head = b""
    prev_t = 0
    sid16 = b""
    pub: Ed25519PublicKey | None = None
    windows: list[TrustedKey] = []
    limit = 0  # checkpoint_frames
    unsigned = 0  # non-checkpoint frames (header and seal included) since the last checkpoint
    out_bytes = in_bytes = 0
    sealed = False  # a seal was read
    finished = False  # the seal's checkpoint was read
    tail = "clean"  # how the file ends: clean, torn, oversize
    frame_off = pos

    def corrupt(code: str, detail: str, frame: int | None = None) -> Result:
        r.outcome, r.problem, r.offset, r.detail = CORRUPT, code, frame_off, detail
        r.frame = i if frame is None else frame
        return r

    while True:
        frame_off = pos
        # 2. framing
        prefix = _read_exact(f, 4)
        if not prefix:
            break
        if len(prefix) < 4:
            tail = "torn"
            break
        (blen,) = struct.unpack(">I", prefix)
        if blen > MAX_BODY:
            tail = "oversize"
            break
        rest = _read_exact(f, blen + HEAD_LEN)
        if len(rest) < blen + HEAD_LEN:
            tail = "torn"
            break
        # 3. anything after the seal's checkpoint
        if finished:
            return corrupt("data-after-seal", "a frame after the seal's checkpoint")
        body, stored = rest[:blen], rest[blen:]
        try:
            if i == 0:
                # 4. frame 0
                _need(not (pending and pending[0] == 0), "frame 0 is listed as redacted")
                kind, seq, t_us, fdata = decode_body(body)
                _need(seq == 0, f"frame 0 has seq {seq}", "sequence-gap")
                _need(kind == K_HEADER, "frame 0 is not a header", "no-header")
                check_header_version(fdata)
                sid16 = check_header_rules(fdata)
                head = _head(blake3.blake3(GENESIS_TAG + sid16).digest(), body)
                _need(head == stored, "the header does not match its chain head", "hash-mismatch")
                raw, pub = check_header_signer(fdata)
                r.header = fdata
                entries = [k for k in trusted if k.raw == raw]
                _need(bool(entries), f"signer {fingerprint(raw)} is not trusted", "untrusted-signer")
                if all(k.bounded for k in entries):
                    windows = entries
                limit = fdata["checkpoint_frames"]
                unsigned = 1
            else:
                # 5.1 the chain (a redacted frame: its original head, and nothing but its data changed)
                if pending and pending[0] == i:
                    listed = redacted[pending.pop(0)]
                    _need(
                        stored == listed.original_head,
                        f"redacted frame {i} does not carry its original head",
                        "hash-mismatch",
                    )
                    _need(listed.kind in (K_OUTPUT, K_INPUT), f"frame {i} is listed as redacted, but is not I/O")
                    kind, seq, t_us, fdata = decode_body(body)
                    _need(
                        kind in (K_OUTPUT, K_INPUT)
                        and seq == i
                        and kind == listed.kind
                        and type(fdata) is bytes
                        and len(fdata) == listed.length,
                        f"redacted frame {i} changed more than its data",
                    )
                    _need(_head(prev_head, body) != stored, f"frame {i} is listed as redacted but is unchanged")
                    head = stored
                    r.redacted_frames.append(i)
                else:
                    head = _head(prev_head, body)
                    if head != stored:
                        s = _body_seq(body)
                        if s is not None and s != i:
                            raise Bad("sequence-gap", f"seq {s} at position {i}")
                        raise Bad("hash-mismatch", "the frame does not match its chain head")
                # 5.2 decode, seq
                kind, seq, t_us, fdata = decode_body(body)
                _need(seq == i, f"seq {seq} at position {i}", "sequence-gap")
                # 5.3 time
                _need(t_us >= prev_t, f"t_us {t_us} < {prev_t}", "time-backwards")
                # 5.4 data rules
                check_data(kind, fdata)
                # 5.5 after the seal only its checkpoint
                _need(
                    not sealed or kind == K_CHECKPOINT, "a frame between the seal and its checkpoint", "data-after-seal"
                )
                if kind == K_CHECKPOINT:
                    # 5.6 checkpoint
                    _need(fdata["index"] == seq - 1, f"checkpoint index {fdata['index']} at seq {seq}")
                    if pub is None:  # frame 0 sets it
                        raise Bad("malformed", "no signer")
                    try:
                        pub.verify(fdata["sig"], checkpoint_message(sid16, fdata["index"], fdata["wall_us"], prev_head))
                    except InvalidSignature:
                        raise Bad("bad-signature", "checkpoint signature does not verify") from None
                    if windows and not any(k.valid_at(fdata["wall_us"]) for k in windows):
                        raise Bad(
                            "untrusted-signer",
                            "the signer is not trusted at the checkpoint's signed time (valid-after/valid-before)",
                        )
                    unsigned = 0
                    r.signed = seq
                    r.signed_wall_us = fdata["wall_us"]
                    finished = sealed
                else:
                    # 5.7 counting rule
                    unsigned += 1
                    _need(unsigned <= limit, f"more than {limit} frames without a checkpoint", "missing-signature")
                    if kind == K_OUTPUT:
                        out_bytes += len(fdata)
                    elif kind == K_INPUT:
                        in_bytes += len(fdata)
                    elif kind == K_SEAL:
                        # 5.8 seal counts
                        _need(
                            fdata["frames"] == seq
                            and fdata["output_bytes"] == out_bytes
                            and fdata["input_bytes"] == in_bytes,
                            "the seal's counts disagree with the recording",
                            "seal-mismatch",
                        )
                        sealed = True
                        r.end_reason = fdata["reason"]
        except Bad as e:
            return corrupt(e.code, e.detail)
        if events is not None and i > 0 and kind == K_EVENT and fdata.get("type") in FILE_EVENTS:
            events.append((i, t_us, fdata))
        prev_head = head
        prev_t = t_us
        pos += 4 + blen + HEAD_LEN
        i += 1
        r.frames = i
        r.head = head

    # the end of the file, as FORMAT.md section 4 orders it
    if tail == "oversize":
        return corrupt("oversize-frame", "a length prefix above 1 MiB")
    if pending:
        return corrupt("malformed", f"redacted frame {pending[0]} is not in the recording", pending[0])
    if finished:
        if tail == "torn":
            return corrupt("data-after-seal", "bytes after the seal's checkpoint")
        r.outcome, r.frame, r.offset = VALID, None, None
        return r
    r.outcome, r.frame, r.offset = INCOMPLETE, i, frame_off
    if i == 0 and tail == "clean":
        r.problem, r.detail = "empty", "no frames"
    elif tail == "torn":
        r.problem, r.detail = "torn-tail", "the file ends inside a frame"
    elif sealed:
        r.problem, r.detail = "unsigned-seal", "the seal is not signed"
    else:
        r.problem, r.detail = "no-seal", "the recording is not sealed"
    return r


# =========================================================================== allowed_signers
# ssh-keygen(1) ALLOWED SIGNERS, read as FORMAT.md section 4 says zsp reads it: options honoured
# (namespaces, valid-after, valid-before) or refused (cert-authority, anything else).

_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "rsa-sha2-256",
        "rsa-sha2-512",
    }
)
_BLANK = " \t"


def _is_key_type(token: str) -> bool:
    return token in _KEY_TYPES or token.endswith("-cert-v01@openssh.com")


def _word(s: str) -> tuple[str, str]:
    s = s.lstrip(_BLANK)
    if s.startswith('"'):
        end = s.find('"', 1)
        if end < 0:
            raise ValueError("unterminated quote in the principals field")
        return s[1:end], s[end + 1 :].lstrip(_BLANK)
    i = 0
    while i < len(s) and s[i] not in _BLANK:
        i += 1
    return s[:i], s[i:].lstrip(_BLANK)


def _options_field(s: str) -> tuple[str, str]:
    quoted = False
    i = 0
    while i < len(s) and (quoted or s[i] not in _BLANK):
        if s[i] == "\\" and s[i + 1 : i + 2] == '"':
            i += 1
        elif s[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise ValueError("unterminated quote in the options field")
    return s[:i], s[i:].lstrip(_BLANK)


def _dequote(s: str, name: str) -> tuple[str, str]:
    if not s.startswith('"'):
        raise ValueError(f'{name}: value must be in double quotes ({name}="...")')
    out = []
    i = 1
    while i < len(s) and s[i] != '"':
        if s[i] == "\\" and s[i + 1 : i + 2] == '"':
            i += 1
        out.append(s[i])
        i += 1
    if i >= len(s):
        raise ValueError(f"{name}: missing end quote")
    return "".join(out), s[i + 1 :]


def parse_time(value: str, name: str) -> int:
    """``YYYYMMDDZ`` or ``YYYYMMDDHHMM[SS]Z`` (``UTC`` may end it too) as Unix seconds."""
    v = value
    utc = False
    if len(v) > 1 and v[-1:].upper() == "Z":
        utc, v = True, v[:-1]
    elif len(v) > 3 and v[-3:].upper() == "UTC":
        utc, v = True, v[:-3]
    if len(v) not in (8, 12, 14) or not (v.isascii() and v.isdigit()):
        raise ValueError(f"{name}: not a time in YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z] form")
    if not utc:
        raise ValueError(f"{name}: local times are not accepted, write the time in UTC with a Z suffix")
    try:
        dt = datetime(
            int(v[0:4]), int(v[4:6]), int(v[6:8]), int(v[8:10] or 0), int(v[10:12] or 0), int(v[12:14] or 0), tzinfo=UTC
        )
    except ValueError:
        raise ValueError(f"{name}: not a valid date or time") from None
    seconds = int(dt.timestamp())
    if seconds <= 0:
        raise ValueError(f"{name}: time before 1970")
    return seconds


def match_pattern_list(string: str, patterns: str) -> int:
    """OpenSSH ``match_pattern_list``: 1 if a pattern matches, -1 if a ``!pattern`` does, else 0."""
    positive = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in sub)
        if re.fullmatch(regex, string, re.DOTALL):
            if negated:
                return -1
            positive = 1
    return positive


class _Options:
    def __init__(self) -> None:
        self.cert_authority = False
        self.namespaces: str | None = None
        self.valid_after: int | None = None
        self.valid_before: int | None = None


def parse_options(opts: str) -> _Options:
    o = _Options()
    s = opts
    while s:
        low = s.lower()
        if low.startswith("cert-authority"):
            o.cert_authority, s = True, s[len("cert-authority") :]
        elif low.startswith("namespaces="):
            if o.namespaces is not None:
                raise ValueError('more than one "namespaces" option')
            o.namespaces, s = _dequote(s[len("namespaces=") :], "namespaces")
        elif low.startswith("valid-after="):
            if o.valid_after is not None:
                raise ValueError('more than one "valid-after" option')
            value, s = _dequote(s[len("valid-after=") :], "valid-after")
            o.valid_after = parse_time(value, "valid-after")
        elif low.startswith("valid-before="):
            if o.valid_before is not None:
                raise ValueError('more than one "valid-before" option')
            value, s = _dequote(s[len("valid-before=") :], "valid-before")
            o.valid_before = parse_time(value, "valid-before")
        else:
            raise ValueError("unknown option (known: cert-authority, namespaces, valid-after, valid-before)")
        if not s:
            break
        if s[0] != ",":
            raise ValueError("unexpected text after an option")
        s = s[1:]
        if not s:
            raise ValueError("options end with a comma")
    if o.valid_after is not None and o.valid_before is not None and o.valid_before <= o.valid_after:
        raise ValueError('"valid-before" is not after "valid-after"')
    return o


def parse_allowed_signers(text: str, namespace: str) -> list[TrustedKey]:
    """The Ed25519 keys of ``.pub`` lines or an allowed_signers file trusted for ``namespace``.
    Raises ValueError naming the line for anything refused; an empty list if no key is usable."""
    keys: list[TrustedKey] = []
    no_key = "no ssh-ed25519 public key on the line (expected: principals [options] ssh-ed25519 AAAA...)"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            principals = ""
            opts = _Options()
            rest = line
            if not _is_key_type(_word(line)[0]):
                principals, rest = _word(line)
                if not principals or not rest:
                    raise ValueError(no_key)
                if not _is_key_type(_word(rest)[0]):
                    opt_text, rest = _options_field(rest)
                    if not _is_key_type(_word(rest)[0]):
                        raise ValueError(no_key)
                    opts = parse_options(opt_text)
            if opts.namespaces is not None and match_pattern_list(namespace, opts.namespaces) != 1:
                continue
            if opts.cert_authority:
                raise ValueError("cert-authority is not supported: zsp signs with plain keys")
            parts = rest.split()
            if parts[0] != "ssh-ed25519":
                continue
            if len(parts) < 2:
                raise ValueError("no key after ssh-ed25519")
            try:
                raw_key = ed25519_raw(base64.b64decode(parts[1], validate=True))
            except (binascii.Error, ValueError):
                raise ValueError("malformed ssh-ed25519 key") from None
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
        keys.append(TrustedKey(raw_key, opts.valid_after, opts.valid_before, principals))
    return keys


# =========================================================================== SSHSIG
# OpenSSH PROTOCOL.sshsig: what `ssh-keygen -Y sign` writes and `ssh-keygen -Y verify` checks.

_SSHSIG_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_SSHSIG_END = "-----END SSH SIGNATURE-----"
_SSHSIG_HASHES = {b"sha512": hashlib.sha512, b"sha256": hashlib.sha256}


def verify_sshsig(armored: bytes, message: bytes, namespace: str) -> bytes:
    """Check an armored SSHSIG over ``message`` for ``namespace``; return the signer's raw key.
    Raises ValueError naming the problem (the namespace is always checked)."""
    try:
        text = armored.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("the signature is not ASCII text") from None
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _SSHSIG_BEGIN or lines[-1] != _SSHSIG_END:
        raise ValueError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the signature is not valid base64") from None
    if blob[:6] != b"SSHSIG":
        raise ValueError("not an SSHSIG signature (bad magic)")
    if len(blob) < 10 or struct.unpack_from(">I", blob, 6)[0] != 1:
        raise ValueError("unsupported SSHSIG version")
    pos = 10
    fields = []
    for _ in range(5):  # publickey, namespace, reserved, hash_algorithm, signature
        value, pos = _ssh_string(blob, pos)
        fields.append(value)
    if pos != len(blob):
        raise ValueError("trailing data after the signature")
    key_blob, ns, _reserved, hash_name, sig_blob = fields
    if ns != namespace.encode("utf-8"):
        raise ValueError(f"the signature is for namespace {ns.decode('utf-8', 'replace')!r}, not {namespace!r}")
    hasher = _SSHSIG_HASHES.get(hash_name)
    if hasher is None:
        raise ValueError("unsupported hash algorithm")
    raw = ed25519_raw(key_blob)
    sig_type, p = _ssh_string(sig_blob, 0)
    sig, p = _ssh_string(sig_blob, p)
    if sig_type != b"ssh-ed25519" or len(sig) != 64 or p != len(sig_blob):
        raise ValueError("malformed ssh-ed25519 signature")
    signed = b"SSHSIG" + _string(ns) + _string(b"") + _string(hash_name) + _string(hasher(message).digest())
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, signed)
    except InvalidSignature:
        raise ValueError("the signature does not verify (the manifest or the signature was changed)") from None
    return raw


# =========================================================================== the bundle

BUNDLE_FORMAT = "zsp-evidence-bundle"
EXCERPT_FORMAT = "zsp-audit-excerpt"
MAX_MEMBERS = 100_000
MAX_SMALL = 64 << 20
REQUIRED = ("manifest.json", "manifest.json.sig", "allowed_signers", "SHA256SUMS")
UNLISTED = frozenset({"manifest.json", "manifest.json.sig", "SHA256SUMS"})
_CORE = ("type", "code", "time_us", "actor", "via", "outcome", "target", "login", "grant_id", "session_id")
FILE_EVENTS = ("sftp.file", "sftp.file_incomplete")
CONTENT_LIMIT = 1 << 30
"""Version 2: the most bytes of transferred files' content a bundle may hold (docs/EXPORT.md)."""
TRANSFER_KEYS = (
    "session_id", "index", "frame", "t_us", "time", "event", "direction", "size", "sha256", "hash_note",
    "recorded_path", "recorded_path_b64", "content_kept", "content_complete",
)  # fmt: skip


class Corrupt(Exception):
    def __init__(self, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


class Unreadable(Exception):
    """The input cannot be read at all, or is not a bundle (exit 2)."""


class Source:
    """The bundle's files by path relative to its top directory."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sizes: dict[str, int] = {}
        self.top: str | None = None

    def scan(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def open(self, path: str) -> IO[bytes]:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        return None

    def read_small(self, path: str) -> bytes:
        if self.sizes[path] > MAX_SMALL:
            raise Corrupt("malformed", f"{path}: too large")
        with self.open(path) as f:
            return f.read(MAX_SMALL + 1)


def _safe_parts(name: str) -> list[str]:
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise Corrupt("unsafe-tar", f"member {name}: not a plain relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Corrupt("unsafe-tar", f"member {name}: '..', '.' or an empty part in its path")
    return parts


class TarSource(Source):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._file_size = os.stat(path).st_size
            self._tar = tarfile.open(path, mode="r:")
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise Unreadable(f"not a readable uncompressed tar file ({exc})") from None
        self._members: dict[str, tarfile.TarInfo] = {}

    def scan(self) -> None:
        total = 0
        try:
            for count, m in enumerate(self._tar, 1):
                if count > MAX_MEMBERS:
                    raise Corrupt("unsafe-tar", f"more than {MAX_MEMBERS} members")
                parts = _safe_parts(m.name)
                if not m.isreg() or m.issparse():
                    what = "a link" if m.issym() or m.islnk() else "a directory" if m.isdir() else "not a regular file"
                    raise Corrupt("unsafe-tar", f"member {m.name} is {what}")
                if len(parts) < 2:
                    raise Corrupt("unsafe-tar", f"member {m.name} is not inside the top directory")
                if self.top is None:
                    self.top = parts[0]
                elif parts[0] != self.top:
                    raise Corrupt("unsafe-tar", f"member {m.name}: a second top directory")
                rel = "/".join(parts[1:])
                if rel in self._members:
                    raise Corrupt("unsafe-tar", f"member {m.name} appears twice")
                total += m.size
                if total > self._file_size:
                    raise Corrupt("unsafe-tar", "members claim more bytes than the file holds")
                self._members[rel] = m
                self.sizes[rel] = m.size
        except (tarfile.TarError, EOFError) as exc:
            raise Corrupt("unsafe-tar", f"tar structure: {exc}") from None
        self._check_tail()

    def _check_tail(self) -> None:
        """After the last member's data only end-of-archive zeros: Python's tarfile stops at a header
        it cannot read (a bad checksum), GNU tar skips it and extracts what follows, unchecked."""
        end = 0
        for m in self._members.values():
            end = max(end, m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
        with open(self.name, "rb") as f:
            f.seek(end)
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                if chunk.count(0) != len(chunk):
                    raise Corrupt(
                        "unsafe-tar",
                        "bytes other than zeros after the last member (a member tar would extract, hidden "
                        "after a header this verifier cannot read?)",
                    )

    def open(self, path: str) -> IO[bytes]:
        f = self._tar.extractfile(self._members[path])
        if f is None:
            raise Corrupt("unsafe-tar", f"{path}: not a regular file")
        return f

    def close(self) -> None:
        self._tar.close()


class DirSource(Source):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.root = path

    def scan(self) -> None:
        count = 0
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                count += 1
                if count > MAX_MEMBERS:
                    raise Corrupt("unsafe-tar", f"more than {MAX_MEMBERS} files")
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise Corrupt("unsafe-tar", f"{rel} is not a regular file (a link or device)")
                _safe_parts(rel)
                self.sizes[rel] = st.st_size

    def open(self, path: str) -> IO[bytes]:
        return open(os.path.join(self.root, path), "rb")


class Report:
    def __init__(self, source: str, trust: str) -> None:
        self.source = source
        self.outcome = CORRUPT
        self.problem: str | None = None
        self.detail = ""
        self.trust = trust
        self.signer: str | None = None
        self.manifest: dict[str, Any] = {}
        self.recordings: list[Result] = []
        self.incomplete: list[str] = []
        self.redacted: list[tuple[str, int]] = []
        self.notes: list[str] = []
        self.files = 0
        self.audit_events = 0
        self.audit_segments = 0
        self.audit_log: str | None = None
        self.transfers = 0
        self.transfer_content = 0

    def _m(self, key: str) -> str | None:
        v = self.manifest.get(key) if self.signer else None
        return v if isinstance(v, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": "bundle",
            "verifier": "verify.py",
            "outcome": self.outcome,
            "problem": self.problem,
            "detail": self.detail,
            "signer_fingerprint": self.signer,
            "trust": self.trust,
            "export_id": self._m("export_id"),
            "exported_at": self._m("exported_at"),
            "exported_by": self._m("exported_by"),
            "identity": self._m("identity"),
            "zsp_version": self._m("zsp_version"),
            "incomplete": list(self.incomplete),
            "redacted": [{"session_id": s, "frames": n} for s, n in self.redacted],
            "notes": list(self.notes),
            "transfers": self.transfers,
            "transfer_content": self.transfer_content,
            "recordings": [r.to_json() for r in self.recordings],
        }


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Corrupt("malformed", f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise Corrupt("malformed", f"{what} must be a list")
    return value


def _str(d: dict[str, Any], key: str, what: str) -> str:
    v = d.get(key)
    if not isinstance(v, str):
        raise Corrupt("malformed", f"{what}: {key} must be a string")
    return v


def _int(d: dict[str, Any], key: str, what: str, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if type(v) is not int:
        raise Corrupt("malformed", f"{what}: {key} must be an integer")
    return v


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a JSON object repeats a key")
    return out


def _load_json(data: bytes, what: str, problem: str = "malformed") -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_json_pairs)
    except (UnicodeDecodeError, ValueError):
        raise Corrupt(problem, f"{what} is not JSON (UTF-8, no repeated keys)") from None
    except RecursionError:
        raise Corrupt(problem, f"{what} is not JSON this verifier reads: nested too deeply") from None


def _digests(src: Source, path: str) -> tuple[int, str, str]:
    sha = hashlib.sha256()
    b3 = blake3.blake3()
    n = 0
    with src.open(path) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            sha.update(chunk)
            b3.update(chunk)
            n += len(chunk)
    return n, sha.hexdigest(), b3.hexdigest()


def _rfc3339(time_us: int) -> str:
    """As zsp prints audit times (microseconds, UTC, ``Z``)."""
    return datetime.fromtimestamp(time_us / 1e6, UTC).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_json(seq: int, data: dict[str, Any]) -> dict[str, Any]:
    """An audit event frame's data as ``zsp audit --json`` prints it (what events.jsonl holds)."""
    out: dict[str, Any] = {
        "event": str(data["type"]),
        "code": str(data["code"]),
        "time": _rfc3339(int(data["time_us"])),
        "seq": seq,
        "actor": str(data["actor"]),
        "via": str(data["via"]),
        "outcome": str(data["outcome"]),
        "target": data.get("target"),
        "login": data.get("login"),
        "grant_id": data.get("grant_id"),
        "session_id": data.get("session_id"),
        "message": str(data["message"]),
    }
    for k, v in data.items():
        if k not in _CORE and k != "message":
            out.setdefault(k, v)
    return out


def _now_trusted(entries: list[TrustedKey]) -> bool:
    """ssh-keygen -Y verify checks a key's window at the time of verification."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    return not all(k.bounded for k in entries) or any(k.valid_at(now_us) for k in entries)


def check_bundle(src: Source, rep: Report, pinned: tuple[list[TrustedKey], list[TrustedKey]] | None) -> None:
    """Every check, in order; raises Corrupt at the first failure. Fills ``rep``."""
    # 1. safe to read, and the four files every bundle has
    src.scan()
    for name in REQUIRED:
        if name not in src.sizes:
            raise Corrupt("missing-file", f"{name} is missing")
    members = set(src.sizes)

    # 2. the manifest's signature, by a key trusted for evidence@zsp
    signers_text = src.read_small("allowed_signers").decode("utf-8", "replace")
    try:
        bundle_evidence = parse_allowed_signers(signers_text, EVIDENCE_NAMESPACE)
        bundle_recording = parse_allowed_signers(signers_text, SIGNATURE_NAMESPACE)
    except ValueError as exc:
        raise Corrupt("malformed", f"allowed_signers: {exc}") from None
    evidence_keys, recording_keys = (bundle_evidence, bundle_recording) if pinned is None else (pinned[1], pinned[0])
    manifest_bytes = src.read_small("manifest.json")
    try:
        signer_raw = verify_sshsig(src.read_small("manifest.json.sig"), manifest_bytes, EVIDENCE_NAMESPACE)
    except ValueError as exc:
        raise Corrupt("bad-signature", f"manifest.json.sig: {exc}") from None
    entries = [k for k in evidence_keys if k.raw == signer_raw]
    whose = "the allowed_signers file given" if pinned is not None else "the bundle's allowed_signers"
    if not entries:
        raise Corrupt(
            "untrusted-signer",
            f"manifest.json is signed by {fingerprint(signer_raw)}, which {whose} does not trust for "
            f"{EVIDENCE_NAMESPACE}",
        )
    if not _now_trusted(entries):
        raise Corrupt(
            "untrusted-signer", f"manifest signer {fingerprint(signer_raw)} is outside its valid-after/valid-before"
        )
    rep.signer = fingerprint(signer_raw)

    # 3. a manifest this verifier knows, naming that signer
    manifest = _obj(_load_json(manifest_bytes, "manifest.json"), "manifest.json")
    rep.manifest = manifest
    if manifest.get("format") != BUNDLE_FORMAT:
        raise Corrupt("unknown-version", f"manifest.json: format is not {BUNDLE_FORMAT}")
    if type(manifest.get("version")) is not int or manifest["version"] not in (1, 2):
        raise Corrupt("unknown-version", "manifest.json: unknown version (this verify.py knows versions 1 and 2)")
    signer_entry = _obj(manifest.get("signer"), "manifest signer")
    signer_key = TrustedKey(signer_raw)
    if signer_entry.get("key") != signer_key.openssh or signer_entry.get("fingerprint") != signer_key.fingerprint:
        raise Corrupt("signers-mismatch", "manifest.json names another signer than the one who signed it")
    if manifest.get("namespace") != EVIDENCE_NAMESPACE:
        raise Corrupt("malformed", f"manifest.json: namespace is not {EVIDENCE_NAMESPACE}")
    export_id = _str(manifest, "export_id", "manifest")
    if src.top is not None and src.top != f"zsp-evidence-{export_id}":
        raise Corrupt("malformed", f"top directory {src.top} is not zsp-evidence-{export_id}")
    if pinned is None:
        # ssh-keygen -Y verify -I IDENTITY: the identity must be a principal of the signer's line
        identity = _str(manifest, "identity", "manifest")
        if not any(k.principals and match_pattern_list(identity, k.principals) == 1 for k in entries):
            raise Corrupt(
                "signers-mismatch",
                f"allowed_signers does not name {identity} (the manifest's identity) for the manifest's signer",
            )

    # 4. every file listed once with the right hashes; SHA256SUMS the same
    listed: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate(_list(manifest.get("files"), "manifest files")):
        e = _obj(entry, f"manifest files[{n}]")
        p = _str(e, "path", f"manifest files[{n}]")
        if p in listed:
            raise Corrupt("malformed", f"the manifest lists {p} twice")
        listed[p] = e
    for p in sorted(members - UNLISTED - set(listed)):
        raise Corrupt("extra-file", f"{p} is in the bundle but not in the manifest")
    for p in sorted(set(listed) - members):
        raise Corrupt("missing-file", f"{p} is in the manifest but not in the bundle")
    for p in sorted(set(listed) & UNLISTED):
        raise Corrupt("malformed", f"the manifest lists {p}, which it cannot cover")
    sha: dict[str, str] = {}
    for p in sorted(members):
        size, sha256, b3 = _digests(src, p)
        sha[p] = sha256
        want = listed.get(p)
        if want is not None and (want.get("size") != size or want.get("sha256") != sha256 or want.get("blake3") != b3):
            raise Corrupt("hash-mismatch", f"{p} does not match its size and hashes in the manifest")
    sums: dict[str, str] = {}
    for n, line in enumerate(src.read_small("SHA256SUMS").decode("ascii", "replace").splitlines(), 1):
        h, sep, p = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", h) or p in sums:
            raise Corrupt("malformed", f"SHA256SUMS line {n} is not 'HEX  path' (or repeats a path)")
        sums[p] = h
    if set(sums) != members - {"SHA256SUMS"}:
        odd = sorted(set(sums) ^ (members - {"SHA256SUMS"}))
        raise Corrupt("hash-mismatch", f"SHA256SUMS does not list exactly the bundle's files: {', '.join(odd[:3])}")
    for p, h in sorted(sums.items()):
        if sha[p] != h:
            raise Corrupt("hash-mismatch", f"{p} does not match its sha256 in SHA256SUMS")
    rep.files = len(members)

    # 5. allowed_signers holds exactly the manifest's keys
    named = set()
    for k in _list(manifest.get("signers"), "manifest signers"):
        ko = _obj(k, "manifest signers")
        named.add((_str(ko, "key", "manifest signers"), ko.get("fingerprint")))
    held = {(k.openssh, k.fingerprint) for k in bundle_evidence + bundle_recording}
    if named != held:
        raise Corrupt("signers-mismatch", "allowed_signers does not hold exactly the manifest's signers")

    # 6. the recordings
    by_sid: dict[str, dict[str, Any]] = {}
    heads: dict[str, bytes] = {}
    headers: dict[str, dict[str, Any]] = {}
    expected: list[dict[str, Any]] = []
    for n, entry in enumerate(_list(manifest.get("recordings"), "manifest recordings")):
        r = _obj(entry, f"manifest recordings[{n}]")
        sid = _str(r, "session_id", f"manifest recordings[{n}]")
        if sid in by_sid:
            raise Corrupt("malformed", f"the manifest lists session {sid} twice")
        by_sid[sid] = r
        result, moved = _recording(src, r, sid, recording_keys)
        expected += moved
        rep.recordings.append(result)
        if result.head is not None:
            heads[sid] = result.head
        if result.header is not None:
            headers[sid] = result.header
        if result.outcome == INCOMPLETE:
            rep.incomplete.append(sid)
        if result.redacted_frames:
            rep.redacted.append((sid, len(result.redacted_frames)))
    on_disk = {p for p in members if p.startswith("recordings/")}
    if on_disk != {f"recordings/{sid}.zsprec" for sid in by_sid}:
        raise Corrupt("extra-file", "recordings/ does not hold exactly the manifest's recordings")
    _transfers(manifest, listed, members, expected, rep)

    # 8, first half (the grants decide which audit events must be there): sessions/
    sessions = _sessions(src, members, by_sid, headers)
    grant_ids = {g for g in (s.get("grant_id") for s in sessions.values()) if isinstance(g, str)}
    grant_ids |= {h["grant_id"] for h in headers.values() if isinstance(h.get("grant_id"), str) and h["grant_id"]}

    # 7. the audit excerpt, its events, and the session.end heads
    events = _audit(src, manifest, members, set(by_sid), grant_ids, recording_keys, rep)
    for sid, r in by_sid.items():
        _session_end(sid, r, events, heads, rep)

    # 8. grants/
    _grants(src, members, grant_ids, events)


def _recording(
    src: Source, r: dict[str, Any], sid: str, keys: list[TrustedKey]
) -> tuple[Result, list[dict[str, Any]]]:
    path = f"recordings/{sid}.zsprec"
    if r.get("path") != path or path not in src.sizes:
        raise Corrupt("missing-file", f"recording {sid}: expected at {path}")
    redacted: dict[int, Redacted] = {}
    for x in _list(r.get("redactions", []), f"recording {sid} redactions"):
        e = _obj(x, f"recording {sid} redaction")
        frame = _int(e, "frame", f"recording {sid} redaction")
        length = _int(e, "length", f"recording {sid} redaction")
        rb = _int(e, "redacted_bytes", f"recording {sid} redaction")
        kind = {"output": K_OUTPUT, "input": K_INPUT}.get(str(e.get("kind")))
        head = e.get("original_head")
        if (
            frame is None
            or length is None
            or rb is None
            or kind is None
            or not isinstance(head, str)
            or not re.fullmatch(r"[0-9a-f]{64}", head)
            or frame in redacted
            or not 0 < rb <= length
        ):
            raise Corrupt("malformed", f"recording {sid}: a redaction entry is malformed")
        redacted[frame] = Redacted(bytes.fromhex(head), kind, length)
    events: list[tuple[int, int, dict[str, Any]]] = []
    with src.open(path) as f:
        result = verify_recording(f, keys, redacted, events)
    if result.outcome == CORRUPT:
        where = "the preamble" if result.frame is None else f"frame {result.frame}"
        raise Corrupt("recording", f"{path}: CORRUPT at {where}: {result.problem}: {result.detail}")
    if result.header is None or result.header.get("session_id") != sid:
        raise Corrupt("recording", f"{path} is not a recording of session {sid}")
    checks = (
        ("outcome", r.get("outcome"), result.outcome),
        ("frames", r.get("frames"), result.frames),
        ("signed_frames", r.get("signed_frames"), result.signed),
        ("final_head", r.get("final_head"), result.head.hex() if result.head else None),
        ("signer_fingerprint", r.get("signer_fingerprint"), result.header.get("signer_fingerprint")),
    )
    for name, expected, got in checks:
        if expected != got:
            raise Corrupt("recording", f"{path}: {name} is {got}, the manifest says {expected}")
    started = result.header["started_at_us"]
    signed = [e for e in events if e[0] < result.signed]  # only what a signature covers is evidence
    return result, [_transfer_entry(sid, started, n, *e) for n, e in enumerate(signed)]


def _count(v: Any) -> int:
    return v if type(v) is int and v >= 0 else 0


def _text_or_empty(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _transfer_entry(sid: str, started_us: int, index: int, seq: int, t_us: int, ev: dict[str, Any]) -> dict[str, Any]:
    """docs/EXPORT.md "Transferred files": the entry a file event makes (the manifest must hold it exactly)."""
    if ev.get("type") == "sftp.file":
        direction, size = _text_or_empty(ev.get("direction")), _count(ev.get("size"))
        sha, complete = _text_or_empty(ev.get("sha256")), ev.get("content_complete") is True
    else:
        up, down = _count(ev.get("uploaded")), _count(ev.get("downloaded"))
        direction = "both" if up and down else ("upload" if up else "download")
        size, sha, complete = max(up, down), "", False
    try:
        when = datetime.fromtimestamp((started_us + t_us) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError, OSError):
        when = ""
    b64 = ev.get("path_b64")
    return {
        "session_id": sid,
        "index": index,
        "frame": seq,
        "t_us": t_us,
        "time": when,
        "event": ev.get("type"),
        "direction": direction if direction in ("upload", "download", "both") else "?",
        "size": size,
        "sha256": sha,
        "hash_note": _text_or_empty(ev.get("hash_note")),
        "recorded_path": _text_or_empty(ev.get("path")),
        "recorded_path_b64": b64 if isinstance(b64, str) else None,
        "content_kept": _count(ev.get("content_kept")),
        "content_complete": complete,
    }


def _content_name(number: int, entry: dict[str, Any]) -> str:
    """files/NNNN-DIRECTION-BASENAME: the basename reduced to [A-Za-z0-9._-], no leading dot, <= 80."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", entry["recorded_path"].split("/")[-1]).lstrip(".")[:80] or "file"
    direction = re.sub(r"[^A-Za-z0-9._-]+", "_", entry["direction"]) or "file"
    return "files/%04d-%s-%s" % (number, direction, base)  # noqa: UP031 - one expression, read as the rule


def _transfers(
    manifest: dict[str, Any], listed: dict[str, dict[str, Any]], members: set[str], expected: list[dict[str, Any]],
    rep: Report,
) -> None:  # fmt: skip
    """6b. the transferred files (version 2): the list is the recordings', files/ their content."""
    in_files = {p for p in members if p.startswith("files/")}
    if manifest["version"] == 1:
        if "transfers" in manifest or in_files:
            raise Corrupt("malformed", "a version 1 manifest with transferred files (version 2 has them)")
        if expected:
            rep.notes.append(
                f"{len(expected)} transferred file(s) in the recordings are not listed: the bundle was made "
                "before bundles listed them (version 1)"
            )
        return
    t = _obj(manifest.get("transfers"), "manifest transfers")
    include, limit = t.get("content"), t.get("content_limit")
    if type(include) is not bool or type(limit) is not int or not 0 <= limit <= CONTENT_LIMIT:
        raise Corrupt("malformed", f"manifest transfers: content or content_limit (<= {CONTENT_LIMIT})")
    entries = _list(t.get("files"), "manifest transfers files")
    if len(entries) != len(expected):
        raise Corrupt(
            "transfers-mismatch",
            f"the manifest lists {len(entries)} transferred file(s), the recordings hold {len(expected)}",
        )
    named: set[str] = set()
    total = 0
    for n, (e, want) in enumerate(zip(entries, expected), 1):  # noqa: B905 - same length, checked
        e = _obj(e, f"transferred file {n}")
        if set(e) != set(TRANSFER_KEYS) | {"content", "content_note"} or not isinstance(e["content_note"], str):
            raise Corrupt("malformed", f"transferred file {n}: not the keys a transfer entry has")
        for key in TRANSFER_KEYS:
            if e[key] != want[key] or type(e[key]) is not type(want[key]):
                raise Corrupt(
                    "transfers-mismatch",
                    f"transferred file {n}: {key} is {e[key]!r} in the manifest, {want[key]!r} in "
                    f"recordings/{want['session_id']}.zsprec (frame {want['frame']})",
                )
        content = e["content"]
        if content is None:
            continue
        if not include:
            raise Corrupt("transfers-mismatch", f"transferred file {n} has content, but content is false")
        if content != _content_name(n, want):
            raise Corrupt("transfers-mismatch", f"transferred file {n}: content {content!r} is not its name")
        whole = want["event"] == "sftp.file" and want["content_complete"]
        if not whole or not re.fullmatch(r"[0-9a-f]{64}", want["sha256"]):
            raise Corrupt("transfers-mismatch", f"transferred file {n}: the recording does not hold all of it")
        f = listed.get(content)
        if f is None or content not in members:
            raise Corrupt("missing-file", f"{content} (transferred file {n}) is not in the bundle")
        if f.get("sha256") != want["sha256"] or f.get("size") != want["size"]:
            raise Corrupt("transfers-mismatch", f"{content} does not hash to the sha256 the recording gives file {n}")
        named.add(content)
        total += want["size"]
    for p in sorted(in_files - named):
        raise Corrupt("extra-file", f"{p} is not the content of a transferred file the manifest lists")
    if total > limit:
        raise Corrupt("malformed", f"files/ holds {total} bytes, over the content_limit {limit}")
    sums = ["%s  %s" % (e["sha256"], e["content"]) for e in entries if e["content"] is not None]  # noqa: UP031
    if t.get("sha256sums") != sums or set(t) != {"content", "content_limit", "files", "sha256sums"}:
        raise Corrupt("transfers-mismatch", "manifest transfers sha256sums is not the list of files/ it holds")
    rep.transfers, rep.transfer_content = len(entries), len(named)


def _sessions(
    src: Source, members: set[str], by_sid: dict[str, dict[str, Any]], headers: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    files = {p for p in members if p.startswith("sessions/")}
    if files != {f"sessions/{sid}.json" for sid in by_sid}:
        raise Corrupt("metadata-mismatch", "sessions/ does not hold exactly one file per recording")
    out: dict[str, dict[str, Any]] = {}
    for sid in by_sid:
        p = f"sessions/{sid}.json"
        s = _obj(_load_json(src.read_small(p), p, "metadata-mismatch"), p)
        h = headers.get(sid) or {}
        if s.get("id") != sid or (s.get("user"), s.get("target"), s.get("login")) != (
            h.get("user"),
            h.get("target"),
            h.get("login"),
        ):
            raise Corrupt("metadata-mismatch", f"{p} does not describe the recorded session")
        out[sid] = s
    return out


def _audit(
    src: Source,
    manifest: dict[str, Any],
    members: set[str],
    sids: set[str],
    grant_ids: set[str],
    keys: list[TrustedKey],
    rep: Report,
) -> dict[int, dict[str, Any]]:
    """Check the audit excerpt (COMMON10 "Verification of the excerpt"); return the listed events."""
    audit = _obj(manifest.get("audit"), "manifest audit")
    path = audit.get("path")
    if path != "audit/excerpt.zsplog" or path not in members:
        raise Corrupt("missing-file", "audit/excerpt.zsplog is missing")
    try:
        ex = msgpack.unpackb(src.read_small(path), raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - any decoding failure of an untrusted file is a verdict, not a crash
        raise Corrupt("audit", "audit excerpt does not decode") from None
    if not isinstance(ex, dict) or ex.get("format") != EXCERPT_FORMAT:
        raise Corrupt("audit", f"audit excerpt: not a {EXCERPT_FORMAT}")
    if type(ex.get("version")) is not int or ex["version"] != 1:
        raise Corrupt("unknown-version", "audit excerpt: unknown version")

    # 1. the header: the log's frame 0, its head keyed by the log's genesis, by a trusted signer
    hdr = ex.get("header")
    if hdr is None:  # the log was empty at export: then nothing can be listed
        if ex.get("segments") != [] or audit.get("events") != [] or audit.get("log_id") is not None:
            raise Corrupt("audit", "audit excerpt has no header but claims events")
        return {}
    if type(hdr) is not list or len(hdr) != 2 or type(hdr[0]) is not bytes or type(hdr[1]) is not bytes:
        raise Corrupt("audit", "audit excerpt header is not [body, head]")
    try:
        kind, seq, _, data = decode_body(hdr[0])
        _need(kind == K_HEADER and seq == 0, "not a header frame")
        check_header_version(data)
        sid16 = check_header_rules(data)
        raw, pub = check_header_signer(data)
    except Bad as exc:
        raise Corrupt("audit", f"audit excerpt header: {exc.detail or exc.code}") from None
    log_id = data["session_id"]
    header_head = _head(blake3.blake3(GENESIS_TAG + sid16).digest(), hdr[0])
    if header_head != hdr[1]:
        raise Corrupt("audit", "audit excerpt header does not match its chain head")
    if audit.get("log_id") != log_id or audit.get("signer_fingerprint") != fingerprint(raw):
        raise Corrupt("audit", "the manifest names another audit log or signer than the excerpt's header")
    entries = [k for k in keys if k.raw == raw]
    if not entries:
        raise Corrupt("untrusted-signer", f"audit log signer {fingerprint(raw)} is not trusted")
    windows = entries if all(k.bounded for k in entries) else []
    rep.audit_log = log_id

    # 2. the segments: chained, in order, disjoint, each ending with a checkpoint by that signer
    segments = ex.get("segments")
    if type(segments) is not list:
        raise Corrupt("audit", "audit excerpt: segments must be a list")
    events: dict[int, dict[str, Any]] = {}
    last_seq = 0
    for n, seg in enumerate(segments):
        where = f"audit excerpt segment {n}"
        if not isinstance(seg, dict):
            raise Corrupt("audit", f"{where} is malformed")
        prev, frames = seg.get("prev_head"), seg.get("frames")
        if type(prev) is not bytes or len(prev) != 32 or type(frames) is not list or not frames:
            raise Corrupt("audit", f"{where} is malformed")
        h = prev
        kind = -1
        for k, fr in enumerate(frames):
            if type(fr) is not list or len(fr) != 2 or type(fr[0]) is not bytes or type(fr[1]) is not bytes:
                raise Corrupt("audit", f"{where}: a frame is not [body, head]")
            body, stored = fr
            if _head(h, body) != stored:
                raise Corrupt("audit", f"{where}: a frame does not match its chain head (edited?)")
            try:
                kind, seq, _, data = decode_body(body)
                check_data(kind, data)
            except Bad as exc:
                raise Corrupt("audit", f"{where}: {exc.detail}") from None
            if (k == 0 and seq <= last_seq) or (k > 0 and seq != last_seq + 1):
                raise Corrupt("audit", f"{where}: frame {seq} out of order (segments overlap or skip)")
            if k == 0 and seq == 1 and prev != header_head:
                raise Corrupt("audit", f"{where}: frame 1 does not follow the excerpt's header")
            if kind == K_CHECKPOINT:
                if data["index"] != seq - 1:
                    raise Corrupt("audit", f"audit frame {seq}: the checkpoint names the wrong frame")
                try:
                    pub.verify(data["sig"], checkpoint_message(sid16, data["index"], data["wall_us"], h))
                except InvalidSignature:
                    raise Corrupt("audit", f"audit frame {seq}: checkpoint signature does not verify") from None
                if windows and not any(w.valid_at(data["wall_us"]) for w in windows):
                    raise Corrupt("untrusted-signer", f"audit frame {seq}: signed outside the key's window")
            elif kind == K_EVENT:
                events[seq] = data
            else:
                raise Corrupt("audit", f"audit frame {seq}: not an event or a checkpoint")
            h = stored
            last_seq = seq
        if kind != K_CHECKPOINT:
            raise Corrupt("audit", f"{where} does not end with a checkpoint")
    rep.audit_segments = len(segments)

    # 3. the listed events are there, and no event of these sessions or grants is left out
    listed = _list(audit.get("events"), "manifest audit events")
    if any(type(s) is not int for s in listed) or listed != sorted(set(listed)):
        raise Corrupt("audit", "manifest audit events are not sorted and distinct integers")
    for s in listed:
        if s not in events:
            raise Corrupt("audit", f"audit event {s} is listed but not in the excerpt")
    for s, data in sorted(events.items()):
        if (data.get("session_id") in sids or data.get("grant_id") in grant_ids) and s not in listed:
            raise Corrupt("audit", f"audit event {s} ({data.get('type')}) concerns this export but is not listed")
    out = {s: events[s] for s in listed}
    rep.audit_events = len(out)

    # 4. audit/events.jsonl: exactly the listed events, decoded
    if "audit/events.jsonl" not in members:
        raise Corrupt("missing-file", "audit/events.jsonl is missing")
    lines = src.read_small("audit/events.jsonl").decode("utf-8", "replace").splitlines()
    if len(lines) != len(out):
        raise Corrupt("audit", f"audit/events.jsonl has {len(lines)} lines for {len(out)} events")
    for line, (s, data) in zip(lines, out.items()):  # noqa: B905 - same length, checked; strict= is 3.10+
        try:
            got = json.loads(line, object_pairs_hook=_json_pairs)
            want = json.loads(json.dumps(event_json(s, data)))
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            raise Corrupt("audit", f"audit/events.jsonl: event {s} does not decode") from None
        except RecursionError:
            raise Corrupt("audit", f"audit/events.jsonl: event {s} is nested too deeply") from None
        if got != want:
            raise Corrupt("audit", f"audit/events.jsonl: event {s} differs from the signed excerpt")
    return out


def _session_end(
    sid: str, r: dict[str, Any], events: dict[int, dict[str, Any]], heads: dict[str, bytes], rep: Report
) -> None:
    """5. a recording's final head is the one its session.end event names."""
    ends = [s for s, d in events.items() if d.get("type") == "session.end" and d.get("session_id") == sid]
    seq = _int(r, "session_end_seq", f"recording {sid}", optional=True)
    if seq is None:
        if ends:
            raise Corrupt("session-end-mismatch", f"session {sid}: its session.end (audit {ends[0]}) is not named")
        return
    if seq not in ends:
        raise Corrupt("session-end-mismatch", f"session {sid}: audit event {seq} is not its session.end")
    head = events[seq].get("head")
    if head is None:
        rep.notes.append(f"session {sid}: the bastion recorded its end with no head (the recording failed)")
        return
    if r.get("outcome") == VALID:
        if head != r.get("final_head") or sid not in heads or head != heads[sid].hex():
            raise Corrupt(
                "session-end-mismatch",
                f"session {sid}: the recording's final head is not the one its session.end (audit {seq}) names",
            )
    else:
        rep.notes.append(f"session {sid}: its session.end names a sealed head, but the recording is INCOMPLETE")


def _grants(src: Source, members: set[str], grant_ids: set[str], events: dict[int, dict[str, Any]]) -> None:
    """8. grants/: one file per grant of an exported session; each agrees with its request event."""
    created = {d.get("grant_id"): d for d in events.values() if d.get("type") == "access_request.create"}
    files = {p for p in members if p.startswith("grants/")}
    for p in sorted(files):
        gid = p[len("grants/") : -len(".json")] if p.endswith(".json") else ""
        if gid not in grant_ids:
            raise Corrupt("metadata-mismatch", f"{p} is not the grant of an exported session")
    for gid in sorted(grant_ids):
        p = f"grants/{gid}.json"
        if p not in files:
            if gid in created:
                raise Corrupt("metadata-mismatch", f"{p} is missing (its request is in the audit excerpt)")
            continue
        g = _obj(_load_json(src.read_small(p), p, "metadata-mismatch"), p)
        if g.get("id") != gid:
            raise Corrupt("metadata-mismatch", f"{p} is about another grant")
        ev = created.get(gid)
        if ev is not None:
            mine = (g.get("requester"), g.get("target"), g.get("login"), g.get("reason"))
            theirs = (ev.get("actor"), ev.get("target"), ev.get("login"), ev.get("reason"))
            if mine != theirs:
                raise Corrupt("metadata-mismatch", f"{p} disagrees with its access_request.create audit event")


def verify_bundle(path: str, pinned: tuple[list[TrustedKey], list[TrustedKey]] | None = None) -> Report:
    """Verify the bundle at ``path`` (a tar file or an extracted directory). ``pinned``: the keys of
    an allowed_signers file trusted for (recordings, manifests) instead of the bundle's own.
    Raises Unreadable when ``path`` cannot be read or is not a bundle."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "manifest.json")):
            raise Unreadable("a directory without manifest.json is not an evidence bundle")
        src: Source = DirSource(path)
    elif os.path.exists(path):
        src = TarSource(path)
    else:
        raise Unreadable("no such file or directory")
    rep = Report(path, "pinned" if pinned is not None else "bundle")
    try:
        check_bundle(src, rep, pinned)
    except Corrupt as exc:
        rep.outcome, rep.problem, rep.detail = CORRUPT, exc.problem, exc.detail
        return rep
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    finally:
        src.close()
    if rep.incomplete:
        rep.outcome = INCOMPLETE
        rep.detail = "INCOMPLETE recording(s), intact as far as they go: " + ", ".join(rep.incomplete)
    else:
        rep.outcome = VALID
    return rep


# =========================================================================== output

_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CANDIDATE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


def _escape_char(m: re.Match[str]) -> str:
    c: str = m.group()
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp"):
        return c
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def esc(value: Any) -> str:
    """Text from the bundle as one line with nothing a terminal acts on (zsp's ``printable``):
    control characters as ``\\xNN``, format and bidi characters as ``\\uNNNN``, ``\\`` doubled."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return _CANDIDATE.sub(_escape_char, text)


def describe(rep: Report) -> list[str]:
    """The human report: first line the verdict, then what it rests on."""
    lines = [f"{rep.outcome}  {rep.source}"]
    if rep.outcome == CORRUPT:
        lines.append(f"  problem: {rep.problem}: {rep.detail}")
    elif rep.detail:
        lines.append(f"  {rep.detail}")
    m = rep.manifest if rep.signer else {}
    if m:
        lines.append(
            f"  export {m.get('export_id')} by {m.get('exported_by')} via {m.get('via')} at {m.get('exported_at')} "
            f"(zsp {m.get('zsp_version')} on {m.get('host')})"
        )
    if rep.signer:
        if rep.trust == "pinned":
            lines.append(f"  manifest signed by {rep.signer} ({EVIDENCE_NAMESPACE}), trusted by --allowed-signers")
        else:
            lines.append(
                f"  manifest signed by {rep.signer} ({EVIDENCE_NAMESPACE}), trusted ONLY because the bundle's own "
                "allowed_signers names it: compare this fingerprint with the bastion's, obtained out of band, "
                "or pass --allowed-signers FILE"
            )
    if rep.files:
        lines.append(f"  {rep.files} files: sizes, sha256 and blake3 match the manifest, SHA256SUMS matches")
    for r in rep.recordings:
        h = r.header or {}
        state = r.outcome if r.outcome == VALID else f"{r.outcome} ({r.problem})"
        who = f"{h.get('user')} -> {h.get('login')}@{h.get('target')}"
        line = f"  recording {h.get('session_id')}: {state}, {r.frames} frames, {r.signed} signed, {who}"
        if r.head:
            line += f", {'final head' if r.outcome == VALID else 'last intact head'} {r.head.hex()}"
        if r.outcome == VALID and r.end_reason:
            line += f", ended {r.end_reason}"
        lines.append(line)
        if r.redacted_frames:
            shown = ", ".join(str(f) for f in r.redacted_frames[:20])
            more = "" if len(r.redacted_frames) <= 20 else f" and {len(r.redacted_frames) - 20} more"
            lines.append(
                f"    redacted frames {shown}{more}: their bytes were replaced on export (vouched for only by the "
                "exporter's signature); every other frame is proven original"
            )
    if rep.transfers and rep.outcome != CORRUPT:
        lines.append(
            f"  {rep.transfers} transferred file(s) listed, each as its recording gives it; {rep.transfer_content} "
            "with their content in files/, hashing to the recorded sha256"
        )
    if rep.audit_log and rep.outcome != CORRUPT:
        lines.append(
            f"  audit log {rep.audit_log}: {rep.audit_events} event(s) in {rep.audit_segments} signed segment(s), "
            "nothing of these sessions or grants left out; events.jsonl and every session.end head match"
        )
    lines.extend(f"  note: {n}" for n in rep.notes)
    return [esc(line) for line in lines]


def _pinned(path: str) -> tuple[list[TrustedKey], list[TrustedKey]]:
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError as exc:
        raise Unreadable(f"--allowed-signers {path}: {exc.strerror or exc}") from None
    try:
        recording = parse_allowed_signers(text, SIGNATURE_NAMESPACE)
        evidence = parse_allowed_signers(text, EVIDENCE_NAMESPACE)
    except ValueError as exc:
        raise Unreadable(f"--allowed-signers {path}: {exc}") from None
    if not evidence:
        raise Unreadable(
            f"--allowed-signers {path}: no ssh-ed25519 key trusted for {EVIDENCE_NAMESPACE} (the bastion's line "
            f'needs namespaces="{SIGNATURE_NAMESPACE},{EVIDENCE_NAMESPACE}")'
        )
    return recording, evidence


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="verify.py",
        description="Verify a zsp evidence bundle offline. Exit 0 VALID, 1 INCOMPLETE or CORRUPT, 2 cannot read.",
    )
    ap.add_argument("--allowed-signers", metavar="FILE", help="trust only the keys of this allowed_signers file")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("bundle", nargs="?", help="the bundle: a .tar file or a directory (default: this script's)")
    args = ap.parse_args(argv)
    path = args.bundle or os.path.dirname(os.path.abspath(__file__))
    try:
        pinned = _pinned(args.allowed_signers) if args.allowed_signers else None
        rep = verify_bundle(path, pinned)
    except Unreadable as exc:
        if args.json:
            print(json.dumps({"source": path, "kind": "bundle", "outcome": "ERROR", "detail": str(exc)}, indent=2))
        else:
            print(esc(f"ERROR  {path}: {exc}"), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep.to_json(), indent=2, sort_keys=True))
    else:
        print("\n".join(describe(rep)))
    return 0 if rep.outcome == VALID else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader went away (verify.py | head): stop quietly, as coreutils do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
