"""RequestsScreen: pending access requests and held commands, and the approver's decision on each.

Approve (``a``, after a confirmation) and deny (``d``, with a reason) call exactly
``AccessService.approve(actor, id)`` and ``AccessService.deny(actor, id, reason)``: the same calls
as ``zsp approve``/``zsp deny`` and the bastion's ssh control commands, so every rule holds here
as there (no self-approval, only the approvers a request's rule names, one approval per
approver, nothing but pending requests) and every decision and refusal is in the audit log under
the reviewer's name, by the service. A refusal is shown as the service's one line, never a
traceback.

The pending list is read in a thread worker every :data:`REFRESH_S` seconds (one read-only,
indexed query of the store: pending requests whose lapse is not due), so a request appears, and
one decided elsewhere goes, without a key. The detail pane shows the selected request in full
and its requester's recent history: their last requests with outcomes, and their last sessions.
The store has no query for "the last N requests of a user" nor "the last N sessions of a user",
so the history reads every request and the user's sessions of :data:`SESSION_DAYS` days, and is
cached while the pending set does not change (``Tx.list_requests(requester=, limit=)`` and
``Tx.list_sessions(user=, limit=, newest_first=True)`` would make it one indexed read each).

Below the requests, commands a real-time rule held at Enter (``hold`` action, docs/RULES.md) wait
for a decision: ``a`` allows one (after a confirmation), ``d`` denies it (reason optional), on
whichever list has the focus (Tab moves it). They call ``AccessService.allow_hold`` and
``deny_hold``, as ``ssh zsp@BASTION allow|deny`` and ``zsp allow|deny`` do, so the same rules hold:
approvers and admins only, never the operator whose command it is (admins neither), nothing but
a pending hold. The waiting session notices the decision within a quarter of a second.

Names, targets, reasons and command lines are requester-controlled: all of it reaches the screen
through :func:`zsp_tui.tui.text.plain`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from ...access import AccessService
from ...clock import format_duration
from ...exceptions import ZspError
from ...models import AccessRequest, Hold, HoldState, RequestState, SessionRecord
from ..context import Area, ReviewContext
from ..text import clip, plain
from ..widgets.area_bar import AreaBar
from ._polled import PolledScreen
from ._reader import ReaderClosed
from .dialogs import ConfirmDialog, ReasonDialog

__all__ = ["HISTORY", "REFRESH_S", "RequestsScreen"]


REFRESH_S = 2.0
"""Seconds between reloads of the pending list."""

HISTORY = 5
"""Past requests and sessions of the requester shown in the detail pane."""

SESSION_DAYS = 30
"""How far back the requester's sessions are read (the store lists sessions of a user by start)."""

HISTORY_REFRESH_S = 30.0
"""Seconds a requester's history is reused while the pending set stays the same."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One reload: what is pending, and each pending requester's recent history."""

    now: datetime
    pending: tuple[AccessRequest, ...]
    requests: dict[str, tuple[AccessRequest, ...]]
    """Requester -> their other requests, newest first (at most :data:`HISTORY`)."""
    sessions: dict[str, tuple[SessionRecord, ...]]
    """Requester -> their sessions of the last :data:`SESSION_DAYS` days, newest first."""
    holds: tuple[Hold, ...] = ()
    """Held commands waiting for a decision (not yet timed out), oldest first."""


def _clock(dt: datetime | None) -> str:
    return "-" if dt is None else dt.strftime("%m-%d %H:%M:%SZ")


def _outcome(r: AccessRequest, now: datetime) -> str:
    """What became of a request, in a few words (state, who ended it, why)."""
    state = r.effective_state(now)
    words = state.value
    if state is RequestState.APPROVED and r.active(now):
        words = "active"
    if r.ended_by and state in (RequestState.DENIED, RequestState.REVOKED, RequestState.CANCELLED):
        words += f" by {r.ended_by}"
    elif r.approvals and state in (RequestState.APPROVED, RequestState.EXPIRED, RequestState.REVOKED):
        words += f" (approved by {', '.join(r.approvals)})"
    if r.note:
        words += f": {r.note}"
    return words


