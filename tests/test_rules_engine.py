"""SessionRules over real sessions: a bash under a real PTY recorded by `zsp record`, and frame
sequences written by the real recorder. The gate reads the command line at Enter as the screen shows
it (typed, completed, recalled) or, when the screen has not caught up (a paste), as the keys spell
it; output lines are matched whole, escape sequences and controls removed; caps, facts and time."""

from __future__ import annotations

import os
import random
import select
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recorder import Frame, FrameKind, SigningKey, load_trusted_keys
from replay import load
from tests.rules_helpers import PROMPT, STARTED, Rec, facts, fired, frames_of, ruleset, run
from tests.test_record_pty import Terminal
from zsp_tui.rules import Action, Match, Trigger
from zsp_tui.rules.engine import MAX_LINE, MAX_MATCHES, MAX_WINDOW, SessionRules, run_frames

HOLD_DANGER = """
[[rule]]
name = "danger"
severity = "high"
actions = ["hold"]
command = 'cat danger-zone\\.txt'

[[rule]]
name = "zebra"
severity = "medium"
actions = ["terminate"]
command = 'zebra'
"""

# --- a real bash under a real PTY ---------------------------------------------------------------

BASH_PROMPT = b"PROMPT> "
WRAPPER = (
    "import os, sys; fd = os.open(os.ttyname(0), os.O_RDWR);"  # acquire the ctty
    "os.execvp(sys.executable, [sys.executable, '-m', 'zsp_tui'] + sys.argv[1:])"
)


def _step(term: Terminal, keys: bytes, expect: bytes, *, prompt: bool | None = None) -> None:
    """Send keys, wait for ``expect`` and (after an Enter, or if ``prompt``) for a new prompt."""
    prompts = term.seen.count(BASH_PROMPT)
    seen = term.seen.count(expect)
    term.send(keys)
    end = time.monotonic() + 15
    while term.seen.count(expect) <= seen:  # a new one: the same text may have shown before
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {expect!r} after {keys!r}: {term.seen[-300:]!r}")
        r, _, _ = select.select([term.master], [], [], left)
        if r:
            term.seen += os.read(term.master, 65536)
    if prompt or (prompt is None and keys.endswith(b"\r")):
        end = time.monotonic() + 15
        while term.seen.count(BASH_PROMPT) <= prompts:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no prompt after {keys!r}: {term.seen[-300:]!r}")
            r, _, _ = select.select([term.master], [], [], left)
            if r:
                term.seen += os.read(term.master, 65536)


