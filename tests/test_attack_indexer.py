"""Adversarial review of the bastion's background indexer: one operator's hostile output must not
hold back the indexing (searchability) of everyone else's sessions, nor slow their sessions."""

from __future__ import annotations

import os
import time

import paramiko
import pytest

from tests.bastion_env import Env
from tests.helpers import read_until
from tests.test_search_bastion import poll

FLOOD = "python3 -c 'import os; [os.write(1, b\"\\033#8\" * 3000) for _ in range(100)]'; echo FLOOD-$((6*7))\r"
"""300 KB of DECALN (ESC # 8) on a 1000x500 screen: each fills 500,000 cells, about 1 ms of
emulator time per 3 bytes; indexing this one recording takes minutes of CPU."""


@pytest.mark.skipif(not os.environ.get("ZSP_LONG"), reason="a known failure that costs minutes: ZSP_LONG=1")
@pytest.mark.xfail(strict=True, reason="the indexer has no per-recording CPU bound: a hostile sealed "
                   "session holds the single indexing thread for minutes (see the attack report)")
def test_a_hostile_session_does_not_hold_back_the_next_sessions_index(env: Env) -> None:
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
    hits = poll(env, "innocent-needle-42", timeout=15)
    assert hits, "the next session was not searchable 15 s after its end: the indexer is stuck on the flood"
