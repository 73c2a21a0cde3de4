"""A data dir whose every shown value is fixed, for the review app's snapshot tests.

The Pilot tests use sessions recorded through the real bastion (tests/tui_helpers.py); their ids,
times and signing keys change from run to run, which a screenshot cannot tolerate. Here the same
kinds of things are made with fixed values: the recording key from a fixed seed, requests and
sessions written through the store with fixed ids and times, recordings written by the real
recorder with a scripted clock (a shell transcript with colours and commands) and indexed by the
real indexer, and a service whose clock stands still, so countdowns and durations do not move.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recorder import FileSink, RecordingWriter, SessionMeta, SigningKey
from tests.helpers import SEED_A
from zsp_tui.access import AccessService, Actor
from zsp_tui.clock import FakeClock
from zsp_tui.datadir import DataDir
from zsp_tui.models import AccessRequest, Flag, RequestState, Role, SessionRecord
from zsp_tui.tui import ReviewContext, Reviewer

__all__ = ["NOW", "Snap", "build_snapshot_data"]

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
"""The service's clock for the whole snapshot data dir: it never moves."""
_T0 = NOW - timedelta(hours=3)


@dataclass
class Snap:
    data: DataDir
    svc: AccessService
    ids: dict[str, str]

    def context(self, user: str) -> ReviewContext:
        u = next(x for x in self.svc.users() if x.name == user)
        return ReviewContext(self.data, self.svc, Reviewer(u.name, u.roles, "console"))


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.wall_ns = int(start.timestamp() * 1e9)
        self.mono_ns = 10**12

    def step(self, seconds: float) -> None:
        self.wall_ns += int(seconds * 1e9)
        self.mono_ns += int(seconds * 1e9)


PROMPT = b"\x1b[1;32malice@db1\x1b[0m:\x1b[1;34m~\x1b[0m$ "

SHELL: list[tuple[float, bytes, bytes]] = [
    # (seconds after the previous step, typed, printed)
    (0.5, b"", b"Linux db1 6.1.0-27-amd64 x86_64\r\n\r\n" + PROMPT),
    (2.0, b"ls --color /srv\r", b"ls --color /srv\r\n\x1b[1;34mbackups\x1b[0m  \x1b[1;34mdata\x1b[0m  "
     b"\x1b[0;32mrun.sh\x1b[0m  notes.txt\r\n" + PROMPT),
    (3.0, b"echo kubectl delete pod web-7f\r", b"echo kubectl delete pod web-7f\r\nkubectl delete pod web-7f\r\n" + PROMPT),
    (4.0, b"sudo systemctl restart postgresql\r", b"sudo systemctl restart postgresql\r\n"
     b"\x1b[33mwarning:\x1b[0m restarting postgresql.service\r\n" + PROMPT),
    (2.5, b"df -h /srv\r", b"df -h /srv\r\nFilesystem      Size  Used Avail Use% Mounted on\r\n"
     b"/dev/sdb1       100G   71G   29G  \x1b[31m71%\x1b[0m /srv\r\n" + PROMPT),
    (1.5, b"exit\r", b"exit\r\nlogout\r\n"),
]
SHELL_FLAG = (3, "sudo-root-prod", "high", "command", "flag,notify", "sudo systemctl restart postgresql")
"""A real-time rule fired at SHELL's step 3 (its ``rule.match`` frame right after the command's Enter)."""


def _recording(d: DataDir, key: SigningKey, sid: uuid.UUID, start: datetime, grant: str | None,
               steps: list[tuple[float, bytes, bytes]], *, user: str = "alice", target: str = "db1",
               login: str = "postgres", command: str | None = None, exit_status: int = 0,
               flag: tuple[int, str, str, str, str, str] | None = None) -> tuple[Path, str, datetime]:
    clock = _Clock(start)
    path = d.recordings / f"{sid}.zsprec"
    w = RecordingWriter(
        FileSink(path, sync_dir=False), key,
        SessionMeta(user=user, target=target, login=login, grant_id=grant, term="xterm-256color",
                    cols=80, rows=24, command=command, host="bastion", extra={"source": "zsp serve"}),
        session_id=sid, clock=lambda: clock.mono_ns, wall_clock=lambda: clock.wall_ns,
        checkpoint_frames=4, coalesce_ms=0,
    )
    for n, (delay, typed, printed) in enumerate(steps):
        clock.step(delay)
        if typed:
            w.input(typed)
            if flag is not None and flag[0] == n:
                _step, rule, severity, trigger, actions, text = flag
                w.event("rule.match", f"rule {rule} ({severity}) matched {trigger}", rule=rule, severity=severity,
                        trigger=trigger, actions=actions, text=text)
            clock.step(0.05)
        if printed:
            w.output(printed)
    clock.step(0.2)
    seal = w.close(exit_status, "exit")
    return path, seal.head.hex(), datetime.fromtimestamp(clock.wall_ns / 1e9, UTC)


