"""Replay timing: turn verified frames into ``(delay_s, bytes)`` steps for a terminal.

Small generator stages in the asciinema style, so the player, exporters and the TUI share them:
``output_steps(frames)`` -> ``cap_idle(steps, limit)`` -> ``at_speed(steps, speed)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from recorder import Frame, FrameKind

__all__ = ["at_speed", "cap_idle", "output_steps"]

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
