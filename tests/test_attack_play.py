"""Adversarial review of `zsp play` under a real PTY: the reviewer's terminal is restored however
the player is stopped (signals beyond TERM/HUP/INT whose default action terminates)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.test_play_pty import _checks, _run, signer, write_hostile

__all__ = ["signer"]  # the fixture


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM])
def test_any_terminating_signal_restores_the_terminal(tmp_path: Path, key: SigningKey, signer: Path, sig: int) -> None:
    """``kill -QUIT`` (Ctrl-\\ is a key in raw mode, so only from outside), ``kill -USR1``, an
    alarm: each ended the player with the reviewer's terminal left in raw mode, on the alternate
    screen, cursor hidden."""
    rec = write_hostile(tmp_path / "h.zsprec", key, pause_s=30)
    pty = _run(tmp_path, signer, rec, "--idle-limit", "30")
    try:
        pty.read_until(b"waiting")
        pty.proc.send_signal(sig)
        code = pty.finish()
        _checks(pty, code, 128 + sig)
    finally:
        pty.close()
