"""The bastion's search indexing runs in a child process of its own, not in the bastion's interpreter.

Why a process: indexing is CPU-bound Python (terminal emulation of a whole recording). In a thread
of the bastion it held the GIL against the event loop that relays every session; a keystroke
needs several GIL hand-offs between the loop and its recorder thread, each waiting up to the
switch interval (5 ms) behind the indexer, so while a large sealed session was indexed
keystroke round trips through the bastion took 20-60 ms instead of under 1 ms (docs/PERF.md).
A child process competes for a core through the kernel's scheduler instead, at a lower priority
(``nice`` :data:`NICE`): sessions come first.

The parent (:class:`IndexProcess`, driven by :class:`zsp_tui.indexing.BackgroundIndexer`'s thread)
sends one job per line on the child's stdin, ``{"path": ..., "live": bool}``, and reads one reply
per line, ``{"ok": true}`` or ``{"error": "..."}``. The child keeps the search index open between
jobs (reopening it after a failure), writes warnings to stderr (the bastion's), and ends at the end
of its stdin. A child that dies is started again for the next job; its job is reported failed.
A child whose bastion is gone (killed with ``kill -9``: nobody closes its stdin while it works
through a large recording) exits within :data:`ORPHAN_CHECK` seconds instead of indexing on for
minutes with nobody to read the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["NICE", "ORPHAN_CHECK", "IndexProcess", "main"]

ORPHAN_CHECK = 1.0
"""How often (seconds) the child checks that the bastion that started it is still its parent."""

_PARENT_ENV = "ZSP_INDEX_PARENT"

NICE = 10
"""How much lower the child's scheduling priority is than the bastion's."""


class IndexProcess:
    """One indexing child process of a data dir, started on the first job (thread-confined:
    the background indexer's thread is its only user; ``kill`` excepted)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._proc: subprocess.Popen[str] | None = None

    def index(self, path: Path, *, live: bool, timeout: float | None = None) -> str | None:
        """Index ``path`` in the child; None when done, else why it could not be.

        With a ``timeout``, a job not done in that many seconds is abandoned: the child is killed
        (its index transaction rolled back) and :class:`TimeoutError` raised; the next job starts
        a new child."""
        proc = self._start()
        stdin, stdout = proc.stdin, proc.stdout
        if stdin is None or stdout is None:  # not reached: both are pipes
            return "the indexing process has no pipes"
        try:
            stdin.write(json.dumps({"path": str(path), "live": live}) + "\n")
            stdin.flush()
            # One reply line per job, written at once: nothing is buffered before this select.
            late = timeout is not None and not select.select([stdout], [], [], timeout)[0]
            line = "" if late else stdout.readline()
        except (OSError, ValueError) as exc:  # ValueError: a pipe closed under us
            self._stop()
            return f"the indexing process failed ({exc})"
        if late:  # TimeoutError is an OSError: raised outside the clause above
            self.kill()
            self._stop()
            raise TimeoutError(f"indexing {path} took over {timeout:g}s")
        if not line:
            status = self._stop()
            return f"the indexing process ended (exit status {status})"
        try:
            reply = json.loads(line)
        except ValueError:
            self._stop()
            return "the indexing process answered garbage"
        if not isinstance(reply, dict) or reply.get("ok") is not True:
            error = reply.get("error") if isinstance(reply, dict) else None
            return str(error) if error else "the indexing process failed"
        return None

    def kill(self) -> None:
        """Kill the child now, from any thread (the owner's next job starts a new one)."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def close(self, timeout: float = 5.0) -> None:
        """End the child (at the end of its stdin; killed after ``timeout`` seconds)."""
        self._stop(timeout)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
        env[_PARENT_ENV] = str(os.getpid())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "zsp_tui.index_process", str(self.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # warnings go where the bastion's go
            text=True,
            encoding="utf-8",
            errors="surrogateescape",  # a path is passed through as the bytes it is
            env=env,
            start_new_session=True,  # a ^C to the bastion's terminal is the bastion's to handle
        )
        return self._proc

    def _stop(self, timeout: float = 5.0) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return status


def _serve(root: Path, jobs: IO[str], replies: IO[str]) -> None:
    # Deferred: the parent imports this module without the indexing stack.
    from replay import ReplayError, SearchIndex

    from .datadir import DataDir
    from .exceptions import ZspError
    from .indexing import index_one, open_index

    data = DataDir(root)
    index: SearchIndex | None = None
    for line in jobs:
        reply: dict[str, Any]
        try:
            job = json.loads(line)
            if index is None:
                index = open_index(data)
            index_one(data, Path(job["path"]), index, live=bool(job["live"]))
            reply = {"ok": True}
        except (ReplayError, ZspError, OSError, sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            reply = {"error": str(exc)}
            if index is not None:
                index.close()
            index = None
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    if index is not None:
        index.close()


def _exit_when_orphaned(parent: int) -> None:
    """End this process as soon as ``parent`` is no longer its parent (it died; the child was
    re-parented). ``os._exit``: a job in progress is abandoned, and the index's open transaction
    is rolled back by SQLite, as after any crash."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK)
    os._exit(0)


def main(argv: list[str]) -> int:
    """The child: ``python -m zsp_tui.index_process DATA_ROOT``."""
    if len(argv) != 1:
        print("usage: python -m zsp_tui.index_process DATA_ROOT", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(NICE)
    parent = os.environ.get(_PARENT_ENV, "")
    if parent.isdigit():
        threading.Thread(target=_exit_when_orphaned, args=(int(parent),), name="zsp-orphan-check", daemon=True).start()
    # The replies get stdout to themselves: anything else printed goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="surrogateescape")
    os.dup2(2, 1)
    jobs = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
    _serve(Path(argv[0]), jobs, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
