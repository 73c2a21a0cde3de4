"""A local session's upstream leaves nothing open for after the event loop: ``LocalUpstream.close``
closes the command's pipes and asyncio transport itself, even when its bounded wait gave up (a
descendant that left the session still holds stdout). Left open, the transport's finaliser closed
them after the loop had, and a stopping bastion printed "Event loop is closed"."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from zsp_tui.bastion.upstream import LocalUpstream


def test_a_descendant_holding_the_pipes_leaves_no_transport_for_after_the_loop() -> None:
    # As root the local shell runs as an unprivileged account, which cannot write to pytest's
    # tmp_path (0700): the escaped job's pid goes to a directory it may write to.
    where = Path(tempfile.mkdtemp(prefix="zsp-escaped-"))
    where.chmod(0o777)
    pidfile = where / "escaped.pid"

    async def session() -> bytes:
        up = LocalUpstream()
        # An exec session (pipes, no PTY) whose background job leaves the session: the bastion's
        # stop signals the session, which it is no longer in, so it keeps stdout open.
        await up.start(f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & echo started", None, (80, 24), {})
        (_fd, read), *_ = up.readers()
        first = await read()
        await up.close()
        return first

    unraisable: list[sys.UnraisableHookArgs] = []
    hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        assert asyncio.run(session()) == b"started\n"
        gc.collect()  # the finaliser of anything left open runs now, the loop closed
    finally:
        sys.unraisablehook = hook
        deadline = time.monotonic() + 30
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        escaped = False
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            escaped = True
        shutil.rmtree(where, ignore_errors=True)
    assert escaped, "the escaped job never ran: nothing held the pipes"
    assert not unraisable, [f"{u.exc_value!r} in {u.object!r}" for u in unraisable]
