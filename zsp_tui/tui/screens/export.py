"""Export from the review app: the dialog, and the export run in a worker thread.

Sessions and Replay bind ``x`` to :func:`export_session`: a dialog asks for the format (bundle,
asciicast v2 or v3, text), optionally one ``--redact`` pattern, and for a bundle whether to add the
content of the session's transferred files (``--files``; the list of them, with their hashes, is
always in a bundle's manifest); the export then runs exactly as
``zsp export`` does (:func:`zsp_tui.evidence.run.run_export`: the reviewer's role checked again,
``recording.export`` audited before the file is put in place).

Where the file goes: on the bastion host, in ``DATA/exports/`` (created mode 0700), named after
the session and the time. On the console the path can be changed; over ``ssh -t review@BASTION``
it cannot, since the app runs as the bastion's own account and a path typed by a remote reviewer
must not choose where that account writes. The dialog says how to get a copy with nothing but
OpenSSH: ``ssh zsp@BASTION export SESSION > FILE``.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, Input, RadioButton, RadioSet, Static

from recorder import new_session_id

from ...evidence import FORMATS, ExportJob
from ...evidence.run import run_export
from ...evidence.select import select_sessions
from ...exceptions import ZspError
from ..context import ReviewContext
from ..text import plain

__all__ = ["EXPORT_DIR", "ExportChoice", "ExportDialog", "default_output", "export_session"]

EXPORT_DIR = "exports"
"""Directory in the data dir where the review app writes exports."""
_SUFFIX = {"bundle": ".tar", "asciicast": ".cast", "asciicast3": ".cast", "text": ".txt"}
_LABEL = {
    "bundle": "bundle: signed tar (recording, grant, audit excerpt, verify.py)",
    "asciicast": "asciicast v2 (.cast) with .sig",
    "asciicast3": "asciicast v3 (.cast) with .sig",
    "text": "text transcript (.txt) with .sig",
}


@dataclass(frozen=True, slots=True)
class ExportChoice:
    format: str
    output: Path
    redact: str
    """One pattern (``--redact``), or empty."""
    files: bool = False
    """Bundle only (``--files``): add the kept content of the session's transferred files."""