def build_snapshot_data(root: Path) -> Snap:
    d = DataDir(root / "data")
    (d.root / "keys").mkdir(parents=True, mode=0o700)
    key = SigningKey.from_seed(SEED_A, comment="zsp-recording")
    key.save(d.signing_key_path)
    d.init()  # keeps the fixed recording key; makes the rest
    svc = d.service(clock=FakeClock(NOW))
    admin = Actor(None)
    svc.add_user(admin, "alice", frozenset({Role.OPERATOR, Role.ADMIN}))
    for name, roles in (("bob", {Role.APPROVER}), ("carol", {Role.REVIEWER}), ("dave", {Role.OPERATOR})):
        svc.add_user(Actor("alice"), name, frozenset(roles))
    users = {u.name: u for u in svc.users()}

    def request(rid: str, who: str, target: str, login: str, minutes: int, reason: str, created: datetime,
                state: RequestState, approvals: tuple[str, ...] = ()) -> AccessRequest:
        approved = state is not RequestState.PENDING
        return AccessRequest(
            id=rid, requester=who, requester_id=users[who].id, target=target, login=login,
            duration=timedelta(minutes=minutes), reason=reason, state=state, approvals_needed=1,
            approver_patterns=("role:approver",), rule="ops", created_at=created,
            lapses_at=created + timedelta(hours=1), approvals=approvals,
            decided_at=created + timedelta(minutes=2) if approved else None,
            starts_at=created + timedelta(minutes=2) if approved else None,
            ends_at=created + timedelta(minutes=2 + minutes) if approved else None,
        )

    ids: dict[str, str] = {}
    with svc.store.transaction() as tx:
        tx.insert_request(request("r-grant1", "alice", "db1", "postgres", 60, "INC-4711 restart postgres after OOM",
                                  _T0, RequestState.EXPIRED, ("bob",)))
        tx.insert_request(request("r-grant2", "alice", "web1", "deploy", 30, "CHG-88 rotate TLS certificate",
                                  _T0 + timedelta(hours=1), RequestState.EXPIRED, ("bob",)))
        tx.insert_request(request("r-pend01", "dave", "db1", "postgres", 20, "INC-4720 check replication lag",
                                  NOW - timedelta(minutes=10), RequestState.PENDING))
    sessions = [
        ("shell", uuid.UUID("01a22d72-7f58-7659-a4da-38372c5b2e22"), _T0 + timedelta(minutes=3), "r-grant1", SHELL,
         {"flag": SHELL_FLAG}),
        ("exec", uuid.UUID("01a22d90-0000-7000-8000-000000000002"), _T0 + timedelta(hours=1, minutes=5), "r-grant2",
         [(0.3, b"", b"notAfter=Dec 30 12:00:00 2026 GMT\r\n")],
         {"target": "web1", "login": "deploy", "command": "openssl x509 -enddate -noout -in /etc/ssl/site.pem"}),
    ]
    for name, sid, start, grant, steps, kw in sessions:
        path, head, ended = _recording(d, key, sid, start, grant, steps, **kw)
        with svc.store.transaction() as tx:
            tx.session_start(SessionRecord(
                id=str(sid), user="alice", target=kw.get("target", "db1"), login=kw.get("login", "postgres"),
                grant_id=grant, command=kw.get("command"), client="192.0.2.10:50412", path=str(path),
                started_at=start, owner="serve:bastion:1"))
            tx.session_end(str(sid), ended, 0, "exit", head)
            if "flag" in kw:  # the store's side of the rule.match frame (no audit event: test_audit_log stays)
                n = kw["flag"][0]
                at_s = sum(d + (0.05 if typed else 0) for d, typed, _ in steps[:n]) + steps[n][0]
                _step, rule, severity, trigger, actions, text = kw["flag"]
                tx.add_flag(Flag(str(sid), start + timedelta(seconds=at_s), int(at_s * 1e6), rule, severity, trigger,
                                 actions, text))
        ids[name] = str(sid)
    from zsp_tui.indexing import index_one, open_index

    index = open_index(d)
    try:
        for name in ids:
            index_one(d, d.recordings / f"{ids[name]}.zsprec", index)
    finally:
        index.close()
    return Snap(d, svc, ids)
