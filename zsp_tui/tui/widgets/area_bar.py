"""The one-line bar of areas at the top of every area screen: keys, titles, the current one lit.
Clicking a title switches to it, like its digit key."""

from __future__ import annotations

from rich.text import Text
from textual.events import Click
from textual.widget import Widget

__all__ = ["AreaBar"]


class AreaBar(Widget):
    DEFAULT_CSS = """
    AreaBar {
        dock: top;
        height: 1;
        background: $primary-darken-2;
        color: $text;
    }
    """

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current
        self._spans: list[tuple[int, int, str]] = []

    def render(self) -> Text:
        from ..app import AREA_KEYS

        areas = getattr(self.app, "areas", list(AREA_KEYS))
        text = Text(" zsp review ", style="bold", no_wrap=True, end="")
        self._spans = []
        for area in areas:
            key, title = AREA_KEYS[area]
            start = text.cell_len
            style = "reverse bold" if area == self.current else ""
            text.append(f" {key} {title} ", style=style)
            self._spans.append((start, text.cell_len, area))
        ctx = getattr(self.app, "ctx", None)
        if ctx is not None:
            from ..text import plain

            text.append("  ")
            text.append_text(plain(ctx.reviewer.label, "dim"))
        text.append("   ? help  q quit", style="dim")
        return text

    async def on_click(self, event: Click) -> None:
        for start, end, area in self._spans:
            if start <= event.x < end:
                await self.app.run_action(f"area('{area}')")
                return
