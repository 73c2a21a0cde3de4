"""The replay terminal emulator: output bytes in, screens out (:class:`Terminal`, :class:`Screen`).

What it interprets is what real programs send (vim, less, top, tmux, readline, colour ``ls``,
htop): C0 controls, ESC sequences, CSI with ``;`` and ``:`` parameters, OSC/DCS/APC/PM/SOS strings
(swallowed; OSC 0/2 set the title), UTF-8 with wide and combining characters, the DEC graphics
set, scroll regions, the alternate screen, autowrap with a pending-wrap state. Queries (DSR, DA,
DECRQSS) are consumed and never answered: an emulator for replay produces no output at all.
Where terminals disagree (what happens at the pending-wrap position) it does what tmux does, the
oracle of the golden tests; on captured vim, top and tmux output its screens equal tmux's.
Deliberate differences from tmux: invalid UTF-8 shows as U+FFFD (tmux drops it), writing over
half of a wide character blanks the other half (as xterm), DEC graphics are translated to the
box-drawing characters they show (``tmux capture-pane`` prints the ASCII letters).

It never raises on input. Malformed sequences degrade what is drawn: counts and coordinates are
clamped, parameter lists capped, an unterminated string is abandoned after :data:`MAX_STRING`
characters, and a CSI longer than :data:`MAX_SEQUENCE` is ignored. No sequence costs more than
O(rows + cols) on a blank screen (rows known blank are skipped), so a hostile loop of ``ESC [ 2 J``
cannot make replay or indexing crawl; nor a loop of DECALN (``ESC # 8``), whose rows are skipped
while they still hold its E's. What stays O(rows x cols) is a sequence that changes every cell of
a full screen (DECALN then ED 2, over and over): 8 ms per 7 bytes on 1000x500. So the emulator
counts that work (:attr:`Terminal.work`), and readers that must stay responsive do not trust every
sequence to be cheap: the players feed output in slices sized by what they cost, the indexer
moves a slow recording aside, and the bastion feeds within a :class:`WorkBudget`.

Why it is shaped this way (profile before changing anything; ``benchmarks/bench_replay.py``):
pure Python only reaches tens of MB/s if it never loops per byte. A chunk is decoded at once (an
incremental UTF-8 decoder keeps sequences split across :meth:`Terminal.feed` calls), then cut by
one compiled regular expression (:data:`_TOKEN`) into tokens: runs of text with the SGRs, ELs and
``ESC ( B`` between them, CR LF, other CSIs, runs of one control, ESC sequences. Rows are lists
of one-character cells plus parallel lists of interned :class:`Style` objects, so a run of text
lands in a row with two slice assignments; a wide character's right half is the empty string, so
``"".join(row)`` is the row's text. Each SGR is one dict look-up in the current style's transition
table. After a CR LF, a run of whole plain lines is written a row at a time (:meth:`Terminal._lines`),
and at the bottom of the main screen in one step (:meth:`Terminal._bulk`): lines that scroll off
go straight to :meth:`Terminal.take_lines` without ever being built as rows. Property tests check
that every fast path equals feeding the same bytes one at a time.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, groupby
from typing import Any

import msgpack
from wcwidth import wcwidth as _wcwidth

from ._charsets import DEC_GRAPHICS
from ._exceptions import ReplayError
from ._style import DEFAULT_STYLE, TRUECOLOR, Style, apply_sgr

__all__ = ["MAX_COLS", "MAX_ROWS", "Screen", "Terminal", "WorkBudget"]

MAX_COLS = 1000
MAX_ROWS = 500
_ROW_VISIT = 8
"""What looking at one row in a Python loop costs, in cells of :attr:`Terminal.work` (about 90 ns
against 11 ns a cell rebuilt): RIS or ED 2 on a blank 1000x500 screen rebuild nothing, yet visit
every row, and 64 KiB of them was seconds."""
_NO_LIMIT = 1 << 62
"""The work bound outside :meth:`WorkBudget.run`: none."""
MAX_COUNT = 10000
"""Counts (CUU, ICH, REP, ...) are clamped to this."""
MAX_PARAMS = 32
"""Parameters of a CSI beyond this many are ignored."""
MAX_STRING = 16384
"""An OSC/DCS/APC/PM/SOS string longer than this is abandoned: the parser returns to ground, so a
stream that opens a string and never ends it cannot make the emulator swallow the whole session
(the bytes after the cap are drawn). Large enough for ordinary OSC 52 clipboard copies."""
MAX_SEQUENCE = 1024
"""A CSI longer than this is ignored (consumed up to its final byte, never executed)."""
MAX_TITLE = 256
MAX_STYLES = 4096
"""Distinct styles interned at most; beyond, the table starts over (cells keep their styles)."""
MAX_CELL = 16
"""Characters one cell holds at most (a base character plus combining marks)."""
MAX_TAKEN = 100_000
"""Lines buffered for :meth:`Terminal.take_lines`; older ones are dropped (and counted)."""
MAX_CARRY = 256
"""Soft-wrapped rows joined into one logical line at most; a longer line is reported in parts."""
FORMAT_VERSION = 1

_TOKEN = re.compile(
    r"((?:[^\x00-\x1f\x7f-\x9f]++|\x1b\[[0-9;:]{0,64}+m|\x1b\[K|\x1b\(B)++)"  # 1: text, SGR, EL, G0=ASCII
    r"|(\r\n)"  # 2: CR LF, the commonest pair
    r"|\x1b\[([<=>?]?)([0-?]*)([ -/]*)([@-~])"  # 3-6: any other complete CSI
    r"|(([\x00-\x1a\x1c-\x1f\x7f-\x9f])\8*+)"  # 7, 8: a run of one control character (C1 is inert)
    r"|(\x1b(?:\[[0-?]*[ -/]*|[ -/]*)\Z)"  # 9: an escape sequence cut by the end of the chunk
    r"|\x1b\[[0-?]*[ -/]*(?=[^ -~])"  # a CSI broken by a byte that cannot be in one: dropped
    r"|\x1b([ -/]*)([0-~])"  # 10, 11: ESC, intermediates, final
    r"|\x1b"  # an ESC before something that cannot follow it: dropped
)
"""The tokenizer: every position of a chunk starts exactly one of these (so matching never fails).

