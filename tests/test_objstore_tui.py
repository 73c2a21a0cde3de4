"""The review app's Replay screen on a session uploaded to object storage (a real SeaweedFS): shown
from its verified download, and refused with the reason when the object was changed in the bucket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.objstore_helpers import MARKER, Deployment, deployment, record_session
from tests.servers import S3Server
from zsp_tui.access import Actor
from zsp_tui.models import Role
from zsp_tui.objstore import Uploader
from zsp_tui.tui import ReviewApp, ReviewContext
from zsp_tui.tui.screens.replay import ReplayScreen
from zsp_tui.tui.widgets.terminal_view import TerminalView


@pytest.fixture
def dep(tmp_path: Path, s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    for k in ("ZSP_STORAGE_URL", "ZSP_S3_ENDPOINT", "ZSP_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    dep = deployment(tmp_path / "data", s3_server, s3_bucket)
    dep.svc.add_user(Actor(None), "carol", frozenset({Role.REVIEWER}))
    return dep


async def _until(pilot, cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the replay screen")
        await pilot.pause(0.05)


async def _opened(pilot, app: ReviewApp, sid: str) -> ReplayScreen:
    app.open_replay(sid)
    await _until(pilot, lambda: isinstance(app.screen, ReplayScreen))
    screen = app.screen
    assert isinstance(screen, ReplayScreen)
    await _until(pilot, lambda: screen.report is not None or screen.problem is not None)
    return screen


async def test_replay_shows_an_uploaded_session_from_its_verified_download(dep: Deployment) -> None:
    sid = record_session(dep)
    Uploader(dep.data, service=dep.svc).run_once()
    assert dep.row(sid).upload == "uploaded" and not Path(dep.row(sid).path).exists()
    app = ReviewApp(ReviewContext.open(dep.data, "carol", "console"))
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _opened(pilot, app, sid)
        assert screen.problem is None
        assert "VALID" in str(screen.verdict_text())
        await pilot.press("end")
        await _until(pilot, lambda: any(MARKER in s.text for s in screen.query_one(TerminalView).row_strips()))


async def test_replay_refuses_an_object_changed_in_the_bucket(dep: Deployment) -> None:
    sid = record_session(dep)
    Uploader(dep.data, service=dep.svc).run_once()
    client = dep.server.client()
    key = f"rec/{sid}.zsprec"
    body = bytearray(client.get_object(Bucket=dep.bucket, Key=key)["Body"].read())
    body[300] ^= 0x40
    client.put_object(Bucket=dep.bucket, Key=key, Body=bytes(body))
    app = ReviewApp(ReviewContext.open(dep.data, "carol", "console"))
    async with app.run_test(size=(130, 40)) as pilot:
        screen = await _opened(pilot, app, sid)
        assert screen.report is None
        assert "does not match the sha256 recorded at upload" in (screen.problem or "")
