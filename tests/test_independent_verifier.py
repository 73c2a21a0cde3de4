"""Differential test: the independent verifier (written from docs/FORMAT.md alone) against the
production verifier `replay.verify`, on the golden vectors, on every single-byte flip and every
truncation of a small recording, and on a randomized campaign of edits (ZSP_LONG=1 runs more).

Both must agree on the outcome, the problem code and the frame (the bad frame for CORRUPT, the
number of intact frames for INCOMPLETE). Where they do not, the case is accepted only if the
independent verifier with the production deviations listed in `KNOWN_DEVIATIONS` (places where
replay.verify departs from, or reads differently, FORMAT.md) gives exactly the production
verdict; any other disagreement fails."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import SigningKey, load_trusted_keys
from replay import verify
from tests.helpers import fixed_session_id, rechain, split_frames, write_recording
from tests.independent_verifier import KNOWN_DEVIATIONS, verify_file

GOLDEN = Path(__file__).parent / "data" / "golden"
LONG = os.environ.get("ZSP_LONG") == "1"

Verdict = tuple[str, str | None, int | None]


def production(data: bytes, trusted: list[Any]) -> Verdict:
    r = verify(io.BytesIO(data), trusted)
    outcome = r.outcome.value
    code = r.problem.value if r.problem is not None else None
    if outcome == "CORRUPT":
        frame = r.bad_frame
    elif outcome == "INCOMPLETE":
        frame = r.frames
    else:
        frame = None
    return outcome, code, frame


def disagreement(data: bytes, keys: list[SigningKey]) -> str | None:
    """None when both verifiers agree, or disagree only by a known deviation."""
    lines = [k.public.openssh for k in keys]
    mine, theirs = verify_file(data, lines), production(data, [k.public for k in keys])
    if mine == theirs:
        return None
    compat = verify_file(data, lines, deviations=KNOWN_DEVIATIONS)
    if compat == theirs:
        return None
    return f"independent={mine} (with known deviations {compat}) production={theirs}"


# --------------------------------------------------------------------------- golden vectors


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.zsprec")))
def test_golden(name: str) -> None:
    data = (GOLDEN / name).read_bytes()
    lines = (GOLDEN / "signer.pub").read_text().splitlines()
    expected = json.loads((GOLDEN / "expected.json").read_text())[name]
    mine = verify_file(data, lines)
    theirs = production(data, load_trusted_keys(GOLDEN / "signer.pub"))
    assert mine == theirs
    assert mine == (expected["outcome"], expected["problem"], expected["bad_frame"])


# --------------------------------------------------------------------------- exhaustive


_cache: dict[tuple[Any, ...], bytes] = {}


def recording(key: SigningKey, seed: int = 0, frames: int = 4, checkpoint_frames: int = 3, seal: bool = True) -> bytes:
    k = (key.public.openssh, seed, frames, checkpoint_frames, seal)
    if k not in _cache:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "r.zsprec"
            write_recording(path, key, seed=seed, frames=frames, checkpoint_frames=checkpoint_frames, seal=seal)
            _cache[k] = path.read_bytes()
    return _cache[k]


def _disagreements(cases: list[tuple[str, bytes]], key: SigningKey) -> list[str]:
    out = []
    for label, data in cases:
        d = disagreement(data, [key])
        if d is not None:
            out.append(f"{label}: {d}")
    return out


@pytest.mark.parametrize("seal", [True, False])
def test_every_flip(key: SigningKey, seal: bool) -> None:
    data = recording(key, seal=seal)
    cases = []
    for pos in range(len(data)):
        for mask in (0x01, 0x80):
            b = bytearray(data)
            b[pos] ^= mask
            cases.append((f"flip {pos} ^{mask:#04x}", bytes(b)))
    assert _disagreements(cases, key) == []


@pytest.mark.parametrize("seal", [True, False])
def test_every_truncation(key: SigningKey, seal: bool) -> None:
    data = recording(key, seal=seal)
    cases = [(f"truncate {n}", data[:n]) for n in range(len(data) + 1)]
    assert _disagreements(cases, key) == []


FORGED_VALUES: list[Any] = [-1, 0, 1, 7, 2**63, 2**64 - 1, None, True, 1.0, "x", b"x", [1]]


def test_every_forged_edit(key: SigningKey) -> None:
    """A forger's edits (stored heads recomputed): every element of every body and every key of
    every map set to each value or deleted; every frame dropped or repeated, with `seq` renumbered."""
    data = recording(key, frames=6)
    sid = fixed_session_id(0)
    bodies = split_frames(data)
    cases = []

    def variant(i: int, label: str, change: Any) -> None:
        objs = [msgpack.unpackb(b, raw=False) for b in bodies]
        change(objs[i])
        forged = list(bodies)
        forged[i] = msgpack.packb(objs[i], use_bin_type=True)
        cases.append((f"frame {i} {label}", rechain(forged, sid)))

    for i, body in enumerate(bodies):
        obj = msgpack.unpackb(body, raw=False)
        for v in FORGED_VALUES:
            for j in range(4):
                variant(i, f"element {j} = {v!r}", lambda o, j=j, v=v: o.__setitem__(j, v))
            if isinstance(obj[3], dict):
                for k in [*obj[3], "zz"]:
                    variant(i, f"{k} = {v!r}", lambda o, k=k, v=v: o[3].__setitem__(k, v))
        if isinstance(obj[3], dict):
            for k in obj[3]:
                variant(i, f"del {k}", lambda o, k=k: o[3].pop(k))
    for i in range(len(bodies)):
        for label, reordered in (("dropped", bodies[:i] + bodies[i + 1 :]), ("repeated", bodies[: i + 1] + bodies[i:])):
            renumbered = []
            for n, body in enumerate(reordered):
                obj = msgpack.unpackb(body, raw=False)
                obj[1] = n
                renumbered.append(msgpack.packb(obj, use_bin_type=True))
            cases.append((f"frame {i} {label}, renumbered", rechain(renumbered, sid)))
    assert _disagreements(cases, key) == []


def _forged(key: SigningKey, edits: dict[int, Any]) -> bytes:
    """recording(key, frames=6) (0 header, 1 checkpoint, 10 seal, 11 its checkpoint) with bodies
    edited by a forger: {frame: function editing the decoded body}, stored heads recomputed."""
    bodies = split_frames(recording(key, frames=6))
    for i, change in edits.items():
        obj = msgpack.unpackb(bodies[i], raw=False)
        change(obj)
        bodies[i] = msgpack.packb(obj, use_bin_type=True)
    return rechain(bodies, fixed_session_id(0))


def _set(k: str, v: Any) -> Any:
    return lambda o: o[3].__setitem__(k, v)


def _del(k: str) -> Any:
    return lambda o: o[3].pop(k)


# deviation -> minimal reproductions: (edits, independent verdict, production verdict)
DEVIATION_CASES: dict[str, list[tuple[dict[int, Any], Verdict, Verdict]]] = {
    "nil-keys-optional": [
        ({0: _del("grant_id")}, ("CORRUPT", "malformed", 0), ("CORRUPT", "bad-signature", 1)),
        ({10: _del("exit_status")}, ("CORRUPT", "malformed", 10), ("CORRUPT", "bad-signature", 11)),
    ],
    "version-py-equal": [({0: _set("version", True)}, ("CORRUPT", "unknown-version", 0), ("CORRUPT", "malformed", 0))],
    "int63-ranges": [
        ({0: _set("started_at_us", 2**63)}, ("CORRUPT", "bad-signature", 1), ("CORRUPT", "malformed", 0)),
        ({1: _set("wall_us", 2**63)}, ("CORRUPT", "bad-signature", 1), ("CORRUPT", "malformed", 1)),
        ({10: _set("frames", 0)}, ("CORRUPT", "seal-mismatch", 10), ("CORRUPT", "malformed", 10)),
    ],
    "header-time": [
        # header t_us 1, then frame 1 an output at t_us 0
        (
            {0: lambda o: o.__setitem__(2, 1), 1: lambda o: o.__setitem__(slice(None), [1, 1, 0, b"x"])},
            ("CORRUPT", "time-backwards", 1),
            ("CORRUPT", "missing-signature", 3),
        )
    ],
}


@pytest.mark.parametrize("name", sorted(DEVIATION_CASES))
def test_former_deviations_now_follow_the_spec(key: SigningKey, name: str) -> None:
    """These cases once split the two verifiers; production was fixed to follow FORMAT.md."""
    for edits, mine, _old_production in DEVIATION_CASES[name]:
        data = _forged(key, edits)
        assert verify_file(data, [key.public.openssh]) == mine
        assert production(data, [key.public]) == mine


# --------------------------------------------------------------------------- randomized campaign

VALUES = st.one_of(
    st.sampled_from([0, 1, 6, 7, -1, 65536, 2**63, 2**64 - 1, True, None, "", "x", b"", b"\x00" * 64, 1.5, [], {}]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2000),
    st.text(max_size=4),
    st.binary(max_size=4),
)
KEY_NAMES = ["type", "message", "index", "wall_us", "sig", "frames", "output_bytes", "input_bytes", "exit_status",
             "reason", "version", "session_id", "signer", "checkpoint_frames", "grant_id", "zz"]  # fmt: skip
FRAC = st.floats(0, 1, exclude_max=True)
BODY_OPS = ["flip", "drop", "dup", "swap"]
RAW_OPS = ["flip", "drop", "dup", "swap", "truncate", "append", "setlen", "graft"]


@st.composite
def campaigns(draw: st.DrawFn) -> dict[str, Any]:
    """A recording (by its parameters), the keys trusted, and a list of edits: either a forger's
    (edit decoded bodies, reorder them, recompute every stored head) or raw byte/frame edits."""
    params = {
        "seed": draw(st.integers(0, 30)),
        "frames": draw(st.integers(0, 30)),
        "checkpoint_frames": draw(st.sampled_from([1, 2, 3, 8])),
        "seal": draw(st.booleans()),
    }
    forge = draw(st.booleans())
    edits = []
    if forge:
        for _ in range(draw(st.integers(0, 2))):
            edits.append(
                {
                    "kind": draw(st.one_of(st.none(), st.integers(0, 6))),
                    "at": draw(FRAC),
                    "where": draw(st.integers(0, 40)),
                    "value": draw(VALUES),
                    "key": draw(st.one_of(st.none(), st.sampled_from(KEY_NAMES))),
                    "delete": draw(st.booleans()),
                }
            )
    body_ops = draw(st.lists(st.tuples(st.sampled_from(BODY_OPS), FRAC, FRAC, FRAC), max_size=2)) if forge else []
    if forge and not edits and not body_ops:
        body_ops = [draw(st.tuples(st.sampled_from(BODY_OPS), FRAC, FRAC, FRAC))]
    if forge and draw(st.booleans()):
        # after the reorders, make `seq` (or `t_us`) follow the positions again
        body_ops.append((draw(st.sampled_from(["renumber", "retime"])), draw(FRAC), 0.0, 0.0))
    raw_ops = draw(
        st.lists(
            st.tuples(st.sampled_from(RAW_OPS), FRAC, FRAC, FRAC),
            min_size=0 if forge else 1,
            max_size=1 if forge else 3,
        )
    )
    return {
        "params": params,
        "trust": draw(st.sampled_from(["key", "key", "key", "other", "both"])),
        "edits": edits,
        "body_ops": body_ops,
        "raw_ops": raw_ops,
    }


def _edit(obj: list[Any], e: dict[str, Any]) -> None:
    """Edit one element of [kind, seq, t_us, data], or one key of a map `data`."""
    data = obj[3]
    if e["where"] < 4 or not isinstance(data, dict):
        obj[e["where"] % 4] = e["value"]
        return
    keys = sorted(data)
    name = e["key"] if e["key"] is not None or not keys else keys[e["where"] % len(keys)]
    if e["delete"]:
        data.pop(name, None)
    else:
        data[name] = e["value"]


def _reorder(items: list[bytes], op: str, a: float, b: float) -> list[bytes]:
    items = list(items)
    if not items:
        return items
    i, j = int(a * len(items)), int(b * len(items))
    if op == "drop":
        del items[i]
    elif op == "dup":
        items.insert(j, items[i])
    elif op == "swap":
        items[i], items[j] = items[j], items[i]
    return items


def _flip(buf: bytes, a: float, c: float) -> bytes:
    if not buf:
        return buf
    out = bytearray(buf)
    out[int(a * len(out))] ^= 1 << int(c * 8)
    return bytes(out)


def forge(data: bytes, seed: int, edits: list[dict[str, Any]], ops: list[tuple[str, float, float, float]]) -> bytes:
    """What a forger without the key can do: edit bodies, then recompute every stored head."""
    bodies = split_frames(data)
    for e in edits:
        objs = [msgpack.unpackb(b, raw=False) for b in bodies]
        pick = [i for i, o in enumerate(objs) if e["kind"] is None or o[0] == e["kind"]] or list(range(len(objs)))
        i = pick[int(e["at"] * len(pick))]
        _edit(objs[i], e)
        bodies[i] = msgpack.packb(objs[i], use_bin_type=True)
    for op, a, b, c in ops:
        if op == "flip" and bodies:
            i = int(a * len(bodies))
            bodies[i] = _flip(bodies[i], b, c)
        elif op in ("renumber", "retime"):
            # `seq` (or `t_us`) follows the positions, where the body decodes
            for i, body in enumerate(bodies):
                try:
                    obj = msgpack.unpackb(body, raw=False)
                    obj[1 if op == "renumber" else 2] = i if op == "renumber" else i * int(1 + a * 3000)
                    bodies[i] = msgpack.packb(obj, use_bin_type=True)
                except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                    continue  # a body an earlier flip broke stays as it is
        else:
            bodies = _reorder(bodies, op, a, b)
    return rechain(bodies, fixed_session_id(seed))


def _spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every complete frame after a well-formed preamble, read by length prefix."""
    spans: list[tuple[int, int]] = []
    pos = 8
    while data[:8] == b"ZSPREC\x00\x01" and pos + 4 <= len(data):
        end = pos + 4 + struct.unpack_from(">I", data, pos)[0] + 32
        if end > len(data):
            break
        spans.append((pos, end))
        pos = end
    return spans


