"""Fault-injecting sinks: real files underneath, with delays or errors on top (as Boundary's
LimitedSpaceFS does). They are storage wrappers, not fake recorders: every byte that is
accepted lands in a real file that the real verifier reads."""

from __future__ import annotations

import errno
import os
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


class FaultSink(FileSink):
    """Fails ``op`` (``"writev"`` or ``"fsync"``) with ``errno`` from its ``after``-th call on (a
    disk that fills or a device that starts returning I/O errors), and counts every call, so a
    test can tell that nothing retried after the failure."""

    def __init__(self, path: Path, op: str, err: int, after: int) -> None:
        super().__init__(path, sync_dir=False)
        self.op = op
        self.err = err
        self.after = after
        self.calls = {"writev": 0, "fsync": 0}

    def writev(self, buffers: Sequence[bytes]) -> None:
        self.calls["writev"] += 1
        if self.op == "writev" and self.calls["writev"] > self.after:
            raise OSError(self.err, os.strerror(self.err))
        super().writev(buffers)

    def fsync(self) -> None:
        self.calls["fsync"] += 1
        if self.op == "fsync" and self.calls["fsync"] > self.after:
            raise OSError(self.err, os.strerror(self.err))
        super().fsync()
