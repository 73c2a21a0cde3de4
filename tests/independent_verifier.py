"""Independent verifier for the zsp recording format v1.

Written from docs/FORMAT.md alone (no code from recorder/, replay/ or zsp_tui/), to check that
the specification is complete enough to implement. Uses only the stdlib, msgpack, blake3 and
cryptography. It follows the order of checks of FORMAT.md section 4 step by step.

    python tests/independent_verifier.py KEYFILE.pub FILE...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import blake3
import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PREAMBLE = b"ZSPREC\x00\x01"
MAGIC = PREAMBLE[:7]
VERSION = 1
MAX_BODY = 1024 * 1024
HEAD_LEN = 32
MAX_TEXT = 4096
MAX_NEST = 8
T_LIMIT = 2**63
U64_MAX = 2**64 - 1

K_HEADER, K_OUTPUT, K_INPUT, K_RESIZE, K_EVENT, K_CHECKPOINT, K_SEAL = range(7)

GENESIS_TAG = b"zsp-recording-v1 genesis\x00"
CHECKPOINT_TAG = b"zsp-recording-v1 checkpoint\x00"

VALID, INCOMPLETE, CORRUPT = "VALID", "INCOMPLETE", "CORRUPT"

# Behaviours of the production verifier (replay.verify) that differ from this reading of
# FORMAT.md, found by tests/test_independent_verifier.py. They are off by default; the test turns
# them on only to tell a known disagreement from a new one. All four below were fixed in the
# production verifier (and FORMAT.md made explicit); the switches stay to document what was found.
#   nil-keys-optional  header `grant_id`/`command` and seal `exit_status` may be absent (as nil)
#   version-py-equal   header `version` compared with Python `==`, so `true` and `1.0` pass as 1
#                      (then fail the type rule: malformed instead of unknown-version)
#   int63-ranges       header `started_at_us`, checkpoint `wall_us` and seal `wall_us`,
#                      `output_bytes`, `input_bytes` must be 0..2^63-1, seal `frames` 1..2^63-1
#                      (malformed; FORMAT.md gives these fields no range, so a wrong seal count is
#                      seal-mismatch and an unsigned value is caught by the signature)
#   header-time        frame 1's `t_us` is not compared with the header's
KNOWN_DEVIATIONS: frozenset[str] = frozenset()  # all four fixed in production on 2026-11-26
I63_MAX = 2**63 - 1

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Result:
    outcome: str
    problem: str | None = None
    frame: int | None = None  # CORRUPT: the bad frame (None for the preamble); INCOMPLETE: intact frames
    offset: int | None = None  # CORRUPT / INCOMPLETE: offset of the frame's length prefix (0: preamble)
    frames: int = 0  # intact frames read
    signed: int = 0  # frames 0 .. signed-1 are covered by the last good signature
    signed_wall_us: int | None = None
    detail: str = ""


class _Bad(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def _need(cond: bool, detail: str, code: str = "malformed") -> None:
    if not cond:
        raise _Bad(code, detail)


def _is_int(v: Any) -> bool:
    return type(v) is int  # a bool is not an integer


def _is_str(v: Any) -> bool:
    return type(v) is str


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return _is_int(v) and lo <= v <= hi


def _text(v: Any) -> bool:
    """A string value this document names: str of at most 4096 code points."""
    return _is_str(v) and len(v) <= MAX_TEXT


# --------------------------------------------------------------------------- keys


def _ssh_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(buf):
        raise ValueError("short ssh string")
    (n,) = struct.unpack_from(">I", buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise ValueError("short ssh string")
    return buf[pos : pos + n], pos + n


def _ed25519_raw(blob: bytes) -> bytes:
    """The 32 raw key bytes of an ssh-ed25519 wire encoding (nothing may follow)."""
    kt, pos = _ssh_string(blob, 0)
    raw, pos = _ssh_string(blob, pos)
    if kt != b"ssh-ed25519" or len(raw) != 32 or pos != len(blob):
        raise ValueError("not an ssh-ed25519 key")
    return raw


def _b64_canonical(text: str) -> bytes:
    """Decode base64 that must be exactly what standard, padded base64 encoding produces."""
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("bad base64") from None
    if base64.b64encode(blob).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return blob


def parse_trusted_keys(lines: list[str]) -> set[bytes]:
    """OpenSSH public key lines (`ssh-ed25519 BASE64 [comment]`) -> set of 32-byte raw keys."""
    out: set[bytes] = set()
    for line in lines:
        parts = line.strip().split()
        if len(parts) < 2 or parts[0] != "ssh-ed25519":
            continue
        try:
            out.add(_ed25519_raw(base64.b64decode(parts[1], validate=True)))
        except (binascii.Error, ValueError):
            continue
    return out


# --------------------------------------------------------------------------- decoding


def _pairs_hook(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if not _is_str(k):
            raise _Bad("malformed", "map key is not a string")
        if k in d:
            raise _Bad("malformed", f"map repeats the key {k!r}")
        d[k] = v
    return d


def _ext_hook(code: int, data: bytes) -> Any:
    raise _Bad("malformed", f"extension type {code}")


def _no_ext(v: Any) -> None:
    if isinstance(v, (msgpack.ExtType, msgpack.Timestamp)):
        raise _Bad("malformed", "extension type")
    if isinstance(v, list):
        for x in v:
            _no_ext(x)
    elif isinstance(v, dict):
        for x in v.values():
            _no_ext(x)


def decode_body(body: bytes) -> tuple[int, int, int, Any]:
    """Section 3 body rules common to every frame: one msgpack object, plain values, and a
    4-element array [kind, seq, t_us, data] with a known kind and integer seq and t_us. (An
    unknown kind is checked here, as part of the element types, not with the data rules.)"""
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
    except _Bad:
        raise
    except Exception as e:  # invalid msgpack, invalid UTF-8, trailing bytes...: a format error
        raise _Bad("malformed", f"body is not one msgpack object: {type(e).__name__}") from None
    _no_ext(obj)
    _need(isinstance(obj, list) and len(obj) == 4, "body is not a 4-element array")
    kind, seq, t_us, data = obj
    _need(_is_int(kind) and K_HEADER <= kind <= K_SEAL, f"kind {kind!r} is not one of the kinds 0..6")
    _need(_is_int(seq) and seq >= 0, "seq is not a non-negative integer")
    _need(_int_in(t_us, 0, T_LIMIT - 1), "t_us is not an integer in 0..2^63-1")
    return kind, seq, t_us, data


def _body_seq(body: bytes) -> int | None:
    try:
        return decode_body(body)[1]
    except _Bad:
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


def check_header_version(d: Any, dev: frozenset[str]) -> None:
    """A header map whose `version` is not the integer 1 (missing, nil, 2, "1", true...)."""
    if not isinstance(d, dict):
        return  # malformed, by the header rules
    v = d.get("version")
    ok = v == VERSION if "version-py-equal" in dev else _is_int(v) and v == VERSION
    _need(ok, f"header version {v!r}", "unknown-version")


def check_header_rules(d: Any, dev: frozenset[str]) -> bytes:
    """Section 3.1 rules other than the signer's content. Returns sid16."""
    _need(isinstance(d, dict), "header data is not a map")
    for k in HEADER_TEXT:
        _need(_text(d.get(k)), f"header: {k!r} missing or not a string of at most {MAX_TEXT} code points")
    for k in HEADER_TEXT_OR_NIL:
        present = k in d or "nil-keys-optional" in dev
        _need(present and (d.get(k) is None or _text(d[k])), f"header: {k!r} missing or not a string or nil")
    for k in HEADER_INT:
        _need(_is_int(d.get(k)), f"header: {k!r} missing or not an integer")
    # FORMAT.md section 3: integers without a stated range are 0..2^64-1.
    top = I63_MAX if "int63-ranges" in dev else U64_MAX
    _need(_int_in(d["started_at_us"], 0, top), "header: started_at_us out of range")
    _need(_UUID_RE.fullmatch(d["session_id"]) is not None, "header: session_id is not a canonical UUID")
    _need(_int_in(d["cols"], 0, 65535) and _int_in(d["rows"], 0, 65535), "header: cols/rows out of range")
    _need(_int_in(d["checkpoint_frames"], 1, 4096), "header: checkpoint_frames out of range")
    _need(_int_in(d["checkpoint_ms"], 1, 5000), "header: checkpoint_ms out of range")
    _need(_int_in(d["coalesce_ms"], 0, 50), "header: coalesce_ms out of range")
    for k, v in d.items():
        if k not in HEADER_KEYS:
            _need(_plain(v), f"header: key {k!r} does not hold a plain msgpack value")
    return uuid.UUID(d["session_id"]).bytes


