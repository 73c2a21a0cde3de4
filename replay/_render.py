"""Draw an emulated :class:`Screen` onto a real terminal, with nothing of the recording executed.

This is the only place where anything recorded reaches a reviewer's terminal, so the output is
built from a closed vocabulary, and every character of text is checked again here:

* ``ESC [ row ; col H`` (CUP), ``ESC [ ... m`` (SGR, from :class:`Style` values only),
  ``ESC [ K`` (EL), ``ESC [ 2 J`` (ED), ``ESC [ ? 25 h/l`` (cursor shown/hidden);
* the cells' text, in which every C0 control, DEL and C1 control becomes ``?`` (the emulator
  never puts them in cells; this is the last line of defence), as do bidirectional overrides and
  isolates (a bidi terminal would reorder the line around them; in the grid, where they are
  zero-width marks combined into a cell, they are left out so that no row grows wider), and anything that cannot be
  encoded (a lone surrogate) becomes ``?`` too.

Titles, clipboard writes, hyperlinks, queries and mode changes in the recording are never
forwarded: they are not part of a :class:`Screen`. Concealed text (SGR 8) is drawn dim rather
than invisible, so a recording cannot hide a line from its reviewer.

Only rows that changed since the last frame are redrawn (a row is compared as the emulator's
tuple of runs, so an unchanged row costs one comparison), which keeps 16x playback cheap.

When the reviewer's terminal is smaller than the recorded one, a viewport of its size follows
the cursor, and the status line says so. The status line (the terminal's last row) is drawn in
reverse video from text the caller gives, checked like everything else.
"""

from __future__ import annotations

from wcwidth import wcwidth

from ._style import DEFAULT_STYLE, Style
from ._terminal import Screen

__all__ = ["Renderer", "safe_text", "sgr"]

_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
"""Bidirectional formatting characters: a terminal that implements bidi (VTE, Konsole, mlterm)
would reorder the reviewer's view of a line around them (Trojan Source, CVE-2021-42574)."""
_UNSAFE = {c: "?" for c in [*range(0x20), *range(0x7F, 0xA0), *_BIDI, 0x2028, 0x2029]}


def safe_text(text: str) -> str:
    """``text`` with every C0/C1 control, DEL, bidirectional formatting character and line or
    paragraph separator replaced by ``?``: what recorded screen text may put on a terminal."""
    return text.translate(_UNSAFE)


_GRID_UNSAFE: dict[int, str | None] = {**_UNSAFE, **{c: None for c in [*_BIDI, 0x2028, 0x2029, 0xFE0F]}}
"""For the screen grid: the bidi marks and separators are zero-width, so the emulator combines
them into the cell before; drawn as a one-column ``?`` each, 15 of them per cell made a row many
times wider than the terminal, spilling over the rows below and the status line. They are left
out of the grid (the plain-text outputs, through :func:`safe_text`, still show them as ``?``).
So is VARIATION SELECTOR-16: the emulator (as wcwidth per character, and tmux 3.3) keeps
``U+2764 U+FE0F`` one column wide, but kitty, WezTerm, iTerm2 and recent VTE draw the emoji
presentation two columns wide, and a row of them spilled the same way; without it, every
terminal draws the one-column text presentation the emulator counted."""


def _encode(text: str) -> bytes:
    return text.translate(_GRID_UNSAFE).encode("utf-8", "replace")


def _color(value: int | None, base: int, bright: int, ext: int) -> str:
    if value is None:
        return ""
    if 0 <= value < 8:
        return f";{base + value}"
    if 8 <= value < 16:
        return f";{bright + value - 8}"
    if 16 <= value < 256:
        return f";{ext};5;{value}"
    if value & 0x1000000 and 0 <= value < 0x2000000:
        rgb = value & 0xFFFFFF
        return f";{ext};2;{rgb >> 16};{(rgb >> 8) & 0xFF};{rgb & 0xFF}"
    return ""


_SGR_CACHE: dict[Style, bytes] = {}


def sgr(style: Style) -> bytes:
    """The SGR sequence that sets exactly ``style`` (it starts with a reset)."""
    out = _SGR_CACHE.get(style)
    if out is not None:
        return out
    s = "\x1b[0"
    if style.bold:
        s += ";1"
    if style.dim or style.hidden:
        s += ";2"  # concealed text is shown dim: a recording must not hide text from its reviewer
    if style.italic:
        s += ";3"
    if style.underline:
        s += ";4"
    if style.blink:
        s += ";5"
    if style.reverse:
        s += ";7"
    if style.strike:
        s += ";9"
    s += _color(style.fg, 30, 90, 38) + _color(style.bg, 40, 100, 48) + "m"
    out = s.encode("ascii")
    if len(_SGR_CACHE) < 65536:
        _SGR_CACHE[style] = out
    return out


_RESET = b"\x1b[0m"


def _width(ch: str) -> int:
    w = wcwidth(ch)
    return 2 if w == 2 else (0 if w == 0 and ch != " " else 1)


