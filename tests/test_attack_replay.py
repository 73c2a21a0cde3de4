"""Adversarial review of the replay renderer: what a hostile recording can do to the reviewer's
view, checked by feeding what the renderer draws into a second, independent terminal (pyte) of
the reviewer's size and comparing it with the emulated screen."""

from __future__ import annotations

import pyte
import pytest

from replay import Renderer, Terminal


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
