"""Adversarial review of `zsp play` under a real PTY: the reviewer's terminal is restored however
the player is stopped (signals beyond TERM/HUP/INT whose default action terminates)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.test_play_pty import Pty, _checks, _env, _run, signer, write_hostile

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


def test_q_quits_promptly_while_a_costly_frame_plays(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    """One output frame of 800 x (DECALN, ED 2) at 1000x500: every cell changed twice per 7 bytes,
    about 6 s of emulator time. The player fed a whole output frame before it read keys, so ``q``
    waited for the frame (23 s per frame of DECALN alone before those were made cheap). It now
    feeds output in slices of about 20 ms of emulator time and reads keys between them.

    The seek index is cached first, as a second look at a recording finds it: otherwise the
    player waits for the indexing thread (which emulates every frame first) and reads keys
    meanwhile, which is not what is tested here."""
    import time

    from replay import build_index, save_index, verify
    from tests.search_helpers import Script

    rec = tmp_path / "costly.zsprec"
    s = Script(rec, key, cols=1000, rows=500)
    s.at(0).out(b"hello\r\n")
    s.at(0.5).out(b"\x1b#8\x1b[2J" * 800)
    s.at(60).out(b"the end\r\n")
    s.close()
    report = verify(rec, [key.public])
    data = tmp_path / "data"
    assert report.header is not None
    assert save_index(build_index(rec, [key.public], report), data / "cache" / "seek" / f"{report.header.session_id}.seek")
    pty = Pty(["--signer", str(signer), str(rec)], dict(_env(tmp_path), ZSP_DATA=str(data)))
    try:
        pty.read_until(b"hello")
        time.sleep(1.5)  # into the costly frame
        sent = time.monotonic()
        pty.send(b"q")
        code = pty.finish(timeout=120)
        took = time.monotonic() - sent
        _checks(pty, code, 0)
        # Generous for a loaded machine; the frame's remaining 5 s when fed whole.
        assert took < 3, f"q took {took:.1f} s"
    finally:
        pty.close()


def test_autowrap_is_off_while_drawing_and_back_on_after(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    """Whatever the reviewer's terminal thinks a character's width is (ambiguous-width set to wide,
    emoji sequences, another Unicode version), a row it measures wider than the emulator did must
    not wrap over the rows below and the status line: the player draws with autowrap off."""
    rec = write_hostile(tmp_path / "h.zsprec", key)
    pty = _run(tmp_path, signer, rec)
    try:
        pty.read_until(b"the end")
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
        off = pty.out.find(b"\x1b[?7l")
        first_row = pty.out.find(b"\x1b[1;1H")
        assert 0 <= off < first_row, "autowrap not turned off before the first row is drawn"
        assert pty.out.rfind(b"\x1b[?7h") > pty.out.rfind(b"\x1b[?7l"), "autowrap not turned back on"
    finally:
        pty.close()


def test_a_suspend_from_outside_gives_the_terminal_back_and_resumes(
    tmp_path: Path, key: SigningKey, signer: Path
) -> None:
    """`kill -TSTP` (Ctrl-Z is a key in raw mode) stopped the player with the reviewer's terminal
    raw and on the alternate screen. Now: restored while stopped, taken again and redrawn on CONT."""
    import termios
    import time

    from tests.test_play_pty import check_restored

    rec = write_hostile(tmp_path / "h.zsprec", key, pause_s=30)
    pty = _run(tmp_path, signer, rec, "--idle-limit", "30")
    try:
        pty.read_until(b"waiting")
        pty.proc.send_signal(signal.SIGTSTP)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pty.proc.pid}/stat").read_text().split(") ")[1][0] != "T":
            assert time.monotonic() < deadline, "not stopped"
            time.sleep(0.05)
        pty._pump(0.5)
        check_restored(pty.out)  # as it stops: main screen, cursor shown, attributes reset
        assert termios.tcgetattr(pty.slave) == pty.before
        mark = len(pty.out)
        pty.proc.send_signal(signal.SIGCONT)
        while b"waiting" not in pty.out[mark:]:  # drawn again, whole
            assert time.monotonic() < deadline + 20, pty.out[-300:]
            pty._pump(0.2)
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
    finally:
        pty.close()