def check_header_signer(d: dict[str, Any]) -> tuple[bytes, Ed25519PublicKey]:
    """`signer` must be exactly `ssh-ed25519 <base64>` and `signer_fingerprint` match it."""
    text = d["signer"]
    _need(text.startswith("ssh-ed25519 ") and text.count(" ") == 1, "header: signer is not 'ssh-ed25519 <b64>'")
    try:
        blob = _b64_canonical(text.split(" ", 1)[1])
        raw = _ed25519_raw(blob)
        pub = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise _Bad("malformed", "header: signer is not a valid ssh-ed25519 key") from None
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    _need(d["signer_fingerprint"] == fp, "header: signer_fingerprint does not match signer")
    return raw, pub


def check_event(d: Any) -> None:
    _need(isinstance(d, dict), "event data is not a map")
    _need(_text(d.get("type")), "event: 'type' missing or not a string")
    _need(_text(d.get("message")), "event: 'message' missing or not a string")
    for k, v in d.items():
        _need(v is None or type(v) in (bool, int) or _text(v), f"event: field {k!r} is not str, int, bool or nil")


def check_checkpoint(d: Any, dev: frozenset[str]) -> None:
    _need(isinstance(d, dict), "checkpoint data is not a map")
    _need(_int_in(d.get("index"), 0, U64_MAX), "checkpoint: 'index' missing or not a u64")
    # wall_us is signed as u64be, so it must fit one
    top = I63_MAX if "int63-ranges" in dev else U64_MAX
    _need(_int_in(d.get("wall_us"), 0, top), "checkpoint: 'wall_us' missing or not a u64")
    _need(type(d.get("sig")) is bytes and len(d["sig"]) == 64, "checkpoint: 'sig' is not bin(64)")


