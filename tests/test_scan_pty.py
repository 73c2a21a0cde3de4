"""Commands as the screen showed them, from real bash/readline sessions recorded by `zsp record`
under a real PTY: tab completion, line editing, history recall, blind and masked input. The
recordings are then searchable without `zsp index` (zsp record indexes after sealing)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recorder import load_trusted_keys
from replay import Command, load, scan
from tests.test_record_pty import Terminal

WRAPPER = (
    "import os, sys; fd = os.open(os.ttyname(0), os.O_RDWR);"  # acquire the ctty
    "os.execvp(sys.executable, [sys.executable, '-m', 'zsp_tui'] + sys.argv[1:])"
)


def _bash(data_dir: Path, tmp_path: Path, out: Path) -> Terminal:
    env = dict(os.environ, TERM="xterm", PS1=PROMPT.decode(), HISTFILE="/dev/null", INPUTRC="/dev/null", ZSP_DATA=str(data_dir))
    env.pop("PROMPT_COMMAND", None)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "hello-file.txt").write_text("HELLO-CONTENT\n")
    term = Terminal([sys.executable, "-c", WRAPPER, "record", "-o", str(out), "--", "bash", "--norc", "--noprofile", "-i"],
                    dict(env, PWD=str(work)), cols=80, rows=24)
    return term


PROMPT = b"PROMPT> "


def _step(term: Terminal, keys: bytes, expect: bytes, *, prompt: bool = True) -> None:
    """Type ``keys`` (each chunk once the previous echo is back, as a person does) and wait for
    ``expect``; after an Enter, for the next prompt too."""
    prompts = term.seen.count(PROMPT)
    term.send(keys)
    term.expect(expect)
    if prompt and keys.endswith(b"\r"):
        end = time.monotonic() + 15
        while term.seen.count(PROMPT) <= prompts:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no prompt after {keys!r}: {term.seen[-300:]!r}")
            r, _, _ = select.select([term.master], [], [], left)
            if r:
                term.seen += os.read(term.master, 65536)


def _commands(data_dir: Path, path: Path) -> list[Command]:
    frames, report = load(path, load_trusted_keys(data_dir / "allowed_signers"))
    assert report.valid, report
    return [c for c in scan(frames) if isinstance(c, Command)]


@pytest.fixture
def initialised(data_dir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "zsp_tui", "init"], env=dict(os.environ, ZSP_DATA=str(data_dir)),
                   check=True, capture_output=True)
    return data_dir


def test_commands_are_what_readline_showed(initialised: Path, tmp_path: Path) -> None:
    data_dir = initialised
    out = tmp_path / "bash.zsprec"
    term = _bash(data_dir, tmp_path, out)
    term.expect(PROMPT)
    _step(term, b"cd " + str(tmp_path / "work").encode() + b"\r", b"work")
    _step(term, b"cat hel", b"cat hel")
    _step(term, b"\t", b"hello-file.txt")  # completed by readline
    _step(term, b"\r", b"HELLO-CONTENT")
    _step(term, b"ho fixed", b"ho fixed")
    _step(term, b"\x01", b"\x08")  # Ctrl-A: the cursor goes back
    _step(term, b"ec", b"@ec")  # inserted (ICH) before "ho fixed"
    _step(term, b"\x05 end\r", b"fixed end")  # Ctrl-E, more text
    _step(term, b"echo typoo", b"typoo")
    _step(term, b"\x7f\x7fo", b"\x08")
    _step(term, b"\r", b"typo")
    _step(term, b"\x1b[A", b"echo typo")  # Up: history recall
    _step(term, b"\r", b"typo")
    _step(term, b"read -s -p 'Password: ' pw; echo \"got ${#pw}\"\r", b"Password: ", prompt=False)
    time.sleep(0.3)  # bash turns echo off after printing the prompt (and flushes typeahead)
    _step(term, b"hunter2\r", b"got 7")
    term.send(b"exit\r")
    assert term.wait() == 0

    cmds = _commands(data_dir, out)
    texts = [c.text for c in cmds]
    assert "cat hello-file.txt" in texts
    assert "echo fixed end" in texts
    assert texts.count("echo typo") == 2  # typed with backspaces, then recalled with Up
    recalled = [c for c in cmds if c.text == "echo typo"][1]
    assert recalled.keys == b"\x1b[A" and not recalled.blind
    completed = next(c for c in cmds if c.text == "cat hello-file.txt")
    assert completed.keys == b"cat hel\t"
    # the password line: masked by zsp (echo off at a canonical prompt), its bytes counted, never shown
    masked = [c for c in cmds if c.masked_bytes]
    assert masked and sum(c.masked_bytes for c in masked) == len(b"hunter2\r")
    assert all(b"hunter2" not in c.keys and "hunter2" not in c.text for c in cmds)

    # zsp record indexed it after sealing: searchable with no `zsp index`
    env = dict(os.environ, ZSP_DATA=str(data_dir))
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "search", "--json", "--commands-only", "hello-file"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    (hit,) = json.loads(p.stdout)
    assert hit["text"] == "cat hello-file.txt" and hit["kind"] == "command"
    assert hit["frame"] == completed.frame and abs(hit["t"] - completed.t_us / 1e6) < 1e-6
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "search", "--json", "hunter2"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(p.stdout) == []
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "play", str(out), "--commands"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "hunter2" not in p.stdout and "(masked, 8 bytes)" in p.stdout  # hunter2 and Enter
    assert "cat hello-file.txt" in p.stdout and "cat hel\\t" in p.stdout  # the raw keys, escaped


def test_input_typed_blind_is_flagged_with_its_keys(initialised: Path, tmp_path: Path) -> None:
    data_dir = initialised
    (data_dir / "keys" / "escrow_x25519.pub").unlink()  # no escrow key: zsp masks nothing
    out = tmp_path / "blind.zsprec"
    term = _bash(data_dir, tmp_path, out)
    term.expect(PROMPT)
    _step(term, b"read -s -p 'Secret: ' s; echo \"len ${#s}\"\r", b"Secret: ", prompt=False)
    time.sleep(0.3)
    _step(term, b"swordfish\r", b"len 9")
    _step(term, b"echo visible\r", b"visible")
    term.send(b"exit\r")
    assert term.wait() == 0
    cmds = _commands(data_dir, out)
    blind = [c for c in cmds if c.blind]
    assert [(c.keys, c.text) for c in blind] == [(b"swordfish", "")]
    assert not next(c for c in cmds if c.text == "echo visible").blind
    env = dict(os.environ, ZSP_DATA=str(data_dir))
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "search", "--json", "swordfish"],
                       capture_output=True, text=True, env=env, timeout=60)
    (hit,) = json.loads(p.stdout)
    assert hit["blind"] is True and hit["kind"] == "command" and hit["text"] == "swordfish"
    # zsp play --commands shows it too, marked, beside what was echoed
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "play", str(out), "--commands"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "(typed, not echoed) swordfish" in p.stdout
    assert [ln for ln in p.stdout.splitlines() if "echo visible" in ln and "not echoed" not in ln]
