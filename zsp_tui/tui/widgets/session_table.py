"""SessionTable: the session list as a virtual table that pages from the store.

A data dir can hold 100,000 sessions, so the table never holds them: it knows only how many
rows match (``total``) and draws each visible line through the Line API (``render_line``),
asking for the pages of :data:`PAGE` rows around the viewport in a worker thread and keeping a
few of them (:data:`KEEP_PAGES`). Rows not fetched yet draw as a dim placeholder, then the page
arrives and its lines are redrawn. After :meth:`SessionTable.reload` (a new filter, order, or the
periodic refresh) the previous pages stay on screen until their replacements arrive, so the list
does not flash blank every few seconds.

Every stored value (user, target, login, grant, reason, end reason, flag severity) is drawn
through :func:`~zsp_tui.tui.text.clip`: literal text, control characters escaped, never markup.

The first line is the header; clicking a column title asks to sort by it (:class:`SortClicked`).
Columns give way on narrow terminals in a fixed order of priority (:data:`COLUMNS`).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ...clock import format_duration
from ...commands.sessions import session_status
from ...exceptions import ZspError
from ...store import SessionQuery, SessionRow, SessionSort
from ..text import clip

__all__ = ["COLUMNS", "KEEP_PAGES", "PAGE", "Column", "SessionTable", "badge", "flags_cell", "status_of"]

PAGE = 100
"""Rows fetched per store query."""
KEEP_PAGES = 8
"""Pages kept in memory (the least recently drawn go first)."""

Fetch = Callable[[SessionQuery, int, int], list[SessionRow]]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    """Width wanted."""
    min_width: int
    """Width it may shrink to before it is dropped."""
    priority: int
    """Higher stays longer when the terminal is narrow."""
    sort: SessionSort | None = None
    """What clicking its title sorts by."""
    flex: bool = False
    """Takes the width the others leave."""
    short: str = ""
    """The title drawn when the column is narrower than ``title``."""


COLUMNS: tuple[Column, ...] = (
    Column("status", "STATUS", 12, 6, 10, SessionSort.STATUS),  # "interrupted!" when flagged
    Column("badge", "VERIFIED", 10, 8, 9),
    # Rule matches ("3 high"; "3H" when narrow): gives way after the reason, before the start time.
    Column("flags", "FLAGS", 10, 4, 7, short="FLAG"),
    Column("id", "SESSION", 9, 9, 2),
    Column("user", "USER", 14, 8, 9, SessionSort.USER),
    Column("where", "LOGIN@TARGET", 20, 14, 8, SessionSort.TARGET),
    Column("grant", "GRANT / REASON", 22, 14, 6, flex=True),
    Column("started", "STARTED", 16, 11, 7, SessionSort.STARTED),
    Column("duration", "DURATION", 8, 6, 4, SessionSort.DURATION),
    # How it ended (exit, revoked, expired...) matters more to a reviewer than how long it ran.
    Column("end", "ENDED BY", 12, 7, 5, SessionSort.END_REASON),
)

ESSENTIAL = 6
"""Columns of this priority or more shrink before they are dropped."""

_STATUS_STYLE = {
    "live": "bold green",
    "sealed": "",
    "incomplete": "yellow",
    "corrupt": "bold red",
    "interrupted": "yellow",
}
_BADGE_STYLE = {"VALID": "green", "INCOMPLETE": "yellow", "CORRUPT": "bold reverse red", "unverified": "dim"}
_SEVERITY_STYLE = {"critical": "bold reverse red", "high": "bold red", "medium": "yellow", "low": "cyan", "info": ""}


def layout(width: int) -> list[tuple[Column, int]]:
    """The columns shown at ``width`` cells, in table order, with their widths (one space between).

    Low-priority columns go first (below :data:`ESSENTIAL`), then the rest shrink towards their
    minimum, lowest priority first, and only then are more dropped; the flexible column takes
    what is left."""
    shown = list(COLUMNS)
    widths = {c.key: c.width for c in shown}

    def need() -> int:
        return sum(widths[c.key] for c in shown) + max(0, len(shown) - 1)

    def drop() -> None:
        gone = min(shown, key=lambda c: c.priority)
        shown.remove(gone)

    while need() > width and min(c.priority for c in shown) < ESSENTIAL:
        drop()
    for c in sorted(shown, key=lambda c: c.priority):
        if need() <= width:
            break
        widths[c.key] = max(c.min_width, widths[c.key] - (need() - width))
    while len(shown) > 1 and need() > width:
        drop()
    flex = next((c for c in shown if c.flex), None)
    if flex is not None and need() < width:
        widths[flex.key] += width - need()
    return [(c, widths[c.key]) for c in shown]


def status_of(row: SessionRow, outcomes: dict[str, str]) -> str:
    """live/sealed/incomplete/corrupt/interrupted, as ``zsp sessions`` says (commands/sessions.py)."""
    return session_status(row.session, outcomes.get(_abs(row.session.path)))


def badge(row: SessionRow, outcomes: dict[str, str]) -> str:
    """VALID, INCOMPLETE or CORRUPT as the search index verified the recording (unchanged since),
    else ``unverified`` (live, not indexed yet, or changed since)."""
    return outcomes.get(_abs(row.session.path), "unverified")


def flags_cell(count: int, severity: str | None, width: int) -> Text:
    """The FLAGS cell: ``3 high``, or ``3H`` where that does not fit; blank without flags. The
    severity comes from the store (escaped like any stored text)."""
    if count <= 0:
        return Text("", end="")
    sev = severity or ""
    style = _SEVERITY_STYLE.get(sev, "bold")
    full = f"{count} {sev}".rstrip()
    if len(full) <= width:
        return clip(full, width, style)
    return clip(f"{count}{sev[:1].upper()}", width, style)


def _abs(path: str) -> str:
    return str(Path(path).absolute())


def _when(dt: datetime, width: int) -> str:
    local = dt.astimezone(UTC)
    return local.strftime("%Y-%m-%d %H:%M" if width >= 16 else "%m-%d %H:%M")


class SessionTable(ScrollView, can_focus=True):
    """The session list: cursor row, keyboard and mouse, Enter (or a double click) opens."""

    DEFAULT_CSS = """
    SessionTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    SessionTable > .session-table--header {
        text-style: bold;
        background: $panel;
    }
    SessionTable > .session-table--cursor {
        background: $accent 50%;
    }
    SessionTable:focus > .session-table--cursor {
        background: $accent;
        text-style: bold;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"session-table--header", "session-table--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "open", "Open replay"),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class Opened(Message):
        """Enter or a double click on a row: open its replay."""

        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    class FetchFailed(Message):
        """The store could not give a page (the rows stay marked as not loaded)."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class SortClicked(Message):
        """A click on a sortable column title."""

        def __init__(self, sort: SessionSort) -> None:
            super().__init__()
            self.sort = sort

    def __init__(self, fetch: Fetch, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._fetch = fetch
        self.query_value = SessionQuery()
        self.total = 0
        self.counted = False
        """False until the first count arrived (an empty list then means no match)."""
        self.outcomes: dict[str, str] = {}
        """Recording path -> verification outcome (zsp_tui.indexing.verified_outcomes)."""
        self.flagged: frozenset[str] = frozenset()
        """Sessions that masked more input than a password needs (input.masked.excessive)."""
        self._pages: OrderedDict[int, list[SessionRow]] = OrderedDict()
        self._stale: dict[int, list[SessionRow]] = {}
        self._pending: set[int] = set()
        self._failed: set[int] = set()
        self._follow: tuple[str, int] | None = None
        """(session id, pages left to look in) that the cursor should stay on after a reload."""
        self._generation = 0
        self.fetches = 0
        """Pages asked for (tests read it: proof of paging)."""

    # --- data -----------------------------------------------------------------------------

    def reload(self, query: SessionQuery, total: int, *, keep_cursor: bool = True) -> None:
        """Show ``total`` rows of ``query``; drop the cached pages (kept on screen until replaced)."""
        same = query == self.query_value
        selected = self.selected if same and keep_cursor else None
        # New sessions push the rows down (newest first): the cursor follows the session it was
        # on, found in the first pages that arrive, rather than stay on a row number.
        self._follow = (selected.session.id, 2) if selected is not None else None
        self.query_value = query
        self.total = max(0, total)
        self.counted = True
        self._generation += 1
        self._stale = dict(self._pages) if same else {}
        self._pages.clear()
        self._pending.clear()
        self._failed.clear()
        self.virtual_size = Size(self.size.width, self.total + 1)
        if not (keep_cursor and same):
            self.cursor = 0
            self.scroll_to(y=0, animate=False, immediate=True)
        else:
            self.cursor = min(self.cursor, max(0, self.total - 1))
        self.refresh()

    def row(self, index: int) -> SessionRow | None:
        """Row ``index`` if its page is here (a read only: drawing is what fetches pages)."""
        return self._row(index, fetch=False)

    def _row(self, index: int, *, fetch: bool) -> SessionRow | None:
        if not 0 <= index < self.total:
            return None
        page = index // PAGE
        rows = self._pages.get(page)
        if rows is not None:
            self._pages.move_to_end(page)
        else:
            if fetch:
                self._request(page)
            rows = self._stale.get(page)
        if rows is None:
            return None
        offset = index - page * PAGE
        return rows[offset] if offset < len(rows) else None

    @property
    def cached_rows(self) -> int:
        return sum(len(p) for p in self._pages.values())

    @property
    def selected(self) -> SessionRow | None:
        return self.row(self.cursor)

    def _request(self, page: int) -> None:
        if page in self._pending or page in self._failed:
            return
        self._pending.add(page)
        generation, query = self._generation, self.query_value

        def work() -> None:
            if not self._wanted(generation, page):
                # Scrolled past before this worker ran (PgDn held down): skip the query; the
                # redraw asks again for whatever is in view by then.
                self.app.call_from_thread(self._skipped, generation, page)
                return
            try:
                rows = self._fetch(query, page * PAGE, PAGE)
            except (sqlite3.Error, ZspError) as exc:
                self.app.call_from_thread(self._fetch_failed, generation, page, str(exc))
                return
            self.app.call_from_thread(self._arrived, generation, page, rows)

        self.fetches += 1
        self.run_worker(work, thread=True, group="session-pages", name=f"page {page}", exit_on_error=False)

    def _wanted(self, generation: int, page: int) -> bool:
        """Still this query, and the page is in view or next to it (read from the worker thread:
        plain ints, a stale answer only costs or saves one query)."""
        if generation != self._generation:
            return False
        top = int(self.scroll_offset.y) // PAGE
        bottom = (int(self.scroll_offset.y) + self.size.height) // PAGE
        return top - 2 <= page <= bottom + 2

    def _skipped(self, generation: int, page: int) -> None:
        if generation == self._generation:
            self._pending.discard(page)
            self.refresh()

    def _fetch_failed(self, generation: int, page: int, message: str) -> None:
        """The store refused a page: say so (the next reload asks again), never show it empty."""
        if generation == self._generation:
            self._pending.discard(page)
            self._failed.add(page)
            self.post_message(self.FetchFailed(message))

    def _arrived(self, generation: int, page: int, rows: list[SessionRow]) -> None:
        if generation != self._generation:
            return
        self._pending.discard(page)
        self._pages[page] = rows
        self._stale.pop(page, None)
        if self._follow is not None:
            sid, tries = self._follow
            found = next((i for i, r in enumerate(rows) if r.session.id == sid), None)
            if found is not None:
                self._follow = None
                moved = page * PAGE + found - self.cursor
                if moved:
                    self.scroll_to(y=self.scroll_offset.y + moved, animate=False, immediate=True)
                    self.cursor += moved
            else:
                self._follow = (sid, tries - 1) if tries > 1 else None
        while len(self._pages) > KEEP_PAGES:
            self._pages.popitem(last=False)
        self.refresh()

    # --- drawing --------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.total + 1)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        cols = layout(width)
        if y == 0:
            return self._strip(self._header(cols), width, self.get_component_rich_style("session-table--header"))
        index = self.scroll_offset.y + y - 1
        if index >= self.total:
            if index == 0 and self.counted:
                return self._strip(Text("  no sessions match", style="dim italic"), width, self.rich_style)
            return Strip.blank(width, self.rich_style)
        row = self._row(index, fetch=True)
        style = self.rich_style
        if index == self.cursor:
            style = style + self.get_component_rich_style("session-table--cursor")
        if row is None:
            return self._strip(Text("  …", style="dim"), width, style)
        return self._strip(self._line(row, cols), width, style)

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        segments = list(text.render(self.app.console))
        return Strip(segments).apply_style(style).adjust_cell_length(width, style)

    def _header(self, cols: list[tuple[Column, int]]) -> Text:
        text = Text(no_wrap=True, end="")
        q = self.query_value
        for i, (col, width) in enumerate(cols):
            if i:
                text.append(" ")
            title = col.short if col.short and width < len(col.title) else col.title
            if col.sort is not None and col.sort == q.sort:
                title += " ▼" if q.descending else " ▲"
            text.append_text(clip(title, width, "underline" if col.sort is not None else ""))
            text.append(" " * max(0, width - text_len(title, width)))
        return text

    def cells(self, row: SessionRow, cols: list[tuple[Column, int]] | None = None) -> dict[str, Text]:
        """The row's cells as drawn (tests read them)."""
        s = row.session
        status = status_of(row, self.outcomes)
        verdict = badge(row, self.outcomes)
        now = datetime.now(UTC)
        widths = dict((c.key, w) for c, w in (cols or layout(200)))
        out: dict[str, Text] = {}
        for key, width in widths.items():
            if key == "status":
                flag = "!" if s.id in self.flagged else ""
                out[key] = clip(status + flag, width, _STATUS_STYLE.get(status, ""))
            elif key == "badge":
                out[key] = clip(verdict, width, _BADGE_STYLE.get(verdict, ""))
            elif key == "flags":
                out[key] = flags_cell(s.flags, s.flag_severity, width)
            elif key == "id":
                out[key] = clip("…" + s.id[-8:], width, "dim")
            elif key == "user":
                out[key] = clip(s.user, width)
            elif key == "where":
                out[key] = clip(f"{s.login}@{s.target}", width)
            elif key == "grant":
                grant = Text(no_wrap=True, end="")
                grant.append_text(clip(s.grant_id or "-", 12, "cyan"))
                if row.reason:
                    grant.append(" ")
                    grant.append_text(clip(row.reason, max(1, width - grant.cell_len)))
                out[key] = grant
            elif key == "started":
                out[key] = clip(_when(s.started_at, width), width)
            elif key == "duration":
                out[key] = clip(format_duration((s.ended_at or now) - s.started_at), width)
            else:
                out[key] = clip(s.end_reason or "-", width, "dim" if not s.end_reason else "")
        return out

    def _line(self, row: SessionRow, cols: list[tuple[Column, int]]) -> Text:
        cells = self.cells(row, cols)
        text = Text(no_wrap=True, end="")
        for i, (col, width) in enumerate(cols):
            if i:
                text.append(" ")
            cell = cells[col.key]
            if cell.cell_len > width:
                cell.truncate(width)
            text.append_text(cell)
            text.append(" " * (width - cell.cell_len))
        return text

    def visible_lines(self) -> list[str]:
        """The table as the reviewer sees it now, one string per line (for tests)."""
        return [self.render_line(y).text for y in range(self.scrollable_content_region.height)]

    # --- keyboard and mouse ---------------------------------------------------------------

    @property
    def _page_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        # Right after a reload the new height is not laid out yet and the scroll would stop
        # short of a far row (End at once after a filter): look again once it is.
        self.call_after_refresh(self._scroll_to_cursor)
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_offset.y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + self._page_rows:
            self.scroll_to(y=self.cursor - self._page_rows + 1, animate=False, immediate=True)

    def _move(self, to: int) -> None:
        if self.total:
            self.cursor = max(0, min(self.total - 1, to))

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * self._page_rows)

    def action_edge(self, end: int) -> None:
        self._move(self.total - 1 if end else 0)

    def action_open(self) -> None:
        row = self.selected
        if row is not None:
            self.post_message(self.Opened(row.session.id))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = 0
            for col, width in layout(self.scrollable_content_region.width):
                if x <= offset.x < x + width + 1:
                    if col.sort is not None:
                        self.post_message(self.SortClicked(col.sort))
                    return
                x += width + 1
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if 0 <= index < self.total:
            self.cursor = index
            if event.chain >= 2:
                self.action_open()


def text_len(title: str, width: int) -> int:
    """Cells a header title takes once clipped to ``width``."""
    return min(Text(title).cell_len, width)
