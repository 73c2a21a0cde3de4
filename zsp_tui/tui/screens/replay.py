"""ReplayScreen: not built yet (placeholder so the app runs while it is)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..context import ReviewContext
from ..text import plain

__all__ = ["ReplayScreen"]


class ReplayScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(
        self,
        ctx: ReviewContext,
        session_id: str,
        *,
        at_us: int | None = None,
        highlight: str | None = None,
        follow: bool = False,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.session_id = session_id
        self.at_us = at_us
        self.highlight = highlight
        self.follow = follow

    def compose(self) -> ComposeResult:
        yield Static(plain(f"replay of {self.session_id}: not built yet"))
        yield Footer()
