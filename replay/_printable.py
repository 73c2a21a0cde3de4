"""One way to put untrusted text on a terminal or into a line-based log: :func:`printable`.

Everything zsp shows a person (CLI tables and lines, control-command replies over SSH, messages
the bastion writes to an operator's stderr or to its own log, syslog) passes the fields it did not
write itself through this function. Those fields come from people and machines that may be
hostile: key comments, exec command lines, subsystem names, SSH user names, a target's error
messages, recording headers. Printed raw, an escape sequence repaints the reviewer's screen (a
forged ``VALID`` over a real ``INCOMPLETE``, erased lines, a new window title, an OSC 52 clipboard
write), and a bare newline forges a whole line that survives ``grep`` and log files.

The result is one line of text with no character a terminal acts on. What is escaped, and how:

=====================================================  ===========================================
input                                                  shown as
=====================================================  ===========================================
backslash                                              ``\\\\`` (so every ``\\`` starts an escape)
newline, carriage return, tab                          ``\\n``, ``\\r``, ``\\t``
other C0 controls (U+0000-U+001F), DEL (U+007F)        ``\\xNN`` (NN < 80: an ASCII control)
a byte that is not valid UTF-8 (bytes input, or the    ``\\xNN`` (NN >= 80: a raw byte; Python's
surrogate-escaped str that ``os.fsdecode`` and          ``surrogateescape`` convention)
``sys.argv`` produce)
C1 controls (U+0080-U+009F; U+009B is a one-byte CSI)  ``\\u009b``
format characters (Unicode category Cf): bidi          ``\\u202e``, ``\\U000e0041``
embeddings, overrides and isolates (U+202A-U+202E,
U+2066-U+2069), marks (U+200E, U+200F, U+061C),
zero-width space/joiners, soft hyphen, BOM, the
invisible tag characters (U+E0000 block), ...
line and paragraph separators (U+2028, U+2029)         ``\\u2028``, ``\\u2029``
other lone surrogates                                  ``\\udXXX``
=====================================================  ===========================================

Everything else passes unchanged, including non-ASCII letters, symbols, emoji, combining marks and
non-ASCII spaces: they are visible, and a reviewer must be able to read a reason written in Greek.
Private-use and unassigned code points also pass (they show as a glyph or a box; no terminal acts
on them), which keeps the output independent of the Python's Unicode version.

The escape form is unambiguous: every backslash in the output starts exactly one escape, so two
different inputs never print the same (the mapping is injective; tests check it with hypothesis).
JSON output is never passed through here: ``json.dumps`` already escapes control characters, and
machine readers need the exact value.

Speed: text that is already safe (``str.isprintable()`` and no backslash, both C loops) is returned
as is; only the rest is rebuilt, one regular-expression match per character that needs a look-up.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["printable"]

_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Candidates for escaping: anything that is not printable ASCII, and the backslash itself.
_CANDIDATE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


@lru_cache(maxsize=4096)
def _escape_char(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x80:  # C0 controls and DEL
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: an undecodable byte 0x80-0xFF
        return f"\\x{code - 0xDC00:02x}"
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _replace(match: re.Match[str]) -> str:
    return _escape_char(match.group())


def printable(value: str | bytes) -> str:
    """``value`` as one line that is safe to print to a terminal or a line-based log.

    ``bytes`` are decoded as UTF-8; bytes that do not decode are shown as ``\\xNN``. See the module
    docstring for exactly what is escaped and how.
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
    else:
        text = value
    if text.isprintable() and "\\" not in text:
        return text
    return _CANDIDATE.sub(_replace, text)
