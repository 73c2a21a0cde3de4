"""What the operator last typed, and whether the screen showed it: for the player's status line.

Input typed at a prompt that does not echo (a password read with ``stty -echo``, a ``sudo``
prompt the masking missed, keys sent to a program that hides them) never appears on the screen a
reviewer watches. The player shows the last keystrokes beside the screen, marked ``(not echoed)``
when the output that followed did not contain them, and masked input as ``masked, N bytes``.

Echo is judged cheaply, as a reviewer would: the printable characters typed since the run began
must appear, in order, in the output printed since then. Keystrokes are grouped into runs that end
at Enter; a run is kept to its last :data:`KEEP` bytes.
"""

from __future__ import annotations

from typing import Any

from recorder import Event, Frame, FrameKind

from ._printable import printable

__all__ = ["KEEP", "TypedTracker"]

KEEP = 64
"""Bytes of the current run kept (the status line has room for about this many)."""
_OUTPUT_KEEP = 4096
_ECHO_WAIT_US = 500_000
"""Typed input with no output after it for this long counts as not echoed."""


def _subsequence(needle: bytes, hay: bytes) -> bool:
    it = iter(hay)
    return all(c in it for c in needle)


class TypedTracker:
    """Follows input, masked-input events and output frames; :meth:`describe` says what was typed last."""

    __slots__ = ("_data", "_ended", "_masked", "_out", "_out_after", "_size", "_t_us")

    def __init__(self) -> None:
        self._data = b""
        self._size = 0
        self._masked = 0
        self._t_us = -1
        self._out = b""
        self._out_after = False
        self._ended = False

    def feed(self, frame: Frame) -> None:
        kind = frame.kind
        data = frame.data
        if kind is FrameKind.OUTPUT and isinstance(data, bytes):
            if self._t_us >= 0 and not self._masked:
                # The echo comes right after the keys: the first few KiB of output are enough.
                if len(self._out) < _OUTPUT_KEEP:
                    self._out += data[: _OUTPUT_KEEP - len(self._out)]
                self._out_after = True
        elif kind is FrameKind.INPUT and isinstance(data, bytes):
            if self._ended or self._masked or self._t_us < 0:
                self._data, self._size, self._out, self._ended = b"", 0, b"", False
            self._masked = 0
            self._data = (self._data + data)[-KEEP:]
            self._size += len(data)
            self._t_us = frame.t_us
            self._out_after = False
            if b"\r" in data or b"\n" in data:
                self._ended = True
        elif kind is FrameKind.EVENT and isinstance(data, Event) and data.type == "input.masked":
            n = data.fields.get("bytes")
            self._masked = n if isinstance(n, int) and n > 0 else 1
            self._data, self._size, self._out, self._ended = b"", 0, b"", True
            self._t_us = frame.t_us

    def echoed(self) -> bool:
        """Whether the printable part of the current run appeared in the output after it."""
        typed = bytes(c for c in self._data if 0x20 <= c < 0x7F)
        if not typed:
            return True
        return _subsequence(typed, self._out)

    def describe(self, now_us: int) -> str:
        """One line for the status line ("" when nothing was typed yet); control keys escaped."""
        if self._t_us < 0:
            return ""
        if self._masked:
            return f"masked, {self._masked} bytes"
        text = printable(self._data)
        if self._size > len(self._data):
            text = "…" + text
        settled = self._out_after or now_us - self._t_us >= _ECHO_WAIT_US
        if settled and not self.echoed():
            text += " (not echoed)"
        return text

    def dump(self) -> list[Any]:
        return [self._data, self._size, self._masked, self._t_us, self._out, self._out_after, self._ended]

    @classmethod
    def load(cls, state: object) -> TypedTracker:
        """Inverse of :meth:`dump`; ``ValueError`` if ``state`` is not one."""
        t = cls()
        if not isinstance(state, list) or len(state) != 7:
            raise ValueError("bad typed-input state")
        data, size, masked, t_us, out, out_after, ended = state
        if not (
            isinstance(data, bytes)
            and len(data) <= KEEP
            and isinstance(out, bytes)
            and len(out) <= _OUTPUT_KEEP
            and all(type(v) is int for v in (size, masked, t_us))
            and isinstance(out_after, bool)
            and isinstance(ended, bool)
        ):
            raise ValueError("bad typed-input state")
        t._data, t._size, t._masked, t._t_us, t._out, t._out_after, t._ended = (
            data, size, masked, t_us, out, out_after, ended
        )
        return t
