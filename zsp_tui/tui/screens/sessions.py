"""SessionsScreen: every recorded session, filtered as you type, sorted by any column, paged.

The list (widgets/session_table.py) pages from the store, so 100,000 sessions cost a count and
the pages in view. Everything that touches the store or the search index runs in a worker thread:
the count for a filter (debounced while typing, the newest query cancelling the older), each
page, and the refresh every :data:`REFRESH` seconds that picks up new and ended sessions, the
verification outcomes of the recordings (zsp_tui.indexing.verified_outcomes: what the search
indexer verified, for recordings unchanged since) and the sessions flagged for masking more input
than a password needs (``input.masked.excessive`` audit events, read through the event index).
Rule matches are counted on each session row by the store (the FLAGS column); ``f`` shows only
the sessions in which a rule fired (``SessionQuery.flagged``). Enter opens the selected session's
replay.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static

from ...exceptions import ZspError
from ...indexing import verified_outcomes
from ...store import SessionQuery, SessionSort, SessionState
from ..context import Area, ReviewContext
from ..text import plain
from ..widgets.area_bar import AreaBar
from ..widgets.session_table import SessionTable
from .export import export_session

__all__ = ["DEBOUNCE", "REFRESH", "SessionsScreen"]

DEBOUNCE = 0.15
"""Seconds of no typing before the filter is applied."""
REFRESH = 5.0
"""Seconds between looks for new and ended sessions and fresh verification outcomes."""

_SORTS = list(SessionSort)
_STATES: list[SessionState | None] = [None, SessionState.LIVE, SessionState.ENDED]
FLAG_EVENT = "input.masked.excessive"


class SessionsScreen(Screen[None]):
    CSS_PATH = "sessions.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort by"),
        Binding("r", "reverse", "Reverse", show=False),  # in ? help; the footer keeps Quit at 80 columns
        Binding("l", "state", "Live/ended"),
        # In ? help, and named on the count line when a session is flagged: the footer keeps Quit at 80 columns.
        Binding("f", "flagged", "Flagged only", show=False),
        Binding("x", "export", "Export"),
        Binding("escape", "leave_filter", "To list", show=False),
    ]

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.query_value = SessionQuery()
        self.matched: int | None = None
        self.total: int | None = None
        self.verified: int | None = None
        self.flagged: int | None = None
        """Sessions in which a rule fired (all of them, whatever the filter)."""
        self.error: str | None = None
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.SESSIONS)
        yield Input(
            placeholder="filter: id, user, target, login, exec command, grant, reason (typed commands: 2 Search)",
            id="filter",
            select_on_focus=False,
        )
        yield Static(id="count", classes="status-line")
        yield SessionTable(self.ctx.service.sessions_page, id="sessions")
        yield Footer()

    @property
    def table(self) -> SessionTable:
        return self.query_one(SessionTable)

    def on_mount(self) -> None:
        self.table.focus()
        self._show_count()
        self._run_query()
        self._run_refresh()
        self.set_interval(REFRESH, self._run_refresh)

    # --- the query ------------------------------------------------------------------------

    @on(Input.Changed, "#filter")
    def _typed(self, event: Input.Changed) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE, lambda: self._set_query(replace(self.query_value, text=event.value)))

    @on(Input.Submitted, "#filter")
    def _submitted(self, event: Input.Submitted) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._set_query(replace(self.query_value, text=event.value))
        self.table.focus()

    def _set_query(self, q: SessionQuery) -> None:
        if q != self.query_value:
            self.query_value = q
            self._run_query()

    def _run_query(self, *, keep_cursor: bool = False) -> None:
        q = self.query_value
        svc = self.ctx.service

        def work() -> None:
            try:
                matched = svc.sessions_count(q)
                unfiltered = not q.text.strip() and q.state is None and not q.flagged
                total = matched if unfiltered else svc.sessions_count(SessionQuery())
                flagged = svc.sessions_count(SessionQuery(flagged=True))  # a partial index: cheap
            except (sqlite3.Error, ZspError) as exc:
                self.app.call_from_thread(self._store_failed, f"cannot read the sessions: {exc}")
                return
            self.app.call_from_thread(self._counted, q, matched, total, flagged, keep_cursor)

        if not keep_cursor:
            self._show_count(busy=True)
        self.run_worker(work, thread=True, exclusive=True, group="session-query", name="count sessions")

    def _counted(self, q: SessionQuery, matched: int, total: int, flagged: int, keep_cursor: bool) -> None:
        if q != self.query_value:
            return  # a newer query is on its way
        self.matched, self.total, self.flagged, self.error = matched, total, flagged, None
        self.table.reload(q, matched, keep_cursor=keep_cursor)
        self._show_count()

    def _store_failed(self, message: str) -> None:
        self.error = message
        self._show_count()

    @on(SessionTable.FetchFailed)
    def _page_failed(self, event: SessionTable.FetchFailed) -> None:
        self._store_failed(f"cannot read the sessions: {event.error}")

    def _run_refresh(self) -> None:
        """New and ended sessions, verification outcomes and flags, off the event loop."""
        data, svc = self.ctx.data, self.ctx.service

        def work() -> None:
            outcomes = verified_outcomes(data)  # never raises: an unreadable index is "unverified"
            try:
                flagged = frozenset(
                    e.session_id for e in svc.audit_newest(limit=100_000, event_prefix=FLAG_EVENT) if e.session_id
                )
            except (sqlite3.Error, ZspError, ValueError) as exc:
                self.app.call_from_thread(self._store_failed, f"cannot read the flags: {exc}")
                flagged = frozenset()
            self.app.call_from_thread(self._refreshed, outcomes, flagged)

        self.run_worker(work, thread=True, exclusive=True, group="session-refresh", name="verification outcomes")
        if self.matched is not None:
            self._run_query(keep_cursor=True)

    def _refreshed(self, outcomes: dict[str, str], flagged: frozenset[str]) -> None:
        table = self.table
        table.outcomes = outcomes
        table.flagged = flagged
        self.verified = len(outcomes)
        table.refresh()
        self._show_count()

    def _show_count(self, *, busy: bool = False) -> None:
        q = self.query_value
        line = Text(no_wrap=True, end="")
        if self.matched is None or self.total is None:
            line.append("counting sessions…", style="dim")
        else:
            line.append(f"{self.matched:,} of {self.total:,} sessions", style="bold")
        if q.state is not None:
            line.append(f" · {q.state.value} only")
        if q.flagged:
            line.append(" · flagged only (f: all)", style="bold")
        elif self.flagged:
            line.append(f" · {self.flagged:,} flagged (f)", style="bold red")
        line.append(f" · sorted by {q.sort.value.replace('_', ' ')} {'↓' if q.descending else '↑'}")
        if busy and self.matched is not None:
            line.append(" · searching…", style="dim")
        if self.verified is None:
            line.append(" · loading verification…", style="dim")
        if self.table.flagged:
            line.append(" · ! = masked more input than a password needs", style="yellow")
        if self.error:
            line.append(" · ")
            line.append_text(plain(self.error, "red"))
        self.query_one("#count", Static).update(line)

    # --- actions --------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        self.table.focus()

    def action_sort(self) -> None:
        nxt = _SORTS[(_SORTS.index(self.query_value.sort) + 1) % len(_SORTS)]
        self._set_query(replace(self.query_value, sort=nxt))

    def action_reverse(self) -> None:
        self._set_query(replace(self.query_value, descending=not self.query_value.descending))

    def action_export(self) -> None:
        row = self.table.selected
        if row is None:
            self.notify("no session selected", severity="warning")
            return
        export_session(self, self.ctx, row.session.id)

    def action_flagged(self) -> None:
        """Only the sessions in which a real-time rule fired, or all of them again."""
        self._set_query(replace(self.query_value, flagged=not self.query_value.flagged))

    def action_state(self) -> None:
        nxt = _STATES[(_STATES.index(self.query_value.state) + 1) % len(_STATES)]
        self._set_query(replace(self.query_value, state=nxt))

    @on(SessionTable.SortClicked)
    def _sort_clicked(self, event: SessionTable.SortClicked) -> None:
        q = self.query_value
        if event.sort == q.sort:
            self._set_query(replace(q, descending=not q.descending))
        else:
            # Times and durations read newest/longest first; names read A to Z.
            newest_first = event.sort in (SessionSort.STARTED, SessionSort.DURATION)
            self._set_query(replace(q, sort=event.sort, descending=newest_first))

    @on(SessionTable.Opened)
    def _opened(self, event: SessionTable.Opened) -> None:
        open_replay = getattr(self.app, "open_replay", None)
        if open_replay is not None:
            open_replay(event.session_id)
