"""Recordings of scripted shell sessions for the search tests: real RecordingWriter, real key,
a clock the script sets, so every frame's time is known."""

from __future__ import annotations

import uuid
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from tests.helpers import FakeClock

WALL_START_NS = 1_790_000_000 * 10**9


class Script:
    """Writes a recording; ``at(seconds)`` sets the time of what follows."""

    def __init__(
        self,
        path: Path,
        key: SigningKey,
        *,
        user: str = "alice",
        target: str = "db1",
        login: str = "root",
        cols: int = 80,
        rows: int = 24,
        term: str = "xterm",
        wall_start_ns: int = WALL_START_NS,
        session_id: uuid.UUID | None = None,
        checkpoint_frames: int = 256,
    ) -> None:
        self.path = path
        self._t = 0
        wall = FakeClock(step_ns=1000, wall_start_ns=wall_start_ns)
        self.w = RecordingWriter(
            FileSink(path, sync_dir=False),
            key,
            SessionMeta(user=user, target=target, login=login, term=term, cols=cols, rows=rows),
            session_id=session_id,
            clock=lambda: 10**12 + self._t,
            wall_clock=wall.wall,
            coalesce_ms=0,
            checkpoint_frames=checkpoint_frames,
        )

    def at(self, seconds: float) -> Script:
        self._t = round(seconds * 1e9)
        return self

    def out(self, data: bytes) -> Script:
        self.w.output(data)
        return self

    def key(self, data: bytes) -> Script:
        self.w.input(data)
        return self

    def frame(self) -> int:
        """Index of the next frame to be written."""
        return self.w.frames

    def close(self) -> Path:
        self.w.close(0, "exit")
        return self.path
