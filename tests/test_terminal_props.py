"""Properties of the replay terminal emulator (hypothesis), and a differential test against pyte.

- ``feed`` never raises, on arbitrary bytes and on bytes mixed with escape-sequence fragments, and
  no control character ever lands in a cell;
- feeding the same bytes split at any points gives the same state as feeding them at once;
- ``dump``/``load`` round-trips, and feeding more bytes after a load gives what feeding them
  without the round trip gives;
- ``load`` on garbage raises ``ReplayError`` and nothing else;
- on streams of printable ASCII, CR, LF, BS and a few CSI, the text equals pyte's.
"""

from __future__ import annotations

import re

import msgpack
import pyte
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wcwidth import wcwidth

from replay import ReplayError, Terminal

FRAGMENTS = [
    b"\x1b",
    b"\x1b[",
    b"\x1b]",
    b"\x1bP",
    b"\x1b_",
    b"\x1b(0",
    b"\x1b(B",
    b"\x1b)0",
    b"\x0e",
    b"\x0f",
    b"\x07",
    b"\x1b\\",
    b"\x18",
    b";",
    b":",
    b"?",
    b">",
    b"1049h",
    b"1049l",
    b"47h",
    b"?25l",
    b"?7l",
    b"?6h",
    b"4h",
    b"4l",
    b"\r",
    b"\n",
    b"\r\n",
    b"\x08",
    b"\t",
    b"\x1b7",
    b"\x1b8",
    b"\x1bc",
    b"\x1bM",
    b"\x1bD",
    b"\x1bE",
    b"\x1bH",
    b"\x1b#8",
    "中".encode(),
    "😀".encode(),
    b"e\xcc\x81",
    b"\xcc\x81",
    b"\xe4\xb8",
    b"\xff",
    b"\xc2\x9b",
    b"\x9b",
    b"abc",
    b"0123456789",
    b" ",
] + [bytes([c]) for c in b"0123456789ABCDEFGHJKLMPSTXZ@`abcdefghlmnqrstu"]

fragments = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=4)), max_size=60).map(b"".join)
sizes = st.tuples(st.integers(1, 12), st.integers(1, 6))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_clean_rows(t: Terminal) -> None:
    """The emulator's cache of what rows hold (what lets ED 2 or SU on a blank screen cost
    O(rows), and a row written from a line scroll off without joining its cells) must never be
    wrong: a row it calls blank must be blank in that style, a row it knows the text of must
    hold exactly that text. A wrong entry would make an erase skip content, or report a line
    that is not on screen."""
    buffers = [(t._chars, t._styles, t._clean), (t._other[0], t._other[1], t._other[3])]
    for chars, styles, clean in buffers:
        assert len(chars) == len(styles) == len(clean) == t.rows
        for row, srow, known in zip(chars, styles, clean, strict=True):
            assert len(row) == len(srow) == t.cols
            if isinstance(known, str):
                assert row == list(known) + [" "] * (t.cols - len(known))
            elif known is not None:
                assert row == [" "] * t.cols
                assert all(style is known for style in srow)


def _check_cells(t: Terminal) -> None:
    _check_clean_rows(t)
    s = t.screen()
    for y in range(s.rows):
        assert not _CONTROL.search(s.lines[y])
        assert t.line(y) == s.lines[y]
        assert t.is_wrapped(y) == s.wrapped[y]
        width = 0
        for text, _ in s.runs[y]:
            for ch in text:
                assert not _CONTROL.match(ch)
                width += max(wcwidth(ch), 0)
        assert width == s.cols
    x, y = s.cursor
    assert 0 <= x <= s.cols and 0 <= y < s.rows


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), sizes)
def test_feed_never_raises_on_arbitrary_bytes(data: bytes, size: tuple[int, int]) -> None:
    t = Terminal(*size)
    t.feed(data)
    _check_cells(t)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fragments, sizes, st.lists(st.tuples(st.integers(1, 12), st.integers(1, 6)), max_size=2))
def test_feed_never_raises_on_escape_fragments(
    data: bytes, size: tuple[int, int], resizes: list[tuple[int, int]]
) -> None:
    t = Terminal(*size)
    t.feed(data)
    for cols, rows in resizes:
        t.resize(cols, rows)
        t.feed(data)
    _check_cells(t)
    t.take_lines()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(fragments, sizes, st.lists(st.integers(0, 400), max_size=6))
def test_split_feeds_equal_one_feed(data: bytes, size: tuple[int, int], cuts: list[int]) -> None:
    whole = Terminal(*size)
    whole.feed(data)
    split = Terminal(*size)
    points = sorted({min(c, len(data)) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        split.feed(data[start:point])
        start = point
    _check_clean_rows(whole)
    _check_clean_rows(split)
    assert split.screen() == whole.screen()
    assert split.take_lines() == whole.take_lines()
    assert split.dump() == whole.dump()


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(fragments, fragments, sizes)
def test_dump_load_round_trip(before: bytes, after: bytes, size: tuple[int, int]) -> None:
    t = Terminal(*size)
    t.feed(before)
    state = t.dump()
    loaded = Terminal.load(state)
    assert loaded.dump() == state
    assert loaded.screen() == t.screen()
    loaded.feed(after)
    t.feed(after)
    assert loaded.screen() == t.screen()
    assert loaded.dump() == t.dump()


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_load_garbage_raises_replay_error(data: bytes) -> None:
    try:
        Terminal.load(data)
    except ReplayError:
        pass


_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20), st.binary(max_size=20)
)
_msgpack_values = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)


