"""The review app's frame: who may open it, which areas each role sees, what is audited, help."""

from __future__ import annotations

import pytest

from zsp_tui.exceptions import AccessDenied
from zsp_tui.tui import ReviewApp, ReviewContext


def test_an_operator_without_a_review_role_is_refused(reviewed) -> None:
    with pytest.raises(AccessDenied, match="needs the reviewer, approver or admin role"):
        ReviewContext.open(reviewed.data, "dave", "console")
    with pytest.raises(AccessDenied, match="no zsp user"):
        ReviewContext.open(reviewed.data, "nobody", "console")


@pytest.mark.parametrize(
    ("user", "areas"),
    [
        ("carol", ["sessions", "search", "live", "audit"]),
        ("bob", ["live", "requests"]),
        ("alice", ["sessions", "search", "live", "requests", "audit"]),
    ],
)
async def test_each_role_sees_its_areas_and_opening_is_audited(reviewed, user, areas) -> None:
    app = ReviewApp(ReviewContext.open(reviewed.data, user, "console"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.areas == areas
        assert app.current_mode == areas[0]
        await pilot.press("?")
        await pilot.pause()
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ != "HelpScreen"
    events = [e for e in reviewed.svc.audit_events() if e.event.startswith("review.")]
    assert [(e.event, e.actor, e.via) for e in events] == [("review.open", user, "console"), ("review.close", user, "console")]


async def test_the_app_does_not_open_when_the_audit_log_refuses_it(reviewed) -> None:
    """Fail closed: a review the audit log cannot record does not happen; the reason is kept for
    the command line to print."""
    import sqlite3

    con = sqlite3.connect(reviewed.data.db_path)
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit log full'); END")
    con.commit()
    con.close()
    app = ReviewApp(ReviewContext.open(reviewed.data, "carol", "console"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
    assert app.return_code == 1
    assert "does not open" in (app.problem or "") and "audit log full" in (app.problem or "")
    assert not [e for e in reviewed.svc.audit_events() if e.event.startswith("review.")]


async def test_a_crash_prints_no_traceback_with_locals(reviewed) -> None:
    """Textual would print a traceback with local variables on exit; over ssh that reaches the
    remote reviewer. The app keeps the error for the command line (one escaped line) instead."""
    app = ReviewApp(ReviewContext.open(reviewed.data, "carol", "ssh"))
    with pytest.raises(ZeroDivisionError):
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.call_later(lambda: 1 / 0)
            await pilot.pause()
    assert isinstance(app.crash, ZeroDivisionError)
    # what Textual's handler would have queued for printing at exit: nothing
    try:
        raise ValueError("bastion-side-value")
    except ValueError:
        app._fatal_error()
    assert app._exit_renderables == []