@pytest.fixture(scope="module")
def bash_session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One bash session recorded by `zsp record` in a real PTY: (recording, allowed_signers)."""
    root = tmp_path_factory.mktemp("rules-pty")
    data = root / "data"
    env = dict(os.environ, TERM="xterm", PS1=BASH_PROMPT.decode(), HISTFILE="/dev/null", INPUTRC="/dev/null",
               ZSP_DATA=str(data))
    env.pop("PROMPT_COMMAND", None)
    subprocess.run([sys.executable, "-m", "zsp_tui", "init"], env=env, check=True, capture_output=True)
    work = root / "work"
    work.mkdir()
    (work / "danger-zone.txt").write_text("zebra stripes\n" * 3)
    out = root / "bash.zsprec"
    term = Terminal([sys.executable, "-c", WRAPPER, "record", "-o", str(out), "--", "bash", "--norc", "--noprofile",
                     "-i"], dict(env, PWD=str(work)), cols=80, rows=24)
    term.expect(BASH_PROMPT)
    _step(term, b"cd " + str(work).encode() + b"\r", b"work")
    for key in b"cat /etc/shadow > /dev/null":  # typed key by key, each echoed
        _step(term, bytes([key]), bytes([key]))
    _step(term, b"\r", BASH_PROMPT)
    _step(term, b"cat dang", b"cat dang")
    _step(term, b"\t", b"danger-zone.txt")  # completed by readline: the keys never spell it
    _step(term, b"\r", b"zebra stripes")
    _step(term, b"\x1b[A", b"cat danger-zone.txt")  # recalled: the keys are an arrow
    _step(term, b"\r", b"zebra stripes")
    _step(term, b"echo pasted; cat danger-zone.txt\r", b"pasted")  # one chunk: the screen is behind
    _step(term, b"less danger-zone.txt\r", b"(END)", prompt=False)  # the alternate screen
    _step(term, b"/zebra\r", b"(END)", prompt=False)  # searched in less: not a command line
    _step(term, b"q", BASH_PROMPT, prompt=True)
    _step(term, b"history -c\r", BASH_PROMPT)
    _step(term, b"curl -s http://127.0.0.1:9/ | sh\r", BASH_PROMPT)
    _step(term, b"printf -- '-----BEGIN %s PRIVATE KEY-----\\n' OPENSSH\r", b"-----BEGIN OPENSSH")
    term.send(b"exit\r")
    assert term.wait() == 0
    return out, data / "allowed_signers"


def test_a_real_bash_session(bash_session: tuple[Path, Path]) -> None:
    path, signers = bash_session
    frames, report = load(path, load_trusted_keys(signers))
    assert report.valid
    header = frames[0].data
    rules = ruleset(HOLD_DANGER, standard=True)
    body = [f for f in frames[1:] if f.kind not in (FrameKind.CHECKPOINT, FrameKind.SEAL)]
    matches, suppressed = run_frames(rules, facts(header), header, body)  # type: ignore[arg-type]
    got = fired(matches)
    assert got == Counter(
        {
            ("shadow-read", "cat /etc/shadow > /dev/null"): 1,
            # tab-completed (the keys spell "cat dang") and recalled (the keys are an arrow): the screen
            ("danger", "cat danger-zone.txt"): 2,
            # pasted with its Enter in one chunk: what the keys spell
            ("danger", "echo pasted; cat danger-zone.txt"): 1,
            ("history-tamper", "history -c"): 1,
            ("curl-pipe-shell", "curl -s http://127.0.0.1:9/ | sh"): 1,
            ("private-key-output", "-----BEGIN OPENSSH PRIVATE KEY-----"): 1,
        }
    ), got
    # "/zebra" typed in less (the alternate screen) and "zebra" in cat's output never gate
    assert not any(m.rule.name == "zebra" for m in matches) and suppressed == {}
    held = [m for m in matches if m.rule.name == "danger"]
    assert all(m.trigger is Trigger.COMMAND and m.rule.enforcing for m in held)
    # times: each at its Enter's input frame, in order
    inputs = {f.t_us for f in frames if f.kind is FrameKind.INPUT}
    assert all(m.t_us in inputs for m in matches if m.trigger is Trigger.COMMAND)
    assert [m.t_us for m in matches] == sorted(m.t_us for m in matches)


def test_the_same_session_gated_live_holds_before_the_enter(bash_session: tuple[Path, Path]) -> None:
    """Driven as the relay drives it (gate, then input): each held Enter is found at its offset in
    its chunk, before it is fed; nothing enforcing fires again on the resolved command."""
    path, signers = bash_session
    frames, _ = load(path, load_trusted_keys(signers))
    header = frames[0].data
    engine = SessionRules(ruleset(HOLD_DANGER), facts(header), cols=80, rows=24, pty=True)  # type: ignore[arg-type]
    gates = []
    other = []
    for f in frames[1:]:
        if f.kind is FrameKind.INPUT:
            assert isinstance(f.data, bytes)
            g = engine.gate(f.data)
            assert engine.gate(f.data) == g  # pure: asking again changes nothing
            if g is not None:
                gates.append((f.data, g))
                assert f.data[g.offset : g.offset + g.enter] in (b"\r", b"\n", b"\r\n")
        other += engine.feed(f)
    other += engine.finish(frames[-1].t_us)
    assert [(g.text, g.offset) for _, g in gates] == [
        ("cat danger-zone.txt", 0),
        ("cat danger-zone.txt", 0),
        ("echo pasted; cat danger-zone.txt", len(b"echo pasted; cat danger-zone.txt")),
    ]
    assert not any(g.terminates for _, g in gates) and other == []


# --- synthetic sessions, written by the real recorder --------------------------------------------


def shell(path: Path, key: SigningKey, **kw: object) -> Rec:
    return Rec(path, key, **kw).out(PROMPT)  # type: ignore[arg-type]


def test_typed_and_pasted_gate_before_the_enter(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset(HOLD_DANGER)
    engine = SessionRules(rules, facts(), cols=80, rows=24, pty=True)
    engine.output(PROMPT, 1)
    for i, c in enumerate(b"cat danger-zone.txt"):
        assert engine.gate(bytes([c])) is None
        engine.input(bytes([c]), 10 + i)
        engine.output(bytes([c]), 11 + i)
    g = engine.gate(b"\r", t_us=500)
    assert g is not None and (g.offset, g.enter, g.text) == (0, 1, "cat danger-zone.txt")
    assert [(m.rule.name, m.t_us) for m in g.matches] == [("danger", 500)] and not g.terminates
    # denied: Ctrl-U instead of the Enter, the line is gone
    engine.input(b"\x15", 501)
    engine.output(b"\r" + PROMPT + b"\x1b[K", 502)
    assert engine.gate(b"\r") is None
    # pasted, CR LF as one Enter, the second line terminates
    chunk = b"ls\r\necho zebra\r\n"
    g = engine.gate(chunk)
    assert g is not None and (g.offset, g.enter, g.text) == (14, 2, "echo zebra") and g.terminates
    assert engine.gate(chunk, g.offset + g.enter) is None
    # an LF that completes a CR sent in the chunk before is no Enter
    engine.input(b"cat danger-zone.txt\r", 600)
    assert engine.gate(b"\n") is None
    assert engine.gate(b"\ncat danger-zone.txt\r") is not None  # but a CR after it is


def test_an_enforcing_rule_fires_once_per_enter_offline(tmp_path: Path, key: SigningKey) -> None:
    path = shell(tmp_path / "s.zsprec", key).command(b"cat danger-zone.txt", b"zebra\r\n").close()
    matches, _ = run(ruleset(HOLD_DANGER), path, key)
    # the output "zebra" is no command; the held line fires at its gate, not again when resolved
    assert [(m.rule.name, m.text) for m in matches] == [("danger", "cat danger-zone.txt")]


def test_the_alternate_screen_is_ignored(tmp_path: Path, key: SigningKey) -> None:
    rec = shell(tmp_path / "s.zsprec", key)
    rec.command(b"vim notes", b"\x1b[?1049h\x1b[H~\r\n~\r\n")
    rec.key(b"iecho zebra\r:wq\r").out(b"echo zebra\r\n")
    rec.out(b"\x1b[?1049l" + PROMPT).command(b"echo zebra")
    matches, _ = run(ruleset(HOLD_DANGER), rec.close(), key)
    assert [(m.rule.name, m.text) for m in matches] == [("zebra", "echo zebra")]


def test_history_recall_and_completion_on_screen(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset(HOLD_DANGER + '\n[[rule]]\nname = "seen"\nseverity = "low"\ncommand = "^cat danger"\n')
    rec = shell(tmp_path / "s.zsprec", key)
    rec.typed(b"cat da").key(b"\t").out(b"nger-zone.txt ").key(b"\r").out(b"\r\nzebra\r\n" + PROMPT)
    rec.key(b"\x1b[A").out(b"cat danger-zone.txt").key(b"\r").out(b"\r\n" + PROMPT)
    matches, _ = run(rules, rec.close(), key)
    assert fired(matches) == Counter({("danger", "cat danger-zone.txt"): 2, ("seen", "cat danger-zone.txt"): 2})


def test_keys_rules_see_raw_keystrokes(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset(
        '[[rule]]\nname = "arrowed"\nseverity = "low"\nkeys = "\\\\x1b\\\\[A"\n'
        '[[rule]]\nname = "both"\nseverity = "low"\nkeys = "^sudo"\ncommand = "reboot$"\n'
    )
    rec = shell(tmp_path / "s.zsprec", key).command(b"sudo reboot").command(b"sudo ls")
    rec.key(b"\x1b[A").out(b"sudo ls").key(b"\r").out(b"\r\n" + PROMPT)
    matches, _ = run(rules, rec.close(), key)
    assert [(m.rule.name, m.text) for m in matches] == [("both", "sudo reboot"), ("arrowed", "sudo ls")]


def test_lazy_window_bounds_what_the_scanner_sees(tmp_path: Path, key: SigningKey) -> None:
    engine = SessionRules(ruleset(HOLD_DANGER), facts(), cols=80, rows=24, pty=True)
    engine.output(PROMPT, 1)
    blob = b"".join(b"log line %06d\r\n" % i for i in range(200_000))  # ~3.6 MB between two keystrokes
    for i in range(0, len(blob), 32 * 1024):
        engine.output(blob[i : i + 32 * 1024], 2)
        assert engine._window_bytes < MAX_WINDOW + 32 * 1024  # the chunks it holds, not copies
    engine.output(PROMPT, 3)
    engine.input(b"cat danger-zone.txt", 4)
    engine.output(b"cat danger-zone.txt", 5)
    g = engine.gate(b"\r")
    assert g is not None and g.text == "cat danger-zone.txt"
    # what the scanner got: the last 64 KiB, not the 3.6 MB
    assert engine._scanner is not None and not engine._window


def test_no_command_rules_no_scanner(tmp_path: Path, key: SigningKey) -> None:
    engine = SessionRules(ruleset('[[rule]]\nname = "o"\nseverity = "low"\noutput = "x"\n'), facts(), cols=80,
                          rows=24, pty=True)
    assert engine._scanner is None and engine.gate(b"rm -rf /\r") is None
    engine.output(b"a" * 100_000, 1)
    assert not engine._window


def test_output_lines_escapes_controls_and_cuts(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset('[[rule]]\nname = "key"\nseverity = "high"\noutput = "-----BEGIN [A-Z ]*PRIVATE KEY-----"\n')
    marker = b"-----BEGIN RSA PRIVATE KEY-----"
    rec = Rec(tmp_path / "s.zsprec", key)
    rec.out(b"\x1b[1;31m-----BEGIN RSA \x1b[0mPRIV\x00ATE\x7f KEY-----\x1b]0;title\x07\r\n")  # escapes, NUL, DEL
    rec.out(b"-----BEGIN RSA PRI")  # split across frames
    rec.out(b"VATE KEY-----\r\n")
    rec.out(b"\x1b[31" + b"m" + b"caf\xc3\xa9 " + marker + b"\r\n")  # UTF-8 around it
    rec.out(b"\xff\xfe" + marker + b" bad bytes\n")
    # a 10 MB line: cut into 4 KiB pieces; a marker inside a piece matches, one across a cut does not
    big = bytearray(b"x" * (10 * 1024 * 1024))
    big[5000 : 5000 + len(marker)] = marker
    big[3 * MAX_LINE - 10 : 3 * MAX_LINE - 10 + len(marker)] = marker
    for i in range(0, len(big), 60_000):
        rec.out(bytes(big[i : i + 60_000]))
    rec.out(b"\n")
    rec.out(b"progress 10%\rprogress -----BEGIN RSA PRIVATE KEY-----\rdone\r\n")  # CR ends a line
    rec.out(b"-----BEGIN RSA PRIV\x07ATE KEY-----\r\n")  # other controls stay in the text: no match
    rec.out(b"tail " + marker)  # no newline: matched at the end
    matches, _ = run(rules, rec.close(), key)
    texts = [m.text for m in matches]
    assert texts[:4] == [
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----",
        "café -----BEGIN RSA PRIVATE KEY-----",
        "\ufffd\ufffd-----BEGIN RSA PRIVATE KEY----- bad bytes",
    ]
    assert texts[5:] == ["progress -----BEGIN RSA PRIVATE KEY-----", "tail -----BEGIN RSA PRIVATE KEY-----"]
    piece = texts[4]  # the piece 4096..8191 of the long line, capped at 1,024 characters
    assert len(piece) == 1024 and piece.startswith("x" * 900) and piece.endswith("…")


def test_output_matching_does_not_depend_on_chunking(key: SigningKey) -> None:
    """Live chunks and recorded frames differ (the writer coalesces output): the lines must not."""
    rules = ruleset('[[rule]]\nname = "err"\nseverity = "low"\noutput = "^ERROR [0-9]+$"\n'
                    '[[rule]]\nname = "kill"\nseverity = "high"\nactions = ["terminate"]\noutput = "FATAL"\n')
    rnd = random.Random(11)
    lines = []
    for i in range(600):
        r = rnd.random()
        lines.append(b"ERROR %d" % i if r < 0.05 else b"\x1b[2mFA\x1b[0mTAL %d" % i if r < 0.07 else
                     b"y" * rnd.choice([10, 100, 3000, 5000, 9000]) if r < 0.2 else b"ok %d" % i)
    stream = b"\r\n".join(lines) + b"\r\n"
    results = set()
    for _ in range(6):
        engine = SessionRules(rules, facts(), cols=80, rows=24, pty=True)
        got = []
        i = 0
        while i < len(stream):
            n = rnd.choice([1, 7, 100, 4096, 4097, 65536])
            got += engine.output(stream[i : i + n], i)
            i += n
        got += engine.finish(i)
        results.add((tuple((m.rule.name, m.text) for m in got), tuple(sorted(engine.suppressed.items()))))
    assert len(results) == 1
    (matches, suppressed), = results
    assert sum(1 for name, _ in matches if name == "kill") >= 1
    assert sum(1 for name, _ in matches if name == "err") == MAX_MATCHES and suppressed[0][0] == "err"


def test_cap_and_suppressed(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset('[[rule]]\nname = "ls"\nseverity = "info"\ncommand = "^ls"\n'
                    '[[rule]]\nname = "boom"\nseverity = "high"\nactions = ["terminate"]\noutput = "boom"\n')
    rec = shell(tmp_path / "s.zsprec", key)
    for i in range(25):
        rec.command(b"ls %d" % i, b"boom\r\n")
    matches, suppressed = run(rules, rec.close(), key)
    counts = Counter(m.rule.name for m in matches)
    assert counts == {"ls": MAX_MATCHES, "boom": 25}  # enforcing ones are never held back
    assert suppressed == {"ls": 5}


def test_session_facts(tmp_path: Path, key: SigningKey) -> None:
    text = """
