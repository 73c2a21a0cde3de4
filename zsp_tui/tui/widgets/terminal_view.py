"""The emulated terminal screen of a recording, drawn cell by cell through Textual's Line API.

This is the only way recorded output reaches the reviewer's screen in the review app: a
:class:`replay.Screen` (the emulator's cells: text and :class:`replay.Style`) becomes one
:class:`~textual.strip.Strip` per row at the RECORDED size, each run of cells a
:class:`~rich.segment.Segment` with a :class:`rich.style.Style` built only from the cell's
attributes (palette, 256 and true colours, bold, dim, italic, underline, blink, reverse, strike;
concealed text is drawn dim, as ``zsp play`` does, so a recording cannot hide a line). Titles,
clipboard writes, hyperlinks and mode changes are not part of a Screen and never get here.

Cell text is checked again on its way out (the emulator already keeps controls out of cells):
bidirectional marks, line separators and VS16, which the emulator folds zero-width into a cell,
are left out (as the player's renderer does, so no row grows wider than the emulator counted), and
everything else goes through :func:`replay.safe_text` (any C0/C1 control or DEL becomes ``?``).
Each row is then cut or padded to exactly the recorded width.

When the widget is smaller than the recorded screen it scrolls (both ways, when the reviewer asks:
ctrl+arrows, the mouse wheel); :attr:`TerminalView.cropped` says so (the screen's status line
shows it). It is anchored at the top-left: it never scrolls sideways by itself, so the first
columns (a prompt, ``top``'s first column, ``less``'s) stay in view. It follows the cursor
vertically only: when the cursor moves to a row out of view (a shell at the bottom of a tall
recording, ``less``'s prompt line) it scrolls just enough to show that row; a reviewer who
scrolled elsewhere stays there until the cursor moves to another row out of view. A highlight (a
search hit's text) is marked wherever it occurs on screen, case-insensitively.
"""

from __future__ import annotations

from functools import lru_cache

from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style as RichStyle
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from replay import Screen, Style, safe_text

__all__ = ["HIGHLIGHT", "TerminalView", "clean_cell_text", "rich_style", "screen_strips"]

_TRUECOLOR = 0x1000000
_ZERO_WIDTH_OUT: dict[int, None] = {
    c: None for c in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0xFE0F]
}
"""Bidi formatting marks, line/paragraph separators and VS16: zero-width in the emulator's grid,
left out (replay/_render.py does the same for the player)."""

HIGHLIGHT = RichStyle(color="black", bgcolor="yellow", bold=True, reverse=False)
"""How a search hit is marked on the screen."""
_CURSOR_ON = RichStyle(reverse=True)
_CURSOR_OFF = RichStyle(reverse=False)


def clean_cell_text(text: str) -> str:
    """What a run of cells may put on the reviewer's terminal: no control character, ever."""
    return safe_text(text.translate(_ZERO_WIDTH_OUT))


def _color(value: int | None) -> Color | None:
    if value is None:
        return None
    if 0 <= value < 256:
        return Color.from_ansi(value)
    if value & _TRUECOLOR and 0 <= value < 2 * _TRUECOLOR:
        rgb = value & 0xFFFFFF
        return Color.from_rgb(rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF)
    return None


@lru_cache(maxsize=4096)
def rich_style(style: Style) -> RichStyle:
    """The rich style of a cell (the emulator interns styles, so this cache stays small)."""
    return RichStyle(
        color=_color(style.fg),
        bgcolor=_color(style.bg),
        bold=style.bold,
        dim=style.dim or style.hidden,  # concealed text is shown, dimmed
        italic=style.italic,
        underline=style.underline,
        blink=style.blink,
        reverse=style.reverse,
        strike=style.strike,
    )


def _restyle(strip: Strip, start: int, end: int, over: RichStyle | None) -> Strip:
    """``strip`` with cells ``start..end`` restyled (``over`` on top), or reverse-toggled if None."""
    width = strip.cell_length
    if start >= width or end <= start:
        return strip
    parts = strip.divide([start, min(end, width), width])
    left, mid = parts[0], parts[1]
    rest = parts[2] if len(parts) > 2 else Strip([])
    segs: list[Segment] = []
    for seg in mid:
        base = seg.style or RichStyle()
        style = base + (over if over is not None else (_CURSOR_OFF if base.reverse else _CURSOR_ON))
        segs.append(Segment(seg.text, style))
    return Strip.join([left, Strip(segs), rest])


