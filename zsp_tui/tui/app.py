"""The review app: one Textual app over a data dir, for reviewers, approvers and admins.

Areas (Textual modes, each with its own screen stack) are Sessions, Search, Live, Requests and
Audit; a reviewer sees only those their roles allow (context.py). Replay is pushed on top of
whichever area opened it, so Escape goes back to the list, the search results or the live list
exactly as they were. The app starts from ``zsp review`` on the bastion host or, through the
bastion, from ``ssh -t review@BASTION`` (bastion/review.py runs it in a PTY of its own).

Hardening: the command palette is off (its "save screenshot" would write files on the bastion
host at a remote reviewer's request), and there is no way to suspend to a shell.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from ..exceptions import ZspError
from .context import Area, ReviewContext

__all__ = ["AREA_KEYS", "ReviewApp"]

AREA_KEYS: dict[str, tuple[str, str]] = {
    Area.SESSIONS: ("1", "Sessions"),
    Area.SEARCH: ("2", "Search"),
    Area.LIVE: ("3", "Live"),
    Area.REQUESTS: ("4", "Requests"),
    Area.AUDIT: ("5", "Audit"),
}
"""Area -> (key, title). Keys are digits so they work from any list; inside an input, Escape first."""


class ReviewApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "zsp review"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        *(Binding(key, f"area('{area}')", title, show=False) for area, (key, title) in AREA_KEYS.items()),
    ]

    def __init__(self, ctx: ReviewContext, *, start: str | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.crash: BaseException | None = None
        """An unexpected error that ended the app (printed by the command line, not by Textual)."""
        self.problem: str | None = None
        """Why the app stopped or could not finish cleanly (the CLI prints it after the app exits)."""
        self._opened = False
        self.areas = [a for a in AREA_KEYS if ctx.reviewer.may(a)]
        self._start = start if start in self.areas else (self.areas[0] if self.areas else None)
        self.sub_title = ctx.reviewer.label
        for area in self.areas:
            self.add_mode(area, self._factory(area))

    def _factory(self, area: str) -> Callable[[], Screen[None]]:
        def make() -> Screen[None]:
            return _screen(area, self.ctx)

        return make

    # --- crashes --------------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        self.crash = error
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        """Textual's own handler prints a traceback with local variables (``show_locals=True``);
        over ``ssh review@`` that would put bastion-side values on a remote reviewer's terminal.
        Here the app only closes; the command line prints one escaped line (and, on the bastion
        host's console, a traceback without locals)."""
        self._close_messages_no_wait()

    def on_mount(self) -> None:
        try:
            self.ctx.audit("review.open", f"{self.ctx.reviewer.name} opened the review app", areas=",".join(self.areas))
        except (ZspError, OSError, sqlite3.Error) as exc:
            # Fail closed: a review the audit log cannot record does not happen.
            self.problem = f"the audit log cannot record this review, so the review app does not open: {exc}"
            self.exit(return_code=1)
            return
        self._opened = True
        if self._start is not None:
            self.switch_mode(self._start)

    def on_unmount(self) -> None:
        try:
            if self._opened:
                self.ctx.audit("review.close", f"{self.ctx.reviewer.name} closed the review app")
        except (ZspError, OSError, sqlite3.Error) as exc:
            self.problem = f"the audit log could not record the end of this review: {exc}"
        finally:
            self.ctx.close()

    # --- navigation (screens call these) -------------------------------------------------------

    def action_area(self, area: str) -> None:
        if area in self.areas and area != self.current_mode:
            self.switch_mode(area)
        elif area not in self.areas:
            self.notify(f"{AREA_KEYS[area][1]} needs another role", severity="warning")

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self))

    def open_replay(
        self,
        session_id: str,
        *,
        at_us: int | None = None,
        highlight: str | None = None,
        follow: bool = False,
    ) -> None:
        """Push Replay for ``session_id`` on the current area: at ``at_us`` microseconds from the
        recording's start with ``highlight`` (a search hit's matched text) marked on screen, or
        following a live session."""
        if not self.ctx.reviewer.may(Area.REPLAY):
            self.notify("Replay needs the reviewer or admin role", severity="warning")
            return
        from .screens.replay import ReplayScreen

        self.push_screen(ReplayScreen(self.ctx, session_id, at_us=at_us, highlight=highlight, follow=follow))


def _screen(area: str, ctx: ReviewContext) -> Screen[None]:
    # Imported here: each area's module loads only when first shown (startup time over ssh).
    if area == Area.SESSIONS:
        from .screens.sessions import SessionsScreen

        return SessionsScreen(ctx)
    if area == Area.SEARCH:
        from .screens.search import SearchScreen

        return SearchScreen(ctx)
    if area == Area.LIVE:
        from .screens.live import LiveScreen

        return LiveScreen(ctx)
    if area == Area.REQUESTS:
        from .screens.requests import RequestsScreen

        return RequestsScreen(ctx)
    from .screens.audit import AuditScreen

    return AuditScreen(ctx)
