"""``zsp migrate --to URL`` moves an embedded deployment's state into PostgreSQL (a real server):
everything the service and the command line showed on SQLite they show the same on PostgreSQL,
the audit chain verifies unbroken and the next event extends it, ids are never reused, and a
target that is not empty is refused with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.access_helpers import make_service, populate
from tests.test_store_postgres import ENV
from zsp_tui.access import AccessService, Actor
from zsp_tui.clock import SystemClock
from zsp_tui.datadir import DataDir
from zsp_tui.models import Flag, Hold, HoldState, RequestState, Role, SessionRecord
from zsp_tui.store.base import TABLES

ALICE, BOB, CAROL, OSCAR = Actor("alice"), Actor("bob"), Actor("carol"), Actor("oscar")


def zsp_at(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from tests.test_cli import zsp

    p = zsp(*args, env={**ENV, "ZSP_DATA": str(data)})
    assert "Traceback" not in p.stderr, p.stderr
    return p


def _session(sid: str, grant: str, at: datetime) -> SessionRecord:
    return SessionRecord(
        id=sid,
        user="oscar",
        target="db-1",
        login="postgres",
        grant_id=grant,
        command=None,
        client="10.0.0.9:5000",
        path=f"recordings/{sid}.zsprec",
        started_at=at,
        owner="serve:host:1",
    )


def _embedded(root: Path) -> tuple[AccessService, DataDir, dict[str, str]]:
    """A SQLite deployment with a bit of everything the store keeps."""
    svc, d = make_service(root, SystemClock())
    populate(svc)
    svc.add_user(ALICE, "temp", frozenset({Role.OPERATOR}))
    svc.remove_user(ALICE, "temp")  # the highest user id ever given out is now a removed user's
    approved = svc.request(OSCAR, "db-1", "postgres", timedelta(hours=1), "INC-1 vacuum the big table")
    svc.approve(BOB, approved.id)
    svc.approve(CAROL, approved.id)
    pending = svc.request(OSCAR, "web", "deploy", timedelta(minutes=30), "deploy hotfix")
    revoked = svc.request(ALICE, "web", "deploy", timedelta(minutes=30), "look at logs")
    svc.approve(BOB, revoked.id)
    svc.revoke(BOB, revoked.id, "done")
    now = datetime.now(UTC)
    ended, live = _session("s-ended", approved.id, now), _session("s-live", approved.id, now)
    svc.session_started(ended)
    svc.rule_matched(ended, Flag("s-ended", now, 1500, "rm-rf", "high", "command", "flag", "rm -rf /"), notify=False)
    svc.session_ended(ended, 0, "exit", "ab" * 32, frames=12)
    svc.session_started(live)
    hold = Hold(
        "h-0000beef", "s-live", approved.id, "oscar", "db-1", "postgres", "drop", "critical", "DROP TABLE x",
        HoldState.PENDING, now, now + timedelta(minutes=5),
    )  # fmt: skip
    with svc.store.transaction() as tx:
        tx.insert_hold(hold)
    return svc, d, {"approved": approved.id, "pending": pending.id, "revoked": revoked.id}


def _switch(d: DataDir, url: str) -> None:
    """Set ``[store] url`` in the data dir's zsp.toml, as migrate's last lines say to."""
    text = d.config_path.read_text()
    if "\n[store]\n" not in text:
        text += "\n[store]\n"
    d.config_path.write_text(text.replace("\n[store]\n", f'\n[store]\nurl = "{url}"\n', 1))


def _state(svc: AccessService) -> dict[str, object]:
    return {
        "users": svc.users(),
        "targets": svc.targets(),
        "requests": svc.requests(),
        "sessions": svc.sessions(),
        "flags": svc.flags(),
        "holds": svc.holds(pending_only=False),
        "audit": svc.audit_events(),
    }


def _cli_views(d: Path) -> dict[str, object]:
    views: dict[str, object] = {}
    for args in (("user", "list", "--json"), ("target", "list", "--json"), ("sessions", "--json"), ("audit", "--json")):
        p = zsp_at(d, *args)
        assert p.returncode == 0, p.stderr
        got = json.loads(p.stdout) if args[-1] == "--json" and args[0] != "audit" else p.stdout
        if args[0] == "sessions":
            for row in got:
                if row["ended_at"] is None:
                    row.pop("duration_s")  # a live session's runs to now
        views[" ".join(args)] = got
    return views


def test_migrate_round_trip_keeps_every_row_the_chain_and_the_ids(tmp_path: Path, postgres_url: str) -> None:
    svc, d, ids = _embedded(tmp_path / "data")
    before = _state(svc)
    cli_before = _cli_views(d.root)
    with svc.store.transaction(write=False) as tx:
        counts = {t: tx.count_rows(t) for t in TABLES}
        high = tx.id_high_water("users")
    svc.store.close()

    p = zsp_at(d.root, "migrate", "--to", postgres_url)
    assert p.returncode == 0, p.stderr
    assert f'url = "{postgres_url}"' in p.stdout and "[store]" in p.stdout
    assert "audit log verified on the target" in p.stdout
    assert f"  audit      {counts['audit']:>8} rows" in p.stdout

    # Switch the data dir over, as the printed line says.
    _switch(d, postgres_url)
    d.db_path.rename(d.root / "zsp.db.migrated")  # nothing reads SQLite any more
    pg = d.service()
    assert _state(pg) == before
    assert _cli_views(d.root) == cli_before
    with pg.store.transaction(write=False) as tx:
        assert {t: tx.count_rows(t) for t in TABLES} == counts
    v = zsp_at(d.root, "audit", "verify")
    assert v.returncode == 0 and "audit log OK" in v.stdout

    # Life goes on in the same chain: an approval on PostgreSQL appends after the copied frames.
    last = before["audit"][-1].seq
    assert pg.approve(BOB, ids["pending"]).state is RequestState.APPROVED
    new = [e for e in pg.audit_events() if e.seq > last]
    assert [e.event for e in new][:2] == ["access_request.approve", "grant.start"]
    assert new[0].seq == last + 2  # right after the checkpoint that closed the copied log
    v = zsp_at(d.root, "audit", "verify")
    assert v.returncode == 0 and "audit log OK" in v.stdout
    # A removed user's id is not given out again.
    assert pg.add_user(ALICE, "erin", frozenset()).id == high + 1
    pg.store.close()


def test_migrate_into_a_database_that_is_not_empty_is_refused_and_writes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    svc, d, _ = _embedded(tmp_path / "data")
    svc.store.close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE other_app (x int)")
        conn.execute("INSERT INTO other_app VALUES (1)")
    p = zsp_at(d.root, "migrate", "--to", postgres_url)
    assert (
        p.returncode == 1 and "not empty" in p.stderr and "other_app" in p.stderr and "nothing was written" in p.stderr
    )
    assert len(p.stderr.strip().splitlines()) == 1
    with psycopg.connect(postgres_url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert tables == ["other_app"]


def test_migrate_twice_into_the_same_database_is_refused(tmp_path: Path, postgres_url: str) -> None:
    svc, d, _ = _embedded(tmp_path / "data")
    svc.store.close()
    assert zsp_at(d.root, "migrate", "--to", postgres_url).returncode == 0
    p = zsp_at(d.root, "migrate", "--to", postgres_url, "--json")
    assert p.returncode == 1 and "not empty" in p.stderr and "users" in p.stderr


def test_migrate_reports_as_json_and_refuses_what_it_cannot_do(tmp_path: Path, postgres_url: str) -> None:
    svc, d, _ = _embedded(tmp_path / "data")
    svc.store.close()
    p = zsp_at(d.root, "migrate", "--to", "mysql://x@y/z")
    assert p.returncode == 2 and "not a PostgreSQL URL" in p.stderr
    p = zsp_at(d.root, "migrate", "--to", postgres_url, "--json")
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["audit_verified"] and got["rows"]["users"] == 5 and got["rows"]["holds"] == 1
    assert got["rows"]["approvals"] == 3 and got["rows"]["flags"] == 1 and got["rows"]["sessions"] == 2
    # A data dir already on PostgreSQL has nothing embedded to migrate.
    _switch(d, postgres_url)
    p = zsp_at(d.root, "migrate", "--to", postgres_url)
    assert p.returncode == 2 and "already keeps its state" in p.stderr


def test_migrate_to_an_unreachable_server_is_one_line_with_the_password_redacted(tmp_path: Path) -> None:
    from tests.servers import free_port

    svc, d, _ = _embedded(tmp_path / "data")
    svc.store.close()
    p = zsp_at(d.root, "migrate", "--to", f"postgresql://zsp:sekrit@127.0.0.1:{free_port()}/zsp")
    assert p.returncode == 2 and "sekrit" not in p.stderr and "zsp:***@" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("table", ["users", "flags"])
def test_ids_continue_past_the_copied_ones(tmp_path: Path, postgres_url: str, table: str) -> None:
    svc, d, _ = _embedded(tmp_path / "data")
    with svc.store.transaction(write=False) as tx:
        high = tx.id_high_water(table)
    svc.store.close()
    assert zsp_at(d.root, "migrate", "--to", postgres_url).returncode == 0
    from zsp_tui.store.postgres import PostgresStore

    st = PostgresStore(postgres_url)
    try:
        with st.transaction() as tx:
            assert tx.id_high_water(table) == high
            if table == "users":
                assert tx.add_user("zed", frozenset(), datetime.now(UTC)).id == high + 1
            else:
                tx.add_flag(Flag("s-live", datetime.now(UTC), 1, "r", "low", "command", "flag", "x"))
                assert tx.id_high_water("flags") == high + 1
    finally:
        st.close()


def test_migrate_with_recordings_to_uploads_them_first_and_the_switched_deployment_reads_them(
    tmp_path: Path, postgres_url: str, s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--recordings-to``: every ended session's recording goes to the bucket (hash checked),
    leaves scratch, and the copied rows name their objects, so the data dir switched to PostgreSQL
    and the bucket verifies and plays them by session id."""
    from tests.objstore_helpers import MARKER, deployment, record_session

    for k in ("ZSP_STORAGE_URL", "ZSP_S3_ENDPOINT", "ZSP_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    dep = deployment(tmp_path / "data", s3_server, s3_bucket)
    # An embedded deployment: no [storage] yet, recordings in DATA/recordings.
    text = dep.data.config_path.read_text()
    dep.data.config_path.write_text(text.replace(f'url = "s3://{s3_bucket}/rec"\nendpoint = "{s3_server.endpoint}"\n', ""))
    assert dep.data.settings().storage is None
    sids = [record_session(dep, pending=False) for _ in range(2)]
    scratch = [Path(dep.row(s).path) for s in sids]
    assert all(p.exists() for p in scratch)
    env = dep.env()
    run = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "migrate", "--data", str(dep.data.root), "--to", postgres_url,
         "--recordings-to", f"s3://{s3_bucket}/moved", "--endpoint", s3_server.endpoint],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 uploaded to s3://" in run.stdout and "Traceback" not in run.stderr
    assert not any(p.exists() for p in scratch)
    # Switch over as the output says: [store] and [storage].
    text = dep.data.config_path.read_text()
    text = text.replace("\n[store]\n", f'\n[store]\nurl = "{postgres_url}"\n', 1)
    text = text.replace("\n[storage]\n", f'\n[storage]\nurl = "s3://{s3_bucket}/moved"\nendpoint = "{s3_server.endpoint}"\n', 1)
    dep.data.config_path.write_text(text)
    svc = dep.data.service()
    try:
        for sid in sids:
            row = svc.session(sid)
            assert row is not None and row.upload == "uploaded" and row.object_key == f"s3://{s3_bucket}/moved/{sid}.zsprec"
    finally:
        svc.store.close()
    for sid in sids:
        v = subprocess.run([sys.executable, "-m", "zsp_tui", "verify", "--data", str(dep.data.root), sid],
                           capture_output=True, text=True, env=env, timeout=60, check=False)
        assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "play", "--data", str(dep.data.root), sids[0], "--instant"],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert p.returncode == 0 and MARKER in p.stdout, p.stderr


def test_migrate_with_recordings_to_a_non_empty_database_uploads_nothing(
    tmp_path: Path, postgres_url: str, s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.objstore_helpers import deployment, record_session

    for k in ("ZSP_STORAGE_URL", "ZSP_S3_ENDPOINT", "ZSP_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE somebody_elses (x int)")
        conn.execute("INSERT INTO somebody_elses VALUES (1)")
    dep = deployment(tmp_path / "data", s3_server, s3_bucket)
    sid = record_session(dep, pending=False)
    run = subprocess.run(
        [sys.executable, "-m", "zsp_tui", "migrate", "--data", str(dep.data.root), "--to", postgres_url,
         "--recordings-to", f"s3://{s3_bucket}/moved"],
        capture_output=True, text=True, env=dep.env(), timeout=120, check=False,
    )
    assert run.returncode != 0 and "nothing was written" in run.stderr, run.stdout + run.stderr
    assert Path(dep.row(sid).path).exists() and dep.row(sid).upload is None
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