def raw_edit(data: bytes, op: str, a: float, b: float, c: float, other: bytes) -> bytes:
    spans = _spans(data)
    if op == "truncate":
        return data[: int(a * (len(data) + 1))]
    if op == "flip":
        return _flip(data, a, c)
    if op == "append":
        s, e = spans[int(b * len(spans))] if spans else (0, 1)
        return data + data[s:e][: max(1, int(c * (e - s) + 1))]
    if not spans:
        return data
    frames = [data[s:e] for s, e in spans]
    i = int(a * len(frames))
    if op == "setlen":
        frames[i] = struct.pack(">I", int(c * 2**21) if b < 0.5 else int(c * 2**32)) + frames[i][4:]
    elif op == "graft":
        # the frame at the same position in another recording (another session id)
        others = _spans(other)
        if i < len(others):
            frames[i] = other[others[i][0] : others[i][1]]
    else:
        frames = _reorder(frames, op, a, b)
    return data[:8] + b"".join(frames) + data[spans[-1][1] :]


def build(case: dict[str, Any], key: SigningKey) -> bytes:
    p = case["params"]
    data = recording(key, **p)
    if case["edits"] or case["body_ops"]:
        data = forge(data, p["seed"], case["edits"], case["body_ops"])
    other = recording(key, **{**p, "seed": p["seed"] + 1})
    for op, a, b, c in case["raw_ops"]:
        data = raw_edit(data, op, a, b, c, other)
    return data


@settings(
    max_examples=20000 if LONG else 600,
    deadline=None,
    derandomize=not LONG,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=campaigns())
def test_random_edits(key: SigningKey, other_key: SigningKey, case: dict[str, Any]) -> None:
    trusted = {"key": [key], "other": [other_key], "both": [other_key, key]}[case["trust"]]
    assert disagreement(build(case, key), trusted) is None
