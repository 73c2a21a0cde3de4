"""LiveScreen: the sessions in progress now; follow one as it happens, or terminate it.

The list is the store's unended sessions (``AccessService.unended_sessions``), read in a thread
worker every :data:`REFRESH_S` seconds; durations tick with it. A session that ended drops off.

- Follow (Enter, ``w``): Replay in follow mode (``app.open_replay(id, follow=True)``), audited as
  ``review.watch`` by Replay (one event per open, written before anything is shown). Only
  reviewers and admins read recordings; an approver sees the list (to
  decide what to end) but is told that watching needs the reviewer role.
- Terminate (``t``): after a confirmation that asks a reason, the session's grant is revoked
  with ``AccessService.revoke(actor, grant_id, reason)``, the call of ``zsp revoke`` and the
  ssh control command, so the same people may do it (the requester, an approver the request's
  rule names, an admin) and the service's refusal is shown otherwise. The bastion polls its
  grants and closes every session under a revoked grant within about a second. A session that
  no grant opened (``zsp record`` on the bastion host) cannot be ended this way: it says so.

- Moderate (``j``): a session whose grant's rule says ``moderation = "watch"`` waits for a
  moderator (issue 13). ``j`` joins it as one through ``AccessService.join_watch`` (the same
  rules as ``ssh -t zsp@BASTION watch``: not your own session, you must match the rule's
  moderators; a refusal is said here, and audited) and opens Replay in follow mode as the
  moderator: a banner says so, the watch beats every second, ``T`` terminates the session, and
  leaving Replay leaves the watch. The list's ``moderation`` column says which sessions wait for a
  moderator and who watches which (the store's open watches, from every way in).

Users, targets, commands and client addresses are stored values: shown through
:func:`zsp_tui.tui.text.plain`.
"""

from __future__ import annotations

import socket
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from ...clock import format_duration
from ...exceptions import ZspError
from ...models import WATCH_FRESH_S, SessionRecord, Watch, session_owner
from ..context import Area, ReviewContext
from ..text import clip, plain
from ..widgets.area_bar import AreaBar
from ._polled import PolledScreen
from ._reader import ReaderClosed
from .dialogs import ReasonDialog

__all__ = ["REFRESH_S", "LiveScreen"]


REFRESH_S = 1.0
"""Seconds between reloads of the live list (and ticks of the durations)."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    now: datetime
    sessions: tuple[SessionRecord, ...]
    moderators: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The moderated sessions' moderators, by session id."""
    watches: dict[str, tuple[Watch, ...]] = field(default_factory=dict)
    """The open watches with a fresh heartbeat, by session id."""
    problem: str | None = None
    """Why moderation could not be read (the policy file), if it could not."""


