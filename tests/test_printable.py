"""``replay.printable``: the one function between untrusted text and a person's terminal or log.

Properties (hypothesis, over all of Unicode including lone surrogates, and over arbitrary bytes):
the output holds no character a terminal acts on, is one line, and decodes back to the exact input,
so two inputs that differ never print the same.
"""

from __future__ import annotations

import re
import unicodedata

import pyte
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay import printable

DANGEROUS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_ESCAPE = re.compile(r"\\(?:(\\)|([nrt])|x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))")


def unescape(shown: str) -> str:
    """The inverse of ``printable`` on str (a test oracle: it exists only if printable is injective).
    ``\\xNN`` with NN >= 80 is an undecodable byte, which Python's surrogateescape spells U+DCNN."""
    out: list[str] = []
    pos = 0
    for m in _ESCAPE.finditer(shown):
        literal = shown[pos : m.start()]
        assert "\\" not in literal, f"a backslash that starts no escape at {pos}: {shown!r}"
        out.append(literal)
        backslash, short, byte, u4, u8 = m.groups()
        if backslash:
            out.append("\\")
        elif short:
            out.append({"n": "\n", "r": "\r", "t": "\t"}[short])
        elif byte:
            n = int(byte, 16)
            out.append(chr(n) if n < 0x80 else chr(0xDC00 + n))
        else:
            out.append(chr(int(u4 or u8, 16)))
        pos = m.end()
    tail = shown[pos:]
    assert "\\" not in tail, shown
    out.append(tail)
    return "".join(out)


def assert_safe(shown: str) -> None:
    bad = [f"U+{ord(c):04X}" for c in shown if unicodedata.category(c) in DANGEROUS]
    assert not bad, f"raw control or format characters {bad} in {shown!r}"
    assert len(shown.splitlines()) <= 1, shown


# --- the escape table, case by case ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, 42", "plain text, 42"),
        ("naïve Ελληνικά 漢字 🙂", "naïve Ελληνικά 漢字 🙂"),  # visible letters pass unchanged
        ("a\\b", "a\\\\b"),
        ("\\x1b", "\\\\x1b"),  # the text of an escape is not the escape
        ("line1\nline2", "line1\\nline2"),
        ("INCOMPLETE\rVALID     ", "INCOMPLETE\\rVALID     "),
        ("a\tb", "a\\tb"),
        ("\x1b[2K\x1b[1A", "\\x1b[2K\\x1b[1A"),  # erase line, cursor up
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # window title
        ("\x1b]52;c;cm0gLXJmIH4K\x07", "\\x1b]52;c;cm0gLXJmIH4K\\x07"),  # OSC 52 clipboard write
        ("\x00\x7f", "\\x00\\x7f"),
        ("\x9b2J", "\\u009b2J"),  # C1 CSI: one character that starts a control sequence
        ("\x85", "\\u0085"),  # NEL, a C1 newline
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202eevil\u202c", "\\u202eevil\\u202c"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c"),
        ("\u200b\u200d\ufeff\u00ad", "\\u200b\\u200d\\ufeff\\u00ad"),
        ("\U000e0041\U000e007f", "\\U000e0041\\U000e007f"),  # invisible tag characters
        ("\udc9b", "\\x9b"),  # surrogateescape spelling of an undecodable byte (sys.argv, os.fsdecode)
        ("\ud800", "\\ud800"),  # another lone surrogate: cannot even be encoded to UTF-8
        (b"ok \xe2\x82\xac", "ok €"),
        (b"\xff\xfe\x1b[31m", "\\xff\\xfe\\x1b[31m"),
        (b"\xc2\x9b", "\\u009b"),  # U+009B encoded...
        (b"\x9b", "\\x9b"),  # ...differs from a lone 0x9b byte
        (b"\xe2\x80", "\\xe2\\x80"),  # truncated sequence
        ("", ""),
    ],
)
def test_escape_table(raw: str | bytes, shown: str) -> None:
    assert printable(raw) == shown
    assert_safe(printable(raw))


def test_safe_text_is_returned_as_is() -> None:
    text = "alice -> root@db1 for 30m: INC-7 vacuum (ä, €)"
    assert printable(text) is text


# --- properties -----------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60)
hostile_text = st.lists(
    st.sampled_from(
        ["\x1b", "[", "]", "\\", "\n", "\r", "\x07", "\x9b", "\u202e", "\udc80", "\udcff", "a", "é", "0", ";",
         "\U000e0041", "\x85", "\u2028", "\x00", "\x7f", "x", "u", "U"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=800, deadline=None)
@given(st.one_of(any_text, hostile_text))
def test_output_is_safe_one_line_and_decodes_to_the_input(text: str) -> None:
    shown = printable(text)
    assert_safe(shown)
    assert unescape(shown) == text


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_bytes_are_safe_and_exact(data: bytes) -> None:
    shown = printable(data)
    assert_safe(shown)
    assert unescape(shown).encode("utf-8", "surrogateescape") == data


@settings(max_examples=400, deadline=None)
@given(st.one_of(any_text, hostile_text), st.one_of(any_text, hostile_text))
def test_distinct_inputs_print_distinctly(a: str, b: str) -> None:
    if a != b:
        assert printable(a) != printable(b)


@settings(max_examples=200, deadline=None)
@given(hostile_text)
def test_a_terminal_shows_exactly_the_escaped_text(text: str) -> None:
    """What a reviewer sees: a real terminal emulator, a verdict line, then a hostile field. The
    verdict stays on screen, the cursor never leaves the field's line, the title never changes."""
    screen = pyte.Screen(200, 5)
    stream = pyte.ByteStream(screen)
    stream.feed(b"INCOMPLETE  s.zsprec\r\n")
    shown = printable(text)
    stream.feed(f"user={shown}".encode())
    assert screen.display[0].rstrip() == "INCOMPLETE  s.zsprec"
    assert screen.display[1].rstrip() == f"user={shown}"[:200].rstrip()
    assert screen.cursor.y == 1 and screen.title == ""
