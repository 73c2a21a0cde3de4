"""What keeps one user, or one address, from locking everyone else out of the bastion.

- :class:`FairExecutor`: a single worker thread (SQLite connections are not shared) that serves
  one FIFO queue per *lane* (a user, an address) in turn. Whatever one lane piles up, another
  lane's next job waits for at most one job of each other busy lane, not for the whole pile.
- :class:`ControlGate`: per-user admission of control commands (``ssh zsp@bastion ...``): a token
  bucket (rate and burst) and a cap on commands running at once. Refusals cost no database work.
- :class:`Pending`: not-yet-authenticated connections, per source address and in all. When the
  global cap is reached a newcomer displaces a pending connection of the address that holds the
  most (a random one among addresses holding equally many), one that has not yet asked to
  authenticate if there is any: a client is only ever displaced by an address holding at least as
  many pending connections as its own, and once past key exchange only when the flood's
  connections are past it too (random early drop, as sshd's MaxStartups).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from replay import MAX_COLS, MAX_ROWS

__all__ = ["ControlGate", "FairExecutor", "Pending", "window_size"]

T = TypeVar("T")
_Args = TypeVarTuple("_Args")


def window_size(cols: int, rows: int, default: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    """A client's window size made safe: SSH carries 32-bit numbers, a PTY takes 16 bits, and
    replay draws at most MAX_COLS x MAX_ROWS; so sizes are clamped to what replay shows (the PTY
    and the recording then agree), and 0 (unknown) becomes the default."""
    return (
        max(1, min(int(cols), MAX_COLS)) if cols > 0 else default[0],
        max(1, min(int(rows), MAX_ROWS)) if rows > 0 else default[1],
    )
K = TypeVar("K")


class FairExecutor:
    """One worker thread, one FIFO queue per lane, lanes served round-robin (one job per turn)."""

    def __init__(self, name: str) -> None:
        self._lanes: dict[str, deque[tuple[Callable[[], Any], Future[Any]]]] = {}
        self._turns: deque[str] = deque()
        """Lanes with queued work, in the order they are served."""
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, lane: str, fn: Callable[[], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the executor is shut down")
            queue = self._lanes.get(lane)
            if queue is None:
                queue = self._lanes[lane] = deque()
                self._turns.append(lane)
            queue.append((fn, fut))
            self._cv.notify()
        return fut

    async def run(self, lane: str, fn: Callable[[*_Args], T], *args: *_Args) -> T:
        """Run ``fn(*args)`` in the worker thread, in ``lane``'s turn."""
        return await asyncio.wrap_future(self.submit(lane, lambda: fn(*args)))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._turns and not self._closed:
                    self._cv.wait()
                if not self._turns:
                    return  # shut down and drained
                lane = self._turns.popleft()
                queue = self._lanes[lane]
                fn, fut = queue.popleft()
                if queue:
                    self._turns.append(lane)  # back of the line: every other lane goes first
                else:
                    del self._lanes[lane]
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, as concurrent.futures does
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def shutdown(self, wait: bool = True) -> None:
        """Finish what is queued, then stop."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if wait:
            self._thread.join()


class ControlGate:
    """Per-user rate (token bucket) and concurrency cap for control commands."""

    def __init__(self, rate: float, burst: int, concurrent: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.concurrent = concurrent
        self._clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}
        """user -> (tokens, when counted)"""
        self.running: dict[str, int] = defaultdict(int)

    def enter(self, user: str) -> str | None:
        """Admit one command (the caller then calls :meth:`leave`), or say why not."""
        if self.running[user] >= self.concurrent:
            return f"{user} already has {self.running[user]} control commands running (limit); try again shortly"
        now = self._clock()
        tokens, then = self._tokens.get(user, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._tokens[user] = (tokens, now)
            return (
                f"too many control commands from {user} (limit {self.rate:g} a second, bursts of {self.burst}); "
                "try again shortly"
            )
        self._tokens[user] = (tokens - 1.0, now)
        self.running[user] += 1
        return None

    def leave(self, user: str) -> None:
        self.running[user] -= 1
        if self.running[user] <= 0:
            del self.running[user]


@dataclass(slots=True)
class _Entry(Generic[K]):
    key: K
    ip: str
    since: float
    authenticating: bool = False
    """The client has got as far as asking to authenticate (key exchange done)."""


class Pending(Generic[K]):
    """Not-yet-authenticated connections, keyed by the caller's connection object."""

    def __init__(self, per_source: int, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_source = per_source
        self.total = total
        self._clock = clock
        self._by_ip: dict[str, deque[_Entry[K]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def on(self, ip: str) -> int:
        return len(self._by_ip.get(ip, ()))

    def admit(self, ip: str, key: K) -> tuple[bool, K | None]:
        """Count a new connection from ``ip``: ``(False, None)`` when its address is at its cap;
        otherwise ``(True, displaced)``, where ``displaced`` (or None) is a pending connection the
        caller must now close to make room."""
        mine = self._by_ip.get(ip)
        if mine is not None and len(mine) >= self.per_source:
            return False, None
        displaced: K | None = None
        if self._count >= self.total:
            # The address holding the most pending connections gives one up (the newcomer's own
            # address counts itself): its oldest that has not got as far as authenticating. Among
            # addresses holding equally many, a random one: a flood from many addresses that
            # reconnects as fast as it is displaced must not always hit the oldest connection,
            # which is a real user's login in progress (random early drop, as sshd's MaxStartups).
            top = max(len(q) + (addr == ip) for addr, q in self._by_ip.items())
            tied = [q for addr, q in self._by_ip.items() if len(q) + (addr == ip) == top]
            oldest_idle = [next((e for e in q if not e.authenticating), q[0]) for q in tied]
            idle = [e for e in oldest_idle if not e.authenticating] or oldest_idle
            victim = idle[secrets.randbelow(len(idle))]
            displaced = victim.key
            self.remove(displaced, victim.ip)
        self._by_ip.setdefault(ip, deque()).append(_Entry(key, ip, self._clock()))
        self._count += 1
        return True, displaced

    def authenticating(self, key: K, ip: str) -> None:
        """``key`` has asked to authenticate: displaced after connections that have not."""
        for e in self._by_ip.get(ip, ()):
            if e.key is key:
                e.authenticating = True

    def remove(self, key: K, ip: str) -> bool:
        """Stop counting ``key`` (authenticated, closed or displaced); False if it was not counted."""
        q = self._by_ip.get(ip)
        if not q:
            return False
        for e in q:
            if e.key is key:
                q.remove(e)
                self._count -= 1
                if not q:
                    del self._by_ip[ip]
                return True
        return False
