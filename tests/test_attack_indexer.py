"""Adversarial review of the bastion's background indexer: one operator's hostile output must not
hold back the indexing (searchability) of everyone else's sessions, nor slow their sessions."""

from __future__ import annotations

import time

import paramiko

from tests.bastion_env import Env
from tests.helpers import read_until
from tests.test_search_bastion import poll

FLOOD = "python3 -c 'import os; [os.write(1, b\"\\033#8\\033[2J\" * 3000) for _ in range(100)]'; echo FLOOD-$((6*7))\r"
"""2.1 MB of DECALN then ED 2 (``ESC # 8 ESC [ 2 J``) on a 1000x500 screen: every cell changed
twice per 7 bytes, about 8 ms of emulator time; indexing this one recording takes over half an
hour of CPU. (DECALN alone was the flood before repeated ones were made cheap.)"""


def test_a_hostile_session_does_not_hold_back_the_next_sessions_index(env: Env) -> None:
    env.follow()
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    try:
        chan = client.invoke_shell(term="xterm", width=1000, height=500)
        buf = read_until(chan, b"", b"$ ")
        chan.send(FLOOD.encode())
        read_until(chan, buf, b"FLOOD-42", timeout=60)
        chan.send(b"exit\r")
        chan.recv_exit_status()
    finally:
        client.close()
    started = time.monotonic()
    p = env.ssh("alice", "local", "echo innocent-needle-$((6*7))")
    assert p.returncode == 0 and "innocent-needle-42" in p.stdout
    assert time.monotonic() - started < 10, "the other session itself was slow"
    # The flood holds the first lane for SLOW_AFTER (10 s) at most, then goes to the slow lane.
    hits = poll(env, "innocent-needle-42", timeout=30)
    assert hits, "the next session was not searchable 30 s after its end: " + "".join(env.output[-10:])
    assert env.wait_output("goes on in the slow lane"), "".join(env.output[-20:])
