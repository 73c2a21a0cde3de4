"""AuditScreen: the audit log, newest first, filtered by actor, event and time, with its chain
verification status shown at the top.

The log grows with every login, decision and review, so the screen never reads it whole: it
reads a page of events backwards from the newest (AccessService.audit_newest, through the store's
event and sequence indexes) and the next older page when the cursor nears the end of what is
shown; every few seconds it looks for newer events. Verifying the chain does read it whole (as
``zsp audit verify`` does, with the data dir's trusted keys): that runs once in a worker when
the screen opens and again on ``v``, and its verdict is the first thing on the screen, VALID in
green or BROKEN at the frame where the chain breaks, with the reason. Until it is known the
screen says so; a failure to verify at all is shown as a failure, never as valid.

Every value of an event (actor, message, target, fields) is drawn through :func:`plain`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import msgpack
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from ...audit import AuditEvent, AuditReport
from ...clock import parse_since, rfc3339
from ...exceptions import ZspError
from ..context import Area, ReviewContext
from ..text import clip, plain
from ..widgets.area_bar import AreaBar

__all__ = ["PAGE", "AuditFilter", "AuditScreen", "AuditTable", "chain_verdict"]

PAGE = 200
"""Events read per page."""
DEBOUNCE = 0.25
REFRESH = 5.0
"""Seconds between looks for newer events."""

_DECODE_ERRORS = (ValueError, TypeError, KeyError, msgpack.UnpackException)


class AuditTable(DataTable[Text]):
    """The event list: Home and End move the cursor (and so page in older events), not just the view."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
    ]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str = ""
    """Exact actor name; empty for everyone."""
    event: str = ""
    """Event name prefix (``review.``, ``grant.``); empty for every event."""
    since: datetime | None = None


def chain_verdict(report: AuditReport) -> Text:
    """What the reviewer reads first: VALID, or BROKEN at the frame where the chain breaks."""
    if report.ok:
        line = Text("audit chain VALID", style="bold green")
        detail = f": {report.events:,} frames, signed up to seq {max(0, report.signed - 1):,}"
        if report.last_checkpoint is not None:
            detail += f", last checkpoint {rfc3339(report.last_checkpoint)[:19]}Z"
        line.append_text(plain(detail + f" ({report.detail})", "green"))
        return line
    bad = report.report.bad_frame
    line = Text("audit chain BROKEN" + (f" at seq {bad}" if bad is not None else ""), style="bold reverse red")
    line.append(" ")
    line.append_text(plain(report.detail, "bold red"))
    return line