class LiveScreen(PolledScreen):
    CSS_PATH = "live.tcss"
    refresh_s = REFRESH_S
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w,enter", "watch", "Follow", key_display="w"),
        Binding("t", "terminate", "Terminate"),
        Binding("j", "moderate", "Moderate"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__(ctx)
        self._shown: list[SessionRecord] = []
        self._now: datetime | None = None
        self._moderators: dict[str, tuple[str, ...]] = {}
        self._watches: dict[str, tuple[Watch, ...]] = {}

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.LIVE)
        yield Static(plain("loading live sessions…", "italic"), id="status", classes="status-line")
        table: DataTable[Text] = DataTable(id="live", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(Text(""), id="detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#live", DataTable)
        for label in ("session", "user", "login@target", "grant", "started (UTC)", "for", "client", "moderation"):
            table.add_column(plain(label), key=label)
        table.focus()
        if not self.ctx.reviewer.may(Area.REPLAY):
            self._outcome = plain("you can terminate sessions here; following one needs the reviewer role", "dim")
        self._start_polling()

    # --- loading ----------------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self) -> None:
        try:
            with self._reader.service() as svc:  # its own connection (_reader.py), one load at a time
                sessions = svc.unended_sessions()
                now = self.ctx.service.clock.now()  # under the reader's lock: orders the reads (_show)
                problem: str | None = None
                try:
                    moderators = svc.moderators_of(sessions)
                except ZspError as exc:  # an invalid policy file: the list is still shown
                    moderators, problem = {}, f"cannot tell which sessions are moderated: {exc}"
                watches: dict[str, tuple[Watch, ...]] = {}
                for w in svc.watches(list(moderators)):
                    if (now - w.seen_at).total_seconds() <= WATCH_FRESH_S:
                        watches[w.session_id] = (*watches.get(w.session_id, ()), w)
        except ReaderClosed:
            return  # the screen is gone
        except (ZspError, sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._failed, f"could not read the live sessions: {exc}")
            return
        self.app.call_from_thread(self._show, _Snapshot(now, tuple(sessions), moderators, watches, problem))

    def _failed(self, message: str) -> None:
        self.query_one("#status", Static).update(plain(message, "bold red"))

    def _show(self, snap: _Snapshot) -> None:
        if self._now is not None and snap.now < self._now:
            return  # a superseded reload that finished late: a newer list is shown
        table = self.query_one("#live", DataTable)
        keep = self._selected()
        self._now = snap.now
        self._moderators, self._watches = snap.moderators, snap.watches
        fresh = sorted(snap.sessions, key=lambda s: s.started_at, reverse=True)
        if fresh == self._shown:
            # Nobody came or left since: only the durations tick (no rebuild, no jump).
            for s in self._shown:
                table.update_cell(s.id, "for", plain(format_duration(snap.now - s.started_at)))
                table.update_cell(s.id, "moderation", self._moderation_cell(s))
        else:
            self._shown = fresh
            table.clear()
            for s in self._shown:
                table.add_row(
                    plain(s.id[-8:]),
                    clip(s.user, 16),
                    clip(f"{s.login}@{s.target}", 28),
                    plain(s.grant_id or "none (zsp record)", "" if s.grant_id else "dim"),
                    plain(s.started_at.strftime("%m-%d %H:%M:%S")),
                    plain(format_duration(snap.now - s.started_at)),
                    clip(s.client, 24),
                    self._moderation_cell(s),
                    key=s.id,
                )
            if keep is not None and any(s.id == keep.id for s in self._shown):
                table.move_cursor(row=table.get_row_index(keep.id), animate=False)
        status = plain(
            f"{len(self._shown)} live session(s)" + ("" if self._shown else ": nobody is connected"),
            "bold" if self._shown else "",
        )
        if snap.problem is not None:
            status.append_text(plain(f"  {snap.problem}", "yellow"))
        status = self._with_outcome(status)
        status.no_wrap = False
        self.query_one("#status", Static).update(status)
        self._show_detail()

    def _moderation_cell(self, s: SessionRecord) -> Text:
        """``waits for a moderator`` / ``watched by bob, carol`` / empty (not moderated)."""
        if s.id not in self._moderators:
            return Text("")
        watchers = self._watches.get(s.id, ())
        if not watchers:
            return plain("waits for a moderator", "bold yellow")
        return clip("watched by " + ", ".join(dict.fromkeys(w.user for w in watchers)), 28)

    # --- the selected session ---------------------------------------------------------------

    def _selected(self) -> SessionRecord | None:
        row = self.query_one("#live", DataTable).cursor_row
        if not self._shown or not 0 <= row < len(self._shown):
            return None
        return self._shown[row]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_watch()

    def _show_detail(self) -> None:
        s = self._selected()
        detail = self.query_one("#detail", Static)
        if s is None:
            detail.update(Text(""))
            return
        out = Text(no_wrap=False, end="")
        out.append_text(plain(f"session {s.id}", "bold"))
        out.append_text(plain(f"  {s.user} on {s.login}@{s.target}"))
        out.append_text(plain(f"  grant {s.grant_id}" if s.grant_id else "  no grant (recorded with zsp record)"))
        out.append("\n")
        out.append_text(plain(f"command: {s.command}" if s.command else "interactive shell", "dim"))
        out.append_text(plain(f"  from {s.client}", "dim"))
        if s.id in self._moderators:
            out.append("\n")
            out.append_text(plain(f"moderated by {', '.join(self._moderators[s.id])}: j to moderate", "dim"))
        detail.update(out)

    # --- follow -----------------------------------------------------------------------------

    def action_watch(self) -> None:
        s = self._selected()
        if s is None:
            self._say(plain("no live session selected"), error=True)
            return
        if not self.ctx.reviewer.may(Area.REPLAY):
            self._say(
                plain(
                    f"{self.ctx.reviewer.name} cannot follow sessions: watching needs the reviewer or admin role "
                    "(you may terminate one with t)",
                    "bold yellow",
                ),
                error=True,
            )
            return
        # Replay writes the one audit event of this open (review.watch) before it shows anything.
        self._open(s.id)

    def _open(self, session_id: str) -> None:
        open_replay = getattr(self.app, "open_replay", None)
        if open_replay is not None:
            open_replay(session_id, follow=True)

    # --- moderate ---------------------------------------------------------------------------

    def action_moderate(self) -> None:
        s = self._selected()
        if s is None:
            self._say(plain("no live session selected"), error=True)
            return
        self._join(s)

    @work(thread=True, group="moderate", exclusive=True, exit_on_error=False)
    def _join(self, s: SessionRecord) -> None:
        """Join ``s`` as a moderator through the service (its rules, its audit events)."""
        reviewer = self.ctx.reviewer
        try:
            watch = self.ctx.service.join_watch(
                reviewer.actor,
                s.id,
                client=f"review app ({reviewer.via})",
                here=socket.gethostname(),
                served_by=session_owner("review"),
            )
        except ZspError as exc:  # WatchRefused (audited), NotFound, a store that fails
            self.app.call_from_thread(self._say, plain(f"refused: {exc}", "bold red"), True)
            return
        except (sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._say, plain(f"could not join {s.id[-8:]}: {exc}", "bold red"), True)
            return
        self.app.call_from_thread(self._moderate_in_replay, watch)

    def _moderate_in_replay(self, watch: Watch) -> None:
        from .replay import ReplayScreen  # loaded when first used (startup time over ssh)

        self._say(plain(f"moderating session {watch.session_id[-8:]}", "bold green"))
        self.app.push_screen(ReplayScreen(self.ctx, watch.session_id, follow=True, moderating=watch))

    # --- terminate --------------------------------------------------------------------------

    def action_terminate(self) -> None:
        s = self._selected()
        if s is None:
            self._say(plain("no live session selected"), error=True)
            return
        if s.grant_id is None:
            self._say(
                plain(
                    f"session {s.id[-8:]} was opened without a grant (zsp record on the bastion host): "
                    "it cannot be terminated by revoking one; end it on the host",
                    "bold yellow",
                ),
                error=True,
            )
            return
        grant_id = s.grant_id
        others = [o for o in self._shown if o.grant_id == grant_id and o.id != s.id]
        body = Text(no_wrap=False, end="")
        body.append_text(plain(f"{s.user} on {s.login}@{s.target}, live for "))
        body.append_text(plain(format_duration((self._now or s.started_at) - s.started_at)))
        body.append("\n")
        body.append_text(
            plain(
                f"This revokes grant {grant_id}: the bastion closes "
                + (f"this session and {len(others)} other session(s) under it" if others else "the session")
                + " within about a second, and the grant cannot be used again."
            )
        )

        def answered(reason: str | None) -> None:
            if reason is not None:
                self._revoke(s, grant_id, reason)

        self.app.push_screen(
            ReasonDialog(
                plain(f"Terminate session {s.id[-8:]}?"),
                body,
                confirm="Terminate",
                required=True,
                placeholder="why (required; recorded with the revocation)",
            ),
            answered,
        )

    @work(thread=True, group="terminate", exit_on_error=False)
    def _revoke(self, s: SessionRecord, grant_id: str, reason: str) -> None:
        """Revoke the session's grant through the service, as ``zsp revoke`` does."""
        try:
            done = self.ctx.service.revoke(self.ctx.reviewer.actor, grant_id, reason)
        except ZspError as exc:
            self.app.call_from_thread(self._say, plain(f"refused: {exc}", "bold red"), True)
        except (sqlite3.Error, OSError) as exc:
            self.app.call_from_thread(self._say, plain(f"could not revoke {grant_id}: {exc}", "bold red"), True)
        else:
            message = f"revoked {done.id}: session {s.id[-8:]} of {s.user} ends within a second"
            self.app.call_from_thread(self._say, plain(message, "bold green"), False)
        self.app.call_from_thread(self.action_reload)
