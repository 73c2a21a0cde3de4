"""The Replay screen's side panel: the commands typed (select one to jump there), the raw
keystrokes (masked input shown only as its length) and, for an SFTP session, the files it
transferred (direction, size, path; select one to jump to the moment it was closed).

Commands are what :func:`replay.scan` read off the screen at each Enter; keystrokes are the raw
input runs up to each Enter. Both are drawn through :func:`..text.plain` (control characters
escaped, never markup). Selecting an entry posts :class:`ReplayPanel.Jump` with its time.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from replay import Command, FileOp, TransferredFile

from ..playback import KeyRun
from ..text import plain

__all__ = ["MAX_LISTED", "ReplayPanel", "clock", "file_prompt"]

MAX_LISTED = 5_000
"""Commands (and keystroke runs) listed in the side panel at most; the rest are counted."""


def clock(t_us: int) -> str:
    """``MM:SS`` (``H:MM:SS`` past an hour) of a time from the recording's start."""
    s = max(0, t_us) // 1_000_000
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def command_prompt(c: Command) -> Text:
    text = Text(f"{clock(c.t_us)} ", style="dim", no_wrap=True, end="")
    if c.blind:
        text.append_text(plain(c.text, "yellow"))
        text.append(" (typed, not echoed)", style="dim yellow")
    else:
        text.append_text(plain(c.text or "(blank)"))
    if c.masked_bytes:
        text.append(f" (masked, {c.masked_bytes} bytes)", style="magenta")
    return text


def keys_prompt(k: KeyRun) -> Text:
    text = Text(f"{clock(k.t_us)} ", style="dim", no_wrap=True, end="")
    if k.masked:
        text.append(f"masked input, {k.masked} bytes", style="magenta")
        return text
    if k.size > len(k.keys):
        text.append("…")
    text.append_text(plain(k.keys.decode("utf-8", "replace")))  # plain() escapes the controls
    return text


def file_prompt(f: TransferredFile) -> Text:
    text = Text(f"{clock(f.t_us)} ", style="dim", no_wrap=True, end="")
    arrow = {"upload": "↑", "download": "↓", "both": "↕"}.get(f.direction, "?")
    text.append(f"{arrow} {f.size:,} ", style="cyan")
    text.append_text(plain(f.path_bytes.decode("utf-8", "replace") if f.path_bytes is not None else f.path))
    if not f.finished:
        text.append(" (cut)", style="yellow")
    elif not f.sha256:
        text.append(" (no hash)", style="yellow")
    return text


def change_prompt(c: FileOp) -> Text:
    text = Text(f"{clock(c.t_us)} ", style="dim", no_wrap=True, end="")
    text.append(f"{c.op} ", style="magenta")
    text.append_text(plain(c.text))  # plain() escapes the controls
    if c.detail:
        text.append_text(plain(f" {c.detail}", "dim"))
    if c.outcome != "ok":
        text.append_text(plain(f" ({c.outcome})", "yellow"))
    return text