def default_output(ctx: ReviewContext, session_id: str, fmt: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return ctx.data.root / EXPORT_DIR / f"{session_id}-{stamp}{_SUFFIX[fmt]}"


class ExportDialog(ModalScreen[ExportChoice | None]):
    """Format, (console only) output path and an optional redaction pattern."""

    DEFAULT_CSS = """
    ExportDialog { align: center middle; background: $background 60%; }
    ExportDialog > Vertical {
        width: 84; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    ExportDialog .dialog-title { text-style: bold; width: 100%; }
    ExportDialog RadioSet { width: 100%; margin: 1 0 0 0; }
    ExportDialog Input { margin: 1 0 0 0; }
    ExportDialog Checkbox { margin: 1 0 0 0; }
    ExportDialog .dialog-note { width: 100%; height: auto; margin: 1 0 0 0; }
    ExportDialog .dialog-error { color: $error; height: auto; }
    ExportDialog Horizontal { height: auto; align: right middle; margin: 1 0 0 0; }
    ExportDialog Button { margin: 0 0 0 2; min-width: 12; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", key_display="esc")]

    def __init__(self, ctx: ReviewContext, session_id: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.session_id = session_id
        self.console = ctx.reviewer.via == "console"

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(plain(f"Export session {self.session_id}", "bold"), classes="dialog-title")
            with RadioSet(id="format"):
                for i, fmt in enumerate(FORMATS):
                    yield RadioButton(plain(_LABEL[fmt]), value=i == 0, name=fmt)
            if self.console:
                yield Input(str(default_output(self.ctx, self.session_id, "bundle")), id="output")
            yield Input(placeholder="redact: a regular expression (optional), e.g. password=\\S+", id="redact")
            yield Checkbox(plain("bundle: include transferred files' content (hash-checked; --files)"), id="files")
            yield Static(self._note("bundle"), id="note", classes="dialog-note")
            yield Static("", id="error", classes="dialog-error")
            with Horizontal():
                yield Button(plain("Export"), id="export", variant="primary")
                yield Button(plain("Cancel"), id="cancel")

    def _note(self, fmt: str) -> Text:
        where = default_output(self.ctx, self.session_id, fmt)
        text = Text()
        if not self.console:
            text.append_text(plain(f"Written on the bastion host: {where}"))
            text.append("\n")
        redact = self.query("#redact").first(Input).value if self.is_mounted else ""
        command = f"ssh zsp@BASTION export {self.session_id} --format {fmt}"
        if redact:
            command += f" --redact {shlex.quote(redact)}"
        if fmt == "bundle" and self.is_mounted and self.query_one("#files", Checkbox).value:
            command += " --files"
        command += " > FILE"
        text.append_text(plain(f"A copy on your machine: {command}"))
        return text

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.query_one("#note", Static).update(self._note(self._format()))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "redact":
            self.query_one("#note", Static).update(self._note(self._format()))

    def _format(self) -> str:
        pressed = self.query_one("#format", RadioSet).pressed_button
        return pressed.name if pressed is not None and pressed.name in FORMATS else "bundle"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        fmt = self._format()
        self.query_one("#files", Checkbox).disabled = fmt != "bundle"
        self.query_one("#note", Static).update(self._note(fmt))
        if self.console:
            out = self.query_one("#output", Input)
            path = Path(out.value)
            if path.suffix in _SUFFIX.values():
                out.value = str(path.with_suffix(_SUFFIX[fmt]))

    def _submit(self) -> None:
        fmt = self._format()
        redact = self.query_one("#redact", Input).value
        if redact:
            try:
                re.compile(redact.encode())
            except re.error as exc:
                self.query_one("#error", Static).update(plain(f"not a valid regular expression: {exc}"))
                return
        if self.console:
            output = Path(self.query_one("#output", Input).value.strip()).expanduser()
        else:
            output = default_output(self.ctx, self.session_id, fmt)
        files = fmt == "bundle" and self.query_one("#files", Checkbox).value
        self.dismiss(ExportChoice(fmt, output, redact, files))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def export_session(screen: Screen[Any], ctx: ReviewContext, session_id: str) -> None:
    """Ask how to export ``session_id``, then export it in a worker thread and say how it went."""

    def run(choice: ExportChoice) -> str:
        if choice.output.parent == ctx.data.root / EXPORT_DIR:
            choice.output.parent.mkdir(mode=0o700, exist_ok=True)
        if choice.output.exists():
            raise FileExistsError(f"{choice.output} exists")
        sessions = select_sessions(ctx.data, [session_id])
        patterns = (re.compile(choice.redact.encode()),) if choice.redact else ()
        job = ExportJob(
            data=ctx.data,
            sessions=sessions,
            format=choice.format,
            output=choice.output,
            patterns=patterns,
            include_input=False,
            force=False,
            exporter=ctx.reviewer.name,
            via=ctx.reviewer.via,
            export_id=str(new_session_id()),
            key=ctx.data.signing_key(),
            include_files=choice.files,
        )
        prepared = run_export(job)
        refused = prepared[0].refused_files
        if refused:
            raise ExportFilesRefused(choice.output, refused)
        return f"exported to {choice.output} (sha256 {prepared[0].sha256[:16]}...)"

    def work(choice: ExportChoice) -> None:
        try:
            message = run(choice)
        except (ZspError, OSError) as exc:
            screen.app.call_from_thread(_say, screen, f"export failed: {exc}", True)
            return
        screen.app.call_from_thread(_say, screen, message, False)

    def answered(choice: ExportChoice | None) -> None:
        if choice is None:
            return
        _say(screen, f"exporting session {session_id} as {choice.format}...", False)
        screen.run_worker(lambda: work(choice), thread=True, group="export", name="export session")

    if not os.access(ctx.data.root, os.W_OK):
        _say(screen, f"cannot export: the data dir {ctx.data.root} is not writable", True)
        return
    screen.app.push_screen(ExportDialog(ctx, session_id), answered)


class ExportFilesRefused(ZspError):
    """The bundle was written, but some transferred files' content did not match its hash and was
    left out: shown as an error, as ``zsp export --files`` exits 1."""

    def __init__(self, output: Path, refused: tuple[str, ...]) -> None:
        self.output = output
        self.refused = refused
        super().__init__(
            f"exported to {output}, but {len(refused)} transferred file(s) were left out, their content not "
            f"matching their hash: {refused[0]}"
        )


def _say(screen: Screen[Any], message: str, error: bool) -> None:
    """A notification with the message escaped (paths and errors may quote stored text), no markup."""
    screen.notify(plain(message).plain, severity="error" if error else "information", timeout=10, markup=False)