def check_seal(d: Any, dev: frozenset[str]) -> None:
    _need(isinstance(d, dict), "seal data is not a map")
    _need("exit_status" in d or "nil-keys-optional" in dev, "seal: 'exit_status' missing")
    es = d.get("exit_status")
    _need(es is None or _int_in(es, -255, 255), "seal: exit_status is not nil or -255..255")
    _need(_text(d.get("reason")), "seal: 'reason' missing or not a string")
    for k in ("frames", "output_bytes", "input_bytes", "wall_us"):
        _need(_is_int(d.get(k)), f"seal: {k!r} missing or not an integer")
        if "int63-ranges" in dev:
            _need(_int_in(d[k], 1 if k == "frames" else 0, I63_MAX), f"seal: {k!r} out of range")
        else:
            _need(_int_in(d[k], 0, U64_MAX), f"seal: {k!r} out of range")


def check_data(kind: int, data: Any, dev: frozenset[str]) -> None:
    """Section 3 data rules of a frame after frame 0."""
    if kind == K_HEADER:
        raise _Bad("malformed", "a second header")
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
        check_checkpoint(data, dev)
    elif kind == K_SEAL:
        check_seal(data, dev)
    else:  # pragma: no cover - decode_body refuses unknown kinds
        raise _Bad("malformed", f"unknown kind {kind}")


# --------------------------------------------------------------------------- verifier


def _head(key: bytes, body: bytes) -> bytes:
    return blake3.blake3(body, key=key).digest()