def _clip_runs(runs: tuple[tuple[str, Style], ...], start: int, width: int) -> list[tuple[str, Style]]:
    """The part of a row between columns ``start`` and ``start + width``; half a wide character
    at either edge becomes a space."""
    out: list[tuple[str, Style]] = []
    col = 0
    end = start + width
    for text, style in runs:
        keep: list[str] = []
        for ch in text:
            w = _width(ch)
            if w == 0:
                if start <= col - 1 < end and keep:
                    keep.append(ch)  # combining mark of a kept character
                continue
            if col >= start and col + w <= end:
                keep.append(ch)
            elif col < start < col + w or col < end < col + w:
                keep.append(" ")
            col += w
            if col >= end:
                break
        if keep:
            out.append(("".join(keep), style))
        if col >= end:
            break
    return out


class Renderer:
    """Turns successive screens into the bytes that show them on a ``cols`` x ``rows`` terminal."""

    def __init__(self, cols: int, rows: int, *, status: bool = True) -> None:
        self.status_line = status
        self.cols = 1
        self.rows = 1
        self.origin = (0, 0)
        self.cropped = False
        self._prev: list[object] = []
        self._prev_status = b""
        self._cursor_shown: bool | None = None
        self._cursor_at: tuple[int, int, bool] = (-1, -1, False)
        self._full = True
        self.resize(cols, rows)

    @property
    def area(self) -> int:
        """Rows available for the screen (the status line takes the last one)."""
        return self.rows - 1 if self.status_line and self.rows > 1 else self.rows

    def resize(self, cols: int, rows: int) -> None:
        """The reviewer's terminal changed size: the next frame is drawn whole."""
        self.cols = max(1, cols)
        self.rows = max(1, rows)
        self.invalidate()

    def invalidate(self) -> None:
        self._prev = [None] * self.rows
        self._prev_status = b""
        self._cursor_shown = None
        self._full = True

    def _viewport(self, screen: Screen) -> tuple[int, int, int, int]:
        vw = min(screen.cols, self.cols)
        vh = min(screen.rows, self.area)
        ox, oy = self.origin
        cx = min(max(screen.cursor[0], 0), screen.cols - 1)
        cy = min(max(screen.cursor[1], 0), screen.rows - 1)
        if cx < ox:
            ox = cx
        elif cx >= ox + vw:
            ox = cx - vw + 1
        if cy < oy:
            oy = cy
        elif cy >= oy + vh:
            oy = cy - vh + 1
        ox = max(0, min(ox, screen.cols - vw))
        oy = max(0, min(oy, screen.rows - vh))
        self.cropped = vw < screen.cols or vh < screen.rows
        return ox, oy, vw, vh

    def draw(self, screen: Screen, status: str = "") -> bytes:
        """Bytes that turn what was drawn last into ``screen`` (and the status line into ``status``)."""
        ox, oy, vw, vh = self._viewport(screen)
        out: list[bytes] = []
        changed = False
        if (ox, oy) != self.origin:
            self.origin = (ox, oy)
            self._prev = [None] * self.rows
        if self._full:
            out.append(b"\x1b[0m\x1b[2J")
            self._full = False
        if self._cursor_shown is not False:
            out.append(b"\x1b[?25l")  # hidden while drawing; shown again at the end if the screen shows it
        hclip = vw < screen.cols or ox > 0
        for y in range(self.area):
            sy = oy + y
            key: object = (screen.runs[sy], hclip and (ox, vw)) if y < vh else ()
            if self._prev[y] == key:
                continue
            self._prev[y] = key
            changed = True
            out.append(b"\x1b[%d;1H" % (y + 1))
            if y < vh:
                runs = _clip_runs(screen.runs[sy], ox, vw) if hclip else list(screen.runs[sy])
                while runs and runs[-1][1] == DEFAULT_STYLE and not runs[-1][0].strip(" "):
                    runs.pop()  # trailing default blanks: the erase below does them
                for text, style in runs:
                    out.append(sgr(style))
                    out.append(_encode(text))
                out.append(_RESET)
            out.append(b"\x1b[K")
        if self.status_line and self.rows > 1:
            line = self._status(status)
            if line != self._prev_status:
                changed = True
                self._prev_status = line
                out.append(b"\x1b[%d;1H\x1b[0;7m" % self.rows + line + b"\x1b[0m\x1b[K")
        cx, cy = screen.cursor
        cx = min(max(cx, 0), screen.cols - 1) - ox
        cy = min(max(cy, 0), screen.rows - 1) - oy
        visible = screen.cursor_visible and 0 <= cx < vw and 0 <= cy < vh
        if not changed and (cx, cy, visible) == self._cursor_at and self._cursor_shown is not None:
            return b""
        self._cursor_at = (cx, cy, visible)
        out.append(b"\x1b[%d;%dH" % (cy + 1 if 0 <= cy < vh else 1, cx + 1 if 0 <= cx < vw else 1))
        if visible:
            out.append(b"\x1b[?25h")
        self._cursor_shown = visible
        return b"".join(out)

    def _status(self, text: str) -> bytes:
        width = self.cols - 1  # never the last column: some terminals scroll when it is written
        chars: list[str] = []
        used = 0
        for ch in safe_text(text):
            w = _width(ch)
            if used + w > width:
                break
            chars.append(ch)
            used += w
        return ("".join(chars) + " " * (width - used)).encode("utf-8", "replace")
