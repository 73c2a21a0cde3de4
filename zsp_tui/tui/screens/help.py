"""The help screen (``?``): every key of the screen underneath, the areas, and what each means."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

if TYPE_CHECKING:
    from ..app import ReviewApp

__all__ = ["HelpScreen"]

_ABOUT = (
    "zsp review: browse, search and replay recorded sessions, watch live ones, decide requests and "
    "read the audit log. What you open, replay, search and decide here is audited under your name. "
    "Recorded output is drawn only through zsp's terminal emulator."
)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close", key_display="esc"),
    ]

    def __init__(self, app: ReviewApp) -> None:
        super().__init__()
        self._active = app.screen.active_bindings

    def compose(self) -> ComposeResult:
        from ..app import AREA_KEYS

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        # What the screen underneath answers to now: its focused widget's keys, the screen's, the app's.
        seen: set[str] = {"help", "quit"}
        for active in self._active.values():
            b = active.binding
            keys = b.key_display or b.key
            if b.description and b.action not in seen and not b.action.startswith("area("):
                seen.add(b.action)
                table.add_row(Text(keys), Text(b.description))
        app: ReviewApp = self.app  # type: ignore[assignment]
        for area in app.areas:
            key, title = AREA_KEYS[area]
            table.add_row(Text(key), Text(f"go to {title}"))
        table.add_row(Text("?  F1"), Text("this help"))
        table.add_row(Text("q  ctrl+q"), Text("quit"))
        with VerticalScroll():
            yield Static(Text(_ABOUT), classes="about")
            yield Static(Text(""))
            yield Static(table)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
