"""Snapshot tests of the review app's screens at a fixed size (pytest-textual-snapshot).

Each test builds the app over a private copy of the ``reviewed`` data dir (real sessions recorded
through the bastion) and compares an SVG screenshot with the accepted one in
``tests/__snapshots__/test_tui_snapshots/<test name>.svg``. After a deliberate change of a screen,
look at the report (``snapshot_report.html``) and accept with ``--snapshot-update``.

The plugin pins syrupy 4.8, which needs pytest < 9 (the ``test`` extra says so). Where it is not
installed, this module is skipped. The tests are synchronous on purpose: ``snap_compare`` runs the
app with its own event loop (``App.run(headless=True)``), which cannot start inside the loop of an
async test.

What a snapshot shows must not change from run to run: no times, ids or paths that differ per
copy of the data dir. A screen that shows them gets a ``run_before`` that fixes them first.
"""

from __future__ import annotations

from typing import Any

import pytest

from zsp_tui.tui import ReviewApp, ReviewContext

pytest.importorskip("pytest_textual_snapshot")

SIZE = (100, 30)
"""(columns, rows) of every snapshot."""


def app_for(reviewed: Any, user: str, start: str | None = None) -> ReviewApp:
    return ReviewApp(ReviewContext.open(reviewed.data, user, "console"), start=start)


def test_sessions_as_a_reviewer(reviewed: Any, snap_compare: Any) -> None:
    """carol (reviewer): Sessions first; areas Sessions, Search, Live, Audit; no Requests."""
    assert snap_compare(app_for(reviewed, "carol"), terminal_size=SIZE)


def test_first_area_as_an_approver(reviewed: Any, snap_compare: Any) -> None:
    """bob (approver): Live first; areas Live and Requests only."""
    assert snap_compare(app_for(reviewed, "bob"), terminal_size=SIZE)


def test_help_over_the_app(reviewed: Any, snap_compare: Any) -> None:
    """`?` over carol's Sessions: the keys of the screen underneath, the areas, quit."""
    assert snap_compare(app_for(reviewed, "carol"), press=["question_mark"], terminal_size=SIZE)


def test_help_at_80x24(reviewed: Any, snap_compare: Any) -> None:
    """The smallest supported terminal: the help box still fits and scrolls."""
    assert snap_compare(app_for(reviewed, "alice"), press=["question_mark"], terminal_size=(80, 24))
