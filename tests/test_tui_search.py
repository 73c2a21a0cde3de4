"""Search area of the review app: a query with the filters of ``zsp search`` over sessions recorded
through the real bastion; Enter on a hit opens Replay at that moment; every search is audited once."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Checkbox, DataTable, Input, Static

from replay import HitKind, IndexedSession, Row
from zsp_tui.indexing import open_index
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.screens.search import SearchScreen


def _app(reviewed, user: str = "carol") -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"), start="search")


async def _search(app: ReviewApp, pilot, query: str, **filters: str) -> DataTable:
    screen = app.screen
    assert isinstance(screen, SearchScreen)
    for name, value in filters.items():
        screen.query_one(f"#{name}", Input).value = value
    box = screen.query_one("#query", Input)
    box.value = query
    box.focus()
    await pilot.press("enter")
    await app.workers.wait_for_complete()
    await pilot.pause()
    return screen.query_one("#results", DataTable)


def _status(app: ReviewApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


def _cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _drawn(table: DataTable) -> str:
    """What the table draws on the terminal, line by line (markup in a bare str cell would be
    consumed here, not in the stored cell value)."""
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def _searches(reviewed) -> list:
    return [e for e in reviewed.svc.audit_events() if e.event == "review.search"]


async def test_enter_on_a_hit_opens_replay_at_that_moment_highlighted(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen)
        # typed, key by key, as a reviewer would
        await pilot.click("#query")
        await pilot.press(*"kubectl", "space", *"delete", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.screen.query_one("#results", DataTable)
        rows = _cells(table)
        assert rows, _status(app)
        assert all(r[0] == reviewed.ids["shell"][-8:] for r in rows)
        assert {r[4] for r in rows} == {"command", "output"}
        assert any("echo kubectl delete pod web-7f" in r[5] for r in rows)
        # the matched words are styled on the line (the spans), nothing else is
        line = table.get_row_at(0)[5]
        styled = {line.plain[s.start : s.end].lower() for s in line.spans if "reverse" in str(s.style)}
        assert styled == {"kubectl", "delete"}
        expected = open_index(reviewed.data).search("kubectl delete", limit=500)
        assert table.has_focus
        await pilot.press("enter")
        await pilot.pause()
        replay = app.screen
        assert isinstance(replay, ReplayScreen)
        first = expected[0]
        assert replay.session_id == first.session_id == reviewed.ids["shell"]
        assert replay.at_us == first.t_us
        assert first.text[first.spans[0][0] : first.spans[1][1]] == "kubectl delete"
        assert replay.highlight == "kubectl delete"  # the words matched, as the line shows them
        assert replay.follow is False
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen)
        assert app.screen.query_one("#results", DataTable).row_count == len(rows)  # results kept
        # the second hit opens at its own moment
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ReplayScreen) and app.screen.at_us == expected[1].t_us
    (event,) = _searches(reviewed)
    assert event.actor == "carol" and event.via == "console" and event.outcome == "success"
    assert event.fields["query"] == "kubectl delete" and event.fields["hits"] == len(expected)


async def test_each_submitted_search_is_audited_once_not_each_keystroke(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.click("#query")
        await pilot.press(*"hello-exec")
        await pilot.pause()
        assert _searches(reviewed) == []  # typing searches nothing
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await _search(app, pilot, "line-299")
        await _search(app, pilot, "no-such-thing-anywhere")
        assert "no match" in _status(app)
    events = _searches(reviewed)
    assert [(e.fields["query"], e.fields["hits"]) for e in events] == [
        ("hello-exec", 2),  # the command line and its output
        ("line-299", 1),
        ("no-such-thing-anywhere", 0),
    ]


async def test_filters_narrow_results_through_the_same_search_as_zsp_search(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        table = await _search(app, pilot, "echo")
        everything = {r[0] for r in _cells(table)}
        assert everything == {reviewed.ids[k][-8:] for k in ("shell", "exec", "local")}
        table = await _search(app, pilot, "echo", target="srv")
        assert {r[0] for r in _cells(table)} == {reviewed.ids["shell"][-8:]}
        table = await _search(app, pilot, "echo", target="", user="dave")
        assert table.row_count == 0 and "no match" in _status(app)
        table = await _search(app, pilot, "echo", user="alice", since="1d")
        assert {r[0] for r in _cells(table)} == everything
        table = await _search(app, pilot, "echo", since="2099-01-01")
        assert table.row_count == 0
        # commands only: toggling it re-runs the shown search
        table = await _search(app, pilot, "hello-exec", since="")
        assert {r[4] for r in _cells(table)} == {"command", "output"}
        app.screen.query_one("#commands", Checkbox).value = True
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [r[4] for r in _cells(table)] == ["command"]
    last = _searches(reviewed)[-1]
    assert last.fields["commands_only"] is True and last.fields["hits"] == 1
    assert [e.fields.get("filter_target") for e in _searches(reviewed)][:2] == [None, "srv"]


async def test_an_invalid_query_or_since_gives_one_clear_line(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await _search(app, pilot, "   ")
        assert "empty query" in _status(app)
        await _search(app, pilot, "-- ;;")
        assert "only punctuation" in _status(app)
        await _search(app, pilot, "echo", since="last tuesday")
        assert _status(app).startswith("since: not a time: 'last tuesday'")
        assert "Traceback" not in _status(app)
        assert isinstance(app.screen, SearchScreen)
    assert _searches(reviewed) == []  # nothing was searched


async def test_coverage_warns_when_recordings_are_not_indexed(reviewed) -> None:
    index = open_index(reviewed.data)
    try:
        index.remove(reviewed.svc.session(reviewed.ids["local"]).path)
    finally:
        index.close()
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        line = str(app.screen.query_one("#coverage", Static).render())
        assert "1 of 3 recordings are not in the search index" in line
        table = await _search(app, pilot, "line-299")
        assert table.row_count == 0


async def test_no_index_at_all_is_said_not_taken_for_no_match(reviewed) -> None:
    (reviewed.data.root / "search.db").unlink()
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "nothing is indexed yet" in str(app.screen.query_one("#coverage", Static).render())
        await _search(app, pilot, "echo")
        assert "nothing is indexed yet" in _status(app)
    (event,) = _searches(reviewed)
    assert event.outcome == "failure" and event.fields["hits"] == 0


async def test_hostile_names_and_lines_render_literally(reviewed) -> None:
    """A hit whose user, target and line hold markup and escape sequences shows them as text."""
    hostile = "[reverse]x[/] \x1b[2J\u202eevil [bold red]FAKE VALID[/]"
    index = open_index(reviewed.data)
    try:
        path = str(Path(reviewed.svc.session(reviewed.ids["exec"]).path).with_name("hostile.zsprec"))
        index.replace(
            IndexedSession(
                path=path, session_id="s-hostile-00000001", user="[b]eve[/b]", target="[link=x]srv[/]",
                login="root", grant_id=None, started_us=1_700_000_000_000_000, outcome="VALID",
            ),
            [Row(1_000_000, 3, HitKind.COMMAND, f"echo {hostile}")],
        )
    finally:
        index.close()
    app = _app(reviewed)
    async with app.run_test(size=(200, 30)) as pilot:
        await pilot.pause()
        table = await _search(app, pilot, "FAKE VALID")
        assert table.row_count == 1
        row = table.get_row_at(0)
        assert str(row[2]) == "[b]eve[/b]"
        assert str(row[3]) == "root@[link=x]srv[/]"
        assert str(row[5]) == "echo [reverse]x[/] \\x1b[2J\\u202eevil [bold red]FAKE VALID[/]"
        drawn = _drawn(table)
        assert "[b]eve[/b]" in drawn and "root@[link=x]srv[/]" in drawn
        assert "echo [reverse]x[/] \\x1b[2J\\u202eevil [bold red]FAKE VALID[/]" in drawn
        assert "\x1b" not in drawn and "\u202e" not in drawn
        detail = str(app.screen.query_one("#detail", Static).render())
        assert "[reverse]x[/]" in detail and "\x1b" not in detail and "\u202e" not in detail
        table.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ReplayScreen) and app.screen.highlight == "FAKE VALID"


async def test_search_works_at_80x24(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = await _search(app, pilot, "line-1")
        assert table.row_count > 10
        assert table.size.height >= 8  # room for results under the query and filters
        for widget_id in ("#query", "#user", "#target", "#since", "#commands", "#status"):
            w = app.screen.query_one(widget_id)
            assert w.region.right <= 80 and w.region.bottom <= 24 and w.region.height > 0, widget_id


async def test_the_mouse_selects_then_opens_a_hit(reviewed) -> None:
    app = _app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        table = await _search(app, pilot, "line-29")  # line-29, line-290..299: newest first
        expected = open_index(reviewed.data).search("line-29", limit=500)
        assert table.row_count == len(expected) > 3
        await pilot.click("#results", offset=(4, 3))  # the header is line 0: the third hit
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen) and table.cursor_row == 2  # highlighted only
        await pilot.click("#results", offset=(4, 3))  # a click on the highlighted hit opens it
        await pilot.pause()
        assert isinstance(app.screen, ReplayScreen)
        assert (app.screen.session_id, app.screen.at_us) == (expected[2].session_id, expected[2].t_us)
        assert app.screen.highlight == "line-29"
