"""The reader never crashes, hangs or allocates without bound, whatever the bytes."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import PREAMBLE, SigningKey
from replay import Outcome, Problem, verify
from tests.helpers import frame_spans

LONG = os.environ.get("ZSP_LONG") == "1"
fuzz = settings(max_examples=3000 if LONG else 300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def frame(body: bytes, head: bytes = b"\0" * 32) -> bytes:
    return struct.pack(">I", len(body)) + body + head


def check(data: bytes, key: SigningKey):
    return verify(io.BytesIO(data), [key.public])


@fuzz
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_after_preamble(key: SigningKey, tail: bytes) -> None:
    r = check(PREAMBLE + tail, key)
    assert r.outcome is not Outcome.VALID


@fuzz
@given(st.binary(max_size=512))
def test_arbitrary_bytes_anywhere(key: SigningKey, data: bytes) -> None:
    assert check(data, key).outcome is not Outcome.VALID


@fuzz
@given(st.binary(max_size=2048), st.integers(0, 10_000))
def test_garbage_spliced_into_a_real_recording(key: SigningKey, small_recording: bytes,
                                               garbage: bytes, at: int) -> None:
    at = 8 + at % (len(small_recording) - 8)
    r = check(small_recording[:at] + garbage + small_recording[at:], key)
    assert r.outcome is not Outcome.VALID or garbage == b""


def test_huge_length_prefix_is_reported_not_allocated(key: SigningKey, small_recording: bytes) -> None:
    tracemalloc.start()
    try:
        r = check(PREAMBLE + b"\xff\xff\xff\xff" + b"x" * 100, key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.OVERSIZE
    assert r.bad_offset == 8 and "4294967295" in r.detail
    assert peak < 4 << 20
    # Same after valid frames: pinned to the frame that follows them.
    spans = frame_spans(small_recording)
    cut = spans[5][1]
    r = check(small_recording[:cut] + b"\x7f\xff\xff\xff", key)
    assert r.problem is Problem.OVERSIZE and r.bad_frame == 6 and r.bad_offset == cut


def test_length_just_over_cap_and_torn_at_cap(key: SigningKey) -> None:
    r = check(PREAMBLE + struct.pack(">I", (1 << 20) + 1), key)
    assert r.problem is Problem.OVERSIZE
    r = check(PREAMBLE + struct.pack(">I", 1 << 20) + b"\x00" * 10, key)
    assert r.outcome is Outcome.INCOMPLETE and r.problem is Problem.TORN


def test_deep_nesting_is_malformed(key: SigningKey) -> None:
    body = b"\x91" * 100_000 + b"\xc0"  # fixarray(1) nested 100k deep
    r = check(PREAMBLE + frame(body), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.MALFORMED and r.bad_frame == 0
    assert r.bad_offset == 8


def test_ext_types_are_malformed(key: SigningKey) -> None:
    body = msgpack.packb([0, 0, 0, msgpack.ExtType(5, b"abc")])
    r = check(PREAMBLE + frame(body), key)
    assert r.outcome is Outcome.CORRUPT and r.problem is Problem.MALFORMED and r.bad_offset == 8


def test_trailing_bytes_inside_a_frame_are_malformed(key: SigningKey) -> None:
    body = msgpack.packb([0, 0, 0, {}]) + b"\x00"
    r = check(PREAMBLE + frame(body), key)
    assert r.problem is Problem.MALFORMED and "ExtraData" in r.detail


def test_wrong_shapes_are_malformed(key: SigningKey) -> None:
    for obj in ([], [0, 0, 0], [99, 0, 0, b""], [0, -1, 0, {}], [0, 0, 1.5, {}], {"a": 1},
                [True, 0, 0, {}], [0, 0, 0, {1: 2}], [0, 0, 0, {"version": 1}]):
        r = check(PREAMBLE + frame(msgpack.packb(obj)), key)
        assert r.outcome is Outcome.CORRUPT and r.problem in (Problem.MALFORMED, Problem.NO_HEADER), obj


def test_invalid_utf8_string_is_malformed(key: SigningKey) -> None:
    body = msgpack.packb([0, 0, 0, {}])[:-1] + b"\x81\xa1\xff\x01"  # map with a non-UTF-8 key
    r = check(PREAMBLE + frame(body), key)
    assert r.problem is Problem.MALFORMED


class EndlessStream(io.RawIOBase):
    """A stream of valid-looking but unchained frames that never ends: the verifier must stop."""

    def __init__(self, key: SigningKey) -> None:
        self.reads = 0
        self.chunk = PREAMBLE + frame(msgpack.packb([1, 0, 0, b"x" * 100])) * 1000

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self.chunk


def test_endless_garbage_stream_stops_at_first_bad_frame(key: SigningKey) -> None:
    s = EndlessStream(key)
    r = verify(s, [key.public])
    assert r.outcome is Outcome.CORRUPT and s.reads <= 2