[[rule]]
name = "root-prod"
severity = "medium"
logins = ["root"]
targets = ["label:prod*"]
[[rule]]
name = "dba-any"
severity = "low"
users = ["group:dba"]
[[rule]]
name = "admins"
severity = "low"
users = ["role:admin", "carol"]
[[rule]]
name = "local-only"
severity = "low"
targets = ["local"]
[[rule]]
name = "star-target"
severity = "low"
targets = ["*"]
[[rule]]
name = "ls-on-db"
severity = "low"
command = "^ls"
targets = ["db*"]
"""
    rules = ruleset(text)

    def start(**kw: object) -> list[str]:
        return [m.rule.name for m in SessionRules(rules, facts(**kw), cols=80, rows=24, pty=True).start()]  # type: ignore[arg-type]

    assert start(login="root", labels=("production",)) == ["root-prod", "star-target"]
    assert start(groups=("dba",), roles=("admin",)) == ["dba-any", "admins", "star-target"]
    assert start(user="carol") == ["admins", "star-target"]
    assert start(target="local") == ["local-only"]  # "*" never matches the built-in local target
    m = SessionRules(rules, facts(login="root", labels=("prod",), groups=("dba",)), cols=80, rows=24,
                     pty=True).start()[0]
    assert m.trigger is Trigger.SESSION and m.t_us == 0
    assert m.text == "alice as root@db1 (roles: operator; groups: dba; labels: prod)"
    engine = SessionRules(rules, facts(target="web1"), cols=80, rows=24, pty=True)
    assert [r.name for r in engine._commands] == []  # a target the rule does not name: dropped at start


def test_time_of_day_days_and_timezone(tmp_path: Path, key: SigningKey) -> None:
    # 23:30 on a Sunday in UTC is 01:30 on Monday in Europe/Helsinki (UTC+2 in winter)
    start = datetime(2026, 1, 4, 23, 30, tzinfo=UTC)
    rules = ruleset("""
