"""Fault-injecting sinks: real files underneath, with delays or errors on top (as Boundary's
LimitedSpaceFS does). They are storage wrappers, not fake recorders: every byte that is
accepted lands in a real file that the real verifier reads."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from recorder import FileSink


class LimitedSink(FileSink):
    """Fails with ENOSPC once ``limit`` bytes have been written (a full disk)."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path, sync_dir=False)
        self.limit = limit
        self.written = 0

    def writev(self, buffers: Sequence[bytes]) -> None:
        size = sum(len(b) for b in buffers)
        if self.written + size > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().writev(buffers)
        self.written += size


class SlowSink(FileSink):
    """Sleeps before every write (slow storage)."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path, sync_dir=False)
        self.delay = delay
        self.writes = 0

    def writev(self, buffers: Sequence[bytes]) -> None:
        time.sleep(self.delay)
        self.writes += 1
        super().writev(buffers)


class GateSink(FileSink):
    """Blocks every write until ``gate`` is set (storage that hangs)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, sync_dir=False)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def writev(self, buffers: Sequence[bytes]) -> None:
        self.entered.set()
        self.gate.wait(30)
        super().writev(buffers)
