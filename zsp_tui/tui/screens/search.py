"""SearchScreen: one query across every indexed session, with the filters of ``zsp search``.

The query and its filters go through exactly what ``zsp search`` uses: :func:`replay.parse_query`
(words, ``"a phrase"``), :func:`zsp_tui.clock.parse_since` for the age or date, and
:meth:`replay.SqliteSearchIndex.search` with ``user``, ``target``, ``since_us`` and
``commands_only``: there is no second query language. The search runs in a thread worker (the
index may hold millions of lines) while the results table shows it is loading; each submitted
search (Enter, or toggling *commands only* once results are shown) appends one ``review.search``
audit event naming the reviewer, the query, the filters and the number of hits.

Hits are stored text from recordings and names from the store: every cell is built by
:func:`zsp_tui.tui.text.plain`, the matched spans styled on that Text (never markup). Enter (or a
click on the selected row) opens Replay at the hit's moment with the matched text highlighted.

Like ``zsp search``, the screen says when recordings are not (or no longer) in the index, so a
reviewer never takes "no match" for "never happened".
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Checkbox, DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from replay import Hit, HitKind, QueryError, ReplayError, parse_query

from ...clock import parse_since
from ...exceptions import ZspError
from ...indexing import coverage, index_exists
from ..context import Area, ReviewContext
from ..text import clip, plain
from ..widgets.area_bar import AreaBar

__all__ = ["LIMIT", "SearchRequest", "SearchScreen", "hit_kind", "hit_line"]

LIMIT = 500
"""Hits fetched per search (``zsp search --limit``); more means the query should be narrower."""

_CONTEXT = 40
"""Characters shown before the first match when a line is cut (as ``zsp search`` cuts)."""
_SHOWN = 300
"""Characters of a hit's line shown at most (the index keeps lines of up to 4,096)."""
_MATCH = "bold reverse"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One submitted search, parsed and checked in the UI thread before any worker runs."""

    words: str
    """The query as typed (audited as is)."""
    user: str | None
    target: str | None
    since: str | None
    """The filter as typed (``7d``, ``2026-11-30``); ``since_us`` is what it means."""
    since_us: int | None
    commands_only: bool


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the search worker hands back to the UI thread."""

    seq: int
    """Which submitted search this answers: a slower, superseded search never shows its hits."""
    hits: tuple[Hit, ...]
    error: str | None


def hit_kind(hit: Hit) -> str:
    """``command``, ``output``, or ``keys`` for a command whose typed text never showed on screen."""
    if hit.kind is HitKind.COMMAND:
        return "keys" if hit.blind else "command"
    return "output"


def hit_line(hit: Hit, width: int = _SHOWN) -> Text:
    """The hit's line as literal text, cut around the first match, every match styled.

    Each piece is escaped on its own (``printable`` works character by character), so the
    styled spans land exactly on the escaped matches."""
    text, spans = hit.text, list(hit.spans)
    lo = max(0, spans[0][0] - _CONTEXT) if spans else 0
    hi = min(len(text), lo + width)
    out = Text(no_wrap=True, end="")
    if lo:
        out.append("…", style="dim")
    pos = lo
    for a, b in spans:
        a, b = max(a, pos), min(b, hi)
        if a >= b:
            continue
        out.append_text(plain(text[pos:a]))
        out.append_text(plain(text[a:b], _MATCH))
        pos = b
    out.append_text(plain(text[pos:hi]))
    if hi < len(text):
        out.append("…", style="dim")
    return out


def _matched(hit: Hit) -> str | None:
    """The text of the hit's first match as the recording shows it (what Replay highlights):
    the first span, run on through the next ones while only spaces part them, so the query
    ``kubectl delete`` highlights ``kubectl delete`` and not ``kubectl`` alone."""
    if not hit.spans:
        return None
    a, b = hit.spans[0]
    for c, d in hit.spans[1:]:
        if hit.text[b:c].strip(" "):
            break
        b = d
    return hit.text[a:b] or None


def _when(hit: Hit) -> str:
    """The moment of the hit, UTC (the session's start plus the hit's offset)."""
    at = datetime.fromtimestamp((hit.started_us + hit.t_us) / 1e6, UTC)
    return at.strftime("%m-%d %H:%M")


