"""Stopping an in-process bastion ends its grant watcher even when the watcher's wake-up races
the stop. On Python 3.11, ``asyncio.wait_for`` returns the inner result and drops a cancel that
arrives in the same loop step as the inner completes (CPython gh-86296); the watcher then looped
on and ``Bastion.stop()`` waited for it forever (seen as a rare hang of
tests/test_storage_faults.py::test_slow_storage_slows_the_session_and_drops_nothing, where a
watcher database call finished just as the bastion stopped)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.bastion_env import make_env
from zsp_tui.bastion import Bastion


async def test_stop_ends_the_watcher_when_a_grant_change_arrives_as_it_stops(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    bastion = Bastion(env.data)
    await bastion.start("127.0.0.1", 0)
    await asyncio.sleep(0.2)  # the watcher waits for its next tick (or a grant change)
    stop_exports = bastion.exports.stop

    async def exports_stopped_then_notified() -> None:
        # A grant change (LISTEN zsp_grants, from another bastion) lands in the very step the
        # watcher is cancelled: what wakes the watcher completes as the cancel arrives.
        await stop_exports()
        bastion._poke.set()

    bastion.exports.stop = exports_stopped_then_notified  # type: ignore[method-assign]
    stopping = asyncio.create_task(bastion.stop())
    await asyncio.wait({stopping}, timeout=30)  # not wait_for: its cancel would land in stop() too
    assert stopping.done(), "Bastion.stop() still waits for the grant watcher"
    stopping.result()