[[rule]]
name = "night"
severity = "low"
command = "^ls"
hours = "22:00-06:00"
[[rule]]
name = "monday-helsinki"
severity = "low"
command = "^ls"
days = ["mon"]
timezone = "Europe/Helsinki"
[[rule]]
name = "office"
severity = "low"
command = "^ls"
hours = "09:00-17:00"
days = ["mon", "tue", "wed", "thu", "fri"]
[[rule]]
name = "after-an-hour"
severity = "low"
command = "^ls"
min_duration = "1h"
""")
    engine = SessionRules(rules, facts(started_at=start), cols=80, rows=24, pty=True)
    engine.output(PROMPT, 0)

    def ls(at: timedelta) -> list[str]:
        t = int(at / timedelta(microseconds=1))
        out = engine.input(b"ls\r", t)
        out += engine.output(b"ls\r\n" + PROMPT, t + 1)
        out += engine.tick(t + 2)  # the echo came: resolved without another keystroke
        return [m.rule.name for m in out]

    assert ls(timedelta(minutes=1)) == ["night", "monday-helsinki"]
    assert ls(timedelta(hours=1, minutes=1)) == ["night", "monday-helsinki", "after-an-hour"]
    assert ls(timedelta(hours=7)) == ["monday-helsinki", "after-an-hour"]  # 06:30 UTC: night is over
    assert ls(timedelta(hours=10)) == ["monday-helsinki", "office", "after-an-hour"]  # Monday 09:30 UTC


def test_duration_rules_fire_once(key: SigningKey) -> None:
    rules = ruleset("""
