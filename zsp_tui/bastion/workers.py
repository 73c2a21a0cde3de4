"""``zsp serve --workers N``: N bastion processes on one port, and the parent that keeps them.

The parent holds the data dir's instance lock (a second ``zsp serve`` on it is refused, as
with one process), binds the port once with SO_REUSEPORT (so ``--listen HOST:0`` picks one port
for all, and the port stays this service's while a worker restarts; a socket that is bound but
not listening receives no connections), then starts N workers: ``zsp serve`` processes that
listen on that port with SO_REUSEPORT and share the store. The kernel spreads new connections
over the listening workers (by a hash of the client's address and port); Linux lets only
processes of the same user join a SO_REUSEPORT group, so no other account can take a share.

Each worker reports on its stdout when it listens; the parent prints one ready line once all
N do. A worker that dies is restarted after a backoff that grows while workers keep dying
quickly (0.5 s doubling to 30 s); one that dies before it listens ``max_start_failures`` times
in a row makes the parent stop the others and exit 1, with the worker's last words. The
restarted worker closes what the dead one left live as interrupted (``recovery``). SIGTERM or
SIGINT to the parent is passed to every worker, which end their sessions as ``zsp serve`` does;
the parent waits for them (SIGKILL after ``stop_timeout``). Workers watch their parent: one
orphaned (the parent killed) stops on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from replay import printable

__all__ = ["READY", "Supervisor", "reserve_port", "watch_parent", "worker_argv"]

READY = "zsp-worker: ready "
"""How a worker tells its parent it listens (its stdout; the rest of its output is passed on)."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT (not listening), holding the port for
    the workers; ``port`` 0 picks one (``getsockname()``). OSError if it cannot be bound."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def worker_argv(data: Path, host: str, port: int, workers: int) -> list[str]:
    """The command line of one worker: this interpreter, ``zsp serve`` as a worker of this process."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        sys.executable,
        "-m",
        "zsp_tui",
        "serve",
        f"--data={data}",
        f"--listen={listen}",
        f"--workers={workers}",
        f"--worker-of={os.getpid()}",
    ]


def _worker_env() -> dict[str, str]:
    """The parent's environment, with the workers importing the same zsp as the parent."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass(slots=True)
class _Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    port: int = 0
    start_failures: int = 0
    """Consecutive exits before listening."""
    quick_exits: int = 0
    """Consecutive exits soon after starting (the backoff grows with them)."""
    last_words: list[str] = field(default_factory=list)


class Supervisor:
    """Runs ``n`` workers (``argv``) until told to stop; see the module docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        n: int,
        *,
        max_start_failures: int = 5,
        backoff: tuple[float, float] = (0.5, 30.0),
        ready_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.argv = list(argv)
        self.workers = [_Worker(i) for i in range(n)]
        self.max_start_failures = max_start_failures
        self.backoff = backoff
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.stopping = asyncio.Event()
        self.failure: str | None = None
        self.restarts = 0
        self._all_ready = asyncio.Event()
        self._said: dict[str, float] = {}
        self._readers: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None and w.proc.returncode is None]

    async def run(self, ready: Callable[[Supervisor], None]) -> int:
        """Start the workers, call ``ready`` once all listen, keep them until SIGTERM/SIGINT
        (0) or a worker that cannot start (1, the reason on stderr)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        waiting = asyncio.create_task(self._all_ready.wait())
        stopping = asyncio.create_task(self.stopping.wait())
        done, _ = await asyncio.wait({waiting, stopping}, timeout=self.ready_timeout, return_when="FIRST_COMPLETED")
        if waiting in done and not self.stopping.is_set():
            ready(self)
        elif not done:
            self.failure = self.failure or f"the workers did not all listen within {self.ready_timeout:g} s"
            self.stopping.set()
        await self.stopping.wait()
        waiting.cancel()
        stopping.cancel()
        await self._stop_all()
        for task in keepers:
            task.cancel()
        for task in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.failure is not None:
            print(f"zsp: error: {printable(self.failure)}", file=sys.stderr, flush=True)
            return 1
        return 0

    async def _keep(self, w: _Worker) -> None:
        """Start ``w``, wait for it to exit, restart it after a backoff; forever."""
        while not self.stopping.is_set():
            proc = await self._start(w)
            status = await proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - w.started
            was_ready, w.ready = w.ready, False
            w.start_failures = 0 if was_ready else w.start_failures + 1
            w.quick_exits = w.quick_exits + 1 if ran < 10 else 0
            said = f": {w.last_words[-1]}" if w.last_words else ""
            if w.start_failures >= self.max_start_failures:
                self.failure = (
                    f"worker {w.index} exited before listening {w.start_failures} times in a row "
                    f"(status {status}){said}; stopping"
                )
                self.stopping.set()
                return
            delay = min(self.backoff[0] * 2 ** max(0, w.quick_exits - 1), self.backoff[1])
            print(
                f"zsp: worker {w.index} (pid {proc.pid}) exited with status {status}{said}; "
                f"restarting it in {delay:g} s",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: it can drop a cancel on 3.11 (gh-86296)
                    await self.stopping.wait()
            self.restarts += 1

    async def _start(self, w: _Worker) -> asyncio.subprocess.Process:
        w.last_words = []
        w.started = time.monotonic()
        w.proc = proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_worker_env(),
        )
        for stream, out, ready in ((proc.stdout, sys.stdout, True), (proc.stderr, sys.stderr, False)):
            if stream is not None:  # always: PIPE above
                task = asyncio.create_task(self._pass_on(w, stream, out, ready=ready))
                self._readers.add(task)
                task.add_done_callback(self._readers.discard)
        return proc

    async def _pass_on(self, w: _Worker, stream: asyncio.StreamReader, out: object, *, ready: bool) -> None:
        """Pass a worker's output on (a line every worker prints alike, once), noting readiness."""
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip("\n")
            if ready and text.startswith(READY):
                w.ready, w.port = True, int(text[len(READY) :].split()[0])
                if all(x.ready for x in self.workers):
                    self._all_ready.set()
                continue
            if not ready:
                w.last_words = [*w.last_words[-4:], text]
            now = time.monotonic()
            if now - self._said.get(text, -60.0) < 60:
                continue  # the same warning from every worker: said once
            self._said[text] = now
            print(text, file=out, flush=True)  # type: ignore[call-overload]

    async def _stop_all(self) -> None:
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), self.stop_timeout)
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    print(f"zsp: worker pid {p.pid} did not stop in time; killing it", file=sys.stderr)
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            await asyncio.gather(*(p.wait() for p in procs))


async def watch_parent(parent: int, stop: Callable[[], None], interval: float = 1.0) -> None:
    """In a worker: ``stop()`` once the supervising parent is gone (this process re-parented)."""
    while os.getppid() == parent:
        await asyncio.sleep(interval)
    print("zsp: the supervising zsp serve is gone; this worker stops", file=sys.stderr, flush=True)
    stop()
