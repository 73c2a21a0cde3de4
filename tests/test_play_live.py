"""``zsp play`` on a session that is still going through the real bastion: found live from the store
(no flag), followed as it grows, drawn through the emulator, and closed with the verdict at its seal."""

from __future__ import annotations

import os
import time

import paramiko

from tests.bastion_env import Env
from tests.helpers import read_until
from tests.test_play_pty import Pty, check_nothing_to_answer, check_output, check_restored


def _wait(cond, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_live_bastion_session_is_followed_to_its_seal(env: Env) -> None:
    env.grant()
    client = paramiko.SSHClient()
    client.load_host_keys(str(env.known_hosts))
    client.connect("127.0.0.1", env.port, username="local", key_filename=str(env.keys["alice"]),
                   look_for_keys=False, allow_agent=False)
    pty = None
    try:
        chan = client.invoke_shell(term="xterm", width=80, height=24)
        buf = read_until(chan, b"", b"$")
        chan.send(b"echo live-marker-$((40+2)); printf '\\033]52;c;cm0gLXJmIC8=\\a\\033[6n'\r")
        buf = read_until(chan, buf, b"live-marker-42")
        s = _wait(lambda: env.svc.sessions() and env.svc.sessions()[-1])
        assert s.ended_at is None
        pty_env = dict(os.environ, ZSP_DATA=str(env.data.root), TERM="xterm")
        pty = Pty([s.id[-8:]], pty_env)
        pty.read_until(b"live-marker-42")  # once the bastion's next checkpoint signs it
        pty.read_until(b"LIVE")
        chan.send(b"echo second-$((6*7))\r")
        pty.read_until(b"second-42")
        chan.send(b"exit\r")
        chan.recv_exit_status()
        pty.read_until(b"VALID", timeout=30)
        pty.send(b"q")
        code = pty.finish()
        assert code == 0, pty.out[-500:]
        check_output(pty.out)
        check_restored(pty.out)
        check_nothing_to_answer(pty.out)
        assert pty.pending_input() == 0
    finally:
        client.close()
        if pty is not None:
            pty.close()
