"""What only the PostgreSQL store has to prove, on a real server (tests/servers.py): several
processes opening, approving and auditing at once stay as correct as one SQLite file; a server
that is unreachable, refuses our password or stops mid-run is one clear StoreError line with the
password redacted, never a traceback; the pool recovers once the server is back; and a data dir
configured for PostgreSQL works end to end through the ``zsp`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tests.access_helpers import POLICY
from tests.servers import PostgresCluster, free_port
from tests.test_cli import no_traceback, zsp
from zsp_tui.access import Actor
from zsp_tui.datadir import DataDir
from zsp_tui.exceptions import StoreError
from zsp_tui.models import RequestState, Role, Target
from zsp_tui.store.pg_schema import BASE
from zsp_tui.store.postgres import _WRITE_LOCK, NOTIFY_CHANNEL, PostgresStore
from zsp_tui.store.sqlite import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": str(ROOT)}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk+LUi8a2k9uIU04EY3Lm+3A8mcIduqCj/V2N8YibtS"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def zsp_at(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``zsp ARGS`` on the data dir ``data``, this checkout's code."""
    return zsp(*args, env={**ENV, "ZSP_DATA": str(data), **(env or {})})


def _pg_data_dir(root: Path, url: str) -> DataDir:
    """A data dir whose zsp.toml names ``url`` as its store, initialised, with the test policy."""
    root.mkdir(parents=True)
    (root / "zsp.toml").write_text(f'[store]\nurl = "{url}"\n')
    d = DataDir(root)
    d.init()
    d.policy_path.write_text(POLICY)
    return d


def _populate(d: DataDir) -> None:
    svc = d.service()
    svc.add_user(Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}))
    admin = Actor("alice")
    for name in ("bob", "carol", "dave"):
        svc.add_user(admin, name, frozenset({Role.APPROVER}))
    for name in ("oscar", "pat", "quinn"):
        svc.add_user(admin, name, frozenset({Role.OPERATOR}))
    svc.add_target(admin, Target("db-1", "127.0.0.1", 22, ("postgres",), HOST_KEY))
    svc.store.close()


