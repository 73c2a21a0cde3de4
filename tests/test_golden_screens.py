"""Golden screens: real programs' output, recorded through the bastion, replayed by
:class:`replay.Terminal` and compared with what tmux showed at the same moment.

``tests/data/screens/`` holds, per scenario (vim in one and in side-by-side windows, less, man,
top, nested tmux in UTF-8 and with DEC line drawing, colour ls/grep/diff, a colour test, wide
characters, a resize, invalid UTF-8, bash line editing), the sealed recording of a real ``ssh -tt``
session through ``zsp serve`` to a real sshd, and tmux's view of the pane that ssh ran in, taken
at marked points (``capture.py`` says how; it is not run here). Each mark is a frame count: the
screen after the output and RESIZE frames before it must be tmux's screen:

* the text of every row, exactly (trailing blanks stripped on both sides, as ``capture-pane`` does);
* the attributes of every character tmux printed (``capture-pane -e``; tmux leaves out trailing
  blanks even when they are coloured, so those are not compared), parsed here independently of
  the emulator's own SGR code;
* the cursor position and visibility, the alternate screen flag, the title and the size.

Where tmux and a classic terminal legitimately differ, the capture lists the difference and the
rows a classic terminal shows (``emulator_lines``); nothing else is loosened.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recorder import Frame, FrameKind, Header, load_trusted_keys
from replay import Outcome, Screen, Style, Terminal, VerificationReport, load

SCREENS = Path(__file__).parent / "data" / "screens"
NAMES = sorted(p.stem for p in SCREENS.glob("*.json"))
TRUECOLOR = 0x1000000


@dataclass(frozen=True)
class Golden:
    doc: dict[str, Any]
    frames: list[Frame]
    report: VerificationReport

    @property
    def header(self) -> Header:
        h = self.frames[0].data
        assert isinstance(h, Header)
        return h

    def capture(self, name: str) -> dict[str, Any]:
        return next(c for c in self.doc["captures"] if c["name"] == name)


@functools.cache
def golden(name: str) -> Golden:
    doc = json.loads((SCREENS / f"{name}.json").read_text())
    frames, report = load(SCREENS / doc["recording"], load_trusted_keys(SCREENS / "allowed_signers"))
    return Golden(doc, frames, report)


def replay_until(g: Golden, frames: int) -> Screen:
    """The emulator's screen after every output and resize frame with ``seq < frames`` (of a
    recording that verifies: nothing unproven is compared)."""
    assert g.report.outcome is Outcome.VALID, f"{g.doc['recording']} does not verify: {g.report.to_json()}"
    t = Terminal(g.header.cols, g.header.rows)
    for f in g.frames:
        if f.seq >= frames:
            break
        if f.kind is FrameKind.OUTPUT:
            t.feed(f.data)
        elif f.kind is FrameKind.RESIZE:
            t.resize(f.data.cols, f.data.rows)
    return t.screen()


def expected_lines(capture: dict[str, Any]) -> list[str]:
    """tmux's lines, with its DEC line-drawing cells drawn as a terminal draws them (``capture-pane
    -p`` prints them as the ASCII letters they were sent as; ``-e`` marks them with SO/SI), and the
    documented overrides."""
    lines = list(capture["lines"])
    for y, (line, sgr) in enumerate(zip(lines, capture["sgr"], strict=True)):
        if "\x0e" in sgr:
            lines[y] = "".join(ch for ch, _style in tmux_cells([sgr])[0]).rstrip()
            assert lines[y].translate(_FROM_ACS) == line, "the -e capture and the text capture disagree"
    for row, text in capture["emulator_lines"].items():
        lines[int(row)] = text
    return lines


EMULATOR_BUGS: dict[tuple[str, str], str] = {}
"""Captures the emulator gets wrong today (checked against xterm's behaviour, not only tmux's):
expected to fail, strictly, so that a fix shows up as XPASS and this entry goes."""


def _cases(*, screen_content: bool) -> list[Any]:
    out = []
    for name in NAMES:
        for c in golden(name).doc["captures"]:
            bug = EMULATOR_BUGS.get((name, c["name"])) if screen_content else None
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            out.append(pytest.param(name, c["name"], marks=marks, id=f"{name}-{c['name']}"))
    return out


CASES = _cases(screen_content=True)
ALL_CASES = _cases(screen_content=False)


def test_there_are_goldens_for_every_scenario_the_issue_names() -> None:
    assert {"vim", "less", "top", "tmux", "ls", "wide", "resize", "invalid_utf8", "bash"} <= set(NAMES)
    for name in NAMES:
        size = (SCREENS / golden(name).doc["recording"]).stat().st_size
        assert size < 1_000_000, f"{name}: keep the test data small ({size} bytes)"


@pytest.mark.parametrize("name", NAMES)
def test_recording_verifies_with_the_committed_key(name: str) -> None:
    g = golden(name)
    assert g.report.outcome is Outcome.VALID, g.report.to_json()
    assert g.report.signer_fingerprint == g.doc["signer"]
    assert [g.header.cols, g.header.rows] == g.doc["size"] and g.header.term == g.doc["term"]
    # The marks are inside the recording, in order, and the recording goes on after the last
    # (at least the `exit` typed after it), so every mark cuts the session somewhere real.
    marks = [c["frames"] for c in g.doc["captures"]]
    assert marks == sorted(marks) and marks[-1] < len(g.frames)
    # A capture at another size than the session began with follows a RESIZE frame to that size:
    # tmux's resize reached the remote side through ssh and the bastion, and was recorded.
    for c in g.doc["captures"]:
        sizes = [[g.header.cols, g.header.rows]] + [
            [f.data.cols, f.data.rows] for f in g.frames[: c["frames"]] if f.kind is FrameKind.RESIZE
        ]
        assert sizes[-1] == c["size"], f"{name}/{c['name']}"


@pytest.mark.parametrize(("name", "capture"), CASES)
def test_screen_text_equals_tmux(name: str, capture: str) -> None:
    g = golden(name)
    c = g.capture(capture)
    screen = replay_until(g, c["frames"])
    assert [screen.cols, screen.rows] == c["size"]
    want = expected_lines(c)
    got = list(screen.lines)
    diff = [f"row {y}:\n  tmux     {w!r}\n  emulator {e!r}" for y, (w, e) in enumerate(zip(want, got, strict=True))
            if w != e]
    assert not diff, f"{name}/{capture}:\n" + "\n".join(diff)


@pytest.mark.parametrize(("name", "capture"), ALL_CASES)
def test_cursor_and_modes_equal_tmux(name: str, capture: str) -> None:
    g = golden(name)
    c = g.capture(capture)
    screen = replay_until(g, c["frames"])
    # Both report a pending wrap (after a character in the last column) as x == cols.
    assert list(screen.cursor) == c["cursor"]
    assert screen.cursor_visible == c["cursor_visible"]
    assert screen.alternate == c["alternate"]
    assert screen.title == c["title"]  # "": tmux still shows its default title, nothing set one


@pytest.mark.parametrize(("name", "capture"), CASES)
def test_attributes_equal_tmux(name: str, capture: str) -> None:
    g = golden(name)
    c = g.capture(capture)
    screen = replay_until(g, c["frames"])
    overridden = {int(r) for r in c["emulator_lines"]}
    problems = []
    for y, (row, runs) in enumerate(zip(tmux_cells(c["sgr"]), screen.runs, strict=True)):
        if y in overridden:
            continue
        mine = emulator_cells(runs)
        if len(mine) < len(row):
            problems.append(f"row {y}: tmux has {len(row)} characters, the emulator {len(mine)}")
            continue
        for x, ((ch, want), (ch2, got)) in enumerate(zip(row, mine, strict=False)):
            if (ch, want) != (ch2, got):
                problems.append(f"row {y} char {x} {ch!r}: tmux {want}, emulator {ch2!r} {got}")
                break
    assert not problems, f"{name}/{capture}:\n" + "\n".join(problems)


@pytest.mark.parametrize(("name", "capture"), [
    (n, c["name"]) for n in NAMES for c in golden(n).doc["captures"] if c["emulator_lines"]
])
def test_documented_differences_are_tied_to_tmux(name: str, capture: str) -> None:
    """Each row overridden for a documented difference is tmux's row plus what tmux leaves out."""
    g = golden(name)
    assert g.doc["differences"], "an override without its reason"
    c = g.capture(capture)
    for row, text in c["emulator_lines"].items():
        assert text.replace("\ufffd", "") == c["lines"][int(row)]


