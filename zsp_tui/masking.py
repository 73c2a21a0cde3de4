"""Which typed bytes may be stored: passwords are withheld, commands never are.

Shared by the bastion and ``zsp record``. At most one line is withheld per password prompt: the
bytes up to and including the first Enter, and never more than :data:`MASK_BUDGET`. Whatever
follows in the same chunk, and every later line until a new prompt, is recorded.

Where the terminal's modes are visible (a local PTY), a prompt is echo off in canonical mode, the
way ``read -s``, ``sudo`` and ``passwd`` read a password; a shell left in ``stty -echo`` gets one
masked line per episode, then is recorded until echo comes back on. Where they are not (an SSH
target), a prompt is output whose last line looks like one. An operator can fake either, but only
to hide one line, in plain sight of the recorded output and of the ``input.masked`` event.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MASK_BUDGET", "InputMasker"]

MASK_BUDGET = 256
_PROMPT = re.compile(rb"(?i)(pass(word|phrase)|\bpin\b|secret|verification code)[^\n]{0,60}:\s*$")


class InputMasker:
    """``echo_off()`` returns the terminal's state: True/False where known, None where not."""

    def __init__(self, echo_off: Callable[[], bool | None]) -> None:
        self._echo_off = echo_off
        self._tail = b""
        self._armed = False
        self._used = 0  # bytes withheld in this episode
        self._spent = False  # this echo-off episode already had its masked line

    def saw_output(self, data: bytes) -> None:
        """Watch output for prompts (only used where the terminal's modes are not visible)."""
        self._tail = (self._tail + data)[-200:]
        if _PROMPT.search(self._tail.rsplit(b"\n", 1)[-1]):
            self._armed = True
            self._used = 0

    def _active(self) -> bool:
        state = self._echo_off()
        if state is None:
            return self._armed
        if not state:
            self._spent = False
            self._used = 0
            return False
        return not self._spent

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``(withheld, recorded)`` parts of a chunk of input, in that order."""
        if not self._active():
            return b"", data
        room = MASK_BUDGET - self._used
        ends = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
        line_end = min(ends) + 1 if ends else len(data)
        cut = min(line_end, room)
        self._used += cut
        if (ends and cut == line_end) or self._used >= MASK_BUDGET:
            self._armed = False
            self._spent = True
            self._tail = b""
        return data[:cut], data[cut:]
