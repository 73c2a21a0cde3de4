"""The bastion indexes sessions for search in a child process (zsp_tui.index_process), not in its
own interpreter: the child runs at a lower priority, and one that dies is replaced for the next
session, whose indexing goes on as before."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from tests.bastion_env import Env
from tests.test_search_bastion import poll
from zsp_tui.index_process import NICE


def _children(pid: int) -> list[int]:
    """The bastion's index children (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        if ppid == pid and b"zsp_tui.index_process" in cmdline:
            out.append(int(entry.name))
    return out


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[16])


def test_a_killed_index_process_is_replaced_and_sessions_stay_searchable(env: Env) -> None:
    assert env.proc is not None
    env.grant()
    p = env.ssh("alice", "local", "echo first-needle-$((6*7))")
    assert p.returncode == 0 and "first-needle-42" in p.stdout
    assert poll(env, "first-needle-42", timeout=15)
    children = _children(env.proc.pid)
    assert len(children) == 1, children
    assert _nice(children[0]) == _nice(env.proc.pid) + NICE
    os.kill(children[0], signal.SIGKILL)
    time.sleep(0.2)
    p = env.ssh("alice", "local", "echo second-needle-$((6*7))")
    assert p.returncode == 0 and "second-needle-42" in p.stdout
    assert poll(env, "second-needle-42", timeout=15)
    assert [c for c in _children(env.proc.pid) if c != children[0]]


_ORPHANING_PARENT = """
import os, subprocess, sys, time
from pathlib import Path
from zsp_tui.index_process import IndexProcess
child = IndexProcess(Path(sys.argv[1]))._start()
# Something else keeps the child's stdin open (as a long job would keep it busy): end of input
# never comes, so only the orphan check can end it once this parent is gone.
holder = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL, pass_fds=(child.stdin.fileno(),))
print(child.pid, holder.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"  # a zombie has exited


def test_an_index_child_whose_bastion_was_killed_exits(tmp_path: Path) -> None:
    """A bastion killed with -9 leaves no indexer behind working for nobody (it would index a large
    recording on for minutes, competing with the next bastion for the CPU)."""
    import subprocess
    import sys

    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING_PARENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )
    assert parent.stdout is not None
    child, holder = (int(x) for x in parent.stdout.readline().split())
    try:
        time.sleep(1.5)
        assert _alive(child)  # not ended by anything else: its input is still open
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30  # a liveness bound; the check runs every second
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        parent.stdout.close()
        for pid in (child, holder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
