"""Adversarial review of the replay renderer: what a hostile recording can do to the reviewer's
view, checked by feeding what the renderer draws into a second, independent terminal (pyte) of
the reviewer's size and comparing it with the emulated screen."""

from __future__ import annotations

from pathlib import Path

import pyte
import pytest

from recorder import SigningKey
from replay import Renderer, SqliteSearchIndex, Terminal, index_recording
from tests.search_helpers import Script


def _reviewer_view(out: bytes, cols: int, rows: int) -> list[str]:
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    stream.feed(out)
    return [line.rstrip() for line in screen.display]


@pytest.mark.parametrize("mark", ["\u202e", "\u2066", "\u200f", "\u061c", "\u2028", "\u2029"])
def test_zero_width_bidi_marks_do_not_spill_rows_onto_the_status_line(mark: str) -> None:
    """The emulator combines a zero-width bidi mark into the cell before it; the renderer used to
    draw it as a one-column ``?``, so a row of 20 cells could take 320 columns on the reviewer's
    terminal: it wrapped over the rows below (which the row diff then never redrew) and over the
    status line, or scrolled the whole view. A recording could paint a fake status line
    ("VALID") or cover a command it typed with text of its choosing."""
    cols, rows = 20, 5
    t = Terminal(cols, rows)
    t.feed(b"top\r\n" + ("x" + mark * 15).encode() * cols + b"\r\nrm -rf /srv\r\nrow4")
    r = Renderer(cols, rows + 1)
    out = r.draw(t.screen(), "status")
    view = _reviewer_view(out, cols, rows + 1)
    assert view[0] == "top"
    assert view[2] == "rm -rf /srv", view
    assert view[3] == "row4", view
    assert view[rows].startswith("status"), view
    # a later frame that changes only the hostile row must not cover the unchanged rows below it
    t.feed(b"\x1b[2;1H" + ("y" + mark * 15).encode() * cols + b"\x1b[4;5H")
    out += r.draw(t.screen(), "status")
    view = _reviewer_view(out, cols, rows + 1)
    assert view[1].startswith("y" * 10) and view[2] == "rm -rf /srv" and view[rows].startswith("status"), view


def test_a_few_bytes_of_output_cannot_fill_the_disk_with_index_text(tmp_path: Path, key: SigningKey) -> None:
    """REP (``x ESC[10000b``) and DECALN + scroll-up make megabytes of lines from a few bytes of
    output: a 0.9 MB recording used to write 1.2 GB to search.db (which the bastion builds by
    itself, on the data dir's disk). The index now holds at most a few times the recording; what
    real output follows a flood is still indexed."""
    path = tmp_path / "flood.zsprec"
    s = Script(path, key, cols=1000, rows=500)
    for i in range(40):
        s.at(i * 0.01).out(b"x\x1b[10000b" * 250 + b"\x1b#8\x1b[500S" * 10)
    s.at(1.0).out(b"\x1b[2J\x1b[H" + b"".join(b"after the flood %d\r\n" % i for i in range(600)))
    s.close()
    db = tmp_path / "search.db"
    index = SqliteSearchIndex(db)
    try:
        index_recording(index, path, [key.public])
        assert index.search("after the flood 599", limit=5)
    finally:
        index.close()
    size = path.stat().st_size
    assert db.stat().st_size < 10 * size + (8 << 20), (size, db.stat().st_size)


def _row_widths(out: bytes) -> list[int]:
    """Columns each row drawn by the renderer takes on a terminal that measures text as wcwidth's
    ``wcswidth`` does (grapheme-aware: VS16 makes an emoji two columns wide, as in kitty, WezTerm,
    iTerm2, recent VTE)."""
    import re

    from wcwidth import wcswidth

    widths: list[int] = []
    for part in re.split(rb"(\x1b\[[\d;?]*[A-Za-z])", out):
        if part.startswith(b"\x1b["):
            if part.endswith(b"H"):
                widths.append(0)
            continue
        if part and widths:
            widths[-1] += max(wcswidth(part.decode()), 0)
    return widths


def test_emoji_presentation_selectors_do_not_widen_rows() -> None:
    """``U+2764 U+FE0F`` is one cell in the emulator; drawn as is, a terminal that honours VS16
    takes two columns for it, and a row of them spilled over the rows below and the status line."""
    cols, rows = 20, 4
    t = Terminal(cols, rows)
    t.feed("\u2764\ufe0f".encode() * cols + b"\r\nrm -rf /srv\r\n")
    out = Renderer(cols, rows + 1).draw(t.screen(), "VALID")
    assert max(_row_widths(out)) <= cols, _row_widths(out)


def test_keyframes_of_an_incompressible_screen_stay_proportional_to_the_recording(tmp_path: Path,
                                                                                 key: SigningKey) -> None:
    """A 400x200 screen of random letters with combining marks (about 400 KB of keyframe state),
    then cheap ``ESC[H`` output: a keyframe every 32 KiB made the seek cache (and the player's
    memory, which builds it on the first play) about 10x the recording, 50x at 1000x500."""
    import random

    from replay import verify
    from replay._seek import build_index, save_index

    rnd = random.Random(0)
    path = tmp_path / "bomb.zsprec"
    s = Script(path, key, cols=400, rows=200)
    for y in range(200):
        row = "".join(chr(rnd.randint(0x400, 0x4FF)) + "".join(chr(rnd.randint(0x300, 0x36F)) for _ in range(3))
                      for _ in range(400))
        s.at(y * 0.001).out(b"\x1b[%d;1H" % (y + 1) + row.encode()[:60000])
    for i in range(60):
        s.at(1 + i * 0.001).out(b"\x1b[H" * 11000)
    s.close()
    index = build_index(path, [key.public], verify(path, [key.public]))
    cache = tmp_path / "bomb.seek"
    assert save_index(index, cache)
    assert cache.stat().st_size < 5 * path.stat().st_size, (cache.stat().st_size, path.stat().st_size)
