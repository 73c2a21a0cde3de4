"""``zsp play`` under a real PTY, on recordings full of hostile output.

Every byte the player writes to the terminal is checked with a strict allow-list tokenizer: only
what the renderer emits (CUP, SGR, EL, ED, ?1049h/l, ?25h/l) and printable text. No OSC, DCS,
device query or mode change of the recording may reach the reviewer's terminal, and the terminal
must be left as it was found (termios attributes, main screen, cursor shown, attributes reset)
after q, Ctrl-C, the end of the recording, SIGTERM and SIGHUP. The captured output is also fed to
pyte (a terminal emulator that answers queries): it must have nothing to answer.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from tests.helpers import FakeClock, fixed_session_id

HOSTILE = [
    b"\x1b]52;c;cm0gLXJmIH4K\x07",  # OSC 52: write the reviewer's clipboard
    b"\x1b]52;c;cm0gLXJmIH4K\x1b\\",
    b"\x1b]0;pwned title\x07\x1b]2;other title\x1b\\",  # titles
    b"\x1b[6n",  # DSR: cursor position report (the stray "1R" at the reviewer's prompt)
    b"\x1b[5n",
    b"\x1b[c\x1b[>c\x1b[=c",  # DA1, DA2, DA3
    b"\x1bP$qm\x1b\\\x1bP$q\"p\x1b\\",  # DECRQSS
    b"\x1bP+q544e\x1b\\",  # XTGETTCAP
    b"\x1b]8;;https://evil.example/\x07click me\x1b]8;;\x07",  # OSC 8 hyperlink
    b"\x1b[?1000h\x1b[?2004h\x1b[?1h\x1b=",  # mouse, bracketed paste, application keys
    b"\x1b[999999999999;99999999999999H\x1b[38;2;300;-1;5m\x1b[;;;;;;;;;;;;;;;;;;;;;;;m",  # malformed CSI
    b"\x1b[1;2;3;4;5;6;7;8;9;10;11;12;13;14;15;16;17;18;19;20;21;22;23;24;25;26;27;28;29;30;31;32;33q",
    b"\x1b[?1049h",  # alternate screen, never left
    b"\x9b6n\x9d0;c1 title\x07\xc2\x9b6n",  # C1 controls, raw and UTF-8 encoded
    b"\x1b[21t\x1b[14t\x1b[18t",  # window reports
    b"\x1b[2J\x1b[3J\x1bc",  # clears and RIS
    b"visible text \xe4\xb8\xad\xe6\x96\x87 \xff\xfe done",
]

_ALLOWED_ESC = re.compile(
    rb"\x1b\[(?:\d+;\d+H|[\d;]*m|K|2J|\?1049[hl]|\?25[hl]|\?7[hl])"
)
RESTORE = b"\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l"


def check_output(out: bytes) -> None:
    """Every byte is part of an allowed sequence or printable text (CR/LF: the verdict on stderr)."""
    try:
        text = out.decode("utf-8")  # strict: a stray C1 byte or broken UTF-8 fails here
    except UnicodeDecodeError as exc:
        raise AssertionError(f"not UTF-8 text: {out[exc.start - 10 : exc.end + 10]!r}") from None
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "\x1b":
            m = _ALLOWED_ESC.match(out, len(text[:pos].encode()))
            assert m is not None, f"forbidden sequence at {pos}: {text[pos:pos + 20]!r}"
            pos += len(m.group().decode())
            continue
        code = ord(ch)
        assert ch in "\r\n" or not (code < 0x20 or 0x7F <= code < 0xA0), f"control {ch!r} at {pos}"
        pos += 1


def check_restored(out: bytes) -> None:
    """The last sequences put the terminal back: attributes reset, cursor shown, main screen."""
    last = out.rfind(RESTORE)
    assert last >= 0, "the terminal was never restored"
    assert b"\x1b" not in out[last + len(RESTORE):], "something was drawn after the restore"


def check_nothing_to_answer(out: bytes) -> None:
    """A real emulator fed the output has no query to answer."""
    answers: list[str] = []
    screen = pyte.Screen(100, 30)
    screen.write_process_input = answers.append  # type: ignore[method-assign]
    stream = pyte.ByteStream(screen)
    stream.feed(out)
    assert answers == []
    assert "pwned" not in "".join(screen.display)


def write_hostile(path: Path, key: SigningKey, *, big: int = 0, pause_s: float = 0.0, seal: bool = True) -> Path:
    clock = FakeClock(step_ns=2_000_000)
    w = RecordingWriter(
        FileSink(path, sync_dir=False),
        key,
        SessionMeta(user="mallory", target="db1", login="root", term="xterm", cols=80, rows=24),
        session_id=fixed_session_id(11),
        checkpoint_frames=16,
        coalesce_ms=0,
        clock=clock.mono,
        wall_clock=clock.wall,
    )
    w.output(b"$ ")
    w.input(b"cat evil\r")
    for chunk in HOSTILE:
        w.output(chunk)
    if big:
        w.output(b"A" * big)  # no newline at all
    if pause_s:
        w.output(b"\r\nwaiting")
        now = clock.mono()
        w.output(b" ... still here", at_ns=now + int(pause_s * 1e9))
    w.output(b"\r\nthe end $ ")
    if seal:
        w.close(0, "exit")
    else:
        w.flush()
        w.abandon()
    return path


class Pty:
    """``zsp play`` on the slave side of a PTY; the test is the terminal on the master side."""

    def __init__(self, args: list[str], env: dict[str, str], cols: int = 100, rows: int = 30) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.out = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zsp_tui", "play", *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=env,
            start_new_session=True,
        )

    def read_until(self, needle: bytes, timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; got {self.out[-400:]!r}")
            self._pump(min(left, 0.2))
        return self.out

    def _pump(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.out += data
        return bool(data)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._pump(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"zsp play did not exit; output tail {self.out[-400:]!r}")
        while self._pump(0.2):
            pass
        return self.proc.returncode

    def pending_input(self) -> int:
        """Bytes waiting to be read on the slave side (what the terminal 'typed')."""
        return struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def signer(tmp_path: Path, key: SigningKey) -> Path:
    p = tmp_path / "signer.pub"
    p.write_text(key.public.openssh + "\n")
    return p


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, ZSP_DATA=str(tmp_path / "no-data-dir"), TERM="xterm")


def _run(tmp_path: Path, signer: Path, rec: Path, *extra: str) -> Pty:
    return Pty(["--signer", str(signer), *extra, str(rec)], _env(tmp_path))


def _checks(pty: Pty, code: int, expect: int) -> None:
    assert code == expect, pty.out[-600:]
    check_output(pty.out)
    check_restored(pty.out)
    check_nothing_to_answer(pty.out)
    assert termios.tcgetattr(pty.slave) == pty.before
    assert pty.pending_input() == 0


def test_quit_with_q_after_hostile_output(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key)
    pty = _run(tmp_path, signer, rec)
    try:
        pty.read_until(b"the end $")
        pty.read_until(b"end: q quit")
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
        assert b"visible text" in pty.out and b"VALID" in pty.out
        assert b"pwned" not in pty.out and b"evil.example" not in pty.out
        assert b"typed: cat evil\\r" in pty.out
    finally:
        pty.close()


def test_ctrl_c_in_the_alternate_screen_restores_everything(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    """Ctrl-C while the recording is on its alternate screen and paused in the middle."""
    rec = write_hostile(tmp_path / "h.zsprec", key, pause_s=30)
    pty = _run(tmp_path, signer, rec, "--idle-limit", "30")
    try:
        pty.read_until(b"waiting")
        pty.send(b"\x03")
        code = pty.finish()
        _checks(pty, code, 0)
        assert b"still here" not in pty.out  # quit before the end
    finally:
        pty.close()


def test_end_of_recording_then_enter(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key, big=10 * 1024 * 1024)
    pty = _run(tmp_path, signer, rec, "--speed", "16")
    try:
        pty.read_until(b"end: q quit", timeout=240)
        pty.send(b"\r")
        code = pty.finish()
        _checks(pty, code, 0)
        assert b"AAAAAAAAAA" in pty.out
    finally:
        pty.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_restores_the_terminal(tmp_path: Path, key: SigningKey, signer: Path, sig: int) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key, pause_s=30)
    pty = _run(tmp_path, signer, rec, "--idle-limit", "30")
    try:
        pty.read_until(b"waiting")
        pty.proc.send_signal(sig)
        code = pty.finish()
        _checks(pty, code, 128 + sig)
    finally:
        pty.close()


def test_keys_pause_seek_step_and_speed(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key, pause_s=30)
    pty = _run(tmp_path, signer, rec, "--idle-limit", "30")
    try:
        pty.read_until(b"waiting")
        pty.send(b" ")
        pty.read_until(b"paused")
        pty.send(b"++")
        pty.read_until(b" 4x ")
        pty.send(b"\x1b[C" * 7)  # 35 s forward: past the 30 s pause
        pty.read_until(b"still here")
        mark = len(pty.out)
        pty.send(b"\x1b[A")  # 60 s back: the start
        start = re.compile(rb"paused 00:00/\S+ \S+ frame (\d+)/")
        deadline = time.monotonic() + 60
        while (m := start.search(pty.out, mark)) is None:
            assert time.monotonic() < deadline, pty.out[-400:]
            pty._pump(0.2)
        mark = len(pty.out)
        pty.send(b".")  # one frame on from wherever the start is (the frames at 0 s, as indexed so far)
        step = b"frame %d/" % (int(m.group(1)) + 1)
        while step not in pty.out[mark:]:
            assert time.monotonic() < deadline, pty.out[-400:]
            pty._pump(0.2)
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
    finally:
        pty.close()


def test_small_terminal_crops_and_says_so(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key)
    pty = Pty(["--signer", str(signer), str(rec)], _env(tmp_path), cols=60, rows=12)
    try:
        pty.read_until(b"CROPPED 80x24")
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
    finally:
        pty.close()


def test_live_recording_is_followed_until_its_seal(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    """A recording still being written: its frames appear once signed, hostile ones drawn safely,
    and the status line turns from LIVE to the verdict at the seal."""
    import threading

    path = tmp_path / "live.zsprec"
    go = threading.Event()
    release = threading.Event()

    def writer() -> None:
        w = RecordingWriter(
            FileSink(path, sync_dir=False),
            key,
            SessionMeta(user="alice", target="db1", login="root", cols=80, rows=24),
            checkpoint_ms=100,
            coalesce_ms=0,
        )
        w.output(b"first part\r\n")
        time.sleep(0.15)
        w.tick()  # the checkpoint signing it (the bastion ticks on a timer)
        go.set()
        release.wait(60)
        for chunk in HOSTILE:
            w.output(chunk)
        w.output(b"\r\nsecond part\r\n")
        time.sleep(0.15)
        w.tick()
        time.sleep(0.5)
        w.close(0, "exit")

    t = threading.Thread(target=writer)
    t.start()
    try:
        go.wait(10)
        pty = _run(tmp_path, signer, path, "--follow")
        try:
            pty.read_until(b"first part")
            pty.read_until(b"LIVE")
            assert b"second part" not in pty.out
            release.set()
            pty.read_until(b"second part")
            pty.read_until(b"VALID")
            pty.send(b"q")
            code = pty.finish()
            _checks(pty, code, 0)
        finally:
            pty.close()
    finally:
        release.set()
        t.join(10)


def test_window_resize_redraws_at_the_new_size(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    rec = write_hostile(tmp_path / "h.zsprec", key)
    pty = _run(tmp_path, signer, rec)
    try:
        pty.read_until(b"end: q quit")
        assert b"CROPPED" not in pty.out
        fcntl.ioctl(pty.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 10, 50, 0, 0))
        pty.proc.send_signal(signal.SIGWINCH)
        pty.read_until(b"CROPPED 80x24")
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
    finally:
        pty.close()


def test_first_play_builds_and_caches_the_seek_index(tmp_path: Path) -> None:
    """Named by id in a data dir: played while its index is built, which is then cached; the second
    play uses the cache and draws the same."""
    from replay import load_index, verify
    from zsp_tui.datadir import DataDir

    env = dict(os.environ, ZSP_DATA=str(tmp_path / "data"), TERM="xterm")
    subprocess.run([sys.executable, "-m", "zsp_tui", "init"], env=env, check=True, capture_output=True)
    d = DataDir(tmp_path / "data")
    key = d.signing_key()
    sid = fixed_session_id(11)
    rec = write_hostile(d.recordings / f"{sid}.zsprec", key)
    cache = tmp_path / "data" / "cache" / "seek" / f"{sid}.seek"
    outs = []
    for _ in range(2):
        pty = Pty([str(sid)[-8:]], env)
        try:
            pty.read_until(b"end: q quit")
            pty.send(b"q")
            code = pty.finish()
            _checks(pty, code, 0)
            outs.append(pty.out)
        finally:
            pty.close()
        index = load_index(cache)
        assert index is not None and index.matches(verify(rec, [key.public]), rec.stat().st_size)
    assert b"the end $" in outs[0] and b"the end $" in outs[1]


def test_from_starts_at_that_moment_while_the_index_is_built(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    clock = FakeClock(step_ns=1_000_000)
    rec = tmp_path / "t.zsprec"
    w = RecordingWriter(
        FileSink(rec, sync_dir=False), key, SessionMeta(user="a", target="t", login="root", cols=80, rows=24),
        session_id=fixed_session_id(12), checkpoint_frames=4, coalesce_ms=0, clock=clock.mono, wall_clock=clock.wall,
    )
    t0 = clock.mono()
    w.output(b"alpha\r\n", at_ns=t0)
    w.output(b"\x1b[H\x1b[2Jbravo\r\n", at_ns=t0 + 30 * 10**9)
    w.output(b"\x1b[H\x1b[2Jcharlie\r\n", at_ns=t0 + 90 * 10**9)
    w.close(0, "exit", at_ns=t0 + 91 * 10**9)
    pty = _run(tmp_path, signer, rec, "--from", "0:31", "--idle-limit", "100")
    try:
        pty.read_until(b"bravo")
        pty.read_until(b"00:31/01:31")
        pty.send(b"q")
        _checks(pty, pty.finish(), 0)
        assert b"alpha" not in pty.out and b"charlie" not in pty.out
    finally:
        pty.close()
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "play", "--signer", str(signer), "--from", "1:31:00",
                        str(rec)], stdin=subprocess.DEVNULL, capture_output=True, env=_env(tmp_path), timeout=60)
    assert p.returncode == 2 and b"past the end" in p.stderr


def test_the_end_keys_show_on_a_narrow_terminal(tmp_path: Path, key: SigningKey, signer: Path) -> None:
    """The status line is cut at the terminal's width: the keys come before the long parts
    (the crop, the verdict, what was typed). A first-time reviewer saw `end: q quit, ar`."""
    rec = write_hostile(tmp_path / "h.zsprec", key)
    pty = Pty(["--signer", str(signer), str(rec), "--speed", "16"], _env(tmp_path), cols=80, rows=30)
    try:
        pty.read_until(b"end: q quit, arrows seek")
        pty.send(b"q")
        code = pty.finish()
        _checks(pty, code, 0)
    finally:
        pty.close()
