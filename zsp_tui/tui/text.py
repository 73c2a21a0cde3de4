"""The one place stored text becomes something Textual draws.

Everything an operator, a target or a file controls (user and target names, reasons, commands,
search lines, audit messages) reaches the reviewer's screen through :func:`plain`: control
characters are escaped by :func:`replay.printable` (one line, injective) and the result is a
:class:`rich.text.Text`, which Textual never parses as markup. A bare ``str`` handed to a
``Label``, ``Static`` or ``DataTable`` cell *is* parsed as markup, so ``[reverse]`` in a reason
would restyle the screen; screens never pass stored strings any other way (tests/test_tui_text.py).
Recorded terminal output is different again: it is drawn only through the emulator
(widgets/terminal_view.py), never as text.
"""

from __future__ import annotations

from rich.text import Text

from replay import printable

__all__ = ["clip", "plain"]


def plain(value: object, style: str = "") -> Text:
    """``value`` as one escaped line of literal text (never markup), optionally styled."""
    return Text(printable("" if value is None else str(value)), style=style, no_wrap=True, end="")


def clip(value: object, width: int, style: str = "") -> Text:
    """:func:`plain`, cut to ``width`` cells with an ellipsis."""
    text = plain(value, style)
    if width > 0 and text.cell_len > width:
        text.truncate(max(width - 1, 0))
        text.append("…")
    return text