[[rule]]
name = "long"
severity = "medium"
min_duration = "2h"
[[rule]]
name = "long-at-night"
severity = "medium"
min_duration = "1h"
hours = "02:00-03:00"
""")
    start = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    engine = SessionRules(rules, facts(started_at=start), cols=80, rows=24, pty=True)
    assert engine.start() == []
    hour = 3_600_000_000
    assert engine.tick(hour) == []  # 01:30: lasted an hour, but not in the window
    got = engine.tick(hour + hour // 2)  # 02:00
    assert [(m.rule.name, m.trigger, m.text) for m in got] == [
        ("long-at-night", Trigger.DURATION, "session running for 1h")
    ]
    assert [m.rule.name for m in engine.output(b"x", 2 * hour)] == ["long"]
    assert engine.tick(5 * hour) == [] and engine.finish(6 * hour) == []


def test_exec_command_at_start(key: SigningKey) -> None:
    rules = ruleset(HOLD_DANGER + '[[rule]]\nname = "any-cat"\nseverity = "low"\ncommand = "^cat"\n'
                    '[[rule]]\nname = "k"\nseverity = "low"\nkeys = "danger"\n', standard=True)
    engine = SessionRules(rules, facts(command="cat danger-zone.txt"), cols=0, rows=0, pty=False)
    got = engine.start()
    assert [(m.rule.name, m.trigger, m.text, m.rule.enforcing) for m in got] == [
        ("danger", Trigger.COMMAND, "cat danger-zone.txt", True),
        ("any-cat", Trigger.COMMAND, "cat danger-zone.txt", False),
        ("k", Trigger.COMMAND, "cat danger-zone.txt", False),
    ]
    shadow = SessionRules(rules, facts(command="sudo cat /etc/shadow"), cols=0, rows=0, pty=False).start()
    assert [m.rule.name for m in shadow] == ["shadow-read"]


def test_exec_recording_offline(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset(HOLD_DANGER, standard=True)
    path = Rec(tmp_path / "e.zsprec", key, command="history -c; cat danger-zone.txt", term="", cols=0,
               rows=0).out(b"zebra\n").close()
    matches, _ = run(rules, path, key)
    assert [(m.rule.name, m.t_us) for m in matches] == [("danger", 0), ("history-tamper", 0)]


def test_masked_lines_and_resize(tmp_path: Path, key: SigningKey) -> None:
    rules = ruleset('[[rule]]\nname = "any"\nseverity = "info"\ncommand = "."\n')
    rec = shell(tmp_path / "s.zsprec", key).command(b"sudo -v", b"[sudo] password for alice: ")
    rec.event("input.masked", "8 bytes masked", bytes=8, run=1).out(b"\r\n" + PROMPT)
    rec.resize(120, 40).command(b"id")
    matches, _ = run(rules, rec.close(), key)
    assert [m.text for m in matches] == ["sudo -v", "id"]  # the masked line is not a command


def test_match_text_is_capped(key: SigningKey) -> None:
    engine = SessionRules(ruleset('[[rule]]\nname = "a"\nseverity = "info"\ncommand = "^echo"\n'), facts(),
                          cols=80, rows=24, pty=True)
    engine.output(PROMPT, 0)
    long = b"echo " + b"z" * 5000
    engine.input(long + b"\r", 1)
    got = engine.finish(2)
    assert len(got) == 1 and len(got[0].text) == 1024


def test_rule_set_with_every_action(key: SigningKey) -> None:
    rules = ruleset('[[rule]]\nname = "all"\nseverity = "critical"\n'
                    'actions = ["flag", "notify", "warn", "hold", "terminate"]\ncommand = "x"\n')
    (rule,) = rules.rules
    assert rule.actions == set(Action) - {Action.DENY} and rule.actions_text == "flag,notify,warn,hold,terminate"


def test_frames_helper_matches_recording(tmp_path: Path, key: SigningKey) -> None:
    path = shell(tmp_path / "s.zsprec", key).command(b"ls").close()
    header, frames = frames_of(path, key)
    assert header.user == "alice" and all(isinstance(f, Frame) for f in frames)
    assert STARTED.year == 2026


def test_output_lines_agree_with_a_naive_reference(key: SigningKey) -> None:
    """The sieve (a literal found in raw bytes, escapes and NULs allowed inside it) and the
    block-at-once search find exactly what cleaning and searching each line on its own finds."""
    from zsp_tui.rules.engine import _clean

    patterns = ["PRIVATE KEY", "^ERROR [0-9]+$", "(?i)secret", r"\d{3}-\d{4}", "caf\u00e9 au lait", "x{5000}",
                "KEY-----$", "[A-Z]{3}[0-9]"]
    rules = ruleset("".join(f"[[rule]]\nname = \"p{i}\"\nseverity = \"info\"\noutput = '{p}'\n"
                            for i, p in enumerate(patterns)))
    rnd = random.Random(5)
    junk = [b"\x1b[0m", b"\x1b[1;31m", b"\x00", b"\x7f", b"\x1b]0;t\x07", b"\x1b(B", b"\x1b"]
    words = [b"PRIVATE KEY", b"ERROR 42", b"SeCrEt", b"555-1234", "café au lait".encode(), b"KEY-----", b"ABC1",
             b"ok", b" ", b"-----", b"\xff", b"\t", b"x" * 700]

    def mangle(word: bytes) -> bytes:
        if rnd.random() < 0.3:
            k = rnd.randrange(len(word) + 1)
            return word[:k] + rnd.choice(junk) + word[k:]
        return word

    for _ in range(25):
        stream = b"".join(
            mangle(rnd.choice(words)) + (rnd.choice([b"\r\n", b"\n", b"\r", b""]) if rnd.random() < 0.3 else b"")
            for _ in range(rnd.randrange(50, 400))
        )
        want: list[tuple[str, str]] = []
        for line in stream.split(b"\n"):
            for k in range(0, max(len(line), 1), MAX_LINE):
                for text in _clean(line[k : k + MAX_LINE]).split("\n"):
                    want += [(r.name, text) for r in rules.rules if text and r.output and r.output.search(text)]
        engine = SessionRules(rules, facts(), cols=80, rows=24, pty=True)
        got = []
        i = 0
        while i < len(stream):
            n = rnd.choice([1, 3, 50, 1000, 5000])
            got += engine.output(stream[i : i + n], i)
            i += n
        got += engine.finish(i)
        capped = Counter()
        expected = []
        for name, text in want:
            capped[name] += 1
            if capped[name] <= MAX_MATCHES:
                expected.append((name, text[:1023] + "…" if len(text) > 1024 else text))
        assert [(m.rule.name, m.text) for m in got] == expected


def test_sieve_literals() -> None:
    from zsp_tui.rules.engine import _literal

    def lit(p: str) -> bytes | None:
        import re

        return _literal(re.compile(p))

    assert lit("-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----") == b"PRIVATE KEY"
    assert lit("^ERROR [0-9]+$") == b"ERROR "
    assert lit("password") == b"password" and lit("caf\u00e9") == "café".encode()
    assert lit(r"\d+") is None and lit("(?i)secret") is None and lit("a|b") is None
    assert lit("(?x) P R I V") == b"PRIV"


FLAG_DANGER = HOLD_DANGER.replace('actions = ["hold"]', 'actions = ["flag"]')
COSTLY = b"\x1b#8\x1b[2J"
"""DECALN then ED 2: every cell of the screen rebuilt twice per 7 bytes (10^6 cells at 1000x500)."""


def _typed(engine: SessionRules, text: bytes, t: int) -> tuple[list[Match], int]:
    """``text`` typed and echoed key by key, then Enter and its echo: the matches, the next time."""
    out: list[Match] = []
    for i, c in enumerate(text):
        out += engine.input(bytes([c]), t + 2 * i)
        out += engine.output(bytes([c]), t + 2 * i + 1)
    t += 2 * len(text)
    out += engine.input(b"\r", t)
    out += engine.output(b"\r\n", t + 1)
    return out, t + 2


@pytest.mark.parametrize("gap_us", [0, 10_000_000], ids=["at-once", "ten-seconds-later"])
def test_costly_output_is_skipped_past_the_emulator_budget_and_commands_still_match(gap_us: int) -> None:
    """The screen is brought up to date on the bastion's event loop: 64 KiB of DECALN and ED 2 at
    1000x500 was 9,000 whole-screen rebuilds, over a minute in which no session moved. The work
    per session is now bounded; what is over it is skipped and counted, and the command typed
    next is still flagged, at once (its keys) or once the credit has grown back (its screen)."""
    from zsp_tui.rules.engine import SCAN_BURST

    engine = SessionRules(ruleset(FLAG_DANGER), facts(), cols=1000, rows=500, pty=True)
    term = engine._scanner.term if engine._scanner is not None else None  # its cost counter
    assert term is not None
    engine.output(PROMPT, 1)
    matched, t = _typed(engine, b"./flood", 10)
    for i in range(10):  # 70 KB, as a flood prints it
        matched += engine.output(COSTLY * 1000, t + i)
    matched += engine.output(b"\r\n" + PROMPT, t + 20)
    more, t = _typed(engine, b"cat danger-zone.txt", t + 1000 + gap_us)
    matched += more
    one_screen = 2 * 1000 * 500
    assert term.work <= SCAN_BURST + one_screen, "the emulator did more than one screen past its budget"
    assert engine.skipped > 50_000
    matched += engine.output(PROMPT, t) + engine.finish(t + 1)
    assert [(m.rule.name, m.text[:19]) for m in matched] == [("danger", "cat danger-zone.txt")]
