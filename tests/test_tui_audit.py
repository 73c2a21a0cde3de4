"""Audit area: Pilot drives the audit log of a data dir filled through the real bastion: newest
first, filters by actor, event prefix and time, the selected event's fields, paging back through
a long log, the chain verdict (VALID, and BROKEN at the tampered frame), hostile values."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from textual.widgets import DataTable, Input, Static

from zsp_tui.audit import NewEvent
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.audit import PAGE

HOSTILE = "[reverse]x[/] \x1b[2J\u202e"


async def until(pilot, cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def audit_app(reviewed, user: str = "carol") -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"), start="audit")


def shown(app) -> list[str]:
    """The event list as drawn: one string per row (its cells joined)."""
    table = app.screen.query_one("#events", DataTable)
    return [" ".join(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def ready(app) -> bool:
    s = app.screen
    return type(s).__name__ == "AuditScreen" and not s._loading and s.report is not None


async def type_into(pilot, app, selector: str, value: str) -> None:
    app.screen.query_one(selector, Input).focus()
    await pilot.pause()
    app.screen.query_one(selector, Input).value = ""
    await pilot.press(*[{" ": "space", ".": "full_stop", "-": "minus"}.get(ch, ch) for ch in value])


async def test_newest_first_with_a_valid_chain_and_the_selected_events_fields(reviewed) -> None:
    everything = reviewed.svc.audit_events()
    app = audit_app(reviewed)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: ready(app), "events and verdict")
        screen = app.screen
        chain = text_of(app, "#chain")
        assert chain.startswith("audit chain VALID"), chain
        assert "every event signed" in chain
        # The newest event is carol opening the app; the list runs backwards from there.
        assert screen.events[0].event == "review.open" and screen.events[0].actor == "carol"
        seqs = [e.seq for e in screen.events]
        assert seqs == sorted(seqs, reverse=True)
        assert seqs[1:] == [e.seq for e in reversed(everything)][: len(seqs) - 1]
        assert "review.open" in shown(app)[0] and "carol" in shown(app)[0]
        detail = text_of(app, "#detail")
        assert "event review.open" in detail and "actor carol via console" in detail
        await pilot.press("down")
        second = screen.events[1]
        detail = text_of(app, "#detail")
        assert f"seq {second.seq}" in detail and second.message[:30] in detail


async def test_filters_by_actor_event_prefix_and_time(reviewed) -> None:
    app = audit_app(reviewed)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: ready(app), "events")
        screen = app.screen
        await pilot.press("a")
        assert app.focused is screen.query_one("#actor", Input)
        await pilot.press(*"bob", "enter")
        await until(pilot, lambda: screen.filter.actor == "bob" and not screen._loading, "actor filter")
        assert screen.events and {e.actor for e in screen.events} == {"bob"}
        assert all(" bob " in row for row in shown(app))
        assert "actor bob" in text_of(app, "#status")
        await type_into(pilot, app, "#actor", "")
        await type_into(pilot, app, "#event", "grant.")
        await until(
            pilot,
            lambda: screen.filter == screen.filter.__class__("", "grant.", None) and not screen._loading,
            "event filter",
        )
        assert screen.events and all(e.event.startswith("grant.") for e in screen.events)
        everything = reviewed.svc.audit_events()
        assert len(screen.events) == len([e for e in everything if e.event.startswith("grant.")])
        await type_into(pilot, app, "#since", "yesterday")
        await until(pilot, lambda: screen.error is not None, "a refused time")
        assert "since: not a time" in text_of(app, "#status")
        assert screen.filter.since is None and screen.events  # the list stays as it was
        await type_into(pilot, app, "#since", "2099-01-01")
        await until(pilot, lambda: screen.filter.since is not None and not screen._loading, "future time")
        assert screen.events == [] and screen.query_one("#events", DataTable).row_count == 0
        await type_into(pilot, app, "#since", "1d")
        await until(pilot, lambda: screen.filter.since is not None and screen.events, "the last day")
        assert all(e.event.startswith("grant.") for e in screen.events)


async def test_a_long_log_is_read_a_page_at_a_time(reviewed) -> None:
    for i in range(PAGE + 150):
        reviewed.svc.record_event(NewEvent("review.search", "carol", "console", f"search {i}"))
    total = len(reviewed.svc.audit_events())
    app = audit_app(reviewed)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: ready(app), "first page")
        screen = app.screen
        assert len(screen.events) == PAGE and not screen.exhausted
        assert "200+ events" in text_of(app, "#status")
        await pilot.press("end")
        await until(pilot, lambda: screen.exhausted and not screen._loading, "the rest")
        await pilot.press("end")
        await until(pilot, lambda: not screen._loading, "settled")
        assert len(screen.events) == total + 1  # and carol's review.open
        assert [e.seq for e in screen.events] == sorted({e.seq for e in screen.events}, reverse=True)
        # New events appear at the top on the next refresh.
        reviewed.svc.record_event(NewEvent("review.search", "carol", "console", "the newest"))
        screen._look_for_newer()
        await until(pilot, lambda: screen.events[0].message == "the newest", "a newer event")


async def test_a_tampered_audit_row_shows_the_chain_broken_at_that_seq(reviewed) -> None:
    con = sqlite3.connect(reviewed.data.db_path)
    seq, body = next((s, b) for s, b in con.execute("SELECT seq, body FROM audit ORDER BY seq") if b"alice" in bytes(b))
    with con:  # the same length, still valid msgpack: only the chain can tell
        con.execute("UPDATE audit SET body = ? WHERE seq = ?", (bytes(body).replace(b"alice", b"mallo", 1), seq))
    con.close()
    app = audit_app(reviewed)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: ready(app), "verdict")
        chain = text_of(app, "#chain")
        assert chain.startswith(f"audit chain BROKEN at seq {seq} "), chain
        assert "CORRUPT" in chain
        assert app.screen.query_one("#chain").has_class("broken")
        assert not app.screen.report.ok


async def test_hostile_values_are_shown_literally(reviewed) -> None:
    reviewed.svc.record_event(
        NewEvent(
            "user.login.failure",
            HOSTILE,
            "ssh",
            f"refused {HOSTILE}",
            outcome="failure",
            target=HOSTILE,
            fields={"reason": HOSTILE},
        )
    )
    app = audit_app(reviewed)
    async with app.run_test(size=(120, 34)) as pilot:
        await until(pilot, lambda: ready(app), "events")
        screen = app.screen
        index = next(
            i
            for i, e in enumerate(screen.events)
            if e.event == "user.login.failure" and e.via == "ssh" and e.actor == HOSTILE
        )
        screen.query_one("#events", DataTable).move_cursor(row=index)
        await pilot.pause()
        detail = text_of(app, "#detail")
        escaped = "[reverse]x[/] \\x1b[2J\\u202e"
        assert f"actor {escaped} via ssh" in detail
        assert f"reason {escaped}" in detail and f"target {escaped}" in detail
        assert "\x1b" not in detail and "\u202e" not in detail
        assert escaped in shown(app)[index]
        await type_into(pilot, app, "#actor", "[reverse]x[/]")
        await until(pilot, lambda: screen.filter.actor == "[reverse]x[/]" and not screen._loading, "filter")
        assert screen.events == []  # exact actor names: a prefix of one matches nothing


async def test_the_audit_screen_fits_80x24(reviewed) -> None:
    app = audit_app(reviewed)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: ready(app), "events and verdict")
        screen = app.screen
        chain = screen.query_one("#chain")
        assert chain.region.height >= 1 and chain.region.y <= 2  # the verdict right under the area bar
        table = screen.query_one("#events", DataTable)
        assert table.region.height >= 6 and table.region.right <= 80
        box = screen.query_one("#detail-box")
        assert box.region.height >= 5 and box.region.bottom <= 23
        for key in ("#actor", "#event", "#since"):
            assert screen.query_one(key).region.width >= 20
