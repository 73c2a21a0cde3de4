"""The timeline under the replayed screen: activity density, the playhead and markers.

Row 1 is the density of output across the recording (bytes per slice of time, as block
characters, scaled to the busiest slice); the part that is not shown is coloured: amber where
frames are intact but no signature covers them yet, red where a CORRUPT recording's chain is
broken (UNTRUSTED). Row 2 holds markers: ``▲`` commands, ``◆`` the search hit, ``⚑`` a rule fired
(flagged), ``!`` warnings, ``E`` expiry, ``R`` revocation, ``*`` masked input, ``•`` other
events, ``✖`` the chain break.
The playhead is the reversed column. Clicking (or dragging) anywhere seeks there
(:class:`Timeline.Seek`).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style as RichStyle
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from ..playback import Marker, MarkKind, Overview

__all__ = ["MARK_CHARS", "Timeline", "TimelineState"]

_BLOCKS = " ▁▂▃▄▅▆▇█"
MARK_CHARS: dict[MarkKind, tuple[str, str]] = {
    MarkKind.BREAK: ("✖", "bold red"),
    MarkKind.REVOCATION: ("R", "bold red"),
    MarkKind.EXPIRY: ("E", "bold red"),
    MarkKind.HIT: ("◆", "bold yellow"),
    MarkKind.FLAG: ("⚑", "bold magenta"),
    MarkKind.WARNING: ("!", "bold yellow"),
    MarkKind.MASKED: ("*", "magenta"),
    MarkKind.COMMAND: ("▲", "cyan"),
    MarkKind.EVENT: ("•", "white"),
}
"""Marker kind -> (character, style); earlier kinds win a column shared by several markers."""
_PRIORITY = {kind: i for i, kind in enumerate(MARK_CHARS)}
_SHOWN = RichStyle(color="green")
_UNSIGNED = RichStyle(color="yellow", bgcolor="#3a3000")
_UNTRUSTED = RichStyle(color="red", bgcolor="#400000")


@dataclass(frozen=True, slots=True)
class TimelineState:
    """Where things are on the timeline (microseconds from the recording's start)."""

    end_us: int
    """The timeline's right end."""
    shown_us: int
    """Everything up to here is signed and shown."""
    intact_us: int
    """Up to here the chain is intact (beyond ``shown_us``: intact but unsigned)."""
    corrupt: bool
    """Beyond ``intact_us`` the recording is CORRUPT (red) rather than merely cut short."""
    pos_us: int
    hit_us: int | None = None


class Timeline(Widget):
    """Density, markers and playhead of one recording; click to seek."""

    DEFAULT_CSS = """
    Timeline {
        height: 2;
        background: $panel;
    }
    """

    class Seek(Message):
        """The reviewer clicked the timeline at ``t_us``."""

        def __init__(self, t_us: int) -> None:
            super().__init__()
            self.t_us = t_us

    def __init__(self, overview: Overview, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.overview = overview
        self.state = TimelineState(0, 0, 0, False, 0)
        self._cache: tuple[tuple[int, int, int], list[int]] | None = None
        self._marks: tuple[tuple[object, ...], dict[int, Marker]] | None = None
        self._drawn_version = -1

    def update_state(self, state: TimelineState) -> None:
        # The overview grows in a thread (commands, markers, density) while the playhead may stand
        # still: a paused replay must still show what was read since.
        if state != self.state or self.overview.version != self._drawn_version:
            self.state = state
            self._drawn_version = self.overview.version
            self.refresh()

    def x_of(self, t_us: int) -> int:
        width = self.size.width
        if width <= 0:
            return 0
        return min(width - 1, max(0, t_us * width // max(self.state.end_us, 1)))

    def t_of(self, x: int) -> int:
        width = max(self.size.width, 1)
        x = min(max(x, 0), width - 1)
        # The middle of the column, so that clicking a marker lands on (or just after) it.
        return min(self.state.end_us, (2 * x + 1) * self.state.end_us // (2 * width))

    def _density(self, width: int) -> list[int]:
        key = (width, self.state.end_us, self.overview.version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.overview.density(width, self.state.end_us))
        return self._cache[1]

    def _region(self, x: int) -> RichStyle:
        st = self.state
        t = (2 * x + 1) * st.end_us // (2 * max(self.size.width, 1))
        if t <= st.shown_us or st.end_us <= st.shown_us:
            return _SHOWN
        if t <= st.intact_us or not st.corrupt:
            return _UNSIGNED
        return _UNTRUSTED

    def markers_by_column(self, width: int) -> dict[int, Marker]:
        """The marker drawn in each column (the most important where several fall together)."""
        st = self.state
        key = (width, self.overview.version, st.end_us, st.hit_us, st.corrupt, st.intact_us)
        if self._marks is not None and self._marks[0] == key:
            return self._marks[1]
        markers, _keys, _commands = self.overview.snapshot()
        if st.hit_us is not None:
            markers.append(Marker(st.hit_us, MarkKind.HIT, "search hit", -1))
        if st.corrupt:
            markers.append(Marker(st.intact_us, MarkKind.BREAK, "chain breaks", -1))
        out: dict[int, Marker] = {}
        for m in markers:
            x = self.x_of(m.t_us)
            old = out.get(x)
            if old is None or _PRIORITY[m.kind] < _PRIORITY[old.kind]:
                out[x] = m
        self._marks = (key, out)
        return out

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width <= 0:
            return Strip([])
        play_x = self.x_of(self.state.pos_us)
        segs: list[Segment] = []
        if y == 0:
            density = self._density(width)
            top = max(density) if density else 0
            for x, n in enumerate(density):
                level = 0 if n <= 0 or top <= 0 else max(1, n * 8 // top)
                char = _BLOCKS[level]
                style = self._region(x)
                if char == " " and style is not _SHOWN:
                    char = "░"
                if x == play_x:
                    style = style + RichStyle(reverse=True, bold=True)
                segs.append(Segment(char, style))
        elif y == 1:
            marks = self.markers_by_column(width)
            for x in range(width):
                m = marks.get(x)
                if m is None:
                    char, style = "─" if x != play_x else "┃", RichStyle(dim=x != play_x)
                else:
                    char, spec = MARK_CHARS[m.kind]
                    style = RichStyle.parse(spec)
                if x == play_x:
                    style = style + RichStyle(reverse=True, bold=True)
                segs.append(Segment(char, style))
        else:
            return Strip.blank(width)
        return Strip(segs, width)

    def _seek_at(self, x: int) -> None:
        if self.state.end_us > 0:
            self.post_message(self.Seek(self.t_of(x)))

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self._seek_at(event.x)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if event.button == 1:  # dragging the playhead
            self._seek_at(event.x)
