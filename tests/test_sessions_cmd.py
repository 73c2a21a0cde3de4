"""``zsp sessions``: filters, statuses, the grant's reason and the recording's size, on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.access_helpers import make_service, populate
from zsp_tui.access import Actor
from zsp_tui.clock import SystemClock
from zsp_tui.models import SessionRecord

ZSP = [sys.executable, "-m", "zsp_tui"]


def _zsp(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ZSP, "sessions", "--data", str(data), *args], capture_output=True, text=True, timeout=60)


def _listed(data: Path, *args: str) -> list[dict[str, object]]:
    r = _zsp(data, "--json", *args)
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, object]] = json.loads(r.stdout)
    return rows


def _session(svc, sid: str, user: str, target: str, started: datetime, path: Path, grant: str | None = None):
    record = SessionRecord(
        id=sid,
        user=user,
        target=target,
        login="postgres",
        grant_id=grant,
        command=None,
        client="127.0.0.1:1",
        path=str(path),
        started_at=started,
    )
    svc.session_started(record)
    return record


def test_filters_statuses_reason_and_bytes(tmp_path: Path) -> None:
    svc, d = make_service(tmp_path / "data", SystemClock())
    populate(svc)
    req = svc.request(Actor("oscar"), "web", "deploy", timedelta(minutes=20), 'INC-42 "restart" nginx \u00fc')
    now = datetime.now(UTC)
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "a").write_bytes(b"x" * 1234)
    old = _session(svc, "0001-old", "oscar", "web", now - timedelta(days=10), rec / "a", grant=req.id)
    svc.session_ended(old, 0, "exit", "ab" * 32)
    _session(svc, "0002-live", "alice", "db-1", now - timedelta(hours=1), rec / "missing")
    cut = _session(svc, "0003-cut", "oscar", "db-1", now - timedelta(minutes=5), rec / "a")
    svc.session_ended(cut, None, "recording-failed", None)
    gone = _session(svc, "0004-gone", "alice", "web", now - timedelta(minutes=1), rec / "a")
    svc.session_interrupted(gone, None, {})

    rows = _listed(d.root)
    by_id = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == ["0001-old", "0002-live", "0003-cut", "0004-gone"]
    assert {k: r["status"] for k, r in by_id.items()} == {
        "0001-old": "sealed",
        "0002-live": "live",
        "0003-cut": "incomplete",
        "0004-gone": "interrupted",
    }
    assert by_id["0001-old"]["reason"] == 'INC-42 "restart" nginx \u00fc'  # JSON stays exact
    assert by_id["0001-old"]["bytes"] == 1234 and by_id["0002-live"]["bytes"] is None
    assert by_id["0003-cut"]["end_reason"] == "recording-failed"

    assert [r["id"] for r in _listed(d.root, "--user", "oscar")] == ["0001-old", "0003-cut"]
    assert [r["id"] for r in _listed(d.root, "--target", "db-1")] == ["0002-live", "0003-cut"]
    assert [r["id"] for r in _listed(d.root, "--since", "2d")] == ["0002-live", "0003-cut", "0004-gone"]
    since = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["id"] for r in _listed(d.root, "--since", since)] == ["0003-cut", "0004-gone"]
    assert [r["id"] for r in _listed(d.root, "--status", "live")] == ["0002-live"]
    assert [r["id"] for r in _listed(d.root, "--user", "oscar", "--status", "sealed")] == ["0001-old"]
    assert _listed(d.root, "--user", "nobody") == []

    table = _zsp(d.root).stdout
    assert 'INC-42 "restart" nginx \u00fc' in table and "missing" in table


def test_bad_since_is_one_line(tmp_path: Path) -> None:
    _, d = make_service(tmp_path / "data", SystemClock())
    for bad in ("yesterday", "0d", "7 days"):
        r = _zsp(d.root, "--since", bad)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.startswith("zsp: error: --since") and r.stderr.count("\n") == 1, r.stderr


def test_a_recording_found_corrupt_when_indexed_is_listed_corrupt(tmp_path: Path) -> None:
    from recorder import FileSink, RecordingWriter, SessionMeta

    svc, d = make_service(tmp_path / "data", SystemClock())
    populate(svc)
    paths = {}
    for name in ("good", "bad"):
        meta = SessionMeta(user="alice", target="local", login="alice", term="xterm", cols=80, rows=24)
        w = RecordingWriter(FileSink(d.recordings / f"{name}.zsprec"), d.signing_key(), meta)
        sid = str(w.session_id)
        record = _session(svc, sid, "alice", "local", datetime.now(UTC), d.recordings / f"{name}.zsprec")
        w.output(b"payload " * 100 + b"\r\n")
        info = w.close(0, "exit")
        svc.session_ended(record, 0, "exit", info.head_hex)
        paths[name] = (sid, d.recordings / f"{name}.zsprec")
    sid_bad, bad = paths["bad"]
    blob = bytearray(bad.read_bytes())
    blob[blob.index(b"payload") + 2] ^= 0x20  # same size: the store still says sealed
    bad.write_bytes(bytes(blob))
    assert {r["status"] for r in _listed(d.root)} == {"sealed"}  # not verified yet: nothing is claimed
    r = subprocess.run([*ZSP, "index", "--data", str(d.root)], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    listed = {r["id"]: r for r in _listed(d.root)}
    assert listed[sid_bad]["status"] == "corrupt" and listed[sid_bad]["verified"] == "CORRUPT"
    assert listed[paths["good"][0]]["status"] == "sealed" and listed[paths["good"][0]]["verified"] == "VALID"
    assert [r["id"] for r in _listed(d.root, "--status", "corrupt")] == [sid_bad]
