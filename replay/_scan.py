"""One pass over verified frames: the text a session showed, line by line, and its commands.

:class:`Scanner` drives a :class:`replay.Terminal` with a session's output (header size, RESIZE
frames) and turns what happens into values the search indexer stores:

* :class:`TextLine`: each logical line as the terminal showed it (escape sequences interpreted,
  soft-wrapped rows joined), once it leaves the main screen (``Terminal.take_lines``), and, when
  the scan is finished, the non-blank lines of the main screen still visible at the end.
* :class:`Command`: for each Enter typed while the main screen is active, the command line as the
  screen showed it (tab completion, history recall and line editing resolved), beside the raw
  keystrokes, whether what was typed was ever shown (``blind``) and how many bytes were masked;
  for an exec session (``ssh host CMD``), first its command line from the header (no keys).

Incremental use (a live session): call :meth:`Scanner.feed` for each frame as it comes and
index what it returns; call :meth:`Scanner.finish` exactly once, at the end. Only ``finish``
reports the visible screen, so a live index never holds the same screen line twice: until the
end, a line still on screen is not searchable as output (its command is, from its Enter). A scan
that restarts from the file (``zsp index``, the seal) replaces the session's rows as a whole.

Times. A line's ``frame``/``t_us`` is the output frame that last wrote its first row, as far as
the scanner can tell cheaply: it follows the cursor, and marks every row the cursor travelled
over during an output frame (scrolling shifts the marks). That is the moment ``zsp play --from``
should open to show the line (when it left the screen it was no longer visible). Rows whose
writer is unknown get the last output frame. A command's is the input frame holding its Enter.

How the command line is found (a heuristic that works with bash/readline, zsh, sh, python):
the cursor position at the first keystroke after the previous Enter is where the prompt ended,
and the text before it is the prompt. When output has come since the last keystroke (the screen
has caught up with the typing), the command is read at the Enter itself: the logical line holding
the cursor, with the prompt cut from its start (this line's, or the last prompt that matched, for
a line whose first key went to a program such as ``top``). Otherwise (typed ahead, or blind)
the line is read when the echo of Enter arrives (the output is fed up to its first newline, so a
pasted ``ls\\r``, whose echo comes after the Enter, is read complete), from that position to the
end of the logical line. When the prompt was redrawn on another row (a completion listing), the
row just above the newline is used and the prompt's text, remembered at the first keystroke, is
cut from its start. Lines typed ahead in one chunk (``a\\rb\\r``) wait for a row that starts with
the prompt or ends with what their keys spell; failing that, the keys' text is used.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from recorder import Event, Frame, FrameKind, Header, Resize

from ._terminal import Terminal

__all__ = ["MAX_KEYS", "Command", "Scanner", "TextLine", "had_pty", "keys_text", "scan"]

_OUTPUT = FrameKind.OUTPUT
_INPUT = FrameKind.INPUT
_GIVE_UP_NEWLINES = 64
"""Output newlines a typed-ahead command waits for its echo before its keys' text is used."""
_ENTER = re.compile(rb"[\r\n]")
MAX_KEYS = 64 * 1024
"""Most keystroke bytes kept for one command line (a 10 MB paste keeps its first 64 KiB)."""
_MAX_PENDING = 16
"""Commands waiting for their echo at most; older ones are settled with what is known."""


class TextLine(NamedTuple):
    """A logical line of output as the terminal showed it. A NamedTuple: a scan makes millions."""

    frame: int
    t_us: int
    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """One Enter typed on the main screen."""

    frame: int
    """The input frame holding the Enter."""
    t_us: int
    text: str
    """The command line as the screen showed it, prompt removed ("" if nothing showed)."""
    keys: bytes
    """Raw keystrokes since the previous Enter (without this Enter, from the last Ctrl-C on, at
    most :data:`MAX_KEYS`); masked input is never in it."""
    blind: bool
    """Printable keys were typed but none of them showed: what they spell is :func:`keys_text`."""
    masked_bytes: int
    """Bytes of ``input.masked`` events in this line (the input itself stays sealed)."""


Item = TextLine | Command