def _waiting_writers(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return int(row[0]) if row else 0


_WORKER = """
import sys
from pathlib import Path
from zsp_tui.datadir import DataDir
from zsp_tui.access import Actor
from zsp_tui.exceptions import ZspError
from datetime import timedelta
svc = DataDir(Path(sys.argv[1])).service()
print("ready", flush=True)
sys.stdin.readline()
op, who, arg = sys.argv[2:5]
try:
    if op == "approve":
        svc.approve(Actor(who), arg)
    else:  # "requests": create and cancel N requests
        for i in range(int(arg)):
            r = svc.request(Actor(who), "db-1", "postgres", timedelta(minutes=5), f"INC-{i} from {who}")
            svc.cancel(Actor(who), r.id)
    print("ok", flush=True)
except ZspError as exc:
    print("refused", type(exc).__name__, exc, flush=True)
"""


def _race(url: str, argvs: list[list[str]]) -> list[str]:
    """Start one process per argv, let them open their stores, then release them all at once
    against the writers' lock (held here until every one of them waits on it); their last lines."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **ENV},
        )
        for argv in argvs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", (line, p.stderr.read() if p.stderr else "")
        with psycopg.connect(url) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            deadline = time.monotonic() + 30
            while _waiting_writers(url) < len(procs):
                assert time.monotonic() < deadline, "the workers never queued on the writers' lock"
                time.sleep(0.02)
            holder.rollback()  # releases the lock: all of them at once
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0 and "Traceback" not in err, err
            outs.append(out.strip().splitlines()[-1])
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


# --- schema -----------------------------------------------------------------------------------


def test_an_older_schema_is_migrated_once_when_several_processes_open_it_at_once(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        for statement in BASE:
            conn.execute(statement)
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '5')")
        conn.execute(
            'INSERT INTO sessions(id, "user", target, login, client, path, started_at) '
            "VALUES ('old', 'alice', 'db1', 'root', 'c', 'p', '2026-01-01T00:00:00.000000Z')"
        )
    code = (
        "import sys; from zsp_tui.store.postgres import PostgresStore\n"
        "st = PostgresStore(sys.argv[1])\n"
        "with st.transaction(write=False) as tx: print(tx.get_meta('schema_version'), tx.get_session('old').upload)\n"
    )
    with psycopg.connect(postgres_url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, postgres_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **ENV},
            )
            for _ in range(4)
        ]
        deadline = time.monotonic() + 30
        while _waiting_writers(postgres_url) < len(procs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        holder.rollback()
    # ALTER TABLE ADD COLUMN fails if run twice: every opener succeeding means it ran once.
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.split() == [str(SCHEMA_VERSION), "None"]
    with psycopg.connect(postgres_url) as conn:
        cols = [
            r[0]
            for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'sessions'")
        ]
        assert cols.count("upload") == 1 and "sha256" in cols
        watches = conn.execute("SELECT count(*) FROM watches").fetchone()  # schema 7's table
        assert watches == (0,)


def test_a_database_from_a_newer_zsp_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema 99 is newer than this zsp understands"):
        PostgresStore(postgres_url)


# --- several processes -------------------------------------------------------------------------


def test_concurrent_approvals_from_several_processes_count_once(tmp_path: Path, postgres_url: str) -> None:
    d = _pg_data_dir(tmp_path / "data", postgres_url)
    _populate(d)
    svc = d.service()
    rid = svc.request(Actor("oscar"), "db-1", "postgres", timedelta(hours=1), "INC-7 vacuum").id
    assert svc.get(rid).approvals_needed == 2
    approvers = ["bob", "carol", "dave"] * 2
    outs = _race(postgres_url, [[str(d.root), "approve", who, rid] for who in approvers])
    assert sorted(o.split()[0] for o in outs) == ["ok", "ok", "refused", "refused", "refused", "refused"]
    req = svc.get(rid)
    assert req.state is RequestState.APPROVED
    assert len(req.approvals) == 2 and len(set(req.approvals)) == 2
    events = [e for e in svc.audit_events() if e.grant_id == rid]
    assert [e.event for e in events].count("access_request.approve") == 2
    assert [e.event for e in events].count("grant.start") == 1
    assert svc.audit_verify([d.signing_key().public]).ok


def test_the_audit_chain_verifies_after_interleaved_writes_from_several_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    d = _pg_data_dir(tmp_path / "data", postgres_url)
    _populate(d)
    outs = _race(postgres_url, [[str(d.root), "requests", who, "6"] for who in ("alice", "oscar", "pat", "quinn")])
    assert outs == ["ok"] * 4
    p = zsp_at(d.root, "audit", "verify")
    assert p.returncode == 0 and "audit log OK" in p.stdout, p.stdout + p.stderr
    events = [json.loads(x) for x in zsp_at(d.root, "audit", "--json").stdout.splitlines()]
    assert [e["event"] for e in events].count("access_request.create") == 24
    assert [e["event"] for e in events].count("access_request.cancel") == 24
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_request_state_change_notifies_listeners_on_commit_and_a_rollback_does_not(postgres_url: str) -> None:
    from tests.test_store_conformance import _request

    st = PostgresStore(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            with st.transaction() as tx:
                tx.insert_request(_request("g1"))
                tx.add_approval("g1", "bob", T0)
            with pytest.raises(RuntimeError), st.transaction() as tx:
                tx.update_request("g1", RequestState.PENDING, state=RequestState.DENIED)
                raise RuntimeError("rolled back")
            assert list(listener.notifies(timeout=0.5)) == []
            with st.transaction() as tx:
                assert tx.update_request("g1", RequestState.PENDING, state=RequestState.APPROVED)
            got = list(listener.notifies(timeout=5, stop_after=1))
            assert [n.channel for n in got] == [NOTIFY_CHANNEL]
    finally:
        st.close()


def test_a_statement_the_server_rejects_is_a_store_error_and_the_store_goes_on(postgres_url: str) -> None:
    st = PostgresStore(postgres_url)
    try:
        with pytest.raises(StoreError, match="NUL"), st.transaction() as tx:
            tx.add_user("ok", frozenset(), T0)
            tx.add_user("nul\x00name", frozenset(), T0)  # PostgreSQL text cannot hold NUL
        with st.transaction(write=False) as tx:
            assert tx.list_users() == []  # the whole transaction rolled back
        with st.transaction() as tx:
            tx.add_user("ok", frozenset(), T0)
    finally:
        st.close()


# --- an unreachable, refusing or stopped server ----------------------------------------------


def _one_error_line(p: subprocess.CompletedProcess[str], *, secret: str) -> str:
    no_traceback(p)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zsp: error: store postgresql://"), p.stderr
    assert secret not in p.stderr + p.stdout
    return lines[0]


def test_an_unreachable_server_is_one_store_error_line_with_the_password_redacted(tmp_path: Path) -> None:
    url = f"postgresql://zsp:hunter2-secret@127.0.0.1:{free_port()}/zsp"
    with pytest.raises(StoreError) as err:
        PostgresStore(url)
    assert "hunter2" not in str(err.value) and "zsp:***@127.0.0.1" in str(err.value)
    assert "refused" in str(err.value).lower()
    d = tmp_path / "data"
    assert zsp_at(d, "init").returncode == 0  # SQLite: init needs no server
    line = _one_error_line(zsp_at(d, "user", "list", env={"ZSP_DATABASE_URL": url}), secret="hunter2")
    assert "***@127.0.0.1" in line


@pytest.fixture
def password_url(postgres_cluster: PostgresCluster):
    """A database owned by a role that must give its password (scram), and that URL."""
    hba = postgres_cluster.root / "data" / "pg_hba.conf"
    rule = "host all zsp_pw 127.0.0.1/32 scram-sha-256\n"
    if rule not in hba.read_text():
        hba.write_text(rule + hba.read_text())
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_cluster.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'zsp_pw'").fetchone() is None:
            conn.execute("CREATE ROLE zsp_pw LOGIN PASSWORD 'right-pass'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER zsp_pw')
    return f"postgresql://zsp_pw:right-pass@127.0.0.1:{postgres_cluster.port}/{name}"


def test_a_wrong_password_is_one_store_error_line_and_the_right_one_works(password_url: str, tmp_path: Path) -> None:
    wrong = password_url.replace("right-pass", "wrong%2Fpass")
    with pytest.raises(StoreError) as err:
        PostgresStore(wrong)
    assert "password authentication failed" in str(err.value)
    assert "wrong" not in str(err.value) and "zsp_pw:***@" in str(err.value)
    d = tmp_path / "data"
    p = zsp_at(d, "init", env={"ZSP_DATABASE_URL": wrong})
    assert "password authentication failed" in _one_error_line(p, secret="wrong")
    st = PostgresStore(password_url)
    with st.transaction() as tx:
        tx.add_user("alice", frozenset(), T0)
    st.close()


def test_a_server_stopped_mid_run_is_a_store_error_and_the_pool_recovers_when_it_is_back(
    postgres_cluster: PostgresCluster, postgres_url: str, tmp_path: Path
) -> None:
    d = _pg_data_dir(tmp_path / "data", postgres_url)
    _populate(d)
    st = PostgresStore(postgres_url)
    try:
        with st.transaction(write=False) as tx:  # the pool holds live connections
            assert len(tx.list_users()) == 7
        postgres_cluster.stop()
        try:
            began = time.monotonic()
            with pytest.raises(StoreError) as err, st.transaction() as tx:
                tx.add_user("erin", frozenset(), T0)
            assert str(err.value).startswith(f"store {postgres_url}:") and "refused" in str(err.value)
            # Fails at once with the server's reason, as do the ones after (the bastion fails closed).
            with pytest.raises(StoreError, match="refused"), st.transaction(write=False) as tx:
                tx.list_users()
            assert time.monotonic() - began < 5
            p = zsp_at(d.root, "user", "list")
            _one_error_line(p, secret="\x00")
            p = zsp_at(d.root, "request", "db-1", "--for", "5m", "--reason", "INC-1", "--as", "oscar")
            _one_error_line(p, secret="\x00")
        finally:
            postgres_cluster.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                with st.transaction() as tx:
                    tx.add_user("erin", frozenset(), T0)
                break
            except StoreError:
                assert time.monotonic() < deadline, "the pool did not recover after the server came back"
                time.sleep(0.2)
        with st.transaction(write=False) as tx:
            assert [u.name for u in tx.list_users()] == [
                "alice",
                "bob",
                "carol",
                "dave",
                "erin",
                "oscar",
                "pat",
                "quinn",
            ]
    finally:
        st.close()
    assert zsp_at(d.root, "audit", "verify").returncode == 0


def test_without_the_driver_a_postgresql_url_is_a_store_error_saying_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from pathlib import Path\n"
        "from zsp_tui.store import open_store\n"
        "from zsp_tui.exceptions import StoreError\n"
        "try:\n    open_store('postgresql://u:pw@h/db', Path('unused.db'))\n"
        "except StoreError as exc:\n    print(exc)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **ENV})
    assert p.stdout.strip() == (
        "store postgresql://u:***@h/db: PostgreSQL support is not installed (psycopg): pip install 'zsp[postgres]'"
    ), p.stderr


# --- end to end through the command line -------------------------------------------------------


def test_a_postgresql_data_dir_works_end_to_end_through_the_cli(tmp_path: Path, postgres_url: str) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "zsp.toml").write_text(f'[store]\nurl = "{postgres_url}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        p = zsp_at(d, *args)
        no_traceback(p)
        return p

    assert run("init").returncode == 0
    assert not (d / "zsp.db").exists()  # the state is in PostgreSQL
    (d / "policy.toml").write_text(POLICY)
    hk = tmp_path / "host.pub"
    hk.write_text(HOST_KEY + " host\n")
    assert run("user", "add", "alice", "--role", "operator,admin").returncode == 0
    for name in ("bob", "carol"):
        assert run("user", "add", name, "--role", "approver", "--as", "alice").returncode == 0
    assert (
        run(
            "target", "add", "db-1", "--host", "10.0.0.5", "--login", "postgres", "--host-key", str(hk), "--as", "alice"
        ).returncode
        == 0
    )
    p = run(
        "target", "add", "db-1", "--host", "10.0.0.5", "--login", "postgres", "--host-key", str(hk), "--as", "alice"
    )
    assert p.returncode == 1 and "already exists" in p.stderr
    p = run("request", "db-1", "--login", "postgres", "--for", "30m", "--reason", "INC-7 vacuum", "--as", "alice")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.split()[0]
    assert run("approve", rid, "--as", "bob").returncode == 0
    p = run("approve", rid, "--as", "bob")
    assert p.returncode == 1 and "already approved" in p.stderr
    assert "active until" in run("approve", rid, "--as", "carol").stdout
    grants = json.loads(run("grants", "--active", "--json").stdout)
    assert [g["id"] for g in grants] == [rid] and grants[0]["approvals"] == ["bob", "carol"]
    users = json.loads(run("user", "list", "--json").stdout)
    assert [u["name"] for u in users] == ["alice", "bob", "carol"]
    assert run("revoke", rid, "--as", "bob", "--reason", "done").returncode == 0
    v = run("audit", "verify")
    assert v.returncode == 0 and "audit log OK" in v.stdout
    # Another data dir naming the same database (a second bastion) sees the same state.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("zsp.toml", "policy.toml", "allowed_signers"):
        (other / name).write_bytes((d / name).read_bytes())
    (other / "keys").mkdir(mode=0o700)
    for key in (d / "keys").iterdir():
        (other / "keys" / key.name).write_bytes(key.read_bytes())
        os.chmod(other / "keys" / key.name, 0o600)
    os.chmod(other, 0o700)
    svc = DataDir(other).service()
    assert svc.get(rid).state is RequestState.REVOKED
    assert svc.audit_verify([DataDir(other).signing_key().public]).ok
    assert [u.name for u in svc.users()] == ["alice", "bob", "carol"]
    svc.store.close()