@settings(max_examples=200)
@given(_msgpack_values)
def test_load_msgpack_of_the_wrong_shape_raises_replay_error(value: object) -> None:
    try:
        Terminal.load(msgpack.packb(value))
    except ReplayError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(fragments, sizes, st.data())
def test_load_of_a_mutated_dump_raises_replay_error_or_loads(
    data: bytes, size: tuple[int, int], draw: st.DataObject
) -> None:
    t = Terminal(*size)
    t.feed(data)
    state = bytearray(t.dump())
    for _ in range(draw.draw(st.integers(1, 4))):
        i = draw.draw(st.integers(0, len(state) - 1))
        state[i] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(state)))
    try:
        loaded = Terminal.load(bytes(state[:cut]) if draw.draw(st.booleans()) else bytes(state))
    except ReplayError:
        return
    loaded.feed(data)  # whatever loaded must still work
    _check_cells(loaded)


# -- differential test against pyte ----------------------------------------------------------------
# Restricted to what both emulators agree on: text is written only right after a CUP to a column
# that leaves room for it (pyte's pending-wrap handling differs from xterm's at the right margin),
# ED/EL modes are 0-2 (pyte 0.8.2 raises on others), and pyte's sparse-buffer DL bug is worked
# around below.

_ops = st.one_of(
    st.tuples(
        st.integers(1, 8),
        st.integers(1, 12),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
    ).map(lambda t: b"\x1b[%d;%dH" % (t[0], t[1]) + t[2].encode()),
    st.sampled_from(
        [b"\r", b"\n", b"\r\n", b"\x08", b"\x1b[K", b"\x1b[1K", b"\x1b[2K", b"\x1b[J", b"\x1b[1J", b"\x1b[2J"]
    ),
    # IL/DL then CR: pyte returns to column 0 on IL/DL (as VT510); tmux, our oracle, does not
    st.sampled_from([b"\x1b[L\r", b"\x1b[2L\r", b"\x1b[M\r", b"\x1b[3M\r"]),
    st.sampled_from([b"\x1b[1m", b"\x1b[31m", b"\x1b[0m", b"\x1b[44m", b"\x1b[m"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ops, max_size=40))
def test_text_equals_pyte(ops: list[bytes]) -> None:
    data = b"".join(ops)
    assume(data)
    cols, rows = 20, 8
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    for op in ops:
        # pyte's DL only moves rows present in its sparse buffer (a blank row below is not moved
        # up, so the deleted row survives): make every row present first.
        for y in range(rows):
            screen.buffer[y]
        stream.feed(op)
    t = Terminal(cols, rows)
    t.feed(data)
    expected = tuple(line.rstrip() for line in screen.display)
    assert t.screen().lines == expected
    assert t.cursor == (screen.cursor.x, screen.cursor.y)


# -- the fast paths equal the token-at-a-time path -------------------------------------------------
# Fed one byte at a time, CR LF never arrives as one token and no run of lines is ever seen at once,
# so every line goes through the general path; fed whole, runs of lines take Terminal._lines and
# Terminal._bulk, and runs of text and SGRs Terminal._segment.

_line = st.tuples(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=14),
    st.sampled_from([b"", b"\x1b[K"]),
).map(lambda t: t[0].encode() + t[1] + b"\r\n")
_extra = st.sampled_from(
    [
        b"\x1b[31m",
        b"\x1b[44m",
        b"\x1b[0m",
        b"\x1b[1;3r",
        b"\x1b[2;4r",
        b"\x1b[r",
        b"\x1b[H",
        b"\x1b[3;5H",
        b"\x1b[?1049h",
        b"\x1b[?1049l",
        "中".encode(),
        b"\x1b(0",
        b"\x1b(B",
        b"\x1b[4h",
        b"\x1b[4l",
        b"\x1b[2J",
        b"x\x1b[31my\x1b[mz",
        b"ab\x1b[1mcd\x1b(B\x1b[m\x1b[K",
        b"\x1b[32m\x1b[1mname\x1b(B\x1b[m\x1b[K\r\n",
        b"p\x1b[Kq\x1b[44m\x1b[K",
        "é\x1b[1m中".encode(),
        b"0123456789ab",
        b"\n",
        b"\x1b[K",
    ]
)
_line_streams = st.lists(st.one_of(_line, _line, _line, _extra), max_size=50).map(b"".join)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_line_streams, st.tuples(st.integers(1, 12), st.integers(1, 6)))
def test_fast_paths_equal_byte_at_a_time(data: bytes, size: tuple[int, int]) -> None:
    whole = Terminal(*size)
    whole.feed(data)
    slow = Terminal(*size)
    for i in range(len(data)):
        slow.feed(data[i : i + 1])
    _check_clean_rows(whole)
    _check_clean_rows(slow)
    assert whole.screen() == slow.screen()
    assert whole.scrolled == slow.scrolled
    assert whole.take_lines(end=True) == slow.take_lines(end=True)
    assert whole.dump() == slow.dump()