def test_attribute_parser_reads_what_tmux_writes() -> None:
    """The oracle's own parser, on sequences tmux 3.3 prints in ``capture-pane -e``."""
    [row] = tmux_cells(["\x1b[1m\x1b[31mA\x1b[0m\x1b[39m\x1b[49m \x1b[38;5;200mB\x1b[48;2;1;2;3mC\x1b[39m\x1b[49m"
                        "\x1b[7mD\x1b[0m\x1b[92m\x1b[49m中\x1b[0;1m\x1b[39me\u0301\x0eqx\x0fq"])
    assert row == [
        ("A", Style(fg=1, bold=True)),
        (" ", Style()),
        ("B", Style(fg=200)),
        ("C", Style(fg=200, bg=TRUECOLOR | 0x010203)),
        ("D", Style(reverse=True)),
        ("中", Style(fg=10)),
        ("e\u0301", Style(bold=True)),
        ("─", Style(bold=True)),
        ("│", Style(bold=True)),
        ("q", Style(bold=True)),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_real_output_split_anywhere_draws_the_same(name: str) -> None:
    """The recorded frames cut where SSH and the recorder happened to cut; cut elsewhere (inside
    escape sequences and UTF-8 characters), the screen at every mark is the same."""
    g = golden(name)
    rnd = random.Random(name)
    for c in g.doc["captures"]:
        whole = replay_until(g, c["frames"])
        t = Terminal(g.header.cols, g.header.rows)
        for f in g.frames[: c["frames"]]:
            if f.kind is FrameKind.OUTPUT:
                data, i = f.data, 0
                while i < len(data):
                    n = rnd.choice((1, 1, 2, 3, 5, 8, 64))
                    t.feed(data[i : i + n])
                    i += n
            elif f.kind is FrameKind.RESIZE:
                t.resize(f.data.cols, f.data.rows)
        assert t.screen() == whole, f"{name}/{c['name']}"


@pytest.mark.parametrize("name", NAMES)
def test_keyframes_round_trip_anywhere_in_real_sessions(name: str) -> None:
    """A keyframe (dump, then load) taken after any frame of a real session replays on to the same
    screens as the terminal it was taken from."""
    g = golden(name)
    t = Terminal(g.header.cols, g.header.rows)
    marks = {c["frames"]: c["name"] for c in g.doc["captures"]}
    for f in g.frames:
        if f.kind is FrameKind.OUTPUT:
            t.feed(f.data)
        elif f.kind is FrameKind.RESIZE:
            t.resize(f.data.cols, f.data.rows)
        else:
            continue
        restored = Terminal.load(t.dump())
        assert restored.screen() == t.screen(), f"{name}: frame {f.seq}"
        t = restored
        if f.seq + 1 in marks:
            assert t.screen() == replay_until(g, f.seq + 1), f"{name}/{marks[f.seq + 1]}"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux, the oracle")
@pytest.mark.parametrize("name", NAMES)
def test_every_frame_equals_tmux_replaying_the_recording(name: str, tmp_path: Path) -> None:
    """Between the marks too: the recording replayed into a live tmux pane, compared after every
    output and resize frame (tests/data/screens/crosscheck.py)."""
    from tests.data.screens.crosscheck import check

    problem = check(name, tmp_path)
    assert problem is None, problem


# --- emulator bugs the goldens found, as minimal cases -----------------------------------------


def test_shrinking_on_the_alternate_screen_keeps_the_main_screen() -> None:
    t = Terminal(80, 30)
    t.feed(b"hello\r\n\x1b[?1049h\x1b[30;1H")  # less: alternate screen, cursor on its last row
    t.resize(60, 20)
    t.feed(b"\x1b[?1049l")
    assert t.screen().lines[:2] == ("hello", "")
    assert t.cursor == (0, 1)


def test_shrinking_on_the_alternate_screen_scrolls_the_main_screen_by_its_own_cursor() -> None:
    t = Terminal(20, 10)
    t.feed(b"".join(b"line%d\r\n" % i for i in range(9)) + b"$ ")  # prompt on the last row
    t.feed(b"\x1b[?1049h\x1b[H")  # full-screen program, cursor at its top
    t.resize(20, 5)
    t.feed(b"\x1b[?1049l")
    assert t.screen().lines == ("line5", "line6", "line7", "line8", "$")
    assert t.cursor == (2, 4)
    assert t.take_lines()[-5:] == ["line0", "line1", "line2", "line3", "line4"]


# --- the oracle's side: tmux's capture-pane -e, parsed independently ----------------------------

_CONTROL = re.compile(r"\x1b\[([0-9;:]*)m|[\x0e\x0f]")
_FLAGS = {1: "bold", 2: "dim", 3: "italic", 4: "underline", 5: "blink", 7: "reverse", 8: "hidden", 9: "strike"}
_OFF = {22: ("bold", "dim"), 23: ("italic",), 24: ("underline",), 25: ("blink",), 27: ("reverse",),
        28: ("hidden",), 29: ("strike",)}


def _apply(state: dict[str, Any], params: str) -> None:
    codes = [int(p.split(":")[0] or 0) for p in params.split(";")] if params else [0]
    i = 0
    while i < len(codes):
        n = codes[i]
        if n == 0:
            state.clear()
        elif n in _FLAGS:
            state[_FLAGS[n]] = True
        elif n in _OFF:
            for k in _OFF[n]:
                state.pop(k, None)
        elif 30 <= n <= 37 or 40 <= n <= 47:
            state["fg" if n < 40 else "bg"] = n % 10
        elif 90 <= n <= 97 or 100 <= n <= 107:
            state["fg" if n < 100 else "bg"] = n % 10 + 8
        elif n in (39, 49):
            state.pop("fg" if n == 39 else "bg", None)
        elif n in (38, 48) and i + 1 < len(codes):
            key = "fg" if n == 38 else "bg"
            if codes[i + 1] == 5 and i + 2 < len(codes):
                state[key] = codes[i + 2]
                i += 2
            elif codes[i + 1] == 2 and i + 4 < len(codes):
                state[key] = TRUECOLOR | (codes[i + 2] << 16) | (codes[i + 3] << 8) | codes[i + 4]
                i += 4
        else:
            raise AssertionError(f"SGR {n} in tmux's capture: teach the test's parser")
        i += 1


_ACS = dict(zip("`abcdefghijklmnopqrstuvwxyz{|}~", "◆▒␉␌␍␊°±␤␋┘┐┌└┼⎺⎻─⎼⎽├┤┴┬│≤≥π≠£·", strict=True))
"""The VT100 special graphics set (what ESC ( 0 selects), as xterm and tmux draw it."""
_FROM_ACS = str.maketrans({v: k for k, v in _ACS.items()})


def _clusters(text: str) -> list[str]:
    """Characters with their combining marks (what one cell holds)."""
    out: list[str] = []
    for ch in text:
        if out and (unicodedata.combining(ch) or ch in "\u200d\ufe0f"):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def tmux_cells(sgr_lines: list[str]) -> list[list[tuple[str, Style]]]:
    """Each row's characters with their style. tmux carries the style from one line to the next,
    and marks line-drawing cells with SO (on) and SI (off)."""
    state: dict[str, Any] = {}
    acs = False
    rows = []
    for line in sgr_lines:
        row: list[tuple[str, Style]] = []
        pos = 0
        for m in [*_CONTROL.finditer(line), None]:
            end = m.start() if m else len(line)
            style = Style(**state)
            row += [(_ACS.get(ch, ch) if acs else ch, style) for ch in _clusters(line[pos:end])]
            if m:
                if m.group(0) in "\x0e\x0f":
                    acs = m.group(0) == "\x0e"
                else:
                    _apply(state, m.group(1))
                pos = m.end()
        rows.append(row)
    return rows


def emulator_cells(runs: tuple[tuple[str, Style], ...]) -> list[tuple[str, Style]]:
    return [(ch, style) for text, style in runs for ch in _clusters(text)]
