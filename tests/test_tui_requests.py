"""Requests area of the review app: pending requests, approve and deny through the same service
calls as the CLI and ssh control commands, so every rule (no self-approval, only listed
approvers) holds in the app too; refusals are one clear line."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

from textual.widgets import DataTable, Input, Static

from zsp_tui.access import Actor
from zsp_tui.models import RequestState
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.dialogs import ConfirmDialog, ReasonDialog
from zsp_tui.tui.screens.requests import RequestsScreen


def _app(reviewed, user: str) -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"), start="requests")


async def _settle(app: ReviewApp, pilot) -> None:
    for _ in range(3):  # a decision's worker starts a reload worker
        await app.workers.wait_for_complete()
        await pilot.pause()


def _table(app: ReviewApp) -> DataTable:
    return app.screen.query_one("#requests", DataTable)


def _ids(app: ReviewApp) -> list[str]:
    return [str(_table(app).get_row_at(i)[0]) for i in range(_table(app).row_count)]


def _status(app: ReviewApp) -> str:
    return str(app.screen.query_one("#status", Static).render())


def _detail(app: ReviewApp) -> str:
    return str(app.screen.query_one("#detail", Static).render())


def _alice_ends_her_grants(reviewed) -> None:
    """The fixture's sessions left alice active grants; a new request needs none for that target."""
    for g in reviewed.svc.requests(active_only=True):
        if g.requester == "alice":
            reviewed.svc.revoke(Actor("alice"), g.id, "done")


def _drawn(table: DataTable) -> str:
    """What the table draws on the terminal (markup in a bare str cell would be consumed here)."""
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


async def _select(app: ReviewApp, pilot, request_id: str) -> None:
    table = _table(app)
    table.focus()
    table.move_cursor(row=table.get_row_index(request_id))
    await pilot.pause()