def keys_text(keys: bytes) -> str:
    """What keystrokes spell, with simple line editing applied (backspace, Ctrl-U, Ctrl-W);
    escape sequences (arrows, function keys) and other controls are dropped."""
    out: list[str] = []
    text = keys.decode("utf-8", "replace")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "\x1b":  # ESC [ params final | ESC O x | ESC x
            if i < n and text[i] in "[O":
                i += 1
                while i < n and not ("@" <= text[i] <= "~"):
                    i += 1
            i += 1
        elif c in "\x7f\x08":
            if out:
                out.pop()
        elif c == "\x15":
            out.clear()
        elif c == "\x17":
            while out and out[-1] == " ":
                out.pop()
            while out and out[-1] != " ":
                out.pop()
        elif c >= " " and c.isprintable():
            out.append(c)
    return "".join(out)


def had_pty(header: Header) -> bool:
    """Whether the session had a terminal (a PTY: its header names a TERM or a size); without one
    (``ssh host cmd``) its newlines were shown by the operator's terminal as CR LF (ONLCR)."""
    return bool(header.term) or bool(header.cols)


def _width(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def _index_at(line: str, x: int) -> int:
    """Index in ``line`` (one char per character, a wide one covering two columns) of column ``x``."""
    if line.isascii():
        return min(x, len(line))
    col = 0
    for i, c in enumerate(line):
        if col >= x:
            return i
        col += _width(c)
    return len(line)


@dataclass(slots=True)
class _Pending:
    frame: int
    t_us: int
    keys: bytes
    masked: int
    start: tuple[int, int] | None
    """(column, absolute row) where typing began; None: typed ahead, its prompt not yet shown."""
    prompt: str
    text_now: str | None
    """The line as the screen showed it at Enter (the fallback)."""
    waited: int = 0


class Scanner:
    """Feeds frames to a terminal and reports lines and commands (see the module docstring)."""

    def __init__(self, cols: int = 80, rows: int = 24, *, pty: bool = True) -> None:
        """``pty=False``: the session had no terminal (an exec without a PTY): its newlines are
        output as a terminal's ONLCR would show them."""
        self.term = Terminal(cols or 80, rows or 24)
        self._onlcr = not pty
        self._rows: list[tuple[int, int] | None] = [None] * self.term.rows
        """(frame, t_us) of the output frame that last wrote each row of the main screen."""
        self._last_out = (0, 0)
        self._keys = bytearray()
        self._start: tuple[int, int] | None = None
        self._prompt = ""
        self._typing = False  # a keystroke was seen since the last Enter
        self._after_cr = False
        self._masked = 0
        self._masked_at = (0, 0)
        self._masked_run: object = None
        self._pending: deque[_Pending] = deque()
        self._finished = False
        self._echoed = False
        """Output came after the last keystroke: the screen has caught up with what was typed."""
        self._last_prompt = ""
        """The prompt of the last command read off the screen at its Enter (shells repeat it)."""

    @classmethod
    def for_header(cls, header: Header) -> Scanner:
        return cls(header.cols, header.rows, pty=had_pty(header))

    # --- frames -----------------------------------------------------------------------------

    def feed(self, frame: Frame) -> list[Item]:
        """What one frame adds: lines that left the screen, commands resolved."""
        out: list[Item] = []
        kind = frame.kind
        data = frame.data
        if kind is _OUTPUT and isinstance(data, bytes):
            if self._onlcr:
                data = data.replace(b"\n", b"\r\n")
            while self._pending:
                i = data.find(b"\n")
                if i < 0:
                    break
                self._output(data[: i + 1], frame, out)
                self._resolve_at_newline(out)
                data = data[i + 1 :]
            if data:
                self._output(data, frame, out)
        elif kind is _INPUT and isinstance(data, bytes):
            self._input(data, frame, out)
        elif kind is FrameKind.RESIZE and isinstance(data, Resize):
            self.term.resize(data.cols or 80, data.rows or 24)
            rows = self.term.rows
            self._rows = (self._rows + [None] * rows)[:rows]
            self._emit_lines(self.term.take_lines(), [], out)
        elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type == "input.masked":
            run = data.fields.get("run")
            if self._masked and run != self._masked_run:
                self._flush_masked(out)
            n = data.fields.get("bytes")
            self._masked += n if isinstance(n, int) and n > 0 else 0
            self._masked_at = (frame.seq, frame.t_us)
            self._masked_run = run
        return out

    def finish(self) -> list[Item]:
        """The end of the session: commands still waiting, then the main screen's visible lines.
        Call once; the scanner is spent afterwards."""
        if self._finished:
            return []
        self._finished = True
        out: list[Item] = []
        while self._pending:
            self._emit_command(self._pending.popleft(), None, out)
        self._flush_masked(out)
        # The visible main screen, as logical lines: scroll it all out through the terminal (so a
        # line whose first rows already left, held by the terminal, comes out whole), leaving the
        # alternate screen and any scroll region first. Only public API; the scanner is spent.
        term = self.term
        if term.alternate:
            term.feed(b"\x1b[?1049l\x1b[?1047l\x1b[?47l")
            self._emit_lines(term.take_lines(), [], out)
        term.feed(b"\x1b[r\x1b[%d;1H" % term.rows + b"\n" * term.rows)
        self._emit_lines(term.take_lines(), list(self._rows), out)
        return out

    # --- output -----------------------------------------------------------------------------

    def _output(self, data: bytes, frame: Frame, out: list[Item]) -> None:
        term = self.term
        was_alt = term.alternate
        y0 = term.cursor[1]
        s0 = term.scrolled
        before = self._rows
        term.feed(data)
        here = (frame.seq, frame.t_us)
        self._last_out = here
        self._echoed = True
        lines = term.take_lines()
        if was_alt or term.alternate:
            self._emit_lines(lines, [], out)
            return
        rows = term.rows
        k = term.scrolled - s0
        if k > 0:
            leaving = before[:k] + [here] * max(0, k - rows)
            self._rows = before[k:] + [None] * min(k, rows)
            self._rows = self._rows[:rows] + [None] * (rows - len(self._rows))
        else:
            leaving = []
            self._rows = list(before)
        y1 = term.cursor[1]
        ya = y0 - k
        if ya < y1 and data[:1] in (b"\r", b"\n"):
            ya += 1  # it began by leaving the row it started on: that row was not written
        for y in range(max(0, min(ya, y1)), min(rows - 1, max(ya, y1)) + 1):
            self._rows[y] = here
        if lines:
            # Lines that left: the scrolled rows first, then (a whole-screen erase) the rows that stayed.
            self._emit_lines(lines, leaving + before[max(k, 0) :], out)

    def _emit_lines(self, lines: list[str], sources: list[tuple[int, int] | None], out: list[Item]) -> None:
        """Lines that left the screen, each timed by the first written row it took with it (a
        line of n columns took ceil(n / cols) rows). Hot for bulk output: a plain index walk."""
        cols = max(1, self.term.cols)
        last = self._last_out
        k, n = 0, len(sources)
        for text in lines:
            while k < n and sources[k] is None:
                k += 1
            at = sources[k] if k < n else None
            k += 1 if len(text) <= cols else -(-len(text) // cols)
            frame, t = at or last
            out.append(TextLine(frame, t, text))

    def _pad(self, text: str) -> str:
        """A soft-wrapped row's text padded back to the full width its trailing blanks had."""
        width = sum(_width(c) for c in text) if not text.isascii() else len(text)
        return text + " " * max(0, self.term.cols - width)

    def _logical(self, y: int) -> str:
        term = self.term
        text = term.line(y)
        while term.is_wrapped(y) and y + 1 < term.rows:
            text = self._pad(text) + term.line(y + 1)
            y += 1
        return text

    def _text_from(self, start: tuple[int, int] | None) -> str | None:
        """The logical line from ``start`` (column, absolute row) to its end; None if off screen."""
        if start is None or self.term.alternate:
            return None
        y = start[1] - self.term.scrolled
        if not 0 <= y < self.term.rows:
            return None
        line = self.term.line(y)
        text = line[_index_at(line, start[0]) :]
        if self.term.is_wrapped(y) and y + 1 < self.term.rows:
            text = self._pad(line)[_index_at(line, start[0]) :] + self._logical(y + 1)
        return text.rstrip()

    # --- input and commands -----------------------------------------------------------------

    def _input(self, data: bytes, frame: Frame, out: list[Item]) -> None:
        term = self.term
        if self._masked:
            self._flush_masked(out)
        if term.alternate:
            self._keys.clear()
            self._typing = False
            self._start = None
            self._after_cr = False
            return
        first_line = True
        i = 0
        n = len(data)
        while i < n:
            m = _ENTER.search(data, i)
            j = n if m is None else m.start()
            if j > i:
                if not self._typing:
                    self._begin(first_line)
                keys = data[i:j]
                cancel = keys.rfind(b"\x03")
                if cancel >= 0:  # Ctrl-C: the line typed so far is abandoned
                    self._keys.clear()
                    keys = keys[cancel + 1 :]
                room = MAX_KEYS - len(self._keys)
                if room > 0:
                    self._keys += keys[:room]
                self._after_cr = False
                self._echoed = False
            if j >= n:
                break
            i = j + 1
            if data[j] == 10 and (data[j - 1] == 13 if j > 0 else self._after_cr):
                self._after_cr = False
                continue  # CR LF is one Enter
            if not self._typing:
                self._begin(first_line)
            self._after_cr = data[j] == 13
            shown = self._line_at_enter() if self._echoed else None
            if shown is not None:
                # The screen had caught up with the keys: the command is the cursor's line as it
                # shows now, prompt cut (however the line was edited, completed, recalled or
                # redrawn, e.g. after a completion listing). Earlier lines still waiting for
                # their echo are settled first, in order.
                while self._pending:
                    self._emit_command(self._pending.popleft(), None, out)
                here = _Pending(frame.seq, frame.t_us, bytes(self._keys), 0, self._start, self._prompt, shown)
                self._emit_command(here, shown, out)
            else:
                text_now = self._text_from(self._start)
                self._pending.append(
                    _Pending(frame.seq, frame.t_us, bytes(self._keys), 0, self._start, self._prompt, text_now)
                )
            self._keys.clear()
            self._typing = False
            self._start = None
            first_line = False
        while len(self._pending) > _MAX_PENDING:
            self._emit_command(self._pending.popleft(), None, out)

    def _line_at_enter(self) -> str | None:
        """The logical line holding the cursor, after the prompt (the one seen at this line's first
        keystroke, or the last one that matched), if it starts with one and shows anything."""
        read = self._read_at_enter(self._prompt)
        if read is None:
            return None
        self._last_prompt = read[1]
        return read[0]

    def _read_at_enter(self, first: str) -> tuple[str, str] | None:
        """What :meth:`_line_at_enter` reads, and the prompt it cut (pure)."""
        term = self.term
        if term.alternate:
            return None
        y = term.cursor[1]
        if not 0 <= y < term.rows:
            return None
        while y > 0 and term.is_wrapped(y - 1):
            y -= 1
        line = self._logical(y).rstrip()
        for prompt in (first, self._last_prompt):
            cut = prompt.rstrip()
            if cut.strip() and line.startswith(cut):
                text = line[len(cut) :].strip()
                if not text:
                    return None  # nothing shows (typed blind, or the echo is late): wait for it
                return text, prompt
        return None

    def peek_enter(self, keys: bytes = b"") -> tuple[str | None, bytes] | None:
        """What the command line would be read as if Enter were typed now, after ``keys`` (input
        typed before that Enter, not yet fed). Pure: nothing changes, nothing is fed.

        None when an Enter now makes no command (the alternate screen is active: the scanner
        ignores input there). Otherwise ``(shown, line_keys)``: ``shown`` is the line as the
        screen shows it at the Enter, prompt cut, the way :meth:`feed` would read it there; None
        when the screen cannot tell yet (``keys`` holds input the screen has not echoed, no output
        came since the last keystroke, or nothing shows after the prompt). ``line_keys`` are the
        raw keystrokes of that line: those fed since the previous Enter plus ``keys`` after its
        last Enter (CR or LF), from the last Ctrl-C on, at most :data:`MAX_KEYS` bytes, as a
        :class:`Command` would hold them. A live gate uses this to decide on a command line before
        its Enter is recorded or sent (``keys_text(line_keys)`` is what the keys spell)."""
        term = self.term
        if term.alternate:
            return None
        enter = max(keys.rfind(b"\r"), keys.rfind(b"\n"))
        tail = keys[enter + 1 :]
        base = b"" if enter >= 0 else bytes(self._keys)
        cancel = tail.rfind(b"\x03")
        if cancel >= 0:
            base, tail = b"", tail[cancel + 1 :]
        line_keys = (base + tail)[:MAX_KEYS]
        shown: str | None = None
        if not keys and self._echoed:
            if self._typing:
                first = self._prompt
            else:  # an Enter with no keystroke before it: the prompt ends at the cursor
                x, y = term.cursor
                row = term.line(y) if 0 <= y < term.rows else ""
                first = row[: _index_at(row, x)]
            read = self._read_at_enter(first)
            shown = read[0] if read is not None else None
        return shown, line_keys

    def _begin(self, at_cursor: bool) -> None:
        """The first keystroke of a line: where the cursor is, the prompt ends (unless the line
        was typed ahead in the chunk of an earlier Enter: its prompt is not on screen yet)."""
        self._typing = True
        if not at_cursor:
            self._start = None
            return
        term = self.term
        x, y = term.cursor
        self._start = (x, y + term.scrolled)
        line = term.line(y) if 0 <= y < term.rows else ""
        self._prompt = line[: _index_at(line, x)]

    def _resolve_at_newline(self, out: list[Item]) -> None:
        """The output just fed ended with a newline: the row above the cursor may be the echoed command."""
        p = self._pending[0]
        term = self.term
        if term.alternate:
            self._emit_command(self._pending.popleft(), None, out)
            return
        y = term.cursor[1] - 1
        if y < 0:
            return
        while y > 0 and term.is_wrapped(y - 1):
            y -= 1
        row = y + term.scrolled
        if p.start is not None and p.start[1] < term.scrolled:
            # Where it began has scrolled off (a line taller than the screen): the keys' text.
            self._emit_command(self._pending.popleft(), None, out)
            return
        if p.start is not None and p.start[1] == row:
            text = self._text_from(p.start)
        else:
            line = self._logical(y).rstrip()
            typed = keys_text(p.keys)
            text = None
            if p.prompt.strip() and line.startswith(p.prompt.rstrip()):
                text = line[len(p.prompt) :] if line.startswith(p.prompt) else line[len(p.prompt.rstrip()) :]
            elif typed and line.endswith(typed):
                text = typed
            if text is None:
                p.waited += 1
                if p.waited >= _GIVE_UP_NEWLINES or (p.start is not None and row < p.start[1]):
                    self._emit_command(self._pending.popleft(), None, out)
                return
        self._emit_command(self._pending.popleft(), text, out)

    def _emit_command(self, p: _Pending, text: str | None, out: list[Item]) -> None:
        typed = keys_text(p.keys)
        if text is None:
            text = p.text_now if p.text_now else self._text_from(p.start)
        if text is None or (not text and p.start is None):
            # The screen cannot show the line (typed ahead, or scrolled off): what the keys spell.
            text = typed if p.start is None or text is None else ""
        text = text.strip()
        shown = [c for c in typed if not c.isspace()]
        blind = bool(shown) and not any(c in text for c in shown)
        if blind and p.text_now is not None:
            # Nothing typed ever showed: what the row holds after the Enter is the program's
            # output (``read -s; echo len 9`` prints on the prompt's row), not the command.
            text = p.text_now.strip()
            blind = not any(c in text for c in shown)
        out.append(Command(p.frame, p.t_us, text, p.keys, blind, p.masked))

    def _flush_masked(self, out: list[Item]) -> None:
        """A masked run (a line typed at a password prompt) is a command line of its own."""
        if not self._masked:
            return
        frame, t = self._masked_at
        out.append(Command(frame, t, "", b"", False, self._masked))
        self._masked = 0
        self._masked_run = None


def scan(
    frames: Iterable[Frame], *, final: bool = True, after: Callable[[Frame, Terminal], None] | None = None
) -> Iterator[Item]:
    """Lines and commands of a verified frame stream (its header first), in frame order.

    ``final``: the stream is the whole session: end with :meth:`Scanner.finish` (the visible
    screen). A stream without a header yields nothing. ``after``: called with each frame from the
    header on and the scanner's terminal once that frame is on it (before the next one is fed,
    and before :meth:`Scanner.finish` changes it): the seek index takes its keyframes there, so
    one emulation serves both (:func:`replay.index_recording`)."""
    scanner: Scanner | None = None
    for frame in frames:
        if scanner is None:
            if frame.kind is FrameKind.HEADER and isinstance(frame.data, Header):
                scanner = Scanner.for_header(frame.data)
                if after is not None:
                    after(frame, scanner.term)
                if frame.data.command:  # an exec (ssh host CMD): its command line, as requested
                    yield Command(frame.seq, frame.t_us, frame.data.command, b"", False, 0)
            continue
        items = scanner.feed(frame)
        if after is not None:
            after(frame, scanner.term)
        yield from items
    if scanner is not None and final:
        yield from scanner.finish()
