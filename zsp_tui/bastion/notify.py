"""Grant changes from every bastion, at once: ``LISTEN zsp_grants`` on a PostgreSQL store.

The PostgreSQL store sends ``NOTIFY zsp_grants`` after a write that changes a request's state
(approve, revoke, end). A bastion listening wakes its grant watcher at once instead of at its
next tick, so a revoke made on one bastion ends a session on another in milliseconds. A
notification is a hint, never the bound: one lost (a dropped connection, a listener
reconnecting) only means the watcher's polling, every ``watch_interval``, finds the change.

The listener runs in a thread of its own with its own connection (autocommit, as LISTEN wants),
reconnecting with backoff; it never touches the store's pool.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from replay import printable

from ..config import redact_url, scrub_secrets

__all__ = ["CHANNEL", "GrantNotices"]

CHANNEL = "zsp_grants"
_POLL = 0.5
"""How often the listening thread looks up from waiting to see whether it must stop."""


class GrantNotices:
    """Calls ``wake()`` (from its own thread) whenever ``zsp_grants`` is notified on ``url``."""

    def __init__(self, url: str, wake: Callable[[], object], *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._wake = wake
        self._timeout = connect_timeout
        self._stop = threading.Event()
        self.listening = threading.Event()
        """Set while the LISTEN is in place (tests wait for it)."""
        self.received = 0
        self._thread = threading.Thread(target=self._run, name="zsp-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            import psycopg
        except ImportError as exc:  # the store itself needs psycopg: this is only a hint source
            print(f"zsp: warning: cannot LISTEN for grant changes ({exc}); polling only", file=sys.stderr)
            return
        delay = 0.5
        warned = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=int(self._timeout)) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if warned:
                        print(f"zsp: listening for grant changes on {redact_url(self.url)} again", file=sys.stderr)
                    delay, warned = 0.5, False
                    self._wake()  # changes missed while not listening: check now
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=_POLL):
                            self.received += 1
                            self._wake()
            except psycopg.Error as exc:
                self.listening.clear()
                if not warned:
                    warned = True
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    why = printable(scrub_secrets(first, self.url))
                    print(
                        f"zsp: warning: not listening for grant changes on {redact_url(self.url)} ({why}); "
                        "polling only until it is back",
                        file=sys.stderr,
                    )
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.listening.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * _POLL + self._timeout)