class AuditScreen(Screen[None]):
    CSS_PATH = "audit.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "focus_filter('actor')", "Actor"),
        Binding("e", "focus_filter('event')", "Event"),
        Binding("t", "focus_filter('since')", "Since"),
        Binding("v", "verify", "Verify chain"),
        Binding("escape", "leave_filter", "To list", show=False),
    ]

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.filter = AuditFilter()
        self.events: list[AuditEvent] = []
        self.exhausted = False
        """True once the oldest matching event is shown."""
        self.report: AuditReport | None = None
        self.verify_error: str | None = None
        self.error: str | None = None
        self._loading = False
        self._generation = 0
        self._debounce: Timer | None = None

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.AUDIT)
        yield Static(Text("audit chain: verifying…", style="bold yellow"), id="chain")
        with Horizontal(id="filters"):
            yield Input(placeholder="actor (exact)", id="actor")
            yield Input(placeholder="event prefix: grant., review.", id="event")
            yield Input(placeholder="since: 2026-11-30, 12h, 7d", id="since")
        yield Static(id="status", classes="status-line")
        yield AuditTable(id="events", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="detail-box"):
            yield Static(id="detail")
        yield Footer()

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#events", DataTable)

    def on_mount(self) -> None:
        table = self.table
        table.add_column("TIME (UTC)", key="time", width=14)
        table.add_column("SEQ", key="seq", width=6)
        table.add_column("EVENT", key="event", width=22)
        table.add_column("ACTOR", key="actor", width=16)
        table.add_column("MESSAGE", key="message")
        table.focus()
        self.watch(table, "scroll_y", self._scrolled)
        self._load(reset=True)
        self.action_verify()
        self.set_interval(REFRESH, self._look_for_newer)

    # --- reading the log ------------------------------------------------------------------

    def _load(self, *, reset: bool) -> None:
        """The newest page (``reset``) or the next older one, in a worker."""
        if reset:
            self._generation += 1
            self.events, self.exhausted = [], False
            self.table.clear()
        elif self._loading or self.exhausted:
            return
        self._loading = True
        generation, f, svc = self._generation, self.filter, self.ctx.service
        before = self.events[-1].seq if self.events else None

        def work() -> None:
            try:
                page = svc.audit_newest(before=before, limit=PAGE, actor=f.actor, event_prefix=f.event, since=f.since)
            except _DECODE_ERRORS as exc:
                self.app.call_from_thread(self._failed, generation, f"cannot decode the audit log: {exc}")
                return
            self.app.call_from_thread(self._arrived, generation, page)

        self._show_status()
        self.run_worker(work, thread=True, group="audit-page", name="audit page")

    def _arrived(self, generation: int, page: list[AuditEvent]) -> None:
        if generation != self._generation:
            return
        self._loading = False
        self.error = None
        self.exhausted = len(page) < PAGE
        self.events.extend(page)
        for ev in page:
            self._add_row(ev)
        if page and self.table.row_count == len(page):
            self._show_detail(page[0])
        elif not self.events:
            self.query_one("#detail", Static).update(Text("no events match", style="dim"))
        self._show_status()

    def _failed(self, generation: int, message: str) -> None:
        if generation == self._generation:
            self._loading = False
            self.error = message
            self._show_status()

    def _add_row(self, ev: AuditEvent) -> None:
        style = "red" if ev.outcome not in ("success", "") else ""
        self.table.add_row(
            plain(rfc3339(ev.time)[5:19].replace("T", " ")),
            plain(ev.seq),
            clip(ev.event, 22, style),
            clip(ev.actor, 12),
            clip(ev.message, 200),
            key=str(ev.seq),
        )

    def _look_for_newer(self) -> None:
        if self._loading or not self.events:
            return
        newest, generation, f, svc = self.events[0].seq, self._generation, self.filter, self.ctx.service

        def work() -> None:
            try:
                page = svc.audit_newest(limit=PAGE, actor=f.actor, event_prefix=f.event, since=f.since)
            except _DECODE_ERRORS:
                return  # the next full load reports it
            fresh = [e for e in page if e.seq > newest]
            if fresh:
                self.app.call_from_thread(self._newer, generation, fresh)

        self.run_worker(work, thread=True, exclusive=True, group="audit-newer", name="newer audit events")

    def _newer(self, generation: int, fresh: list[AuditEvent]) -> None:
        if generation != self._generation or not self.events or fresh[-1].seq <= self.events[0].seq:
            return
        table = self.table
        at = table.cursor_row
        self.events = fresh + self.events
        table.clear()
        for ev in self.events:
            self._add_row(ev)
        table.move_cursor(row=at + len(fresh) if at > 0 else 0)
        self._show_status()

    # --- verification ---------------------------------------------------------------------

    def action_verify(self) -> None:
        data, svc = self.ctx.data, self.ctx.service
        self.report = None
        self.query_one("#chain", Static).update(Text("audit chain: verifying…", style="bold yellow"))

        def work() -> None:
            try:
                trusted = data.trusted_keys() or [data.signing_key().public]
                report = svc.audit_verify(trusted)
            except (ZspError, OSError, *_DECODE_ERRORS) as exc:
                self.app.call_from_thread(self._verify_failed, str(exc))
                return
            self.app.call_from_thread(self._verified, report)

        self.run_worker(work, thread=True, exclusive=True, group="audit-verify", name="verify the audit chain")

    def _verified(self, report: AuditReport) -> None:
        self.report, self.verify_error = report, None
        chain = self.query_one("#chain", Static)
        chain.update(chain_verdict(report))
        chain.set_class(not report.ok, "broken")

    def _verify_failed(self, message: str) -> None:
        self.verify_error = message
        chain = self.query_one("#chain", Static)
        line = Text("audit chain NOT VERIFIED: ", style="bold reverse red")
        line.append_text(plain(message, "bold red"))
        chain.update(line)
        chain.set_class(True, "broken")

    # --- filters --------------------------------------------------------------------------

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE, self._apply_filters)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._apply_filters()
        self.table.focus()

    def _apply_filters(self) -> None:
        actor = self.query_one("#actor", Input).value.strip()
        event = self.query_one("#event", Input).value.strip()
        since_text = self.query_one("#since", Input).value.strip()
        since = None
        if since_text:
            try:
                since = parse_since(since_text, self.ctx.service.clock.now())
            except ValueError as exc:
                self.error = f"since: {exc}"
                self._show_status()
                return
        self.error = None
        f = AuditFilter(actor, event, since)
        if f != self.filter:
            self.filter = f
            self._load(reset=True)
        else:
            self._show_status()

    def action_focus_filter(self, which: str) -> None:
        self.query_one(f"#{which}", Input).focus()

    def action_leave_filter(self) -> None:
        self.table.focus()

    # --- the list and the detail ----------------------------------------------------------

    @on(DataTable.RowHighlighted, "#events")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        index = event.cursor_row
        if 0 <= index < len(self.events):
            self._show_detail(self.events[index])
        if index >= len(self.events) - 10:
            self._load(reset=False)

    def _scrolled(self, y: float) -> None:
        """The wheel or scrollbar near the end of what is shown: read the next older page."""
        table = self.table
        if table.max_scroll_y - y < 10:
            self._load(reset=False)

    def _show_detail(self, ev: AuditEvent) -> None:
        text = Text(no_wrap=False, end="")
        fields: list[tuple[str, object]] = [
            ("event", f"{ev.event} ({ev.code})"),
            ("actor", f"{ev.actor} via {ev.via}"),
            ("message", ev.message),
            ("time", rfc3339(ev.time)),
            ("seq", ev.seq),
            ("outcome", ev.outcome),
        ]
        fields += [(k, v) for k, v in (("target", ev.target), ("login", ev.login)) if v]
        fields += [(k, v) for k, v in (("grant", ev.grant_id), ("session", ev.session_id)) if v]
        fields += sorted(ev.fields.items())
        for i, (name, value) in enumerate(fields):
            if i:
                text.append("\n")
            text.append(f"{name:>9} ", style="bold")
            text.append_text(plain(value))
        self.query_one("#detail", Static).update(text)

    def _show_status(self) -> None:
        f = self.filter
        line = Text(no_wrap=True, end="")
        line.append(f"{len(self.events):,}{'' if self.exhausted else '+'} events", style="bold")
        line.append(" newest first")
        for name, value in (("actor", f.actor), ("event", f.event + "*" if f.event else "")):
            if value:
                line.append(f" · {name} ")
                line.append_text(plain(value))
        if f.since is not None:
            line.append(f" · since {rfc3339(f.since)[:19]}Z")
        if self._loading:
            line.append(" · reading…", style="dim")
        if self.error:
            line.append(" · ")
            line.append_text(plain(self.error, "bold red"))
        self.query_one("#status", Static).update(line)
