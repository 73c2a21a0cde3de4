"""What Live and Requests share: a list read again every few seconds through a store connection
of its own (:class:`StoreReader`), not read at all while another area, a dialog or Replay is in
front, and a status line that shows the outcome of the reviewer's last act for a while."""

from __future__ import annotations

import math
import time
from typing import ClassVar

from rich.text import Text
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Static

from ..context import ReviewContext
from ._reader import StoreReader

__all__ = ["OUTCOME_S", "PolledScreen"]

OUTCOME_S = 20.0
"""How long the outcome of an approval, denial or termination stays in the status line."""


class PolledScreen(Screen[None]):
    """Subclasses set ``refresh_s``, define ``action_reload`` (starting a worker that reads
    through ``self._reader``) and call :meth:`_start_polling` from ``on_mount``."""

    refresh_s: ClassVar[float] = 2.0

    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._outcome: Text = Text("")
        self._outcome_until = math.inf
        self._timer: Timer | None = None
        self._reader = StoreReader(ctx.data)

    def _start_polling(self) -> None:
        self.action_reload()
        self._timer = self.set_interval(self.refresh_s, self.action_reload)

    def action_reload(self) -> None:
        raise NotImplementedError

    def on_unmount(self) -> None:
        self._reader.close()

    def on_screen_suspend(self) -> None:
        # Another area, a dialog or Replay is in front: no reason to keep reading the store.
        if self._timer is not None:
            self._timer.pause()

    def on_screen_resume(self) -> None:
        if self._timer is not None:
            self._timer.resume()
            self.action_reload()

    def _with_outcome(self, line: Text) -> Text:
        """``line`` followed by the last act's outcome while it is still news."""
        if self._outcome.plain and time.monotonic() < self._outcome_until:
            line.append("  ")
            line.append_text(self._outcome)
        return line

    def _say(self, text: Text, error: bool = False) -> None:
        """Show an outcome in the status line (for :data:`OUTCOME_S`; a refusal until the next
        act) and as a notification."""
        self._outcome = text
        self._outcome_until = math.inf if error else time.monotonic() + OUTCOME_S
        shown = text.copy()
        shown.no_wrap = False
        self.query_one("#status", Static).update(shown)
        # text.plain is already escaped (plain()): no markup, no control characters
        self.notify(text.plain, severity="error" if error else "information", markup=False)
