"""Adversarial: output that is cheap to print and costly to emulate must not stall the bastion.

The rules engine brings a session's screen up to date (terminal emulation) on the event loop
that relays every session. DECALN then ED 2 (``ESC # 8 ESC [ 2 J``) on a 1000x500 terminal
rebuilds a million cells per 7 bytes: one 64 KiB window of it was over a minute in which no
session of any user moved (found by the hostile-indexing test once the indexer was fixed). The
emulator's work is now bounded per session (``SCAN_BURST``, ``SCAN_RATE`` in the rules engine);
what is over it is skipped, and the recording says so (``rules.scan.skipped``).
"""

from __future__ import annotations

import threading
import time

import paramiko

from recorder import FrameKind
from replay import load
from tests.bastion_env import Env
from tests.helpers import read_until

# 12 s of DECALN then ED 2, as fast as the session takes it; no newline, so the rules engine keeps
# bringing the screen up to date at every tick while it waits for the Enter's echo.
FLOOD = (
    "python3 -c 'import os, time; end = time.time() + 12\n"
    "while time.time() < end: os.write(1, b\"\\033#8\\033[2J\" * 3000)'; echo FLOOD-$((6*7))\r"
)


def test_costly_output_in_one_session_does_not_stall_the_next_sessions(env: Env) -> None:
    """The event loop is every user's; alice's second login stands for anyone's session."""
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    done = threading.Event()
    try:
        chan = client.invoke_shell(term="xterm", width=1000, height=500)
        read_until(chan, b"", b"$ ")
        chan.send(FLOOD.encode())

        def drain() -> None:  # keep the flood flowing: a client that stops reading would pause it
            tail = b""
            while not chan.closed:
                data = chan.recv(1 << 16)
                if not data:
                    break
                tail = (tail + data)[-64:]
                if b"FLOOD-42" in tail:
                    done.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(3)  # the flood is under way, the engine's ticks feed it
        took = []
        for i in range(4):  # more sessions, while it lasts
            started = time.monotonic()
            p = env.ssh("alice", "local", f"echo other-{i}-$((6*7))")
            took.append(time.monotonic() - started)
            assert p.returncode == 0 and f"other-{i}-42" in p.stdout, p.stderr
        assert not done.is_set(), "the flood ended before the other sessions ran: nothing was tested"
        # Each is well under a second on an idle bastion; without the bound, over a minute.
        assert max(took) < 10, f"another session took {max(took):.1f} s during the flood"
        assert done.wait(120), "the flood session never finished"
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    flood = [s for s in env.svc.sessions() if s.command is None]  # the shell; the others ran a command
    assert len(flood) == 1 and flood[0].path
    frames, report = load(flood[0].path, env.data.trusted_keys())
    assert report.valid, report
    skipped = [f.data for f in frames if f.kind is FrameKind.EVENT and f.data.type == "rules.scan.skipped"]
    assert len(skipped) == 1 and skipped[0].fields["chars"] > 0