def _offset(us: int) -> str:
    s = us // 1_000_000
    return f"+{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class SearchScreen(Screen[None]):
    CSS_PATH = "search.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_query", "Search", key_display="/"),
        Binding("f", "focus_filters", "Filters"),
        Binding("enter", "open", "Open at hit"),
        Binding("escape", "focus_results", "Results", key_display="esc"),
    ]

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._hits: list[Hit] = []
        self._last: SearchRequest | None = None
        self._seq = 0

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.SEARCH)
        yield Input(
            placeholder='search commands and output: words, "a phrase" (Enter searches)',
            id="query",
        )
        with Horizontal(id="filters"):
            yield Input(placeholder="user", id="user")
            yield Input(placeholder="target", id="target")
            yield Input(placeholder="since (7d, 2026-11-30)", id="since")
            yield Checkbox("commands only", id="commands")
        yield Static(Text(""), id="coverage", classes="status-line")
        yield Static(plain("type a query and press Enter"), id="status", classes="status-line")
        table: DataTable[Text] = DataTable(id="results", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(Text(""), id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#results", DataTable)
        for label in ("session", "when (UTC)", "user", "login@target", "kind", "line"):
            table.add_column(plain(label), key=label)
        self.query_one("#query", Input).focus()
        self._check_coverage()

    # --- submitting -------------------------------------------------------------------------

    def _request(self) -> SearchRequest | None:
        """The search the inputs ask for, or None with the problem shown (one line)."""
        words = self.query_one("#query", Input).value
        user = self.query_one("#user", Input).value.strip() or None
        target = self.query_one("#target", Input).value.strip() or None
        since = self.query_one("#since", Input).value.strip() or None
        try:
            parse_query(words)
        except QueryError as exc:
            self._status(plain(f"{exc.reason}", "bold red"))
            return None
        since_us: int | None = None
        if since is not None:
            try:
                since_us = int(parse_since(since, self.ctx.service.clock.now()).timestamp() * 1e6)
            except ValueError as exc:
                self._status(plain(f"since: {exc}", "bold red"))
                return None
        commands_only = self.query_one("#commands", Checkbox).value
        return SearchRequest(words, user, target, since, since_us, commands_only)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if self._last is not None:  # results are shown: they follow the toggle
            self._submit()

    def _submit(self) -> None:
        request = self._request()
        if request is None:
            return
        self._last = request
        self._seq += 1
        table = self.query_one("#results", DataTable)
        table.loading = True
        self._status(plain(f"searching for {request.words.strip()}…", "italic"))
        self._search(request, self._seq)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def _search(self, request: SearchRequest, seq: int) -> None:
        """Query the index off the UI thread; audit the search once; hand the hits back; then
        check the index's coverage (a stat of every recording: after the hits, not before)."""
        hits: list[Hit] = []
        error: str | None = None
        if not index_exists(self.ctx.data):
            error = (
                "nothing is indexed yet: sessions are indexed as they end "
                "(`zsp index` indexes recordings made elsewhere)"
            )
        else:
            try:
                index = self.ctx.search_index()
                hits = index.search(
                    parse_query(request.words),
                    user=request.user,
                    target=request.target,
                    since_us=request.since_us,
                    commands_only=request.commands_only,
                    limit=LIMIT,
                )
            except (ReplayError, OSError) as exc:
                error = f"{exc}; `zsp index --rebuild` rebuilds the index from the recordings"
        # "target" and "login" name the event's own target in an audit event: filters are prefixed
        try:
            self.ctx.audit(
                "review.search",
                f"{self.ctx.reviewer.name} searched for {request.words.strip()!r}: {len(hits)} hit(s)",
                outcome="failure" if error else "success",
                query=request.words,
                hits=len(hits),
                filter_user=request.user,
                filter_target=request.target,
                filter_since=request.since,
                commands_only=request.commands_only,
                error=error,
            )
        except (ZspError, sqlite3.Error, OSError) as exc:
            # Fail closed: a search the audit log does not hold (or one no longer allowed) shows nothing.
            hits, error = [], f"not shown: {exc}"
        self.app.call_from_thread(self._show, request, _Outcome(seq, tuple(hits), error))
        if error is None:
            cov = self._coverage_text()
            self.app.call_from_thread(self.query_one("#coverage", Static).update, cov)

    def _show(self, request: SearchRequest, outcome: _Outcome) -> None:
        if outcome.seq != self._seq:
            return  # a newer search was submitted meanwhile: its hits are the ones to show
        table = self.query_one("#results", DataTable)
        table.loading = False
        table.clear()
        self._hits = list(outcome.hits)
        for n, hit in enumerate(self._hits):
            table.add_row(
                plain(hit.session_id[-8:], "dim"),
                plain(_when(hit)),
                clip(hit.user, 16),
                clip(f"{hit.login}@{hit.target}", 24),
                plain(hit_kind(hit) + ("" if hit.outcome == "VALID" else f" [{hit.outcome}]")),
                hit_line(hit, 120),
                key=str(n),
            )
        if outcome.error is not None:
            self._status(plain(outcome.error, "bold red"))
        elif not self._hits:
            self._status(plain(f"no match for {request.words.strip()}"))
        else:
            more = f" (the first {LIMIT}; narrow the query for more)" if len(self._hits) >= LIMIT else ""
            self._status(plain(f"{len(self._hits)} hit(s), newest first{more}; Enter opens the replay at the hit"))
            table.focus()
        self._show_detail()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that failed unexpectedly: say so in the status line instead of loading forever."""
        if event.state is not WorkerState.ERROR or event.worker.group not in ("search", "coverage"):
            return
        self.query_one("#results", DataTable).loading = False
        self._status(plain(f"search failed: {event.worker.error}", "bold red"))

    # --- coverage ---------------------------------------------------------------------------

    def _coverage_text(self) -> Text:
        """One line saying how far the index covers the recordings (empty when it covers all)."""
        try:
            cov = coverage(self.ctx.data, self.ctx.search_index())
        except (ReplayError, OSError) as exc:
            return plain(f"could not check which recordings are indexed: {exc}", "yellow")
        if cov.stale:
            return plain(
                f"{len(cov.stale)} of {cov.total} recordings are not in the search index or changed since "
                "(results may be missing): `zsp index` brings them in",
                "bold yellow",
            )
        return plain(f"{cov.total} recording(s) indexed", "dim")

    @work(thread=True, exclusive=True, group="coverage", exit_on_error=False)
    def _check_coverage(self) -> None:
        if not index_exists(self.ctx.data):
            line = plain("nothing is indexed yet: sessions are indexed as they end (`zsp index`)", "bold yellow")
        else:
            line = self._coverage_text()
        self.app.call_from_thread(self.query_one("#coverage", Static).update, line)

    # --- results ----------------------------------------------------------------------------

    def _selected(self) -> Hit | None:
        table = self.query_one("#results", DataTable)
        if not self._hits or table.row_count == 0:
            return None
        row = table.cursor_row
        return self._hits[row] if 0 <= row < len(self._hits) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def _show_detail(self) -> None:
        hit = self._selected()
        detail = self.query_one("#detail", Static)
        if hit is None:
            detail.update(Text(""))
            return
        head = Text(no_wrap=False, end="")
        head.append_text(plain(f"{hit.user}  {hit.login}@{hit.target}  session {hit.session_id}", "bold"))
        head.append("  ")
        at = datetime.fromtimestamp((hit.started_us + hit.t_us) / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        head.append_text(plain(f"{hit_kind(hit)} at {at}, {_offset(hit.t_us)} into the session", "dim"))
        if hit.outcome != "VALID":
            head.append_text(plain(f"  recording {hit.outcome}", "bold yellow"))
        head.append("\n")
        line = hit_line(hit, _SHOWN)
        line.no_wrap = False
        head.append_text(line)
        detail.update(head)

    def action_open(self) -> None:
        hit = self._selected()
        if hit is None:
            return
        open_replay = getattr(self.app, "open_replay", None)
        if open_replay is not None:
            open_replay(hit.session_id, at_us=hit.t_us, highlight=_matched(hit))

    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def action_focus_filters(self) -> None:
        self.query_one("#user", Input).focus()

    def action_focus_results(self) -> None:
        self.query_one("#results", DataTable).focus()

    def _status(self, text: Text) -> None:
        shown = text.copy()
        shown.no_wrap = False  # a long error is read whole, over up to three lines
        self.query_one("#status", Static).update(shown)
