"""Modal dialogs the areas share: a yes/no confirmation and a reason to type.

Both work from the keyboard (Enter/``y`` confirms, Escape/``n`` cancels; Tab moves between the
input and the buttons) and with the mouse (the buttons). What they show comes from the store
(requester names, targets, reasons), so every line they are given is a :class:`rich.text.Text`
built through :func:`zsp_tui.tui.text.plain` by the caller, never a markup string.

A dialog returns its answer through :meth:`ModalScreen.dismiss`: push it with a callback
(``app.push_screen(ConfirmDialog(...), on_answer)``) and the area acts on the answer.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from ..text import plain

__all__ = ["MAX_REASON", "ConfirmDialog", "ReasonDialog"]

MAX_REASON = 500
"""Longest reason the service accepts (access.py ``_check_text``); the input stops there."""

_CSS = """
ConfirmDialog, ReasonDialog {
    align: center middle;
    background: $background 60%;
}
ConfirmDialog > Vertical, ReasonDialog > Vertical {
    width: 76;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    border: thick $warning;
    background: $surface;
    padding: 0 1;
}
ConfirmDialog .dialog-title, ReasonDialog .dialog-title {
    text-style: bold;
    width: 100%;
}
ConfirmDialog .dialog-body, ReasonDialog .dialog-body {
    width: 100%;
    height: auto;
    margin: 1 0 0 0;
}
ReasonDialog Input {
    margin: 1 0 0 0;
}
ReasonDialog .dialog-error {
    color: $error;
    height: auto;
}
ConfirmDialog Horizontal, ReasonDialog Horizontal {
    height: auto;
    align: right middle;
    margin: 1 0 0 0;
}
ConfirmDialog .hint, ReasonDialog .hint {
    width: 100%;
    content-align: right middle;
}
ConfirmDialog Button, ReasonDialog Button {
    margin: 0 0 0 2;
    min-width: 12;
}
"""


def _wrapped(text: Text) -> Text:
    """``text`` allowed to wrap over several lines (plain() makes one line that does not)."""
    out = text.copy()
    out.no_wrap = False
    out.end = ""
    return out


class ConfirmDialog(ModalScreen[bool]):
    """Asks one yes/no question; dismisses with True only on an explicit yes."""

    DEFAULT_CSS = _CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No", key_display="n/esc"),
    ]

    def __init__(self, title: Text, body: Text | None = None, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._yes = yes
        self._no = no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(_wrapped(self._title), classes="dialog-title")
            if self._body is not None:
                yield Static(_wrapped(self._body), classes="dialog-body")
            with Horizontal():
                yield Button(plain(self._yes), id="yes", variant="warning")
                yield Button(plain(self._no), id="no")
            yield Static(plain(f"y: {self._yes}   n or Esc: {self._no}   Tab: next button", "dim"), classes="hint")

    def on_mount(self) -> None:
        # No is focused: Enter on an untouched dialog cancels; yes takes ``y`` or a Tab first.
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class ReasonDialog(ModalScreen[str | None]):
    """Asks for a reason (a denial, a termination): dismisses with the reason typed (stripped),
    or None when cancelled. With ``required`` an empty reason is not accepted (said in place)."""

    DEFAULT_CSS = _CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", key_display="esc"),
    ]

    def __init__(
        self,
        title: Text,
        body: Text | None = None,
        *,
        confirm: str = "OK",
        required: bool = True,
        placeholder: str = "reason",
    ) -> None:
        super().__init__()
        self._title = title
        self._body = body
        self._confirm = confirm
        self._required = required
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(_wrapped(self._title), classes="dialog-title")
            if self._body is not None:
                yield Static(_wrapped(self._body), classes="dialog-body")
            yield Input(placeholder=self._placeholder, max_length=MAX_REASON, id="reason")
            yield Static(Text(""), classes="dialog-error", id="error")
            with Horizontal():
                yield Button(plain(self._confirm), id="ok", variant="error")
                yield Button(plain("Cancel"), id="cancel")
            yield Static(plain(f"Enter: {self._confirm}   Esc: Cancel   Tab: the buttons", "dim"), classes="hint")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def _submit(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if self._required and not reason:
            self.query_one("#error", Static).update(plain("a reason is required (Escape cancels)"))
            self.query_one("#reason", Input).focus()
            return
        self.dismiss(reason)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
