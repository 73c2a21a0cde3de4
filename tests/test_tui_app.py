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
