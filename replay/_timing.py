"""Replay timing: turn verified frames into ``(delay_s, bytes)`` steps for a terminal.

Small generator stages in the asciinema style, so the player, exporters and the TUI share them:
``output_steps(frames)`` -> ``cap_idle(steps, limit)`` -> ``at_speed(steps, speed)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from recorder import Frame, FrameKind

__all__ = ["Slicer", "at_speed", "cap_idle", "output_steps"]

Step = tuple[float, bytes]


def output_steps(frames: Iterable[Frame]) -> Iterator[Step]:
    """Output frames as (seconds since the previous output, bytes)."""
    last = None
    for frame in frames:
        if frame.kind is FrameKind.OUTPUT and isinstance(frame.data, bytes):
            t = frame.t_us / 1e6
            yield (0.0 if last is None else max(0.0, t - last)), frame.data
            last = t


def cap_idle(steps: Iterable[Step], limit: float | None) -> Iterator[Step]:
    """Shorten pauses longer than ``limit`` seconds to ``limit`` (None: keep them)."""
    for delay, data in steps:
        yield (min(delay, limit) if limit is not None else delay), data


def at_speed(steps: Iterable[Step], speed: float) -> Iterator[Step]:
    for delay, data in steps:
        yield delay / speed, data


class Slicer:
    """How many bytes of an output frame a player feeds its terminal next (:attr:`size`), so
    that each slice costs about ``target`` seconds of emulator time and keys are read between them.

    Output can cost the emulator a millisecond per byte (a 1000x500 screen filled and erased over
    and over: ``ESC # 8 ESC [ 2 J``), or a tenth of a microsecond. So the size follows what the
    last slice cost (:meth:`took`), growing at most 4-fold a slice, and each frame starts small
    (:meth:`new_frame`) whatever the last one cost: a costly stretch after a cheap one is met
    with a small slice."""

    __slots__ = ("high", "low", "size", "start", "target")

    def __init__(self, *, target: float = 0.02, start: int = 256, low: int = 64, high: int = 64 * 1024) -> None:
        self.target = target
        self.start = start
        self.low = low
        self.high = high
        self.size = start

    def new_frame(self) -> None:
        self.size = min(self.size, self.start)

    def took(self, seconds: float) -> None:
        """The last slice (of :attr:`size` bytes) took ``seconds``: size the next one."""
        n = self.size
        self.size = max(self.low, min(self.high, n * 4, int(n * self.target / max(seconds, 1e-6))))
