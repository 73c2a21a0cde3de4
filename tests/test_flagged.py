"""Flagged moments for reviewers: ``zsp sessions --flagged`` and its FLAGS column, ``zsp search
--flagged`` (the moments, or a search of the flagged sessions only), the review app's flagged-only
toggle and count, and Replay's ``⚑`` markers with the jump between them.

One data dir for the module (real SQLite, real search index): session A has two ``rule.match``
event frames written by the real recorder and the matching flag rows written by
``AccessService.rule_matched`` (the bastion's calls); the second has a hostile rule name and text
(escape sequences, newlines, markup). Session B has none and the same searchable word.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.search_helpers import WALL_START_NS, Script
from zsp_tui.access import AccessService, Actor
from zsp_tui.cli import main
from zsp_tui.clock import FakeClock
from zsp_tui.datadir import DataDir
from zsp_tui.indexing import index_one, open_index
from zsp_tui.models import Flag, Role, SessionRecord
from zsp_tui.tui import ReviewApp, ReviewContext

STARTED = datetime.fromtimestamp(WALL_START_NS / 1e9, UTC)
COMMAND = "sudo rm -rf /srv/needle"
EVIL_RULE = "evil\x1b[2J\nrule[reverse]"
EVIL_TEXT = "\x1b]52;c;cHdu\x07gotcha\r\nforged line [bold red]x[/]"
FLAG1_US = 2_000_000
FLAG2_US = 5_000_000


@dataclass
class Flagged:
    data: DataDir
    svc: AccessService
    a: str
    """The flagged session."""
    b: str
    """A session without flags."""


def _record(d: DataDir, svc: AccessService, sid: uuid.UUID, user: str, target: str, script: Script) -> SessionRecord:
    record = SessionRecord(
        id=str(sid), user=user, target=target, login="root", grant_id=None, command=None,
        client="192.0.2.1:50000", path=str(script.path), started_at=STARTED,
    )
    svc.session_started(record)
    return record


def _data_dir(root: Path) -> tuple[DataDir, AccessService, SigningKey]:
    d = DataDir(root / "data")
    d.init()
    svc = d.service(FakeClock(STARTED + timedelta(minutes=1)))
    svc.add_user(Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}))
    svc.add_user(Actor("alice"), "dora", frozenset({Role.REVIEWER}))
    return d, svc, SigningKey.load(d.root / "keys" / "recording_ed25519")


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory) -> Flagged:
    d, svc, key = _data_dir(tmp_path_factory.mktemp("flagged"))

    sid_a, sid_b = uuid.UUID(int=0xA1), uuid.UUID(int=0xB2)
    a = Script(d.recordings / f"{sid_a}.zsprec", key, session_id=sid_a)
    rec_a = _record(d, svc, sid_a, "alice", "db1", a)
    a.at(1).out(b"$ ")
    a.at(1.5).key(COMMAND.encode()).out(COMMAND.encode())  # echoed as typed, as a shell does
    a.at(2).key(b"\r")  # Enter: the rule fires here (before the Enter reaches the target)
    a.w.event("rule.match", "rule no-rm-rf (high) matched command", rule="no-rm-rf", severity="high",
              trigger="command", actions="flag,warn", text=COMMAND)
    a.at(2.1).out(b"\r\n")
    a.at(3).out(b"rm: cannot remove '/srv/needle': Permission denied\r\n$ ")
    a.at(5)
    a.w.event("rule.match", "rule matched output", rule=EVIL_RULE, severity="critical", trigger="output",
              actions="flag,notify", text=EVIL_TEXT)
    a.at(6).key(b"exit\r").out(b"exit\r\n")
    head_a = a.w.close(0, "exit").head.hex()
    for t_us, rule, severity, trigger, actions, text in (
        (FLAG1_US, "no-rm-rf", "high", "command", "flag,warn", COMMAND),
        (FLAG2_US, EVIL_RULE, "critical", "output", "flag,notify", EVIL_TEXT),
    ):
        flag = Flag(str(sid_a), STARTED + timedelta(microseconds=t_us), t_us, rule, severity, trigger, actions, text)
        svc.rule_matched(rec_a, flag, notify="notify" in actions)
    svc.session_ended(rec_a, 0, "exit", head_a)

    b = Script(d.recordings / f"{sid_b}.zsprec", key, session_id=sid_b, user="bob", target="web1")
    rec_b = _record(d, svc, sid_b, "bob", "web1", b)
    b.at(1).out(b"$ ").at(2).key(b"echo needle\r").out(b"echo needle\r\nneedle\r\n$ ")
    svc.session_ended(rec_b, 0, "exit", b.w.close(0, "exit").head.hex())

    index = open_index(d)
    try:
        for path in (a.path, b.path):
            index_one(d, path, index)
    finally:
        index.close()
    return Flagged(d, svc, str(sid_a), str(sid_b))


def zsp(capsys: pytest.CaptureFixture[str], f: Flagged, *args: str) -> tuple[int, str, str]:
    """``zsp ARGS --data DIR`` in this process (the same ``main`` the console script runs)."""
    code = main([*args, "--data", str(f.data.root)])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- zsp sessions ----------------------------------------------------------------------------


def test_sessions_json_counts_flags_and_flagged_keeps_only_those(flagged: Flagged, capsys) -> None:
    code, out, _ = zsp(capsys, flagged, "sessions", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)}
    assert (rows[flagged.a]["flags"], rows[flagged.a]["flag_severity"]) == (2, "critical")
    assert (rows[flagged.b]["flags"], rows[flagged.b]["flag_severity"]) == (0, None)
    assert rows[flagged.a]["review_flags"] == [] == rows[flagged.b]["review_flags"]  # masking: not this
    code, out, _ = zsp(capsys, flagged, "sessions", "--flagged", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [flagged.a]
    code, out, _ = zsp(capsys, flagged, "sessions", "--flagged", "--user", "bob", "--json")
    assert code == 0 and json.loads(out) == []


def test_sessions_table_has_a_flags_column(flagged: Flagged, capsys) -> None:
    code, out, _ = zsp(capsys, flagged, "sessions")
    assert code == 0
    header, *rows = out.splitlines()
    assert "FLAGS" in header.split()
    col = header.index("FLAGS")
    by_id = {line.split()[0]: line for line in rows}
    assert by_id[flagged.a][col:].startswith("2 critical")
    assert by_id[flagged.b][col : col + 5].strip() == ""  # blank for none
    code, out, _ = zsp(capsys, flagged, "sessions", "--flagged")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [flagged.a]


# --- zsp search --flagged --------------------------------------------------------------------


def test_search_flagged_lists_the_moments_exactly_in_json(flagged: Flagged, capsys) -> None:
    code, out, _ = zsp(capsys, flagged, "search", "--flagged", "--json")
    assert code == 0
    first, second = json.loads(out)  # newest last
    assert first == {
        "session_id": flagged.a,
        "at": "2026-09-21T14:13:22.000000Z",
        "t": 2.0,
        "rule": "no-rm-rf",
        "severity": "high",
        "trigger": "command",
        "actions": "flag,warn",
        "text": COMMAND,
        "user": "alice",
        "target": "db1",
        "login": "root",
        "started_at": "2026-09-21T14:13:20.000000Z",
        "path": str(flagged.data.recordings / f"{flagged.a}.zsprec"),
        "play": f"zsp play --data {flagged.data.root} {flagged.a} --from 2.000",
    }
    assert (second["rule"], second["text"], second["t"]) == (EVIL_RULE, EVIL_TEXT, 5.0)  # exact, unescaped
    code, out, _ = zsp(capsys, flagged, "search", "--flagged", "--json", "--limit", "1")
    assert code == 0 and [m["rule"] for m in json.loads(out)] == [EVIL_RULE]  # the newest one


def test_search_flagged_text_is_escaped_and_names_the_play_command(flagged: Flagged, capsys) -> None:
    code, out, err = zsp(capsys, flagged, "search", "--flagged")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4  # two moments, two lines each: the hostile newlines forged none
    assert lines[0].startswith(f"{flagged.a[-8:]}  2026-09-21 14:13:22Z +0:00:02  alice  root@db1  no-rm-rf (high, command)")
    assert lines[0].endswith(COMMAND)
    assert lines[1] == f"    zsp play --data {flagged.data.root} {flagged.a} --from 2.000"
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "evil\\x1b[2J\\nrule[reverse] (critical, output)" in lines[2]
    assert "\\x1b]52;c;cHdu\\x07gotcha\\r\\nforged line [bold red]x[/]" in lines[2]
    # The printed command opens that moment: the command line the rule matched is on the screen.
    code = main([*lines[1].split()[1:], "--instant"])  # pasted as printed
    shown = capsys.readouterr()
    assert code == 0, shown.err
    assert COMMAND in shown.out


def test_search_flagged_filters_and_refusals(flagged: Flagged, capsys) -> None:
    code, out, err = zsp(capsys, flagged, "search", "--flagged", "--user", "bob")
    assert (code, out) == (1, "") and "no flagged moments" in err
    code, out, _ = zsp(capsys, flagged, "search", "--flagged", "--target", "db1", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = zsp(capsys, flagged, "search", "--flagged", "--session", flagged.a[-8:], "--json")
    assert code == 0 and len(json.loads(out)) == 2
    code, _, err = zsp(capsys, flagged, "search", "--flagged", "--commands-only")
    assert code == 2 and "--commands-only needs words" in err


def test_search_flagged_with_words_searches_only_flagged_sessions(flagged: Flagged, capsys) -> None:
    code, out, _ = zsp(capsys, flagged, "search", "needle", "--json")
    assert code == 0 and {h["session_id"] for h in json.loads(out)} == {flagged.a, flagged.b}
    code, out, _ = zsp(capsys, flagged, "search", "--flagged", "needle", "--json")
    hits = json.loads(out)
    assert code == 0 and hits and {h["session_id"] for h in hits} == {flagged.a}
    code, out, _ = zsp(capsys, flagged, "search", "needle", "--flagged", "--user", "bob")
    assert code == 1 and out == ""


# --- the review app --------------------------------------------------------------------------


async def until(pilot, cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Let the app run (workers, timers) until ``cond()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def _app(f: Flagged) -> ReviewApp:
    return ReviewApp(ReviewContext.open(f.data, "dora", "console"))


async def test_sessions_show_the_flag_count_and_f_toggles_flagged_only(flagged: Flagged) -> None:
    from zsp_tui.tui.widgets.session_table import SessionTable

    app = _app(flagged)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        table = screen.query_one(SessionTable)
        count = screen.query_one("#count")
        await until(pilot, lambda: table.total == 2 and table.row(1) is not None and screen.flagged is not None, "rows")
        cells = {table.row(i).session.id: table.cells(table.row(i)) for i in range(2)}
        assert str(cells[flagged.a]["flags"]) == "2 critical" and str(cells[flagged.b]["flags"]) == ""
        assert "FLAGS" in table.visible_lines()[0]
        assert "2 of 2 sessions · 1 flagged (f)" in str(count.render())
        await pilot.press("f")
        await until(pilot, lambda: table.query_value.flagged and table.total == 1 and table.row(0), "flagged only")
        assert table.row(0).session.id == flagged.a
        assert "1 of 2 sessions · flagged only" in str(count.render())
        await pilot.press("f")
        await until(pilot, lambda: not table.query_value.flagged and table.total == 2, "all again")


async def test_at_80_columns_the_flags_fit_beside_the_rest_and_the_footer_keeps_quit(flagged: Flagged) -> None:
    from textual.widgets import Footer

    from zsp_tui.tui.widgets.session_table import SessionTable

    app = _app(flagged)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: table.total == 2 and table.row(1) is not None, "rows")
        lines = table.visible_lines()
        for title in ("STATUS", "VERIFIED", "FLAG", "USER", "LOGIN@TARGET", "GRANT", "STARTED"):
            assert title in lines[0], lines[0]
        row = next(table.row(i) for i in range(2) if table.row(i).session.id == flagged.a)
        assert any(" 2C " in line for line in lines[1:3]) and all(len(line) <= 80 for line in lines)
        assert str(table.cells(row)["flags"]) == "2 critical"  # whole, where there is room

        def footer() -> dict[str, object]:
            return {str(k.description): k.region for k in app.screen.query_one(Footer).query("FooterKey")}

        await until(pilot, lambda: "Quit" in footer(), "the footer")
        assert footer()["Quit"].right <= 80


async def test_replay_marks_the_flagged_moments_and_f_jumps_between_them(flagged: Flagged) -> None:
    from textual.widgets import Static

    from zsp_tui.tui.playback import MarkKind
    from zsp_tui.tui.screens.replay import ReplayScreen
    from zsp_tui.tui.widgets.terminal_view import TerminalView
    from zsp_tui.tui.widgets.timeline import Timeline

    app = _app(flagged)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_replay(flagged.a, at_us=0)
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.playback is not None, "replay")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await until(pilot, lambda: screen.report is not None and not screen._seeking, "verdict")
        timeline = screen.query_one(Timeline)
        marks = [m for m in timeline.markers_by_column(timeline.size.width).values() if m.kind is MarkKind.FLAG]
        assert sorted(m.t_us for m in marks) == [FLAG1_US, FLAG2_US]

        def status() -> str:
            return str(screen.query_one("#status", Static).render())

        def at(lo: int, hi: int) -> bool:
            pb = screen.playback
            return pb is not None and not screen._seeking and lo <= pb.pos_us <= hi

        await pilot.press("f")
        await until(pilot, lambda: at(FLAG1_US, FLAG1_US + 200_000), "the first flagged moment")
        assert screen.playback.paused
        assert any(COMMAND in line for line in screen.query_one(TerminalView).screen_value.lines)
        await until(pilot, lambda: "⚑ 1/2 no-rm-rf (high, command): sudo rm -rf /srv/needle" in status(), "its rule")

        await pilot.press("f")
        await until(pilot, lambda: at(FLAG2_US, FLAG2_US), "the second flagged moment")
        await until(pilot, lambda: "⚑ 2/2 evil" in status(), "the hostile rule, escaped")
        shown = status()
        assert "\x1b" not in shown and "\n" not in shown and "\x07" not in shown
        assert "evil\\x1b[2J\\nrule[reverse] (critical, output): \\x1b]52;c;cHdu\\x07gotcha" in shown

        await pilot.press("F")
        await until(pilot, lambda: at(FLAG1_US, FLAG1_US + 200_000), "back to the first")
        await pilot.press("F")  # none earlier: it stays
        await pilot.pause(0.3)
        assert at(FLAG1_US, FLAG1_US + 200_000)


async def test_a_flagged_moment_no_signature_covers_is_marked_but_not_named(tmp_path: Path) -> None:
    """A recording cut short after a rule fired (INCOMPLETE): the marker shows where, the status
    line shows nothing of what the unsigned frame says."""
    from textual.widgets import Static

    from zsp_tui.tui.screens.replay import ReplayScreen

    d, svc, key = _data_dir(tmp_path)
    sid = uuid.UUID(int=0xC3)
    c = Script(d.recordings / f"{sid}.zsprec", key, session_id=sid)
    _record(d, svc, sid, "alice", "db1", c)
    c.at(1).out(b"$ ").at(1.5).key(b"id\r").out(b"id\r\nuid=0(root)\r\n$ ")
    c.at(5).w.tick()  # signs everything so far
    c.w.event("rule.match", "unsigned", rule="unsigned-rule", severity="high", trigger="command",
              actions="flag", text="UNSIGNED-TEXT")
    c.w.flush()  # and the recorder dies: never signed, never sealed
    f = Flagged(d, svc, str(sid), "")
    app = _app(f)
    async with app.run_test(size=(120, 30)) as pilot:
        app.open_replay(f.a, at_us=0)
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen) and app.screen.playback is not None, "replay")
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await until(pilot, lambda: screen.report is not None and not screen._seeking, "verdict")
        assert screen.report.outcome.value == "INCOMPLETE"
        await pilot.press("f")
        await until(pilot, lambda: "⚑ 1/1" in str(screen.query_one("#status", Static).render()), "the marker")
        shown = str(screen.query_one("#status", Static).render())
        assert "not signed: not shown" in shown
        assert "unsigned-rule" not in shown and "UNSIGNED-TEXT" not in shown
