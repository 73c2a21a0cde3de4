"""A local session's upstream leaves nothing open for after the event loop: ``LocalUpstream.close``
closes the command's pipes and asyncio transport itself, even when its bounded wait gave up (a
descendant that left the session still holds stdout). Left open, the transport's finaliser closed
them after the loop had, and a stopping bastion printed "Event loop is closed"."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from pathlib import Path

from zsp_tui.bastion.upstream import LocalUpstream


def test_a_descendant_holding_the_pipes_leaves_no_transport_for_after_the_loop(tmp_path: Path) -> None:
    pidfile = tmp_path / "escaped.pid"

    async def session() -> bytes:
        up = LocalUpstream()
        # An exec session (pipes, no PTY) whose background job leaves the session: the bastion's
        # stop signals the session, which it is no longer in, so it keeps stdout open.
        # "started" comes once the job has left the session (its pid written after setsid): closed
        # sooner, under load, the job was stopped with the session and nothing held the pipes.
        command = (
            f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 60' & i=0; "
            f"until [ -s {pidfile} ] || [ $i -ge 3000 ]; do sleep 0.01; i=$((i+1)); done"  # 30 s at most
        )
        await up.start(f"{command}; echo started", None, (80, 24), {})
        (_fd, read), *_ = up.readers()
        first = await read()
        await up.close()
        return first

    unraisable: list[sys.UnraisableHookArgs] = []
    hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        assert asyncio.run(session()) == b"started\n"
        assert pidfile.read_text().strip().isdigit()  # the job left the session: it holds the pipes
        gc.collect()  # the finaliser of anything left open runs now, the loop closed
    finally:
        sys.unraisablehook = hook
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert not unraisable, [f"{u.exc_value!r} in {u.object!r}" for u in unraisable]
