"""Builders for access-domain tests: a real data dir, real SQLite, a fake clock."""

from __future__ import annotations

from pathlib import Path

from recorder import SigningKey
from zsp_tui.access import AccessService, Actor
from zsp_tui.clock import Clock, FakeClock
from zsp_tui.datadir import DataDir
from zsp_tui.models import Role, Target

POLICY = """\
[settings]
request_timeout = "1h"

[groups]
dba = ["dora"]

[[rule]]
name = "two-person-db"
requesters = ["role:operator"]
targets = ["db-*"]
logins = ["*"]
max_duration = "4h"
ticket_pattern = '(INC|CHG)-[0-9]+'
approvers = ["role:approver", "group:dba"]
approvals = 2

[[rule]]
name = "ops"
requesters = ["role:operator"]
targets = ["*"]
logins = ["*"]
max_duration = "4h"
approvers = ["role:approver", "role:admin"]

[[auto_approve]]
name = "readonly"
requesters = ["role:operator"]
targets = ["web"]
logins = ["readonly"]
max_duration = "30m"

[break_glass]
enabled = true
requesters = ["role:admin"]
max_duration = "30m"
"""


def make_service(root: Path, clock: Clock | None = None, policy: str = POLICY) -> tuple[AccessService, DataDir]:
    d = DataDir(root)
    d.init()
    d.policy_path.write_text(policy)
    svc = d.service(clock or FakeClock())
    return svc, d


def populate(svc: AccessService) -> None:
    console = Actor(None)
    key = SigningKey.generate(comment="k")
    svc.add_user(console, "alice", frozenset({Role.OPERATOR, Role.ADMIN}), [key.public.openssh])
    admin = Actor("alice")
    svc.add_user(admin, "bob", frozenset({Role.APPROVER}))
    svc.add_user(admin, "carol", frozenset({Role.APPROVER}))
    svc.add_user(admin, "dora", frozenset({Role.REVIEWER}))
    svc.add_user(admin, "oscar", frozenset({Role.OPERATOR}))
    svc.add_target(admin, Target(name="db-1", host="127.0.0.1", port=22, logins=("postgres", "root"),
                                 host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk+LUi8a2k9uIU04EY3Lm+3A8mcIduqCj/V2N8YibtS"))
    svc.add_target(admin, Target(name="web", host="127.0.0.1", port=22, logins=("deploy", "readonly"),
                                 host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk+LUi8a2k9uIU04EY3Lm+3A8mcIduqCj/V2N8YibtS"))