def verify(data: bytes, trusted: set[bytes], deviations: frozenset[str] = frozenset()) -> Result:
    n = len(data)
    # 1. preamble
    if n < len(PREAMBLE) and PREAMBLE.startswith(data):
        return Result(INCOMPLETE, "empty", 0, 0, detail="file is a proper prefix of the preamble")
    if data[:7] != MAGIC:
        return Result(CORRUPT, "not-a-recording", None, 0, detail="bad magic")
    if data[7] != VERSION:
        return Result(CORRUPT, "unknown-version", None, 0, detail=f"preamble version {data[7]}")

    pos = len(PREAMBLE)
    i = 0
    prev_head = b""
    prev_t = 0
    sid16 = b""
    pub: Ed25519PublicKey | None = None
    limit = 0  # checkpoint_frames
    unsigned = 0  # non-checkpoint frames (header and seal included) since the last checkpoint
    out_bytes = in_bytes = 0
    signed = 0
    signed_wall: int | None = None
    sealed = False  # a seal was read
    finished = False  # the seal's checkpoint was read

    def corrupt(code: str, detail: str) -> Result:
        return Result(CORRUPT, code, i, frame_off, i, signed, signed_wall, detail)

    while pos < n:
        frame_off = pos
        # 2. framing
        if n - pos >= 4:
            (blen,) = struct.unpack_from(">I", data, pos)
            if blen > MAX_BODY:
                return corrupt("oversize-frame", f"length prefix {blen}")
            torn = n - pos - 4 < blen + HEAD_LEN
        else:
            blen, torn = 0, True
        # 3. anything after the seal's checkpoint (a frame or stray bytes)
        if finished:
            return corrupt("data-after-seal", "bytes after the seal's checkpoint")
        if torn:
            return Result(INCOMPLETE, "torn-tail", i, frame_off, i, signed, signed_wall, "the file ends inside a frame")
        body = data[pos + 4 : pos + 4 + blen]
        stored = data[pos + 4 + blen : pos + 4 + blen + HEAD_LEN]

        try:
            if i == 0:
                # 4. frame 0
                kind, seq, t_us, fdata = decode_body(body)
                _need(seq == 0, f"frame 0 has seq {seq}", "sequence-gap")
                _need(kind == K_HEADER, "frame 0 is not a header", "no-header")
                check_header_version(fdata, deviations)
                sid16 = check_header_rules(fdata, deviations)
                head = _head(blake3.blake3(GENESIS_TAG + sid16).digest(), body)
                _need(head == stored, "stored head does not match", "hash-mismatch")
                raw, pub = check_header_signer(fdata)
                _need(raw in trusted, "signer is not trusted", "untrusted-signer")
                limit = fdata["checkpoint_frames"]
                unsigned = 1
                if "header-time" in deviations:
                    t_us = 0
            else:
                # 5.1 the chain
                head = _head(prev_head, body)
                if head != stored:
                    s = _body_seq(body)
                    if s is not None and s != i:
                        raise _Bad("sequence-gap", f"seq {s} at position {i}")
                    raise _Bad("hash-mismatch", "stored head does not match")
                # 5.2 decode, seq
                kind, seq, t_us, fdata = decode_body(body)
                _need(seq == i, f"seq {seq} at position {i}", "sequence-gap")
                # 5.3 time
                _need(t_us >= prev_t, f"t_us {t_us} < {prev_t}", "time-backwards")
                # 5.4 data rules
                check_data(kind, fdata, deviations)
                # 5.5 after the seal only its checkpoint
                _need(
                    not sealed or kind == K_CHECKPOINT, "frame between the seal and its checkpoint", "data-after-seal"
                )
                if kind == K_CHECKPOINT:
                    # 5.6 checkpoint
                    _need(fdata["index"] == seq - 1, f"checkpoint index {fdata['index']} at seq {seq}")
                    msg = CHECKPOINT_TAG + sid16 + struct.pack(">QQ", fdata["index"], fdata["wall_us"]) + prev_head
                    assert pub is not None
                    try:
                        pub.verify(fdata["sig"], msg)
                    except InvalidSignature:
                        raise _Bad("bad-signature", "checkpoint signature does not verify") from None
                    unsigned = 0
                    signed = seq
                    signed_wall = fdata["wall_us"]
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
                        _need(fdata["frames"] == seq, "seal frames", "seal-mismatch")
                        _need(fdata["output_bytes"] == out_bytes, "seal output_bytes", "seal-mismatch")
                        _need(fdata["input_bytes"] == in_bytes, "seal input_bytes", "seal-mismatch")
                        sealed = True
        except _Bad as e:
            return corrupt(e.code, e.detail)

        prev_head = head
        prev_t = t_us
        pos += 4 + blen + HEAD_LEN
        i += 1

    if finished:
        return Result(VALID, None, None, None, i, signed, signed_wall)
    if i == 0:
        return Result(INCOMPLETE, "empty", 0, pos, 0, 0, None, "no frames")
    code = "unsigned-seal" if sealed else "no-seal"
    return Result(INCOMPLETE, code, i, pos, i, signed, signed_wall, "the recording is not sealed")


def verify_file(
    data: bytes, trusted_keys: list[str], *, deviations: frozenset[str] = frozenset()
) -> tuple[str, str | None, int | None]:
    """(outcome, problem code, frame): the bad frame for CORRUPT (None for the preamble), the
    number of intact frames for INCOMPLETE, None for VALID."""
    r = verify(data, parse_trusted_keys(trusted_keys), deviations)
    return r.outcome, r.problem, r.frame


def _main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: independent_verifier.py KEYFILE.pub FILE...", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        trusted = parse_trusted_keys(f.read().splitlines())
    worst = 0
    for path in argv[1:]:
        with open(path, "rb") as f:
            r = verify(f.read(), trusted)
        if r.outcome == VALID:
            print(f"{path}: VALID frames={r.frames} signed={r.signed} wall_us={r.signed_wall_us}")
        elif r.outcome == INCOMPLETE:
            print(
                f"{path}: INCOMPLETE {r.problem} intact={r.frames} offset={r.offset} signed={r.signed} "
                f"wall_us={r.signed_wall_us} ({r.detail})"
            )
            worst = max(worst, 1)
        else:
            print(f"{path}: CORRUPT {r.problem} frame={r.frame} offset={r.offset} ({r.detail})")
            worst = 2
    return worst


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
