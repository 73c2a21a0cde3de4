"""LiveScreen: not built yet (placeholder so the app runs while it is)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..context import Area, ReviewContext
from ..widgets.area_bar import AreaBar

__all__ = ["LiveScreen"]


class LiveScreen(Screen[None]):
    def __init__(self, ctx: ReviewContext) -> None:
        super().__init__()
        self.ctx = ctx

    def compose(self) -> ComposeResult:
        yield AreaBar(Area.LIVE)
        yield Static("not built yet")
        yield Footer()