def _matches(line: str, needle: str) -> list[tuple[int, int]]:
    """Column ranges of every case-insensitive occurrence of ``needle`` in ``line``."""
    out: list[tuple[int, int]] = []
    if not needle:
        return out
    low, want = line.lower(), needle.lower()
    if len(low) != len(line):  # lower() changed the length (rare scripts): match as written
        low, want = line, needle
    i = low.find(want)
    while i >= 0:
        start = cell_len(line[:i])
        out.append((start, start + cell_len(line[i : i + len(needle)])))
        i = low.find(want, i + max(len(want), 1))
    return out


RowKey = tuple[int, tuple[tuple[str, Style], ...]]


def screen_strips(
    screen: Screen, highlight: str | None = None, cache: dict[RowKey, Strip] | None = None
) -> tuple[list[Strip], int]:
    """One strip per row of ``screen`` (exactly ``screen.cols`` cells wide), with the cursor drawn
    as a reversed cell when visible and ``highlight`` marked; and how many rows hold the highlight.

    ``cache``: the plain strips of the previous screen's rows, by their runs (the emulator's row
    values compare cheaply); rows that did not change are not built again, and the cache is
    replaced by this screen's rows (so it never holds more than one screen)."""
    strips: list[Strip] = []
    hits = 0
    needle = clean_cell_text(highlight).strip() if highlight else ""
    cx, cy = screen.cursor
    fresh: dict[RowKey, Strip] = {}
    for y, runs in enumerate(screen.runs):
        key = (screen.cols, runs)
        strip_or_none = cache.get(key) if cache is not None else None
        if strip_or_none is None:
            segs = [Segment(clean_cell_text(text), rich_style(style)) for text, style in runs if text]
            strip = Strip(segs).adjust_cell_length(screen.cols)
        else:
            strip = strip_or_none
        fresh[key] = strip
        if needle:
            found = _matches(screen.lines[y], needle)
            if found:
                hits += 1
            for start, end in found:
                strip = _restyle(strip, start, end, HIGHLIGHT)
        if screen.cursor_visible and y == cy:
            x = min(max(cx, 0), screen.cols - 1)
            strip = _restyle(strip, x, x + 1, None)
        strips.append(strip)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return strips, hits


class TerminalView(ScrollView, can_focus=False):
    """A recorded terminal screen at its recorded size; scrolls when the widget is smaller."""

    DEFAULT_CSS = """
    TerminalView {
        background: black;
        color: #d0d0d0;
        scrollbar-size: 1 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.screen_value: Screen | None = None
        self.highlight: str | None = None
        self.highlighted_rows = 0
        """Rows of the current screen where the highlight occurs."""
        self._strips: list[Strip] = []
        self._rows: dict[RowKey, Strip] = {}
        self._cursor_row: int | None = None
        """The cursor row at the last vertical follow (None: none yet)."""

    def show(self, screen: Screen | None, highlight: str | None = None) -> None:
        """Draw ``screen`` (None: nothing to show) with ``highlight`` marked; keep the cursor in view."""
        self.screen_value = screen
        self.highlight = highlight
        if screen is None:
            self._strips = []
            self.highlighted_rows = 0
            self.virtual_size = Size(0, 0)
        else:
            self._strips, self.highlighted_rows = screen_strips(screen, highlight, self._rows)
            self.virtual_size = Size(screen.cols, screen.rows)
            if self.cropped:
                self._follow_cursor(screen)
        self.refresh()

    @property
    def cropped(self) -> bool:
        """The widget shows only part of the recorded screen."""
        s = self.screen_value
        if s is None:
            return False
        size = self.scrollable_content_region.size
        return s.cols > size.width or s.rows > size.height

    def _follow_cursor(self, screen: Screen) -> None:
        """Vertically only, and only when the cursor moved to another row that is out of view."""
        cy = min(max(screen.cursor[1], 0), max(screen.rows - 1, 0))
        if cy == self._cursor_row:
            return  # the reviewer may have scrolled away from it: left where they put it
        self._cursor_row = cy
        top, height = self.scroll_offset.y, max(self.scrollable_content_region.height, 1)
        if top <= cy < top + height:
            return
        y = cy - height + 1 if cy >= top + height else cy
        self.scroll_to(y=max(y, 0), animate=False, immediate=True, force=True)

    def row_strips(self) -> list[Strip]:
        """The strips of every row of the recorded screen (what the reviewer can scroll over)."""
        return list(self._strips)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if row >= len(self._strips):
            return Strip.blank(width, base)
        return self._strips[row].crop_extend(scroll_x, scroll_x + width, base)