class RequestsScreen(PolledScreen):
    CSS_PATH = "requests.tcss"
    refresh_s = REFRESH_S
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve"),
        Binding("a", "allow", "Allow"),  # the same key on the held commands' list (check_action)
        Binding("d", "deny", "Deny"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__(ctx)
        self._snapshot: _Snapshot | None = None
        self._shown: list[AccessRequest] = []
        self._holds: list[Hold] = []
        self._on_holds = False
        """The held commands' list has the focus: keys and the detail pane are about a hold."""
        self._history_key: tuple[str, ...] | None = None
        self._history_at = 0.0
        self._history_cache: tuple[dict[str, tuple[AccessRequest, ...]], dict[str, tuple[SessionRecord, ...]]] = (
            {},
            {},
        )

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.REQUESTS)
        yield Static(plain("loading pending requests…", "italic"), id="status", classes="status-line")
        table: DataTable[Text] = DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        yield table
        holds: DataTable[Text] = DataTable(id="holds", cursor_type="row", zebra_stripes=True)
        holds.display = False  # shown while a command is held
        yield holds
        with VerticalScroll(id="detail-pane"):
            yield Static(Text(""), id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#requests", DataTable)
        for label in ("request", "requester", "login@target", "for", "approvals", "lapses in", "reason"):
            table.add_column(plain(label), key=label)
        holds = self.query_one("#holds", DataTable)
        for label in ("held", "user", "login@target", "rule", "severity", "age", "command"):
            holds.add_column(plain(label), key=label)
        table.focus()
        self._start_polling()

    # --- loading ----------------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> None:
        """Read the pending requests (and their requesters' history) off the UI thread.

        Pending requests are one indexed read-only query (0.3 ms with 100,000 requests in the
        store, where ``AccessService.requests()``, every request ever, takes 2 s): cheap enough
        every :data:`REFRESH_S` seconds. The history reads every request, so it is read again
        only when the pending set changes or every :data:`HISTORY_REFRESH_S` seconds."""
        try:
            with self._reader.service() as svc:  # its own connection (_reader.py), one load at a time
                with svc.store.transaction(write=False) as tx:
                    candidates = tx.list_requests((RequestState.PENDING,))
                    held = tx.list_holds((HoldState.PENDING,))
                now = self.ctx.service.clock.now()
                # Effective state: one whose lapse is due is not offered even before a sweep records it.
                pending = tuple(r for r in candidates if r.effective_state(now) is RequestState.PENDING)
                holds = tuple(h for h in held if h.expires_at > now)  # a timed-out one is denied already
                history, sessions = self._history(svc, pending, now)
        except ReaderClosed:
            return  # the screen is gone
        except (ZspError, sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._failed, f"could not read the requests: {exc}")
            return
        self.app.call_from_thread(self._show, _Snapshot(now, pending, history, sessions, holds))

    def _history(
        self, svc: AccessService, pending: tuple[AccessRequest, ...], now: datetime
    ) -> tuple[dict[str, tuple[AccessRequest, ...]], dict[str, tuple[SessionRecord, ...]]]:
        """Each pending requester's last requests and sessions (cached; see :meth:`_load`).
        Runs under the reader's lock: one load at a time, even a superseded one still running."""
        key = tuple(r.id for r in pending)
        fresh = time.monotonic() - self._history_at < HISTORY_REFRESH_S
        if key == self._history_key and fresh:
            return self._history_cache
        who = {r.requester for r in pending}
        history: dict[str, tuple[AccessRequest, ...]] = {}
        sessions: dict[str, tuple[SessionRecord, ...]] = {}
        if who:
            with svc.store.transaction(write=False) as tx:
                every = tx.list_requests()  # no query by requester: see the module's docstring
            for name in who:
                theirs = [
                    r for r in every if r.requester == name and r.effective_state(now) is not RequestState.PENDING
                ]
                history[name] = tuple(sorted(theirs, key=lambda r: r.created_at, reverse=True)[:HISTORY])
                recent = svc.sessions(user=name, since=now - timedelta(days=SESSION_DAYS))
                sessions[name] = tuple(reversed(recent[-HISTORY:]))
        self._history_key, self._history_at = key, time.monotonic()
        self._history_cache = (history, sessions)
        return self._history_cache

    def _failed(self, message: str) -> None:
        self.query_one("#status", Static).update(plain(message, "bold red"))

    def _show(self, snap: _Snapshot) -> None:
        if self._snapshot is not None and snap.now < self._snapshot.now:
            return  # a superseded reload that finished late: a newer list is shown
        table = self.query_one("#requests", DataTable)
        keep = self._selected()
        self._snapshot = snap
        if list(snap.pending) == self._shown:
            # Nothing was asked or decided since: only the countdowns move (no rebuild, no jump).
            for r in self._shown:
                table.update_cell(r.id, "lapses in", plain(format_duration(r.lapses_at - snap.now)))
        else:
            self._shown = list(snap.pending)
            table.clear()
            for r in self._shown:
                mine = r.requester == self.ctx.reviewer.name
                table.add_row(
                    plain(r.id),
                    clip(r.requester + (" (you)" if mine else ""), 20, "italic" if mine else ""),
                    clip(f"{r.login}@{r.target}", 28),
                    plain(format_duration(r.duration)),
                    plain(f"{len(r.approvals)}/{r.approvals_needed}"),
                    plain(format_duration(r.lapses_at - snap.now)),
                    clip(r.reason, 60),
                    key=r.id,
                )
            if keep is not None and any(r.id == keep.id for r in self._shown):
                table.move_cursor(row=table.get_row_index(keep.id), animate=False)
        self._show_holds(snap)
        count = plain(
            f"{len(self._shown)} pending request(s)"
            + (f", {len(self._holds)} held command(s)" if self._holds else "")
            + ("" if self._shown or self._holds else ": nothing to decide"),
            "bold" if self._shown or self._holds else "",
        )
        count = self._with_outcome(count)
        count.no_wrap = False
        self.query_one("#status", Static).update(count)
        self._show_detail()

    def _show_holds(self, snap: _Snapshot) -> None:
        table = self.query_one("#holds", DataTable)
        keep = self._selected_hold()
        if list(snap.holds) == self._holds:
            for h in self._holds:
                table.update_cell(h.id, "age", plain(format_duration(snap.now - h.created_at)))
            return
        self._holds = list(snap.holds)
        table.clear()
        for h in self._holds:
            mine = h.user == self.ctx.reviewer.name
            table.add_row(
                plain(h.id),
                clip(h.user + (" (you)" if mine else ""), 20, "italic" if mine else ""),
                clip(f"{h.login}@{h.target}", 28),
                clip(h.rule, 24),
                plain(h.severity, "bold red" if h.severity in ("high", "critical") else ""),
                plain(format_duration(snap.now - h.created_at)),
                clip(h.command, 60),
                key=h.id,
            )
        if keep is not None and any(h.id == keep.id for h in self._holds):
            table.move_cursor(row=table.get_row_index(keep.id), animate=False)
        table.display = bool(self._holds)
        if not self._holds and self._on_holds:
            self.query_one("#requests", DataTable).focus()
        elif self._holds and not self._shown and not self._on_holds:
            table.focus()  # nothing else to decide: the held command is what the approver came for

    # --- the selected request ---------------------------------------------------------------

    def _selected_hold(self) -> Hold | None:
        table = self.query_one("#holds", DataTable)
        row = table.cursor_row
        if not self._holds or not 0 <= row < len(self._holds):
            return None
        return self._holds[row]

    def on_descendant_focus(self, event: object) -> None:
        on_holds = self.query_one("#holds", DataTable).has_focus
        if on_holds != self._on_holds:
            self._on_holds = on_holds
            self.refresh_bindings()  # a: Approve on requests, Allow on held commands
            self._show_detail()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "approve":
            return not self._on_holds
        if action == "allow":
            return self._on_holds
        return True

    def _selected(self) -> AccessRequest | None:
        table = self.query_one("#requests", DataTable)
        row = table.cursor_row
        if not self._shown or not 0 <= row < len(self._shown):
            return None
        return self._shown[row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        if self._on_holds:
            self._show_hold_detail()
            return
        detail = self.query_one("#detail", Static)
        r = self._selected()
        snap = self._snapshot
        if r is None or snap is None:
            detail.update(Text(""))
            return
        now = snap.now
        out = Text(no_wrap=False, end="")

        def line(*parts: Text) -> None:
            for p in parts:
                out.append_text(p)
            out.append("\n")

        line(
            plain(r.id, "bold"),
            plain("  "),
            plain(r.requester, "bold"),
            plain(" asks for "),
            plain(f"{r.login}@{r.target}", "bold"),
            plain(f" for {format_duration(r.duration)}"),
        )
        line(
            plain(
                f"rule {r.rule}: {len(r.approvals)} of {r.approvals_needed} approval(s)"
                + (f" (by {', '.join(r.approvals)})" if r.approvals else "")
                + f"; approvers {', '.join(r.approver_patterns) or 'none'}",
                "dim",
            )
        )
        line(
            plain(f"asked {_clock(r.created_at)}, lapses {_clock(r.lapses_at)} (in ", "dim"),
            plain(format_duration(r.lapses_at - now), "dim"),
            plain(")", "dim"),
        )
        reason = plain(r.reason or "(no reason given)")
        reason.no_wrap = False
        line(plain("reason: ", "bold"), reason)
        if r.requester == self.ctx.reviewer.name:
            line(plain("this is your own request: another approver must decide it", "yellow"))
        line(plain(f"{r.requester}'s last requests:", "bold"))
        past = snap.requests.get(r.requester, ())
        if not past:
            line(plain("  none before this one", "dim"))
        for p in past:
            line(
                plain(
                    f"  {p.id}  {_clock(p.created_at)}  {p.login}@{p.target} for "
                    f"{format_duration(p.duration)}  {_outcome(p, now)}"
                )
            )
        line(plain(f"{r.requester}'s last sessions ({SESSION_DAYS} days):", "bold"))
        sessions = snap.sessions.get(r.requester, ())
        if not sessions:
            line(plain("  none", "dim"))
        for s in sessions:
            took = format_duration((s.ended_at or now) - s.started_at)
            end = "live" if s.ended_at is None else (s.end_reason or "ended")
            line(
                plain(
                    f"  {s.id[-8:]}  {_clock(s.started_at)}  {s.login}@{s.target}  {took}  {end}"
                    + (f"  {s.command}" if s.command else "")
                )
            )
        out.rstrip()
        detail.update(out)

    def _show_hold_detail(self) -> None:
        detail = self.query_one("#detail", Static)
        h = self._selected_hold()
        snap = self._snapshot
        if h is None or snap is None:
            detail.update(Text(""))
            return
        out = Text(no_wrap=False, end="")

        def line(*parts: Text) -> None:
            for p in parts:
                out.append_text(p)
            out.append("\n")

        line(
            plain(h.id, "bold"),
            plain("  held command of "),
            plain(h.user, "bold"),
            plain(" on "),
            plain(f"{h.login}@{h.target}", "bold"),
        )
        line(plain(f"rule {h.rule} ({h.severity}); session {h.session_id}; grant {h.grant_id or '-'}", "dim"))
        line(
            plain(f"held {_clock(h.created_at)} ({format_duration(snap.now - h.created_at)} ago), ", "dim"),
            plain(f"times out {_clock(h.expires_at)} (in {format_duration(h.expires_at - snap.now)}): denied", "dim"),
        )
        command = plain(h.command)
        command.no_wrap = False
        line(plain("command: ", "bold"), command)
        if h.user == self.ctx.reviewer.name:
            line(plain("this is your own held command: another approver or admin must decide it", "yellow"))
        else:
            line(plain("a allows it (the line is sent), d denies it (the line is cleared, never sent)", "dim"))
        out.rstrip()
        detail.update(out)

    # --- deciding ---------------------------------------------------------------------------

    def _about(self, r: AccessRequest) -> Text:
        body = Text(no_wrap=False, end="")
        body.append_text(plain(f"{r.requester} asks for {r.login}@{r.target} for {format_duration(r.duration)}"))
        body.append("\nreason: ")
        body.append_text(plain(r.reason or "(none)"))
        return body

    def action_approve(self) -> None:
        r = self._selected()
        if r is None:
            self._say(plain("no pending request selected"), error=True)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._decide(r, None)

        self.app.push_screen(
            ConfirmDialog(plain(f"Approve request {r.id}?"), self._about(r), yes="Approve", no="Cancel"),
            answered,
        )

    def _about_hold(self, h: Hold) -> Text:
        body = Text(no_wrap=False, end="")
        body.append_text(plain(f"{h.user} on {h.login}@{h.target}, held by rule {h.rule} ({h.severity})"))
        body.append("\ncommand: ")
        body.append_text(plain(h.command))
        return body

    def action_allow(self) -> None:
        h = self._selected_hold()
        if h is None:
            self._say(plain("no held command selected"), error=True)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._decide_hold(h, None)

        self.app.push_screen(
            ConfirmDialog(plain(f"Allow held command {h.id}?"), self._about_hold(h), yes="Allow", no="Cancel"),
            answered,
        )

    def action_deny(self) -> None:
        if self._on_holds:
            self._deny_hold()
            return
        r = self._selected()
        if r is None:
            self._say(plain("no pending request selected"), error=True)
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._decide(r, reason)

        self.app.push_screen(
            ReasonDialog(plain(f"Deny request {r.id}?"), self._about(r), confirm="Deny", placeholder="why (required)"),
            answered,
        )

    @work(thread=True, group="decide", exit_on_error=False)
    def _decide(self, r: AccessRequest, deny_reason: str | None) -> None:
        """Approve (``deny_reason`` None) or deny through the service, as the CLI does."""
        svc, actor = self.ctx.service, self.ctx.reviewer.actor
        try:
            if deny_reason is None:
                done = svc.approve(actor, r.id)
                now = svc.clock.now()
                if done.active(now) and done.ends_at is not None:
                    message = (
                        f"approved {done.id}: {done.requester} may use {done.login}@{done.target} "
                        f"until {_clock(done.ends_at)}"
                    )
                else:
                    message = f"approved {done.id} ({len(done.approvals)}/{done.approvals_needed} approvals)"
            else:
                done = svc.deny(actor, r.id, deny_reason)
                message = f"denied {done.id} of {done.requester}: {deny_reason}"
        except ZspError as exc:
            self.app.call_from_thread(self._say, plain(f"refused: {exc}", "bold red"), True)
        except (sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._say, plain(f"could not record the decision: {exc}", "bold red"), True)
        else:
            self.app.call_from_thread(self._say, plain(message, "bold green"), False)
        self.app.call_from_thread(self.action_reload)

    def _deny_hold(self) -> None:
        h = self._selected_hold()
        if h is None:
            self._say(plain("no held command selected"), error=True)
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._decide_hold(h, reason)

        self.app.push_screen(
            ReasonDialog(
                plain(f"Deny held command {h.id}?"),
                self._about_hold(h),
                confirm="Deny",
                required=False,
                placeholder="why (optional)",
            ),
            answered,
        )

    @work(thread=True, group="decide", exit_on_error=False)
    def _decide_hold(self, h: Hold, deny_reason: str | None) -> None:
        """Allow (``deny_reason`` None) or deny a held command through the service, as the CLI does."""
        svc, actor = self.ctx.service, self.ctx.reviewer.actor
        try:
            if deny_reason is None:
                done = svc.allow_hold(actor, h.id)
                message = f"allowed {done.id}: the command of {done.user} is sent to {done.login}@{done.target}"
            else:
                done = svc.deny_hold(actor, h.id, deny_reason)
                message = f"denied {done.id} of {done.user}" + (f": {deny_reason}" if deny_reason else "")
        except ZspError as exc:
            self.app.call_from_thread(self._say, plain(f"refused: {exc}", "bold red"), True)
        except (sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._say, plain(f"could not record the decision: {exc}", "bold red"), True)
        else:
            self.app.call_from_thread(self._say, plain(message, "bold green"), False)
        self.app.call_from_thread(self.action_reload)