class ReplayPanel(Vertical):
    """Commands and keystrokes of the recording; both lists jump to the selected moment."""

    class Jump(Message):
        """Go to ``t_us`` (``command``: the command selected, shown once its line is on screen)."""

        def __init__(self, t_us: int, command: Command | None = None) -> None:
            super().__init__()
            self.t_us = t_us
            self.command = command

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._commands: list[Command] = []
        self._keys: list[KeyRun] = []
        self._files: list[TransferredFile] = []
        self._changes: list[FileOp] = []
        self._status = ""

    def compose(self) -> ComposeResult:
        yield Label(plain("Commands"), id="commands-title", classes="panel-title")
        yield OptionList(id="commands")
        yield Label(plain("Keystrokes"), id="keys-title", classes="panel-title")
        yield OptionList(id="keys")
        yield Label(plain("Files"), id="files-title", classes="panel-title")
        yield OptionList(id="files")
        yield Label(plain("File changes"), id="changes-title", classes="panel-title")
        yield OptionList(id="changes")

    def on_mount(self) -> None:
        for wid in ("#files-title", "#files", "#changes-title", "#changes"):
            self.query_one(wid).display = False  # shown once a file transfer (or change) is listed

    @property
    def commands(self) -> list[Command]:
        return list(self._commands)

    def update_lists(
        self,
        commands: list[Command],
        keys: list[KeyRun],
        status: str = "",
        files: list[TransferredFile] | None = None,
        changes: list[FileOp] | None = None,
    ) -> None:
        """Show ``commands`` and ``keys`` (appending what is new; a list only grows), at most
        :data:`MAX_LISTED` of each: a recording of 200,000 typed commands must not hold the UI
        thread (and the bastion host's CPU) to build 400,000 options. Past the cap one line says
        how many more there are; ``n``/``p`` and the timeline still reach every one of them."""
        clist = self.query_one("#commands", OptionList)
        klist = self.query_one("#keys", OptionList)
        if len(commands) > len(self._commands):
            start = len(self._commands)
            listed = commands[start:MAX_LISTED] if start < MAX_LISTED else []
            clist.add_options(Option(command_prompt(c), id=f"c{start + i}") for i, c in enumerate(listed))
            self._commands = list(commands)
            self._more(clist, "commands", len(commands))
        if len(keys) > len(self._keys):
            start = len(self._keys)
            listed_keys = keys[start:MAX_LISTED] if start < MAX_LISTED else []
            klist.add_options(Option(keys_prompt(k), id=f"k{start + i}") for i, k in enumerate(listed_keys))
            self._keys = list(keys)
            self._more(klist, "keys", len(keys))
        if files is not None and len(files) > len(self._files):
            flist = self.query_one("#files", OptionList)
            start = len(self._files)
            listed_files = files[start:MAX_LISTED] if start < MAX_LISTED else []
            flist.add_options(Option(file_prompt(f), id=f"f{start + i}") for i, f in enumerate(listed_files))
            self._files = list(files)
            self._more(flist, "files", len(files))
            for wid in ("#files-title", "#files"):
                self.query_one(wid).display = True
        if changes is not None and changes != self._changes:
            glist = self.query_one("#changes", OptionList)
            shown = min(len(self._changes), MAX_LISTED)
            for i in range(shown):  # an outcome read since (the target's reply)
                if i < len(changes) and changes[i] != self._changes[i]:
                    glist.replace_option_prompt(f"g{i}", change_prompt(changes[i]))
            listed_changes = changes[shown:MAX_LISTED] if len(changes) > shown else []
            glist.add_options(Option(change_prompt(c), id=f"g{shown + i}") for i, c in enumerate(listed_changes))
            self._changes = list(changes)
            self._more(glist, "changes", len(changes))
            for wid in ("#changes-title", "#changes"):
                self.query_one(wid).display = True
        if status != self._status:
            self._status = status
            title = Text("Commands", style="bold", end="")
            if status:
                title.append_text(plain(f"  {status}", "dim"))
            self.query_one("#commands-title", Label).update(title)

    @staticmethod
    def _more(options: OptionList, what: str, total: int) -> None:
        if total <= MAX_LISTED:
            return
        text = plain(f"… {total - MAX_LISTED:,} more {what} (n / p and the timeline reach them)", "dim italic")
        try:
            options.get_option(f"more-{what}")
        except OptionDoesNotExist:
            options.add_option(Option(text, id=f"more-{what}", disabled=True))
        else:
            options.replace_option_prompt(f"more-{what}", text)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        oid = event.option.id or ""
        try:
            i = int(oid[1:])
        except ValueError:
            return
        if oid.startswith("c") and i < len(self._commands):
            self.post_message(self.Jump(self._commands[i].t_us, self._commands[i]))
        elif oid.startswith("k") and i < len(self._keys):
            self.post_message(self.Jump(self._keys[i].t_us))
        elif oid.startswith("f") and i < len(self._files):
            self.post_message(self.Jump(self._files[i].t_us))
        elif oid.startswith("g") and i < len(self._changes):
            self.post_message(self.Jump(self._changes[i].t_us))
