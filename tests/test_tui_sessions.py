"""Sessions area: Pilot drives the list over real sessions recorded through the bastion (and,
for paging, 20,000 synthetic store rows): filter as you type, sort by keys and header clicks,
Enter opens Replay, the count line, verification badges, flags, hostile stored text, 80x24."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events

from tests.session_rows import fill_sessions
from zsp_tui.audit import NewEvent
from zsp_tui.indexing import index_one
from zsp_tui.store import SessionQuery, SessionSort
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.widgets.session_table import KEEP_PAGES, PAGE, SessionTable

HOSTILE = "[reverse]x[/] \x1b[2J\u202e[bold red]boom[/]" + "W" * 300


async def until(pilot, cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Let the app run (workers, timers) until ``cond()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def lines(table: SessionTable) -> list[str]:
    return table.visible_lines()


def count_line(app) -> str:
    return str(app.screen.query_one("#count").render())


def loaded(table: SessionTable) -> bool:
    return table.total > 0 and all(
        table.row(i) is not None for i in range(min(table.total, table.scrollable_content_region.height - 1))
    )


def app_for(reviewed, user: str = "carol") -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"))


async def test_the_list_shows_every_real_session_with_status_badge_grant_and_count(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table) and app.screen.verified is not None, "rows and outcomes")
        shown = lines(table)
        assert "STATUS" in shown[0] and "VERIFIED" in shown[0] and "GRANT / REASON" in shown[0]
        body = shown[1:4]
        assert len([ln for ln in body if "sealed" in ln and "VALID" in ln]) == 3, body
        assert any("alice" in ln and "@srv" in ln for ln in body)
        assert any("@local" in ln for ln in body)
        assert "3 of 3 sessions" in count_line(app)
        # Newest first by default: the order the store's start times give.
        started = [reviewed.svc.session(sid).started_at for sid in reviewed.ids.values()]
        assert [table.row(i).session.started_at for i in range(3)] == sorted(started, reverse=True)


async def test_filter_as_you_type_narrows_the_list_and_clearing_brings_it_back(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        await pilot.press("slash")
        assert app.focused is app.screen.query_one("#filter")
        for key in "HELLO-EXEC":  # the exec session's command, typed in capitals: case-insensitive
            await pilot.press(key if key != "-" else "minus")
        await until(pilot, lambda: table.total == 1 and loaded(table), "the filtered list")
        assert table.row(0).session.id == reviewed.ids["exec"]
        assert "1 of 3 sessions" in count_line(app)
        assert table.query_value.text == "HELLO-EXEC"
        await pilot.press("ctrl+u")  # clear the input (Textual's delete to start)
        for key in "nothing-like-this":
            await pilot.press(key if key != "-" else "minus")
        await until(pilot, lambda: table.total == 0, "an empty list")
        assert "0 of 3 sessions" in count_line(app)
        assert lines(table)[1].strip() == "no sessions match"
        await pilot.press("ctrl+u")
        await until(pilot, lambda: table.total == 3 and loaded(table), "every session again")
        await pilot.press("escape")
        assert app.focused is table


async def test_sort_keys_and_header_clicks_reorder_the_list(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")

        def order() -> list[str]:
            return [table.row(i).session.target for i in range(3)]

        await pilot.press("s")  # started -> user
        await until(pilot, lambda: table.query_value.sort is SessionSort.USER and loaded(table), "sort by user")
        await pilot.press("s")  # -> target, descending kept
        await until(pilot, lambda: table.query_value.sort is SessionSort.TARGET and loaded(table), "sort by target")
        assert order() == ["srv", "local", "local"]
        await pilot.press("r")
        await until(pilot, lambda: not table.query_value.descending and loaded(table), "reversed")
        assert order() == ["local", "local", "srv"]
        assert "sorted by target ↑" in count_line(app)
        # Click the STARTED title: newest first again.
        header = lines(table)[0]
        x = header.index("STARTED")
        await pilot.click(SessionTable, offset=(x + 1, 0))
        await until(pilot, lambda: table.query_value.sort is SessionSort.STARTED and loaded(table), "click sort")
        assert table.query_value.descending
        assert "STARTED ▼" in lines(table)[0]
        await pilot.click(SessionTable, offset=(x + 1, 0))
        await until(pilot, lambda: not table.query_value.descending and loaded(table), "click reverses")


async def test_enter_and_a_click_open_the_replay_of_the_selected_row(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        await pilot.click(SessionTable, offset=(5, 3))  # third row (line 0 is the header)
        assert table.cursor == 2
        wanted = table.row(2).session.id
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "ReplayScreen", "replay")
        assert app.screen.session_id == wanted
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "SessionsScreen", "back to the list")
        assert app.screen.query_one(SessionTable).cursor == 2
        await pilot.press("up")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "ReplayScreen", "replay")
        assert app.screen.session_id == table.row(1).session.id


async def test_twenty_thousand_sessions_page_lazily_through_keys_and_wheel(reviewed) -> None:
    fill_sessions(reviewed.data.db_path, 20_000)
    app = app_for(reviewed)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "first page")
        assert "20,003 of 20,003 sessions" in count_line(app)
        assert table.fetches == 1 and table.cached_rows == PAGE  # one page, not 20,000 rows
        await pilot.press("end")
        await until(pilot, lambda: loaded(table) and table.row(table.total - 1) is not None, "last page")
        assert table.cursor == 20_002
        assert "…n-000000" in lines(table)[-1]  # drawn, as the short id (the last 8 characters)
        assert table.row(20_002).session.id == "syn-000000"  # oldest last, newest first
        for _ in range(30):
            await pilot.press("pageup")
        await until(pilot, lambda: table.row(table.cursor) is not None, "a middle page")
        assert table.cursor == 20_002 - 30 * (table.scrollable_content_region.height - 1)
        assert table.cached_rows <= KEEP_PAGES * PAGE
        await pilot.press("home")
        await until(pilot, lambda: loaded(table), "first page again")
        top = table.row(0).session.id
        for _ in range(3):  # the mouse wheel, as the terminal driver delivers it
            table.post_message(events.MouseScrollDown(table, 5, 5, 0, 1, 0, False, False, False))
        await until(pilot, lambda: table.scroll_offset.y > 0, "wheel scrolls")
        assert table.cursor == 0 and table.row(0).session.id == top
        # Typing filters the 20,003 in the store, not in memory.
        await pilot.press("slash", *"replica")
        await until(pilot, lambda: table.query_value.text == "replica" and loaded(table), "filtered")
        assert table.total == 5_000
        assert "5,000 of 20,003 sessions" in count_line(app)
        assert all("replica" in (table.row(i).reason or "") for i in range(20))
        # End in the same moment a new count lands still scrolls to the last row and draws it.
        await until(pilot, lambda: not app.screen.workers, "quiet")
        table.reload(SessionQuery(), 20_003, keep_cursor=False)
        table.action_edge(1)
        await pilot.pause()
        await pilot.pause()  # one layout later, well before the 5-second refresh
        assert table.scroll_offset.y == 20_002 - (table.scrollable_content_region.height - 1) + 1
        await until(pilot, lambda: table.row(20_002) is not None, "the last row")
        assert table.scroll_offset.y == 20_002 - (table.scrollable_content_region.height - 1) + 1
        assert "…n-000000" in lines(table)[-1]


async def test_hostile_reason_and_names_are_drawn_literally(reviewed) -> None:
    grant = reviewed.svc.session(reviewed.ids["shell"]).grant_id
    con = sqlite3.connect(reviewed.data.db_path)
    with con:
        con.execute("UPDATE requests SET reason = ? WHERE id = ?", (HOSTILE, grant))
        con.execute("UPDATE sessions SET end_reason = ? WHERE id = ?", ("[b]E[/]\x07", reviewed.ids["exec"]))
    con.close()
    app = app_for(reviewed)
    async with app.run_test(size=(200, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        shown = "\n".join(lines(table))
        assert "[reverse]x[/] \\x1b[2J\\u202e[bold red]" in shown
        assert "[b]E[/]\\x07" in shown
        assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
        # No markup was applied: nothing in the hostile row is reversed, bold red or blinking.
        y = next(i for i, ln in enumerate(lines(table)) if "[reverse]" in ln)
        for seg in table.render_line(y):
            if seg.style is not None:
                assert not seg.style.bold and not (seg.style.color and seg.style.color.name == "red")
        # The 300-character reason is clipped to its column, the line to the table's width.
        assert all(len(ln) <= table.scrollable_content_region.width for ln in lines(table))
        # And filtering by the hostile text finds it literally ([ and ] are no patterns).
        await pilot.press("slash", *"[reverse]x[/]")
        await until(pilot, lambda: table.query_value.text == "[reverse]x[/]" and loaded(table), "filtered")
        assert table.total == 1 and table.row(0).session.id == reviewed.ids["shell"]


async def test_flagged_and_unverified_sessions_show_it(reviewed) -> None:
    shell = reviewed.ids["shell"]
    reviewed.svc.record_event(
        NewEvent("input.masked.excessive", "alice", "ssh", "masked 4,000 bytes", session_id=shell)
    )
    path = reviewed.svc.session(reviewed.ids["exec"]).path
    with open(path, "ab") as f:  # the recording changed since it was verified
        f.write(b"\0")
    app = app_for(reviewed)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table) and app.screen.verified is not None, "rows and outcomes")
        by_id = {table.row(i).session.id: table.cells(table.row(i)) for i in range(3)}
        assert str(by_id[shell]["status"]) == "sealed!"
        assert "masked more input than a password needs" in count_line(app)
        assert str(by_id[reviewed.ids["exec"]]["badge"]) == "unverified"
        assert str(by_id[reviewed.ids["local"]]["badge"]) == "VALID"


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_the_layout_fits_a_small_terminal(reviewed, size) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table) and app.screen.verified is not None, "rows")
        header = lines(table)[0]
        for title in ("STATUS", "VERIFIED", "USER", "LOGIN@TARGET", "STARTED", "GRANT"):
            assert title in header, header
        assert all(len(ln) <= size[0] for ln in lines(table))
        assert table.scrollable_content_region.height >= 10


async def test_l_shows_only_live_then_only_ended_sessions(reviewed) -> None:
    fill_sessions(reviewed.data.db_path, 300, live_every=97)  # syn-000096, -193, -290 still running
    app = app_for(reviewed)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        await pilot.press("l")
        await until(pilot, lambda: table.total == 3 and loaded(table), "live only")
        assert {table.row(i).session.id for i in range(3)} == {"syn-000096", "syn-000193", "syn-000290"}
        assert all(ln.startswith("live") for ln in lines(table)[1:4])
        assert "3 of 303 sessions · live only" in count_line(app)
        await pilot.press("l")
        await until(pilot, lambda: table.total == 300 and loaded(table), "ended only")
        assert not any(ln.startswith("live") for ln in lines(table)[1:])
        await pilot.press("l")
        await until(pilot, lambda: table.total == 303, "all again")


async def test_a_store_that_fails_is_reported_not_shown_as_empty(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        con = sqlite3.connect(reviewed.data.db_path)
        with con:
            con.execute("ALTER TABLE sessions RENAME TO sessions_gone")
        con.close()
        await pilot.press("r")
        await until(pilot, lambda: "cannot read the sessions" in count_line(app), "the error")
        assert "no such table" in count_line(app)
        assert table.total == 3  # the last good list stays, with the error beside it


async def test_the_cursor_stays_on_its_session_when_new_ones_arrive(reviewed) -> None:
    app = app_for(reviewed)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table), "rows")
        await pilot.press("down", "down")
        chosen = table.row(2).session.id
        # Two sessions start meanwhile (store rows newer than every other).
        con = sqlite3.connect(reviewed.data.db_path)
        with con:
            for sid in ("new-1", "new-2"):
                con.execute(
                    "INSERT INTO sessions(id, user, target, login, command, client, path, started_at) "
                    "VALUES (?, 'alice', 'srv', 'root', NULL, '127.0.0.1:1', '/nonexistent', "
                    "'2099-01-01T00:00:00.000000Z')",
                    (sid,),
                )
        con.close()
        app.screen._run_refresh()  # what the 5-second timer does
        await until(pilot, lambda: table.total == 5 and loaded(table), "the new sessions")
        await until(pilot, lambda: table.cursor == 4, "the cursor to follow")
        assert table.selected.session.id == chosen
        assert "5 of 5 sessions" in count_line(app)
        assert {table.row(0).session.id, table.row(1).session.id} == {"new-1", "new-2"}


async def test_a_tampered_recording_once_indexed_shows_corrupt(reviewed) -> None:
    local = reviewed.ids["local"]
    path = Path(reviewed.svc.session(local).path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55  # one flipped byte in the middle of the recording
    path.write_bytes(bytes(data))
    index_one(reviewed.data, path)  # what the background indexer or `zsp index` does
    app = app_for(reviewed)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.screen.query_one(SessionTable)
        await until(pilot, lambda: loaded(table) and app.screen.verified is not None, "rows and outcomes")
        cells = {table.row(i).session.id: table.cells(table.row(i)) for i in range(3)}
        assert str(cells[local]["status"]) == "corrupt"
        assert str(cells[local]["badge"]) == "CORRUPT"
        assert {str(c["badge"]) for sid, c in cells.items() if sid != local} == {"VALID"}
        line = next(ln for ln in lines(table) if ln.startswith("corrupt"))
        assert "CORRUPT" in line


async def test_a_role_without_sessions_or_audit_cannot_reach_them(reviewed) -> None:
    app = app_for(reviewed, "bob")  # approver: live and requests only
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        for key in ("1", "5"):
            await pilot.press(key)
            await pilot.pause()
            assert app.current_mode == "live"
        assert not app.screen.query(SessionTable)
        assert type(app.screen).__name__ not in ("SessionsScreen", "AuditScreen")
