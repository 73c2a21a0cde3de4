"""The renderer: a closed vocabulary of drawing sequences, whatever the screen holds; row diffs;
a viewport that follows the cursor; the status line."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from replay import DEFAULT_STYLE, Renderer, Screen, Style, Terminal
from tests.test_play_pty import check_output

CUP = re.compile(rb"\x1b\[(\d+);(\d+)H")


def _screen(lines: list[str], cols: int = 20, cursor: tuple[int, int] = (0, 0), style: Style = DEFAULT_STYLE,
            visible: bool = True) -> Screen:
    rows = len(lines)
    runs = tuple(((line.ljust(cols)[:cols], style),) for line in lines)
    return Screen(cols, rows, tuple(lines), runs, (False,) * rows, cursor, visible, False, "title")


def test_control_characters_in_cells_are_drawn_as_question_marks() -> None:
    """The emulator never puts them there; if it ever did, the renderer is the last line of defence."""
    hostile = ["\x1b]52;c;eA==\x07", "\x9b6n\x9d0;t\x9c", "a\x00b\x7fc\x1bd", "\ud800 lone \x85", "\u202eok"]
    out = Renderer(40, 10).draw(_screen(hostile, 30), "status \x1b[6n \x9b")
    check_output(out)
    assert b"?]52;c;eA==?" in out and b"?6n?0;t?" in out and b"a?b?c?d" in out
    assert b"title" not in out


def test_only_changed_rows_are_redrawn() -> None:
    r = Renderer(30, 8)
    lines = ["one", "two", "three", "four", "", ""]
    first = r.draw(_screen(lines), "s")
    assert len(CUP.findall(first)) >= 6
    assert r.draw(_screen(lines), "s") == b""  # nothing changed: nothing written
    lines[2] = "THREE"
    again = r.draw(_screen(lines, cursor=(5, 2)), "s")
    rows = {int(m[0]) for m in CUP.findall(again)}
    assert 3 in rows and not rows & {1, 2, 4, 5, 6, 8}
    assert b"THREE" in again and b"one" not in again and b"\x1b[2J" not in again


def test_smaller_terminal_gets_a_viewport_that_follows_the_cursor() -> None:
    lines = [f"row {y:02d} " + "x" * 90 + f"END{y:02d}" for y in range(40)]
    r = Renderer(80, 24)
    out = r.draw(_screen(lines, cols=120, cursor=(110, 35)), "st")
    assert r.cropped
    ox, oy = r.origin
    assert ox <= 110 < ox + 80 and oy <= 35 < oy + 23
    assert b"END35" in out and b"row 00" not in out
    # The cursor is drawn inside the terminal, at its place in the viewport.
    *_, last = CUP.findall(out)
    assert (int(last[0]), int(last[1])) == (35 - oy + 1, 110 - ox + 1)
    assert r.draw(_screen(lines[:20], cols=60, cursor=(0, 0)), "st") and not r.cropped


def test_wide_characters_cut_by_the_viewport_become_spaces() -> None:
    line = "ab" + "中" * 30
    screen = Screen(62, 1, (line,), ((( line, DEFAULT_STYLE),),), (False,), (61, 0), True, False, "")
    out = Renderer(11, 2).draw(screen, "")
    check_output(out)
    text = re.sub(rb"\x1b\[[\d;?]*[A-Za-z]", b"", out).decode()
    assert "中" in text and text.count("中") <= 5


def test_concealed_text_is_shown_dim_not_hidden() -> None:
    out = Renderer(30, 4).draw(_screen(["secret"], style=Style(hidden=True)), "")
    assert b"secret" in out and b";8" not in out and b"\x1b[0;2m" in out


def test_status_line_is_clipped_to_the_width_and_never_written_in_the_last_column() -> None:
    r = Renderer(20, 5)
    out = r.draw(_screen(["x"]), "a very long status line that goes on and on")
    status = out[out.index(b"\x1b[5;1H") :]
    text = re.sub(rb"\x1b\[[\d;?]*[A-Za-z]", b"", status)
    assert len(text) == 19


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), cols=st.integers(1, 40), rows=st.integers(1, 12),
       tcols=st.integers(1, 50), trows=st.integers(1, 15))
def test_any_bytes_render_to_allowed_sequences_only(data: bytes, cols: int, rows: int, tcols: int, trows: int) -> None:
    term = Terminal(cols, rows)
    r = Renderer(tcols, trows)
    half = len(data) // 2
    term.feed(data[:half])
    out = r.draw(term.screen(), "s")
    term.feed(data[half:])
    out += r.draw(term.screen(), "t")
    check_output(out)


def test_screen_text_keeps_backslashes_and_takes_out_bidi_overrides() -> None:
    from replay import Terminal, safe_text

    t = Terminal(40, 3)
    t.feed("echo \\033 \u202eevil\u202c \u2067x\u2069 \u05d0 ok\r\n".encode())
    line = t.screen().lines[0]
    shown = safe_text(line)
    assert "\\033" in shown  # backslashes are text on the screen, not escapes
    assert not any(c in shown for c in "\u202e\u202c\u2067\u2069") and "\u05d0" in shown
    assert shown.count("?") == 4