async def test_bob_approves_dave_s_request_with_a_confirmation(reviewed) -> None:
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert _ids(app) == [reviewed.pending]
        row = [str(c) for c in _table(app).get_row_at(0)]
        assert row[1:5] == ["dave", f"{reviewed.svc.get(reviewed.pending).login}@srv", "20m", "0/1"]
        assert row[6] == "INC-9 check disk"
        assert "dave asks for" in _detail(app) and "reason: INC-9 check disk" in _detail(app)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # cancelled: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, RequestsScreen)
        await pilot.press("a", "enter")  # Enter on an untouched confirmation is "Cancel", never a yes
        await _settle(app, pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert reviewed.svc.get(reviewed.pending).state is RequestState.PENDING
        await pilot.press("a")
        await pilot.pause()
        await pilot.click("#yes")  # the mouse works too
        await _settle(app, pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert f"approved {reviewed.pending}: dave may use" in _status(app)
        assert _ids(app) == []  # no longer pending
    r = reviewed.svc.get(reviewed.pending)
    assert r.state is RequestState.APPROVED and r.approvals == ("bob",)
    approvals = [e for e in reviewed.svc.audit_events() if e.event == "access_request.approve"]
    assert [(e.actor, e.via, e.grant_id) for e in approvals][-1] == ("bob", "console", reviewed.pending)


async def test_deny_asks_a_reason_and_records_it(reviewed) -> None:
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press("enter")  # no reason: not accepted, said in place
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        assert "a reason is required" in str(app.screen.query_one("#error", Static).render())
        await pilot.press(*"not", "space", *"during", "space", *"freeze", "enter")
        await _settle(app, pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert f"denied {reviewed.pending} of dave: not during freeze" in _status(app)
        assert _ids(app) == []
    r = reviewed.svc.get(reviewed.pending)
    assert r.state is RequestState.DENIED and r.note == "not during freeze" and r.ended_by == "bob"


async def test_alice_cannot_approve_her_own_request_and_it_stays_pending(reviewed) -> None:
    _alice_ends_her_grants(reviewed)
    own = reviewed.svc.request(Actor("alice"), "srv", None, timedelta(minutes=15), "INC-7 rotate certs")
    app = _app(reviewed, "alice")  # admin and operator
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        assert set(_ids(app)) == {reviewed.pending, own.id}
        await _select(app, pilot, own.id)
        assert "your own request" in _detail(app)
        await pilot.press("a", "y")
        await _settle(app, pilot)
        assert f"refused: alice cannot approve their own request {own.id}" in _status(app)
        assert "Traceback" not in _status(app)
        # nor dave's: alice is an admin but not one of the approvers its rule names
        await _select(app, pilot, reviewed.pending)
        await pilot.press("a", "y")
        await _settle(app, pilot)
        assert f"refused: alice may not approve {reviewed.pending} (approvers: role:approver)" in _status(app)
        assert set(_ids(app)) == {reviewed.pending, own.id}
    assert reviewed.svc.get(own.id).state is RequestState.PENDING
    assert reviewed.svc.get(reviewed.pending).state is RequestState.PENDING
    refused = [e for e in reviewed.svc.audit_events() if e.event == "access_request.refused"]
    assert [(e.actor, e.grant_id) for e in refused] == [("alice", own.id), ("alice", reviewed.pending)]


async def test_a_reviewer_has_no_requests_area(reviewed) -> None:
    app = ReviewApp(ReviewContext.open(reviewed.data, "carol", "console"), start="requests")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "requests" not in app.areas and app.current_mode == "sessions"
        await pilot.press("4")
        await pilot.pause()
        assert app.current_mode == "sessions"
        assert not any(isinstance(s, RequestsScreen) for s in app.screen_stack)
    assert reviewed.svc.get(reviewed.pending).state is RequestState.PENDING


async def test_the_list_refreshes_itself_and_shows_the_requester_s_history(reviewed) -> None:
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        assert _ids(app) == [reviewed.pending]
        # a request made elsewhere (the CLI) appears without a key; one decided elsewhere goes
        _alice_ends_her_grants(reviewed)
        earlier = reviewed.svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "first")
        reviewed.svc.deny(Actor("bob"), earlier.id, "use srv")
        new = reviewed.svc.request(Actor("alice"), "srv", None, timedelta(minutes=10), "INC-8 logs")
        reviewed.svc.deny(Actor("bob"), reviewed.pending, "decided on the CLI")
        deadline = time.monotonic() + 60  # a refresh or more, however slow the machine
        while _ids(app) != [new.id] and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert _ids(app) == [new.id]
        await _select(app, pilot, new.id)
        detail = _detail(app)
        assert f"{earlier.id}" in detail and "denied by bob: use srv" in detail
        assert "alice's last sessions" in detail
        for sid in reviewed.ids.values():
            assert sid[-8:] in detail  # her three recorded sessions


async def test_hostile_reason_and_target_render_literally(reviewed) -> None:
    reason = "[reverse]x[/] [bold red]APPROVED[/]"
    _alice_ends_her_grants(reviewed)
    r = reviewed.svc.request(Actor("alice"), "srv", None, timedelta(minutes=15), reason)
    # The service refuses control characters in reasons and markup in target names; a row
    # written otherwise (an older version, a restored backup) must still render as text.
    con = sqlite3.connect(reviewed.data.root / "zsp.db")
    try:
        con.execute("UPDATE requests SET reason = ?, target = ? WHERE id = ?",
                    (reason + " \x1b[2J\u202e", "[link=evil]srv[/]", r.id))
        con.commit()
    finally:
        con.close()
    app = _app(reviewed, "bob")
    async with app.run_test(size=(200, 30)) as pilot:
        await _settle(app, pilot)
        await _select(app, pilot, r.id)
        row = [str(c) for c in _table(app).get_row_at(_table(app).get_row_index(r.id))]
        assert row[2].endswith("@[link=evil]srv[/]")
        assert row[6] == "[reverse]x[/] [bold red]APPROVED[/] \\x1b[2J\\u202e"
        drawn = _drawn(_table(app))
        assert "@[link=evil]srv[/]" in drawn and "[reverse]x[/] [bold red]APPROVED[/] \\x1b[2J\\u202e" in drawn
        assert "\x1b" not in drawn and "\u202e" not in drawn
        detail = _detail(app)
        assert "reason: [reverse]x[/] [bold red]APPROVED[/] \\x1b[2J\\u202e" in detail
        assert "\x1b" not in detail and "\u202e" not in detail
        await pilot.press("d")
        await pilot.pause()
        body = str(app.screen.query_one(".dialog-body", Static).render())
        assert "[reverse]x[/]" in body and "\x1b" not in body
        app.screen.query_one("#reason", Input).value = "[b]no[/b]"
        await pilot.press("enter")
        await _settle(app, pilot)
        assert "denied" in _status(app) and "[b]no[/b]" in _status(app)
    assert reviewed.svc.get(r.id).note == "[b]no[/b]"


async def test_requests_fit_80x24(reviewed) -> None:
    app = _app(reviewed, "bob")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(app, pilot)
        table = _table(app)
        assert table.region.height >= 4 and table.region.right <= 80
        pane = app.screen.query_one("#detail-pane")
        assert pane.region.height >= 5 and pane.region.bottom <= 23
        await pilot.press("d")
        await pilot.pause()
        for w in ("#reason", "#ok", "#cancel"):
            region = app.screen.query_one(w).region
            assert region.right <= 80 and region.bottom <= 24 and region.height > 0, w


def test_workers_and_the_ui_thread_share_the_store_one_transaction_at_a_time(reviewed) -> None:
    """The app's threads (reloads every second or two, a decision, an audit event from the UI
    thread) all use the context's one service. Its SQLite store is one connection: without the
    context serialising transactions, two of them overlap and one fails with "cannot start a
    transaction within a transaction" (seen as a refused decision in the Requests area)."""
    import threading

    ctx = ReviewContext.open(reviewed.data, "alice", "console")  # admin: may search (its role is checked each time)
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        try:
            for i in range(40):
                if n == 0:
                    ctx.audit("review.search", "x", query=f"q{i}", hits=0)
                else:
                    ctx.service.requests()
                    with ctx.service.store.transaction(write=False) as tx:
                        tx.list_requests((RequestState.PENDING,))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.close()
    assert errors == []
    assert len([e for e in reviewed.svc.audit_events() if e.event == "review.search"]) == 40


async def test_the_list_is_not_read_while_another_area_is_in_front(reviewed) -> None:
    """Polling stops while Live (or a dialog, or Replay) is in front, and resumes at once on return."""
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        requests = app.screen
        assert _ids(app) == [reviewed.pending]
        await pilot.press("3")
        await pilot.pause()
        assert app.current_mode == "live"
        await _settle(app, pilot)  # a reload that began before Live came in front may finish
        _alice_ends_her_grants(reviewed)
        new = reviewed.svc.request(Actor("alice"), "srv", None, timedelta(minutes=10), "INC-8 logs")
        await pilot.pause(2.5)  # more than one refresh period
        table = requests.query_one("#requests", DataTable)
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == [reviewed.pending]
        await pilot.press("4")
        await _settle(app, pilot)
        assert set(_ids(app)) == {reviewed.pending, new.id}


# --- held commands (real-time rules) ---------------------------------------------------------------


def _hold(reviewed, user: str = "alice", command: str = "rm -rf /srv/data"):
    """A command of ``user``'s recorded session held by a rule, as the bastion stores it."""
    from zsp_tui.rules.model import Action, Rule, Severity

    session = next(s for s in reviewed.svc.sessions() if s.user == user)
    rule = Rule(name="no-rm-rf", severity=Severity.CRITICAL, actions=frozenset({Action.FLAG, Action.HOLD}))
    return reviewed.svc.create_hold(session, rule, command, timedelta(minutes=5))


def _holds(app: ReviewApp) -> DataTable:
    return app.screen.query_one("#holds", DataTable)


async def _focus_holds(app: ReviewApp, pilot) -> None:
    _holds(app).focus()
    await pilot.pause()


async def test_bob_allows_alice_s_held_command(reviewed) -> None:
    hold = _hold(reviewed)
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        table = _holds(app)
        assert table.display and table.row_count == 1
        row = [str(c) for c in table.get_row_at(0)]
        assert row[:5] == [hold.id, "alice", f"{hold.login}@srv", "no-rm-rf", "critical"]
        assert row[6] == "rm -rf /srv/data"
        assert "1 pending request(s), 1 held command(s)" in _status(app)
        await _focus_holds(app, pilot)
        assert f"{hold.id}  held command of alice" in _detail(app) and "command: rm -rf /srv/data" in _detail(app)
        shown = [b.binding.description for b in app.screen.active_bindings.values()]
        assert "Allow" in shown and "Approve" not in shown
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await _settle(app, pilot)
        assert f"allowed {hold.id}: the command of alice is sent to" in _status(app)
        assert not _holds(app).display and app.screen.query_one("#requests", DataTable).has_focus
    done = reviewed.svc.hold(hold.id)
    assert done.state.value == "allowed" and done.decided_by == "bob"
    [ev] = [e for e in reviewed.svc.audit_events() if e.event == "rule.hold.allow"]
    assert (ev.actor, ev.via, ev.fields["hold"]) == ("bob", "console", hold.id)


async def test_an_admin_cannot_allow_their_own_held_command_and_may_deny_another_without_a_reason(reviewed) -> None:
    own = _hold(reviewed, "alice", "dd if=/dev/zero of=/dev/sda")
    app = _app(reviewed, "alice")  # admin and operator: may decide holds, never her own
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        await _focus_holds(app, pilot)
        assert "this is your own held command" in _detail(app)
        assert str(_holds(app).get_row_at(0)[1]) == "alice (you)"
        await pilot.press("a", "y")
        await _settle(app, pilot)
        assert f"refused: alice cannot allow their own held command {own.id}: an approver or admin must" in _status(app)
        assert "Traceback" not in _status(app)
    assert reviewed.svc.hold(own.id).state.value == "pending"
    app = _app(reviewed, "bob")
    async with app.run_test(size=(100, 30)) as pilot:
        await _settle(app, pilot)
        await _focus_holds(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press("enter")  # the reason is optional for a held command
        await _settle(app, pilot)
        assert f"denied {own.id} of alice" in _status(app)
    assert reviewed.svc.hold(own.id).state.value == "denied"


async def test_a_hostile_held_command_renders_literally(reviewed) -> None:
    hold = _hold(reviewed, command="echo [bold red]OK[/] \x1b[2J\u202e")
    app = _app(reviewed, "bob")
    async with app.run_test(size=(160, 30)) as pilot:
        await _settle(app, pilot)
        await _focus_holds(app, pilot)
        drawn = _drawn(_holds(app))
        assert "echo [bold red]OK[/] \\x1b[2J\\u202e" in drawn and "\x1b" not in drawn and "\u202e" not in drawn
        detail = _detail(app)
        assert "command: echo [bold red]OK[/] \\x1b[2J\\u202e" in detail and "\x1b" not in detail
        await pilot.press("a")
        await pilot.pause()
        body = str(app.screen.query_one(".dialog-body", Static).render())
        assert "[bold red]OK[/]" in body and "\x1b" not in body
        await pilot.press("n")
    assert reviewed.svc.hold(hold.id).state.value == "pending"


async def test_held_commands_fit_80x24(reviewed) -> None:
    _hold(reviewed)
    app = _app(reviewed, "bob")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(app, pilot)
        for w in ("#requests", "#holds", "#detail-pane"):
            region = app.screen.query_one(w).region
            assert region.height >= 3 and region.right <= 80 and region.bottom <= 23, (w, region)
        await _focus_holds(app, pilot)
        footer = app.screen.query_one("Footer").region
        assert footer.bottom <= 24