Runs of text with SGRs between them (colour ``ls``, syntax highlighting, prompts; with the EL and
``ESC ( B`` that ncurses and tmux add) are one token, split by :data:`_SGR_SPLIT` into
``[text, sgr, el, text, sgr, el, ...]`` without a match object per piece; the row is then written
with one slice assignment. Longer SGRs take the CSI path."""
_SGR_SPLIT = re.compile(r"\x1b\[([0-9;:]*)m|\x1b\[(K)|\x1b\(B")
_OSC_END = re.compile(r"[\x07\x18\x1a\x1b]")
_STRING_END = re.compile(r"[\x18\x1a\x1b]")
_CSI_TAIL = re.compile(r"[ -?]*")
_PENDING = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|[ -/]*)")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_width: Callable[[str], int] = lru_cache(maxsize=8192)(_wcwidth)


class _StyleNode:
    """An interned style and where each SGR parameter string leads from it (a transition table:
    one dict look-up per SGR on the hot path, no hashing of the style itself)."""

    __slots__ = ("erase", "next", "style")

    def __init__(self, style: Style) -> None:
        self.style = style
        self.next: dict[str, _StyleNode] = {}
        self.erase: Style | None = None
        """What erasing with this style current leaves: its background only (xterm's BCE)."""


@dataclass(frozen=True, slots=True)
class Screen:
    """What the terminal showed at one moment; a value (safe to keep while the terminal goes on)."""

    cols: int
    rows: int
    lines: tuple[str, ...]
    """Text of each row, trailing blanks stripped. A wide character appears once (it covers two
    columns); its right-half placeholder cell contributes nothing. Never contains control chars."""
    runs: tuple[tuple[tuple[str, Style], ...], ...]
    """Each row as runs of (text, style) left to right covering all ``cols`` columns (blanks
    included), a wide character counting two columns: what a renderer draws."""
    wrapped: tuple[bool, ...]
    """wrapped[y]: row y continues onto row y+1 (the text auto-wrapped at the right margin)."""
    cursor: tuple[int, int]
    """(x, y), 0-based; x may equal cols (pending wrap): renderers clamp."""
    cursor_visible: bool
    alternate: bool
    """The alternate screen buffer is active."""
    title: str
    """Last OSC 0/2 title, control characters removed. Never send it to a terminal unescaped."""


def _clamp(value: int, low: int, high: int) -> int:
    return low if value < low else high if value > high else value


@lru_cache(maxsize=1024)
def _params(text: str) -> tuple[int, ...]:
    """CSI parameters as numbers (empty or unparsable: 0; a ``:`` group: its first number)."""
    out: list[int] = []
    for part in text.split(";", MAX_PARAMS)[:MAX_PARAMS]:
        if ":" in part:
            part = part.split(":", 1)[0]
        if part.isdigit() and part.isascii():
            digits = part.lstrip("0")
            out.append(999999 if len(digits) > 6 else int(digits or "0"))
        else:
            out.append(0)
    return tuple(out)


def _arg(text: str, default: int = 1) -> int:
    """The first parameter as a count: 0 or missing means ``default``; clamped to MAX_COUNT."""
    if not text:
        return default
    value = _params(text)[0]
    if value == 0:
        return default
    return MAX_COUNT if value > MAX_COUNT else value


@lru_cache(maxsize=1)
def _narrow() -> re.Pattern[str]:
    """Text whose every character takes exactly one cell (by wcwidth), up to U+2E7F: Latin, Greek,
    Cyrillic, box drawing, arrows, ... (what UTF-8 TUIs draw) take the fast path like ASCII.

    Built on first use from wcwidth itself, so both paths always agree."""
    ranges: list[str] = []
    start = -1
    for code in range(0xA0, 0x2E81):
        one = code < 0x2E80 and _wcwidth(chr(code)) == 1
        if one and start < 0:
            start = code
        elif not one and start >= 0:
            ranges.append(f"\\u{start:04x}-\\u{code - 1:04x}")
            start = -1
    return re.compile(f"[ -~{''.join(ranges)}]*")


_LINE_BLOCK = re.compile(r"(?:[ -~]*+(?:\x1b\[K)?\r\n)+")
"""Whole lines of printable ASCII, each ending in CR LF, optionally after an EL (``ESC [ K``): what
``cat``, ``seq``, logs and tmux's redraws of them send. See :meth:`Terminal._lines`."""
_EL = "\x1b[K"


@lru_cache(maxsize=4096)
def _cell_width(cell: str) -> int:
    """Columns a cell's text takes (1 or 2), or 0 if no cell can hold it: a first character one
    or two columns wide, then only zero-width characters (combining marks), no controls."""
    if not cell or len(cell) > MAX_CELL or _CONTROLS.search(cell):
        return 0
    width = _width(cell[0])
    if width not in (1, 2) or any(_width(c) != 0 for c in cell[1:]):
        return 0
    return width


def _row_text(row: _Row, known: Style | str | None) -> str:
    """The text of ``row`` (every cell, blanks included), using what is known of it."""
    if known is None:
        return "".join(row)
    if type(known) is str:
        return known + " " * (len(row) - len(known))
    return " " * len(row)


def _is_wide(cell: str) -> bool:
    return bool(cell) and _width(cell[0]) == 2


_Row = list[str]
_StyleRow = list[Style]
_Known = Style | str | None
_Buffer = tuple[list[_Row], list[_StyleRow], list[bool], list[_Known]]
"""The inactive screen buffer: (chars, styles, wrapped, clean)."""
_Saved = tuple[int, int, Style, bool, bool, bool, bool, bool]
"""(x, y, style, origin, autowrap, g0 graphics, g1 graphics, shifted out)."""


class WorkBudget:
    """A credit of emulator work (:attr:`Terminal.work`) that grows with time, up to ``burst``.

    For a caller that emulates on a thread others need (the bastion's event loop): :meth:`run`
    feeds within the credit and spends what the feed cost; output over it is skipped. ``rate``
    is work per unit of ``now`` (seconds, or a session's microseconds: the caller's clock)."""

    __slots__ = ("_at", "_credit", "burst", "rate")

    def __init__(self, burst: int, rate: float, now: float = 0) -> None:
        self.burst = burst
        self.rate = rate
        self._credit = float(burst)
        self._at = now

    def run(self, term: Terminal, now: float, feed: Callable[[], object], size: int) -> int:
        """Call ``feed`` (which feeds ``term`` ``size`` characters) within the credit at ``now``;
        the characters skipped: all of them when no credit is left, else those the bound dropped."""
        if now > self._at:
            self._credit = min(float(self.burst), self._credit + (now - self._at) * self.rate)
            self._at = now
        if self._credit <= 0:
            return size
        # Plain attribute sets, no context manager: this runs at each keystroke of a session with rules.
        start, dropped = term.work, term.dropped
        term._work_limit = start + int(self._credit)
        try:
            feed()
        finally:
            term._work_limit = _NO_LIMIT
        self._credit -= term.work - start
        return term.dropped - dropped


class Terminal:
    """A terminal of ``cols`` x ``rows`` cells fed with output bytes. See the module docstring."""

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        self.cols = _clamp(int(cols), 1, MAX_COLS)
        self.rows = _clamp(int(rows), 1, MAX_ROWS)
        self.scrolled = 0
        """Rows scrolled off the top of the main screen since creation."""
        self.dropped_lines = 0
        """Lines :meth:`take_lines` lost because nobody took them (more than MAX_TAKEN buffered)."""
        self.title = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._taken: deque[str] = deque(maxlen=MAX_TAKEN)
        self._carry: list[str] = []
        self._nodes: dict[Style, _StyleNode] = {}
        self.work = 0
        """Cells rebuilt by whole-row operations since this terminal was made (erase, DECALN,
        scrolls, inserts and deletes, REP, resize): the part of the emulator's cost that a few
        bytes can make large (DECALN then ED 2 on 1000x500 is 10^6 cells per 7 bytes). The same
        bytes give the same count, so a caller that must stay responsive (the bastion's rules
        engine) can bound it deterministically (:class:`WorkBudget`). Not dumped in keyframes."""
        self._work_limit = _NO_LIMIT
        """Once :attr:`work` passes this, the rest of the bytes being fed are dropped (counted in
        :attr:`dropped`): set by :meth:`WorkBudget.run` around its feed. Default: none."""
        self.dropped = 0
        """Characters dropped because a :class:`WorkBudget`'s credit was passed."""
        self._reset_state()
        self._new_buffers()

    # -- state ---------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        """Everything RIS resets (not the title, the scroll count or buffered lines)."""
        cols, rows = self.cols, self.rows
        self._x = 0
        self._y = 0
        self._node = self._node_of(DEFAULT_STYLE)
        self._style = DEFAULT_STYLE
        self._top = 0
        self._bottom = rows - 1
        self._origin = False
        self._autowrap = True
        self._insert = False
        self._cursor_visible = True
        self._g0_graphics = False
        self._g1_graphics = False
        self._shifted = False
        self._graphics = False
        self._simple = True
        """Autowrap on, neither DEC graphics in GL nor insert mode: text is copied into cells as is."""
        self._last = ""
        self._alt = False
        self._main_saved: _Saved | None = None
        self._alt_saved: _Saved | None = None
        self._tabs = bytearray(cols)
        for i in range(8, cols, 8):
            self._tabs[i] = 1
        self.work += cols
        self._pending = ""
        self._string: str | None = None
        self._string_len = 0
        self._osc = ""

    def _new_buffers(self) -> None:
        cols, rows = self.cols, self.rows
        self._chars: list[_Row] = [[" "] * cols for _ in range(rows)]
        self._styles: list[_StyleRow] = [[DEFAULT_STYLE] * cols for _ in range(rows)]
        self._wrapped: list[bool] = [False] * rows
        self._aligned = ""
        """The row text DECALN writes ("E" x cols), kept so that rows it left can be told by identity."""
        self._clean: list[_Known] = [DEFAULT_STYLE] * rows
        """What is known of row y without looking at its cells: a Style (all blanks in that
        style), a str (the row's text is that string, then blanks; styles unknown), or None.
        A cache: erasing or scrolling a blank screen costs O(rows), not O(rows x cols) (ED 2 in a
        loop on a 1000x500 screen must not cost milliseconds each), and a row written from a
        line scrolls off without joining its cells. Never dumped; None everywhere after load."""
        self._other: _Buffer = (
            [[" "] * cols for _ in range(rows)],
            [[DEFAULT_STYLE] * cols for _ in range(rows)],
            [False] * rows,
            [DEFAULT_STYLE] * rows,
        )

    def _node_of(self, style: Style) -> _StyleNode:
        """The interned node of ``style`` (at most MAX_STYLES; then the table starts over)."""
        node = self._nodes.get(style)
        if node is None:
            if len(self._nodes) >= MAX_STYLES:
                for old in self._nodes.values():
                    old.next.clear()  # nothing old stays reachable through a transition
                self._nodes.clear()
            node = self._nodes[style] = _StyleNode(style)
        return node

    def _intern(self, style: Style) -> Style:
        return self._node_of(style).style

    def _update_simple(self) -> None:
        self._simple = self._autowrap and not (self._graphics or self._insert)

    def _set_style(self, style: Style) -> None:
        self._node = self._node_of(style)
        self._style = self._node.style

    def _transition(self, node: _StyleNode, params: str) -> _StyleNode:
        """The node after ``CSI params m`` from ``node``, remembered in ``node.next``."""
        if len(params) > MAX_SEQUENCE:
            return node
        target = self._node_of(apply_sgr(node.style, params))
        if len(node.next) >= 256:
            node.next.clear()
        node.next[params] = target
        return target

    @property
    def _erase(self) -> Style:
        """The style of erased cells: the current background only (xterm's BCE)."""
        node = self._node
        erase = node.erase
        if erase is None:
            erase = node.erase = DEFAULT_STYLE if node.style.bg is None else self._intern(Style(bg=node.style.bg))
        return erase

    # -- public accessors ----------------------------------------------------------------------

    @property
    def cursor(self) -> tuple[int, int]:
        return (self._x, self._y)

    @property
    def alternate(self) -> bool:
        return self._alt

    def line(self, y: int) -> str:
        """Text of row ``y`` (== ``screen().lines[y]``)."""
        return "".join(self._chars[y]).rstrip(" ")

    def is_wrapped(self, y: int) -> bool:
        return self._wrapped[y]

    def screen(self) -> Screen:
        """A snapshot of what the terminal shows now."""
        runs = []
        for chars, styles in zip(self._chars, self._styles, strict=True):
            row: list[tuple[str, Style]] = []
            x = 0
            for style, group in groupby(styles):
                n = sum(1 for _ in group)
                row.append(("".join(chars[x : x + n]), style))
                x += n
            runs.append(tuple(row))
        return Screen(
            cols=self.cols,
            rows=self.rows,
            lines=tuple("".join(chars).rstrip(" ") for chars in self._chars),
            runs=tuple(runs),
            wrapped=tuple(self._wrapped),
            cursor=(self._x, self._y),
            cursor_visible=self._cursor_visible,
            alternate=self._alt,
            title=self.title,
        )

    def take_lines(self, end: bool = False) -> list[str]:
        """Logical lines that left the main screen since the last call, oldest first.

        Rows scrolled off its top (while the scroll region starts at the top row: the whole screen,
        or tmux's region above its status line, as xterm saves lines), rows scrolled out of a region
        that starts lower (each a line of its own: a pinned header cannot hide output from the
        index), and the non-blank rows of
        the whole screen when it is erased (ED 2, ED 0 from the home position, RIS). Soft-wrapped
        rows are joined into one logical line; blank lines are skipped; the alternate screen is
        never reported.

        A logical line whose last row is still on screen is held back until that row leaves too;
        ``end=True`` (at the end of a recording) also returns the part held back, as one line.
        """
        if end and self._carry:
            text = "".join(self._carry).rstrip(" ")
            self._carry = []
            if text:
                if len(self._taken) == MAX_TAKEN:
                    self.dropped_lines += 1
                self._taken.append(text)
        out = list(self._taken)
        self._taken.clear()
        return out

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Interpret output bytes. Never raises, whatever the bytes."""
        text = self._decoder.decode(data)
        if self._pending:
            text = self._pending + text
            self._pending = ""
        if text:
            self._process(text)

    def _process(self, s: str) -> None:
        pos = 0
        n = len(s)
        if self._string is not None:
            pos = self._in_string(s, 0)
        while pos < n:
            if self.work > self._work_limit:
                self._drop(n - pos)
                return
            pos = self._scan(s, pos)

    def _drop(self, n: int) -> None:
        """The rest of a feed, ``n`` characters, is not interpreted (past the budget of a
        :meth:`WorkBudget.run`); a sequence it began is forgotten with it."""
        self.dropped += n
        self._string = None

    def _scan(self, s: str, pos: int) -> int:
        """Interpret tokens of ``s`` from ``pos``; return where to go on (``len(s)`` when done).

        The hot loop: text that fits in the row, CR LF, SGR and CUP are handled inline; the loop
        returns early when a string starts (OSC, DCS, ...) or a run of plain lines is scrolled in
        bulk, and :meth:`_process` calls it again from there.
        """
        cols = self.cols
        csi = _CSI
        for m in _TOKEN.finditer(s, pos):
            kind = m.lastindex
            if kind == 1:
                text = m.group(1)
                if "\x1b" in text:
                    self._segment(_SGR_SPLIT.split(text))
                    continue
                x = self._x
                end = x + len(text)
                if end <= cols and self._simple and (text.isascii() or _narrow().fullmatch(text)):
                    y = self._y
                    row = self._chars[y]
                    if x and row[x] == "":
                        row[x - 1] = " "
                    if end < cols and row[end] == "":
                        row[end] = " "
                    row[x:end] = text
                    self._styles[y][x:end] = [self._style] * (end - x)
                    self._clean[y] = None
                    self._x = end
                    self._last = text
                else:
                    self._text(text)
            elif kind == 2:
                self._x = 0
                y = self._y
                fresh = y == self._bottom
                if fresh:
                    self._scroll_up(1)
                elif y < self.rows - 1:
                    self._y = y + 1
                if self._simple:
                    block = _LINE_BLOCK.match(s, m.end())
                    if block is not None:
                        self._lines(block.group().split("\r\n")[:-1], fresh)
                        return block.end()
            elif kind == 6:
                if m.end() - m.start() > MAX_SEQUENCE:
                    continue
                private, params, inter, final = m.group(3, 4, 5, 6)
                if final == "K" and not params and not private and not inter:
                    self._erase_to_end()
                    continue
                handler = csi.get(private + inter + final)
                if handler is not None:
                    handler(self, params)
                    if self.work > self._work_limit:
                        self._drop(len(s) - m.end())
                        return len(s)
            elif kind == 7:
                if m.end() - m.start() == 1:
                    self._control(m.group(8))
                else:
                    self._controls(m.group(8), m.end() - m.start())
                if self.work > self._work_limit:
                    self._drop(len(s) - m.end())
                    return len(s)
            elif kind == 11:
                inter, final = m.group(10, 11)
                if not inter and final in "]PX^_":
                    self._string = "osc" if final == "]" else "other"
                    self._string_len = 0
                    self._osc = ""
                    return self._in_string(s, m.end())
                self._esc(inter, final)
                if self.work > self._work_limit:
                    self._drop(len(s) - m.end())
                    return len(s)
            elif kind == 9:
                tail = m.group(9)
                if len(tail) > MAX_SEQUENCE:
                    # An over-long CSI cut by the chunk end: ignore it, up to its final byte.
                    self._string = "csi"
                    self._string_len = 0
                else:
                    self._pending = tail
        return len(s)

    def _segment(self, parts: list[str | None]) -> None:
        """A token of text, SGRs, ELs and ``ESC ( B``, split as ``[text, sgr, el, text, ...]``:
        each control is ``(params, None)`` for SGR, ``(None, "K")`` for EL, ``(None, None)`` for
        ``ESC ( B``; texts are strings (maybe empty).

        When the text is ASCII and fits in the row, and an EL comes only last (the common case),
        the cells are written with one slice assignment and the styles with another; otherwise
        piece by piece. Each SGR is one dict look-up: the transition table of the current style.
        """
        texts: list[str] = parts[::3]  # type: ignore[assignment]
        total = "".join(texts)
        x = self._x
        cols = self.cols
        end = x + len(total)
        n = len(parts)
        els = parts[2::3].count("K")
        el_last = els == 1 and parts[n - 2] == "K" and not parts[n - 1]
        if (
            end <= cols
            and self._simple
            and (total.isascii() or _narrow().fullmatch(total))
            and (els == 0 or (el_last and end < cols))
        ):
            node = self._node
            first = texts[0]
            cells = [node.style] * len(first) if first else []
            for params, el, text in zip(parts[1::3], parts[2::3], texts[1:]):  # noqa: B905 (equal lengths by construction)
                if params is not None:
                    nxt = node.next.get(params)
                    node = self._transition(node, params) if nxt is None else nxt
                elif el is None:
                    self._g0_graphics = False  # ESC ( B; GL is not graphics (``_simple``)
                if text:
                    cells += [node.style] * len(text)
            self._node = node
            self._style = node.style
            y = self._y
            row = self._chars[y]
            if total:
                if x and row[x] == "":
                    row[x - 1] = " "
                if end < cols and row[end] == "":
                    row[end] = " "
                row[x:end] = total
                self._styles[y][x:end] = cells
                self._clean[y] = None
                self._x = end
                self._last = total
            if el_last:
                self._erase_to_end()
            return
        if texts[0]:
            self._text(texts[0])
        for params, el, text in zip(parts[1::3], parts[2::3], texts[1:]):  # noqa: B905 (equal lengths by construction)
            if params is not None:
                self._csi_sgr(params)
            elif el is not None:
                self._erase_to_end()
            else:
                self._esc("(", "B")
            if text:
                self._text(text)

    def _erase_to_end(self) -> None:
        """EL 0, inline for speed (full-screen programs send it after nearly every line).

        From the pending-wrap position it erases nothing (as tmux: the last character stays)."""
        cols = self.cols
        x = self._x
        y = self._y
        self._wrapped[y] = False
        erase = self._erase
        if x >= cols or self._clean[y] is erase:
            return
        row = self._chars[y]
        if x and row[x] == "":
            row[x - 1] = " "
        n = cols - x
        row[x:] = [" "] * n
        self._styles[y][x:] = [erase] * n
        self._clean[y] = erase if x == 0 else None

    def _lines(self, lines: list[str], fresh: bool) -> None:
        """Whole lines written from column 0, each followed by CR LF (see :data:`_LINE_BLOCK`).

        What the token path would do, a row at a time: a line that fits and ends in EL replaces
        its row, one without EL overwrites the start of it, a longer one takes the general path
        (it wraps). ``fresh``: the current row was just scrolled in (blank, in the current erase
        style); from such a row at the bottom of a full-screen main region, the rest go to
        :meth:`_bulk`. (An EL erases nothing from the pending-wrap position, so it never erases
        a character its line wrote.)
        """
        cols, rows = self.cols, self.rows
        style = self._style
        erase = self._erase
        blank = [" "] * cols
        plain_row = [style] * cols if style is erase else None
        # Constant while the lines are written (no sequence in between; _scroll_up works in place).
        chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
        bottom = self._bottom
        bulk = bottom == rows - 1 and self._top == 0 and not self._alt
        last = ""
        y = self._y
        for i, line in enumerate(lines):
            if fresh and bulk and y == bottom:
                self._y = y
                self._x = 0
                if last:
                    self._last = last
                self._bulk(lines[i:] if i else lines)
                return
            el = line.endswith(_EL)
            if el:
                line = line[:-3]
            n = len(line)
            if n > cols:
                self._x = 0
                self._y = y
                self._text(line)
                if el:
                    self._erase_to_end()
                y = self._y
            elif el:
                chars[y] = list(line) + blank[n:]
                styles[y] = plain_row.copy() if plain_row is not None else [style] * n + [erase] * (cols - n)
                wrapped[y] = False
                clean[y] = line if n else erase
            elif n:
                row = chars[y]
                if n < cols and row[n] == "":
                    row[n] = " "
                row[:n] = line
                styles[y][:n] = [style] * n
                clean[y] = None
            if n:
                last = line
            fresh = y == bottom
            if fresh:
                self._y = y
                self._scroll_up(1)
            elif y < rows - 1:
                y += 1
        self._y = y
        self._x = 0
        if last:
            self._last = last

    def _bulk(self, lines: list[str]) -> None:
        """Whole lines (see :meth:`_lines`) written at the bottom of a full-screen main region,
        the cursor at column 0 of a freshly scrolled (blank) row.

        What the row-at-a-time path would do, in one step: every row a line takes (a line wider
        than the screen wraps onto several) scrolls the screen once; the lines that scroll off
        whole go straight to :meth:`take_lines` (never built as rows), only the rows left on
        screen are built. An EL here erases nothing (the row is blank in the same erase style).
        """
        lines = [line[:-3] if line.endswith(_EL) else line for line in lines]
        rows, cols = self.rows, self.cols
        counts = [(n + cols - 1) // cols or 1 for n in map(len, lines)]
        total = sum(counts)  # rows the lines take, each scrolled once
        old = rows - 1
        out = min(total, old)  # old rows scrolled off
        chars, styles, wrapped = self._chars, self._styles, self._wrapped
        self._scroll_out_rows(chars[:out], wrapped[:out], self._clean[:out])
        gone = total - out  # new rows scrolled off
        i = 0
        head = 0  # rows of lines[i] scrolled off (its first rows; the rest stay)
        if gone:
            ends = list(accumulate(counts))
            i = bisect_right(ends, gone)
            head = gone - (ends[i - 1] if i else 0)
            whole = lines[:i]
            if whole and self._carry:
                self._scroll_out(whole[0], False)
                whole = whole[1:]
            kept = [line for line in map(str.rstrip, whole) if line]
            taken = self._taken
            over = len(taken) + len(kept) - MAX_TAKEN
            if over > 0:
                self.dropped_lines += over
            taken.extend(kept)
        new_text: list[str] = []
        new_wrapped: list[bool] = []
        for k in range(i, len(lines)):
            line = lines[k]
            if len(line) <= cols:  # one row: never scrolled off in part, so ``head`` is 0
                new_text.append(line)
                new_wrapped.append(False)
                continue
            parts = [line[p : p + cols] for p in range(0, len(line), cols)]
            for part in parts[:head]:
                self._scroll_out(part, True)
            last = len(parts) - 1
            for p in range(head, len(parts)):
                new_text.append(parts[p])
                new_wrapped.append(p < last)
            head = 0
        style, erase = self._style, self._erase
        blank = [" "] * cols
        self._chars = [
            *chars[out:old],
            *[list(text) + blank[len(text) :] if len(text) < cols else list(text) for text in new_text],
            blank,
        ]
        self._styles = [
            *styles[out:old],
            *(
                [[style] * cols for _ in new_text]
                if style is erase
                else [[style] * len(text) + [erase] * (cols - len(text)) for text in new_text]
            ),
            [erase] * cols,
        ]
        self._wrapped = [*wrapped[out:old], *new_wrapped, False]
        self._clean = [*self._clean[out:old], *new_text, erase]
        self.scrolled += gone
        for line in reversed(lines):
            if line:
                self._last = line
                break

    def _in_string(self, s: str, pos: int) -> int:
        """Consume string content (or an over-long CSI) from ``pos``; where ground resumes."""
        kind = self._string
        if kind == "csi":
            m = _CSI_TAIL.match(s, pos)
            end = m.end() if m is not None else pos
            if end == len(s):
                return end
            self._string = None
            if "@" <= s[end] <= "~":
                end += 1
            return end
        finder = _OSC_END if kind == "osc" else _STRING_END
        m = finder.search(s, pos)
        stop = len(s) if m is None else m.start()
        if kind == "osc" and len(self._osc) < 1024:
            self._osc += s[pos : min(stop, pos + 1024)]
        self._string_len += stop - pos
        if self._string_len > MAX_STRING:
            # Abandoned: what follows the cap is drawn, from where the cap was reached.
            over = self._string_len - MAX_STRING
            self._string = None
            return stop - over
        if m is None:
            return stop
        self._string = None
        end = stop
        if s[stop] == "\x07":
            end += 1  # BEL ends an OSC; ESC is left for the ground state (ST is ESC \, ignored there)
        elif s[stop] != "\x1b":
            end += 1  # CAN/SUB abort the string
        if kind == "osc" and s[stop] in "\x07\x1b":
            self._osc_dispatch(self._osc)
        self._osc = ""
        return end

    def _osc_dispatch(self, body: str) -> None:
        code, _, value = body.partition(";")
        if code in ("0", "2"):
            self.title = _CONTROLS.sub("", value)[:MAX_TITLE]

    # -- text ----------------------------------------------------------------------------------

    def _text(self, text: str) -> None:
        if self._graphics:
            text = text.translate(DEC_GRAPHICS)
        if text.isascii() or _narrow().fullmatch(text):
            self._run(text)
            self._last = text
            return
        width = _width
        start = 0
        for i, ch in enumerate(text):
            w = width(ch)
            if w == 1:
                continue
            if start < i:
                self._run(text[start:i])
                self._last = text[i - 1]
            if w == 2:
                self._wide(ch)
                self._last = ch
            elif w == 0:
                self._combine(ch)
            start = i + 1
        if start < len(text):
            self._run(text[start:])
            self._last = text[-1]

    def _run(self, text: str) -> None:
        """Write characters that take one cell each, wrapping at the right margin."""
        cols = self.cols
        n = len(text)
        i = 0
        while i < n:
            x = self._x
            if x >= cols:  # the pending-wrap position (autowrap on)
                self._wrapped[self._y] = True
                self._linefeed()
                x = 0
            elif not self._autowrap and n - i > cols - x:
                # Without autowrap, what does not fit overwrites the last column: only the last stays.
                text = text[i : i + cols - x - 1] + text[-1]
                n = len(text)
                i = 0
            k = cols - x
            if k > n - i:
                k = n - i
            end = x + k
            y = self._y
            row = self._chars[y]
            styles = self._styles[y]
            if self._insert:
                row[x:x] = [" "] * k
                styles[x:x] = [self._erase] * k
                del row[cols:]
                del styles[cols:]
                self._repair(y)
            if row[x] == "" and x > 0:
                row[x - 1] = " "
            if end < cols and row[end] == "":
                row[end] = " "
            row[x:end] = text[i : i + k]
            styles[x:end] = [self._style] * k
            self._clean[y] = None
            self._x = end if end < cols or self._autowrap else cols - 1
            i += k

    def _wide(self, ch: str) -> None:
        cols = self.cols
        if cols < 2:
            return
        x = self._x
        if x >= cols - 1:
            if self._autowrap:
                self._wrapped[self._y] = True
                self._linefeed()
                x = 0
            else:
                x = cols - 2
        y = self._y
        row = self._chars[y]
        styles = self._styles[y]
        if self._insert:
            row[x:x] = [" ", " "]
            styles[x:x] = [self._erase, self._erase]
            del row[cols:]
            del styles[cols:]
        if row[x] == "" and x > 0:
            row[x - 1] = " "
        if x + 2 < cols and row[x + 2] == "":
            row[x + 2] = " "
        row[x] = ch
        row[x + 1] = ""
        styles[x] = styles[x + 1] = self._style
        self._clean[y] = None
        self._x = x + 2 if x + 2 < cols or self._autowrap else cols - 1
        if self._insert:
            self._repair(y)

    def _combine(self, ch: str) -> None:
        x = self._x
        if x == 0:
            return
        row = self._chars[self._y]
        px = min(x, self.cols) - 1
        if row[px] == "" and px > 0:
            px -= 1
        cell = row[px]
        if cell and len(cell) < MAX_CELL:
            row[px] = cell + ch
            self._clean[self._y] = None

    def _repair(self, y: int) -> None:
        """Blank half-overwritten wide characters of row ``y`` (after a shift or a resize)."""
        self._clean[y] = None
        self._repair_row(self._chars[y])

    # -- motion and scrolling ------------------------------------------------------------------

    def _linefeed(self) -> None:
        # A pending wrap survives LF (as in tmux): text after "<cols chars>\n" wraps once more.
        y = self._y
        if y == self._bottom:
            self._scroll_up(1)
        elif y < self.rows - 1:
            self._y = y + 1

    def _reverse_index(self) -> None:
        y = self._y
        if y == self._top:
            self._scroll_down(1)
        elif y > 0:
            self._y = y - 1

    def _blank_row(self) -> tuple[_Row, _StyleRow]:
        return [" "] * self.cols, [self._erase] * self.cols

    def _scroll_up(self, n: int, top: int | None = None, report: bool = True, bottom: int | None = None) -> None:
        """Scroll rows ``top``..``bottom`` (default: the region) up by ``n``.

        Rows leaving the top of the main screen are reported to :meth:`take_lines` (unless
        ``report`` is false: DL deletes rows, they do not scroll off). Rows that leave already
        blank in the erase style come back at the bottom as they are (no new lists)."""
        if top is None:
            top = self._top
        if bottom is None:
            bottom = self._bottom
        n = min(n, bottom - top + 1)
        if n <= 0:
            return
        chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
        cols = self.cols
        erase = self._erase
        if report and top == 0 and not self._alt:
            if n == 1:  # the common case, inline: one row scrolls off
                self.scrolled += 1
                flag = wrapped[0]
                known = clean[0]
                if self._carry or flag:
                    self._scroll_out(_row_text(chars[0], known), flag)
                elif known is None or type(known) is str:
                    text = ("".join(chars[0]) if known is None else known).rstrip(" ")
                    if text:
                        if len(self._taken) == MAX_TAKEN:
                            self.dropped_lines += 1
                        self._taken.append(text)
            else:
                self._scroll_out_rows(chars[:n], wrapped[:n], clean[:n])
        elif report and not self._alt:
            # A region below the top row (a pinned header): its rows leave the screen as surely
            # as at the top, each as a line of its own (``scrolled`` counts whole-screen scrolls
            # only: the rows above the region stay where they are).
            kept = [
                text
                for row, known in zip(chars[top : top + n], clean[top : top + n], strict=True)
                if (known is None or type(known) is str)
                and (text := ("".join(row) if known is None else known).rstrip(" "))
            ]
            self._take(kept)
        if n == 1:
            row = chars.pop(top)
            srow = styles.pop(top)
            del wrapped[top]
            if clean.pop(top) is not erase:
                row = [" "] * cols
                srow = [erase] * cols
                self.work += cols
            chars.insert(bottom, row)
            styles.insert(bottom, srow)
            wrapped.insert(bottom, False)
            clean.insert(bottom, erase)
            return
        end = bottom + 1
        leaving = range(top, top + n)
        self.work += n * cols
        chars[top:end] = [*chars[top + n : end], *[chars[y] if clean[y] is erase else [" "] * cols for y in leaving]]
        styles[top:end] = [
            *styles[top + n : end],
            *[styles[y] if clean[y] is erase else [erase] * cols for y in leaving],
        ]
        wrapped[top:end] = [*wrapped[top + n : end], *([False] * n)]
        clean[top:end] = [*clean[top + n : end], *([erase] * n)]

    def _scroll_down(self, n: int, top: int | None = None, bottom: int | None = None) -> None:
        """Scroll rows ``top``..``bottom`` (default: the region) down by ``n``."""
        if top is None:
            top = self._top
        if bottom is None:
            bottom = self._bottom
        n = min(n, bottom - top + 1)
        if n <= 0:
            return
        chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
        cols = self.cols
        erase = self._erase
        end = bottom + 1
        leaving = range(end - n, end)
        self.work += n * cols
        chars[top:end] = [*[chars[y] if clean[y] is erase else [" "] * cols for y in leaving], *chars[top : end - n]]
        styles[top:end] = [
            *[styles[y] if clean[y] is erase else [erase] * cols for y in leaving],
            *styles[top : end - n],
        ]
        wrapped[top:end] = [*([False] * n), *wrapped[top : end - n]]
        clean[top:end] = [*([erase] * n), *clean[top : end - n]]
        if top > 0:
            wrapped[top - 1] = False

    def _scroll_out_rows(self, rows: list[_Row], wrapped: list[bool], clean: list[_Known]) -> None:
        """Rows left the top of the main screen (several at once: SU, tmux's redraws)."""
        self.scrolled += len(rows)
        if self._carry or True in wrapped:
            for row, flag, known in zip(rows, wrapped, clean, strict=True):
                self._scroll_out(_row_text(row, known), flag)
            return
        texts = [
            ("".join(row) if known is None else known).rstrip(" ")
            for row, known in zip(rows, clean)  # noqa: B905 (equal lengths)
            if known is None or type(known) is str
        ]
        self._take([text for text in texts if text])

    def _take(self, kept: list[str]) -> None:
        """Lines for :meth:`take_lines`, counting those the cap drops."""
        if kept:
            taken = self._taken
            over = len(taken) + len(kept) - MAX_TAKEN
            if over > 0:
                self.dropped_lines += over
            taken.extend(kept)

    def _scroll_out(self, text: str, wrapped: bool) -> None:
        """A row with ``text`` left the top of the main screen: add it to the logical lines."""
        if wrapped and len(self._carry) < MAX_CARRY:
            self._carry.append(text)
            return
        if self._carry:
            self._carry.append(text)
            text = "".join(self._carry)
            self._carry = []
        text = text.rstrip(" ")
        if text:
            if len(self._taken) == MAX_TAKEN:
                self.dropped_lines += 1
            self._taken.append(text)

    def _flush_screen(self) -> None:
        """The whole main screen is about to be erased: report its rows."""
        chars, wrapped, clean = self._chars, self._wrapped, self._clean
        if self._alt:
            chars, wrapped, clean = self._other[0], self._other[2], self._other[3]
        last = self.rows - 1
        self.work += _ROW_VISIT * self.rows
        for y in range(self.rows):
            flag = wrapped[y] and y < last
            known = clean[y]
            if known is not None and type(known) is not str and not (self._carry or flag):
                continue  # a blank row: nothing to report, nothing to join
            self._scroll_out(_row_text(chars[y], known), flag)

    def _goto(self, x: int, y: int) -> None:
        """Move to (x, y) in screen coordinates, clamped to the screen."""
        self._x = _clamp(x, 0, self.cols - 1)
        self._y = _clamp(y, 0, self.rows - 1)

    # -- controls and ESC ----------------------------------------------------------------------

    def _control(self, ch: str) -> None:
        if ch == "\n" or ch == "\x0b" or ch == "\x0c":
            self._linefeed()
        elif ch == "\r":
            self._x = 0
        elif ch == "\x08":
            x = self._x
            # From the pending-wrap position BS lands on the last column (tmux, xterm).
            self._x = self.cols - 1 if x >= self.cols else x - 1 if x > 0 else 0
        elif ch == "\t":
            x = min(self._x, self.cols - 1)
            nxt = self._tabs.find(1, x + 1)
            self._x = self.cols - 1 if nxt < 0 else nxt
        elif ch == "\x0e":
            self._shifted = True
            self._graphics = self._g1_graphics
            self._update_simple()
        elif ch == "\x0f":
            self._shifted = False
            self._graphics = self._g0_graphics
            self._update_simple()
        # BEL, NUL, other C0, DEL and C1: nothing.

    def _controls(self, ch: str, count: int) -> None:
        """``count`` times the control ``ch`` in a row, at the cost of one (a run of blank lines,
        or a hostile stream of millions of LFs, must not take a method call each)."""
        if ch == "\n" or ch == "\x0b" or ch == "\x0c":
            y, bottom, rows = self._y, self._bottom, self.rows
            if y > bottom:
                self._y = min(y + count, rows - 1)
                return
            moves = min(count, bottom - y)
            self._y = y + moves
            count -= moves
            if not count:
                return
            height = bottom - self._top + 1
            self._scroll_up(min(count, height))
            if count > height and self._top == 0 and not self._alt:
                # Each further LF scrolls a blank row off the top, as one at a time would.
                if self._carry:
                    self._scroll_out(" ", False)
                self.scrolled += count - height
        elif ch == "\x08":
            x = self._x
            if x >= self.cols:
                x = self.cols - 1
                count -= 1
            self._x = max(0, x - count)
        elif ch == "\t":
            for _ in range(min(count, self.cols)):
                self._control(ch)
        elif ch in "\r\x0e\x0f":
            self._control(ch)

    def _esc(self, inter: str, final: str) -> None:
        if not inter:
            if final == "7":
                self._save_cursor()
            elif final == "8":
                self._restore_cursor()
            elif final == "D":
                self._linefeed()
            elif final == "E":
                self._x = 0
                self._linefeed()
            elif final == "M":
                self._reverse_index()
            elif final == "c":
                self._ris()
            elif final == "H":
                self._tabs[min(self._x, self.cols - 1)] = 1
            return
        if inter in ("(", ")") and len(inter) == 1:
            graphics = final == "0"
            if inter == "(":
                self._g0_graphics = graphics
            else:
                self._g1_graphics = graphics
            self._graphics = self._g1_graphics if self._shifted else self._g0_graphics
            self._update_simple()
        elif inter == "#" and final == "8":  # DECALN: the screen filled with E
            # Rows still as the last DECALN left them are skipped (their known text is this very
            # string): a loop of ESC # 8 on a 1000x500 screen costs O(rows) each, not 4 ms.
            text = self._aligned
            if len(text) != self.cols:
                text = self._aligned = "E" * self.cols
            chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
            self.work += _ROW_VISIT * self.rows
            for y in range(self.rows):
                if clean[y] is not text:
                    chars[y] = list(text)
                    styles[y] = [DEFAULT_STYLE] * self.cols
                    wrapped[y] = False
                    clean[y] = text
                    self.work += self.cols
            self._goto(0, 0)

    def _ris(self) -> None:
        self._flush_screen()
        if self._alt:
            self._swap_buffers()
        for _ in range(2):  # both buffers, blank rows left alone (RIS in a loop must stay cheap)
            self._erase_rows(0, self.rows, DEFAULT_STYLE)
            self._swap_buffers()
        self._reset_state()

    def _save_cursor(self) -> None:
        saved: _Saved = (
            self._x,
            self._y,
            self._style,
            self._origin,
            self._autowrap,
            self._g0_graphics,
            self._g1_graphics,
            self._shifted,
        )
        if self._alt:
            self._alt_saved = saved
        else:
            self._main_saved = saved

    def _restore_cursor(self) -> None:
        saved = self._alt_saved if self._alt else self._main_saved
        if saved is None:
            saved = (0, 0, DEFAULT_STYLE, False, True, False, False, False)
        x, y, style, self._origin, self._autowrap, self._g0_graphics, self._g1_graphics, self._shifted = saved
        self._graphics = self._g1_graphics if self._shifted else self._g0_graphics
        self._update_simple()
        self._set_style(style)
        self._x = min(x, self.cols)
        self._y = min(y, self.rows - 1)

    # -- CSI -----------------------------------------------------------------------------------

    def _home_row(self) -> int:
        return self._top if self._origin else 0

    def _csi_cuu(self, p: str) -> None:
        top = self._top if self._y >= self._top else 0
        self._goto(self._x, max(self._y - _arg(p), top))

    def _csi_cud(self, p: str) -> None:
        bottom = self._bottom if self._y <= self._bottom else self.rows - 1
        self._goto(self._x, min(self._y + _arg(p), bottom))

    def _csi_cuf(self, p: str) -> None:
        self._goto(min(self._x, self.cols - 1) + _arg(p), self._y)

    def _csi_cub(self, p: str) -> None:
        self._goto(self._x - _arg(p), self._y)  # from the pending-wrap position too (tmux)

    def _csi_cnl(self, p: str) -> None:
        self._csi_cud(p)
        self._x = 0

    def _csi_cpl(self, p: str) -> None:
        self._csi_cuu(p)
        self._x = 0

    def _csi_cht(self, p: str) -> None:
        for _ in range(min(_arg(p), self.cols)):
            self._control("\t")

    def _csi_cbt(self, p: str) -> None:
        x = min(self._x, self.cols - 1)
        for _ in range(min(_arg(p), self.cols)):
            x = self._tabs.rfind(1, 0, x) if x > 0 else 0
            if x < 0:
                x = 0
                break
        self._x = x

    def _csi_cha(self, p: str) -> None:
        self._goto(_arg(p) - 1, self._y)

    def _csi_vpa(self, p: str) -> None:
        row = _arg(p) - 1
        if self._origin:
            self._goto(min(self._x, self.cols - 1), _clamp(row + self._top, self._top, self._bottom))
        else:
            self._goto(min(self._x, self.cols - 1), row)

    def _csi_cup(self, p: str) -> None:
        if not p:
            row = col = 0
        else:
            ps = _params(p)
            row = (ps[0] or 1) - 1
            col = (ps[1] or 1) - 1 if len(ps) > 1 else 0
        if self._origin:
            self._x = _clamp(col, 0, self.cols - 1)
            self._y = _clamp(row + self._top, self._top, self._bottom)
        else:
            self._x = _clamp(col, 0, self.cols - 1)
            self._y = _clamp(row, 0, self.rows - 1)

    def _erase_cells(self, y: int, start: int, end: int) -> None:
        """Blank cells ``start``..``end`` (exclusive) of row ``y`` with the erase style."""
        erase = self._erase
        if start >= end or self._clean[y] is erase:
            return
        row = self._chars[y]
        if row[start] == "" and start > 0:
            row[start - 1] = " "
        if end < self.cols and row[end] == "":
            row[end] = " "
        row[start:end] = [" "] * (end - start)
        self._styles[y][start:end] = [erase] * (end - start)
        self._clean[y] = erase if start == 0 and end == self.cols else None

    def _erase_rows(self, start: int, end: int, style: Style | None = None) -> None:
        """Blank rows ``start``..``end`` (exclusive) in ``style`` (default: the erase style);
        rows already blank in it are left alone."""
        cols = self.cols
        erase = self._erase if style is None else style
        chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
        self.work += _ROW_VISIT * max(0, end - start)  # rows looked at, blank or not
        for y in range(start, end):
            if clean[y] is not erase:
                chars[y] = [" "] * cols
                styles[y] = [erase] * cols
                clean[y] = erase
                self.work += cols
            wrapped[y] = False

    def _csi_ed(self, p: str) -> None:
        mode = _params(p)[0] if p else 0
        x = min(self._x, self.cols - 1)
        y = self._y
        if mode == 0:
            if x == 0 and y == 0 and not self._alt:
                self._flush_screen()
            self._erase_cells(y, self._x, self.cols)  # from the pending-wrap position: nothing
            self._wrapped[y] = False
            self._erase_rows(y + 1, self.rows)
        elif mode == 1:
            self._erase_rows(0, y)
            self._erase_cells(y, 0, x + 1)
        elif mode == 2:
            if not self._alt:
                self._flush_screen()
            self._erase_rows(0, self.rows)
        # 3 erases the scrollback (lines already reported); anything else is ignored.

    def _csi_el(self, p: str) -> None:
        mode = _params(p)[0] if p else 0
        x = min(self._x, self.cols - 1)
        y = self._y
        if mode == 0:
            self._erase_to_end()
        elif mode == 1:
            self._erase_cells(y, 0, x + 1)
        elif mode == 2:
            self._erase_cells(y, 0, self.cols)
            self._wrapped[y] = False

    def _csi_ech(self, p: str) -> None:
        x = self._x  # from the pending-wrap position: nothing
        self._erase_cells(self._y, x, min(self.cols, x + _arg(p)))

    def _csi_ich(self, p: str) -> None:
        cols = self.cols
        x = min(self._x, cols - 1)
        n = min(_arg(p), cols - x)
        y = self._y
        if self._clean[y] is self._erase:
            return
        row, styles = self._chars[y], self._styles[y]
        self.work += cols
        row[x:x] = [" "] * n
        styles[x:x] = [self._erase] * n
        del row[cols:]
        del styles[cols:]
        self._repair(y)

    def _csi_dch(self, p: str) -> None:
        cols = self.cols
        x = min(self._x, cols - 1)
        n = min(_arg(p), cols - x)
        y = self._y
        if self._clean[y] is self._erase:
            return
        row, styles = self._chars[y], self._styles[y]
        self.work += cols
        del row[x : x + n]
        del styles[x : x + n]
        row.extend([" "] * n)
        styles.extend([self._erase] * n)
        self._repair(y)

    # IL and DL act from the cursor row to the region's bottom; outside the region, to the
    # screen's bottom; the cursor stays where it is. That is what tmux does (VT510 would ignore
    # them outside the region and return to the left margin).

    def _csi_il(self, p: str) -> None:
        y = self._y
        self._scroll_down(_arg(p), y, self._bottom if self._top <= y <= self._bottom else self.rows - 1)

    def _csi_dl(self, p: str) -> None:
        y = self._y
        bottom = self._bottom if self._top <= y <= self._bottom else self.rows - 1
        self._scroll_up(_arg(p), y, report=False, bottom=bottom)

    def _csi_su(self, p: str) -> None:
        self._scroll_up(_arg(p))

    def _csi_sd(self, p: str) -> None:
        self._scroll_down(_arg(p))

    def _csi_rep(self, p: str) -> None:
        if self._last:
            n = _arg(p)
            self.work += n
            self._text(self._last[-1] * n)

    def _csi_sgr(self, p: str) -> None:
        node = self._node.next.get(p)
        if node is None:
            node = self._transition(self._node, p)
        self._node = node
        self._style = node.style

    def _csi_decstbm(self, p: str) -> None:
        ps = _params(p) if p else ()
        top = (ps[0] or 1) if ps else 1
        bottom = (ps[1] or self.rows) if len(ps) > 1 else self.rows
        bottom = min(bottom, self.rows)
        if top >= bottom:
            return
        self._top = top - 1
        self._bottom = bottom - 1
        self._x = 0
        self._y = self._home_row()

    def _csi_tbc(self, p: str) -> None:
        mode = _params(p)[0] if p else 0
        if mode == 0:
            self._tabs[min(self._x, self.cols - 1)] = 0
        elif mode == 3:
            self._tabs = bytearray(self.cols)

    def _csi_sm(self, p: str) -> None:
        if 4 in _params(p):
            self._insert = True
            self._update_simple()

    def _csi_rm(self, p: str) -> None:
        if 4 in _params(p):
            self._insert = False
            self._update_simple()

    def _csi_scosc(self, p: str) -> None:
        if not p:
            self._save_cursor()

    def _csi_scorc(self, p: str) -> None:
        if not p:
            self._restore_cursor()

    def _csi_decset(self, p: str) -> None:
        for mode in _params(p):
            self._private_mode(mode, True)

    def _csi_decrst(self, p: str) -> None:
        for mode in _params(p):
            self._private_mode(mode, False)

    def _csi_decstr(self, p: str) -> None:
        """Soft reset (CSI ! p): modes, margins, style, charsets; the screen stays."""
        self._insert = False
        self._origin = False
        self._autowrap = True
        self._cursor_visible = True
        self._top = 0
        self._bottom = self.rows - 1
        self._g0_graphics = self._g1_graphics = self._shifted = self._graphics = False
        self._update_simple()
        self._set_style(DEFAULT_STYLE)
        if self._alt:
            self._alt_saved = None
        else:
            self._main_saved = None

    def _private_mode(self, mode: int, on: bool) -> None:
        if mode == 25:
            self._cursor_visible = on
        elif mode == 7:
            self._autowrap = on
            self._update_simple()
        elif mode == 6:
            self._origin = on
            self._x = 0
            self._y = self._home_row()
        elif mode in (1049, 1047, 47):
            if on and not self._alt:
                if mode == 1049:
                    self._save_cursor()
                self._swap_buffers()
                if mode != 47:
                    self._erase_rows(0, self.rows, DEFAULT_STYLE)
            elif not on and self._alt:
                self._swap_buffers()
                if mode == 1049:
                    self._restore_cursor()

    def _swap_buffers(self) -> None:
        other = self._other
        self._other = (self._chars, self._styles, self._wrapped, self._clean)
        self._chars, self._styles, self._wrapped, self._clean = other
        self._alt = not self._alt

    # -- resize --------------------------------------------------------------------------------

    def resize(self, cols: int, rows: int) -> None:
        """Change the size: content stays top-left, the cursor row stays visible (rows scrolled
        off the top of the main screen are reported by :meth:`take_lines`), margins reset."""
        cols = _clamp(int(cols), 1, MAX_COLS)
        rows = _clamp(int(rows), 1, MAX_ROWS)
        if (cols, rows) == (self.cols, self.rows):
            return
        self.work += 2 * max(cols, self.cols) * max(rows, self.rows)  # both buffers
        y = self._y
        drop_top = y - rows + 1 if y >= rows else 0
        # The main screen kept while the alternate one is shown scrolls by its own cursor (saved
        # by 1049), not by the alternate screen's; an alternate screen in the background is cut.
        main_saved = self._main_saved
        drop_main = 0
        if self._alt and main_saved is not None and main_saved[1] >= rows:
            drop_main = main_saved[1] - rows + 1
            self._main_saved = (main_saved[0], main_saved[1] - drop_main, *main_saved[2:])
        for is_alt in (self._alt, not self._alt):
            if is_alt == self._alt:
                chars, styles, wrapped, clean = self._chars, self._styles, self._wrapped, self._clean
                drop = drop_top
            else:
                chars, styles, wrapped, clean = self._other
                drop = drop_main if self._alt else 0
            if drop:
                if not is_alt:
                    self._scroll_out_rows(chars[:drop], wrapped[:drop], clean[:drop])
                del chars[:drop]
                del styles[:drop]
                del wrapped[:drop]
            del chars[rows:]
            del styles[rows:]
            del wrapped[rows:]
            for y2 in range(len(chars)):
                row, srow = chars[y2], styles[y2]
                if cols < self.cols:
                    del row[cols:]
                    del srow[cols:]
                else:
                    row.extend([" "] * (cols - self.cols))
                    srow.extend([DEFAULT_STYLE] * (cols - self.cols))
            while len(chars) < rows:
                chars.append([" "] * cols)
                styles.append([DEFAULT_STYLE] * cols)
                wrapped.append(False)
        old_cols = self.cols
        self.cols = cols
        self.rows = rows
        for buffer in (self._chars, self._other[0]):
            for row in buffer:
                if "" in row or (cols < old_cols and _is_wide(row[-1])):
                    self._repair_row(row)
        tabs = bytearray(cols)
        tabs[: min(cols, old_cols)] = self._tabs[: min(cols, old_cols)]
        for i in range(old_cols - old_cols % 8 + 8 if old_cols % 8 else old_cols, cols, 8):
            tabs[i] = 1
        self._tabs = tabs
        self._clean = [None] * rows
        self._other = (*self._other[:3], [None] * rows)
        self._top = 0
        self._bottom = rows - 1
        self._y = _clamp(y - drop_top, 0, rows - 1)
        self._x = min(self._x, cols - 1)

    def _repair_row(self, row: _Row) -> None:
        if "" not in row and "".join(row).isascii():
            return  # no wide character and no half of one (two C-speed passes, not a Python loop)
        cols = len(row)
        for i, cell in enumerate(row):
            if cell == "":
                if i == 0 or not _is_wide(row[i - 1]):
                    row[i] = " "
            elif (i + 1 >= cols or row[i + 1] != "") and _is_wide(cell):
                row[i] = " "

    # -- keyframes -----------------------------------------------------------------------------

    def dump(self) -> bytes:
        """Complete state as msgpack (a keyframe): both buffers, cursor, saved cursors, modes,
        margins, style, pending UTF-8 and escape bytes, tabs, title, scroll count, lines not taken."""
        table: list[Style] = []
        index: dict[Style, int] = {}
        by_id: dict[int, int] = {}  # styles are interned: hashing each one (10 fields) is slow

        def sid(style: Style) -> int:
            found = by_id.get(id(style))
            if found is None:
                found = index.get(style)
                if found is None:
                    found = index[style] = len(table)
                    table.append(style)
                by_id[id(style)] = found
            return found

        def buffer(chars: list[_Row], styles: list[_StyleRow], wrapped: list[bool]) -> list[Any]:
            out_rows: list[Any] = []
            for row, srow in zip(chars, styles, strict=True):
                text: Any = "".join(row)
                if len(text) != len(row) or "" in row:
                    text = list(row)
                rle: list[int] = []
                for style, group in groupby(srow):
                    rle.append(sid(style))
                    rle.append(sum(1 for _ in group))
                out_rows.append([text, rle])
            return [out_rows, list(wrapped)]

        def saved(value: _Saved | None) -> Any:
            if value is None:
                return None
            x, y, style, *flags = value
            return [x, y, sid(style), *flags]

        pending_bytes, _flag = self._decoder.getstate()
        state = {
            "v": FORMAT_VERSION,
            "size": [self.cols, self.rows],
            "main": buffer(*(self._other[:3] if self._alt else (self._chars, self._styles, self._wrapped))),
            "alt": buffer(*((self._chars, self._styles, self._wrapped) if self._alt else self._other[:3])),
            "on_alt": self._alt,
            "cursor": [self._x, self._y],
            "style": sid(self._style),
            "region": [self._top, self._bottom],
            "modes": [
                self._origin,
                self._autowrap,
                self._insert,
                self._cursor_visible,
                self._g0_graphics,
                self._g1_graphics,
                self._shifted,
            ],
            "saved": [saved(self._main_saved), saved(self._alt_saved)],
            "tabs": bytes(self._tabs),
            "last": self._last[-1:],
            "utf8": bytes(pending_bytes),
            "pending": self._pending,
            "string": [self._string, self._string_len, self._osc],
            "title": self.title,
            "scrolled": self.scrolled,
            "dropped": self.dropped_lines,
            "taken": list(self._taken),
            "carry": list(self._carry),
            "styles": [_style_fields(s) for s in table],
        }
        return msgpack.packb(state, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def load(cls, state: bytes) -> Terminal:
        """Inverse of :meth:`dump`. Raises :class:`ReplayError` on anything malformed."""
        try:
            return _load(cls, state)
        except ReplayError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, msgpack.UnpackException) as exc:
            raise ReplayError(f"terminal state: malformed ({type(exc).__name__})") from None


_STYLE_FLAGS = ("bold", "dim", "italic", "underline", "blink", "reverse", "hidden", "strike")


def _style_fields(style: Style) -> list[Any]:
    return [style.fg, style.bg, *(getattr(style, name) for name in _STYLE_FLAGS)]


def _colour(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not (0 <= value <= 255 or TRUECOLOR <= value <= (TRUECOLOR | 0xFFFFFF)):
        raise ReplayError("terminal state: bad colour")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ReplayError("terminal state: expected a boolean")
    return value


def _int(value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ReplayError("terminal state: integer out of range")
    return value


def _str(value: Any, limit: int) -> str:
    if type(value) is not str or len(value) > limit:
        raise ReplayError("terminal state: bad string")
    return value


def _list(value: Any, low: int, high: int) -> list[Any]:
    if type(value) is not list or not low <= len(value) <= high:
        raise ReplayError("terminal state: bad list")
    return value


def _load(cls: type[Terminal], data: bytes) -> Terminal:
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) > 64 << 20:
        raise ReplayError("terminal state: not bytes, or too large")
    limit = len(data)
    raw = msgpack.unpackb(
        bytes(data),
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_str_len=limit,
        max_bin_len=limit,
        max_array_len=limit,
        max_map_len=64,
        max_ext_len=0,
    )
    if type(raw) is not dict:
        raise ReplayError("terminal state: not a map")
    if raw.get("v") != FORMAT_VERSION:
        raise ReplayError(f"terminal state: unknown version {raw.get('v')!r}")
    cols_rows = _list(raw["size"], 2, 2)
    cols = _int(cols_rows[0], 1, MAX_COLS)
    rows = _int(cols_rows[1], 1, MAX_ROWS)
    term = cls(cols, rows)
    table: list[Style] = []
    for fields in _list(raw["styles"], 1, 1 << 20):
        fields = _list(fields, 10, 10)
        style = Style(_colour(fields[0]), _colour(fields[1]), *(_bool(f) for f in fields[2:]))
        table.append(term._intern(style))

    def style_of(value: Any) -> Style:
        return table[_int(value, 0, len(table) - 1)]

    def buffer(value: Any) -> tuple[list[_Row], list[_StyleRow], list[bool]]:
        value = _list(value, 2, 2)
        rows_in = _list(value[0], rows, rows)
        wrapped = [_bool(w) for w in _list(value[1], rows, rows)]
        chars: list[_Row] = []
        styles: list[_StyleRow] = []
        for item in rows_in:
            text, rle = _list(item, 2, 2)
            if type(text) is str:
                # One character per cell: each must be one cell wide (the common, fast case).
                if len(text) != cols:
                    raise ReplayError("terminal state: row of the wrong width")
                if _CONTROLS.search(text):
                    raise ReplayError("terminal state: control character in a cell")
                if not (text.isascii() or _narrow().fullmatch(text)) and any(_width(c) != 1 for c in text):
                    raise ReplayError("terminal state: a cell of the wrong width")
                row = list(text)
            else:
                row = [_str(c, MAX_CELL) for c in _list(text, cols, cols)]
                for i, cell in enumerate(row):
                    if cell == "":
                        if i == 0 or not _is_wide(row[i - 1]):
                            raise ReplayError("terminal state: stray wide-character placeholder")
                        continue
                    width = _cell_width(cell)
                    if width == 0:
                        raise ReplayError("terminal state: a cell that is not one or two columns of text")
                    if width == 2 and (i + 1 >= cols or row[i + 1] != ""):
                        raise ReplayError("terminal state: wide character without its placeholder")
            rle = _list(rle, 2, 2 * cols)
            srow: _StyleRow = []
            for j in range(0, len(rle) - 1, 2):
                srow.extend([style_of(rle[j])] * _int(rle[j + 1], 1, cols))
                if len(srow) > cols:
                    break
            if len(srow) != cols or len(rle) % 2:
                raise ReplayError("terminal state: styles of the wrong width")
            chars.append(row)
            styles.append(srow)
        return chars, styles, wrapped

    main = buffer(raw["main"])
    alt = buffer(raw["alt"])
    term._alt = _bool(raw["on_alt"])
    term._chars, term._styles, term._wrapped = alt if term._alt else main
    term._clean = [None] * rows
    other = main if term._alt else alt
    term._other = (*other, [None] * rows)
    cursor = _list(raw["cursor"], 2, 2)
    term._x = _int(cursor[0], 0, cols)
    term._y = _int(cursor[1], 0, rows - 1)
    term._set_style(style_of(raw["style"]))
    region = _list(raw["region"], 2, 2)
    term._top = _int(region[0], 0, rows - 1)
    term._bottom = _int(region[1], term._top, rows - 1)
    if term._bottom == term._top and rows > 1:
        raise ReplayError("terminal state: empty scroll region")
    modes = [_bool(m) for m in _list(raw["modes"], 7, 7)]
    (
        term._origin,
        term._autowrap,
        term._insert,
        term._cursor_visible,
        term._g0_graphics,
        term._g1_graphics,
        term._shifted,
    ) = modes
    term._graphics = term._g1_graphics if term._shifted else term._g0_graphics
    term._update_simple()

    def saved(value: Any) -> _Saved | None:
        if value is None:
            return None
        value = _list(value, 8, 8)
        return (  # a saved cursor may lie outside a screen resized since (DECRC clamps it)
            _int(value[0], 0, MAX_COLS),
            _int(value[1], 0, MAX_ROWS - 1),
            style_of(value[2]),
            _bool(value[3]),
            _bool(value[4]),
            _bool(value[5]),
            _bool(value[6]),
            _bool(value[7]),
        )

    saved_both = _list(raw["saved"], 2, 2)
    term._main_saved = saved(saved_both[0])
    term._alt_saved = saved(saved_both[1])
    tabs = raw["tabs"]
    if type(tabs) is not bytes or len(tabs) != cols or tabs.strip(b"\x00\x01"):
        raise ReplayError("terminal state: bad tab stops")
    term._tabs = bytearray(tabs)
    last = _str(raw["last"], 1)
    if last and _CONTROLS.match(last):
        raise ReplayError("terminal state: control character as the last character")
    term._last = last
    utf8 = raw["utf8"]
    if type(utf8) is not bytes or len(utf8) > 3:
        raise ReplayError("terminal state: bad UTF-8 remainder")
    term._decoder.decode(utf8)
    pending = _str(raw["pending"], MAX_SEQUENCE)
    if pending and _PENDING.fullmatch(pending) is None:
        raise ReplayError("terminal state: bad pending sequence")
    term._pending = pending
    string = _list(raw["string"], 3, 3)
    if string[0] not in (None, "osc", "other", "csi"):
        raise ReplayError("terminal state: bad string state")
    term._string = string[0]
    term._string_len = _int(string[1], 0, MAX_STRING)
    term._osc = _str(string[2], 1024)
    term.title = _str(raw["title"], MAX_TITLE)
    if _CONTROLS.search(term.title):
        raise ReplayError("terminal state: control character in the title")
    term.scrolled = _int(raw["scrolled"], 0, 1 << 62)
    term.dropped_lines = _int(raw["dropped"], 0, 1 << 62)
    term._taken.extend(_str(line, 1 << 24) for line in _list(raw["taken"], 0, MAX_TAKEN))
    term._carry = [_str(part, MAX_COLS * MAX_CELL) for part in _list(raw["carry"], 0, MAX_CARRY)]
    return term


_CSI: dict[str, Callable[[Terminal, str], None]] = {
    "A": Terminal._csi_cuu,
    "B": Terminal._csi_cud,
    "C": Terminal._csi_cuf,
    "D": Terminal._csi_cub,
    "E": Terminal._csi_cnl,
    "F": Terminal._csi_cpl,
    "G": Terminal._csi_cha,
    "I": Terminal._csi_cht,
    "Z": Terminal._csi_cbt,
    "`": Terminal._csi_cha,
    "a": Terminal._csi_cuf,
    "d": Terminal._csi_vpa,
    "e": Terminal._csi_cud,
    "H": Terminal._csi_cup,
    "f": Terminal._csi_cup,
    "J": Terminal._csi_ed,
    "K": Terminal._csi_el,
    "X": Terminal._csi_ech,
    "@": Terminal._csi_ich,
    "P": Terminal._csi_dch,
    "L": Terminal._csi_il,
    "M": Terminal._csi_dl,
    "S": Terminal._csi_su,
    "T": Terminal._csi_sd,
    "b": Terminal._csi_rep,
    "m": Terminal._csi_sgr,
    "r": Terminal._csi_decstbm,
    "g": Terminal._csi_tbc,
    "h": Terminal._csi_sm,
    "l": Terminal._csi_rm,
    "s": Terminal._csi_scosc,
    "u": Terminal._csi_scorc,
    "?h": Terminal._csi_decset,
    "?l": Terminal._csi_decrst,
    "!p": Terminal._csi_decstr,
}
"""CSI handlers by (private prefix +) intermediates + final. Everything else is consumed and ignored
(DSR, DA, DECRQSS, window operations, mouse and keyboard modes, cursor shape, ...)."""
