"""Policy files: every kind of mistake is one clear error naming the line; evaluation is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from zsp_tui.exceptions import PolicyError
from zsp_tui.models import Role, Target, User
from zsp_tui.policy import DEFAULT_POLICY, load_policy, parse_policy

BASE = """\
[settings]
request_timeout = "30m"

[groups]
dba = ["Alice", "bob"]

[[rule]]
name = "dba"
requesters = ["group:dba"]
targets = ["db-*", "label:env=prod"]
logins = ["postgres", "read*"]
max_duration = "2h"
ticket_pattern = '(INC|CHG)-[0-9]+'
approvers = ["role:approver"]
approvals = 2
"""


def user(name: str, *roles: Role, uid: int = 1) -> User:
    return User(id=uid, name=name, roles=frozenset(roles), keys=(), created_at=datetime(2026, 1, 1, tzinfo=UTC))


def target(name: str, *labels: str) -> Target:
    return Target(name=name, host="h", port=22, logins=("postgres",), host_key="k", labels=frozenset(labels))


def test_default_policy_is_valid_and_conservative() -> None:
    p = parse_policy(DEFAULT_POLICY)
    assert [r.name for r in p.rules] == ["operators"]
    assert p.rules[0].approvals == 1 and p.rules[0].require_reason
    assert not p.break_glass.enabled and p.auto_rules == ()
    assert p.warn_before == (timedelta(minutes=5), timedelta(minutes=1))


def test_evaluation() -> None:
    p = parse_policy(BASE)
    alice, carol = user("alice"), user("carol", Role.OPERATOR)
    assert p.request_rule(alice, target("db-1"), "postgres").name == "dba"  # group member (case-folded)
    assert p.request_rule(alice, target("web", "env=prod"), "readonly") is not None  # label glob
    assert p.request_rule(alice, target("web", "env=dev"), "postgres") is None
    assert p.request_rule(alice, target("db-1"), "root") is None  # login not allowed
    assert p.request_rule(carol, target("db-1"), "postgres") is None  # not in the group
    assert p.rules[0].ticket_pattern.search("fix INC-42 now")
    assert p.principal_matches(p.rules[0].approvers, user("x", Role.APPROVER))
    assert not p.principal_matches(p.rules[0].approvers, user("y", Role.ADMIN))


def test_auto_approve_window() -> None:
    p = parse_policy(BASE + """
[[auto_approve]]
name = "ro-hours"
requesters = ["*"]
logins = ["readonly"]
max_duration = "30m"
days = ["mon", "tue", "wed", "thu", "fri"]
hours = "09:00-17:00"
timezone = "Europe/Berlin"
""")
    u, t = user("z"), target("db-1")
    wed_10_berlin = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # 10:00 in Berlin (UTC+1)
    assert p.auto_rule(u, t, "readonly", timedelta(minutes=30), wed_10_berlin) is not None
    assert p.auto_rule(u, t, "readonly", timedelta(minutes=31), wed_10_berlin) is None
    assert p.auto_rule(u, t, "postgres", timedelta(minutes=5), wed_10_berlin) is None
    assert p.auto_rule(u, t, "readonly", timedelta(minutes=5), datetime(2026, 11, 25, 16, 30, tzinfo=UTC)) is None
    assert p.auto_rule(u, t, "readonly", timedelta(minutes=5), datetime(2026, 11, 28, 9, 0, tzinfo=UTC)) is None  # Sat


MISTAKES = [
    # (policy text, expected line, words in the problem)
    ("[settings\n", 1, "not valid TOML"),
    ('[settings]\nrequest_timeout = "soon"\n', 2, "request_timeout"),
    ('[settings]\nrequest_timeout = 30\n', 2, "duration string"),
    ('[settings]\ncolour = "blue"\n', 2, "unknown key 'colour'"),
    ('surprise = 1\n', 1, "unknown key 'surprise' at the top level"),
    ('[groups]\nops = "alice"\n', 2, "list of user names"),
    ('[groups]\nops = ["al ice"]\n', 2, "invalid name"),
    ('[[rule]]\nname = "a"\nrequesters = ["role:wizard"]\nmax_duration = "1h"\napprovers = ["*"]\n', 3,
     "unknown role 'wizard'"),
    ('[[rule]]\nname = "a"\nrequesters = ["group:nobody"]\nmax_duration = "1h"\napprovers = ["*"]\n', 3,
     "group 'nobody' is not defined"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\napprovers = ["*"]\n', 1, "max_duration is required"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "8d"\napprovers = ["*"]\n', 4, "may not exceed 7d"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = []\n', 5, "non-empty list"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = ["*"]\napprovals = 0\n', 6,
     "approvals must be an integer from 1 to 10"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = ["*"]\nticket_pattern = "(["\n', 6,
     "not a valid regular expression"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = ["*"]\n'
     '[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = ["*"]\n', 7, "two rules are named 'a'"),
    ('[[rule]]\nname = "a"\nrequesters = ["*"]\nmax_duration = "1h"\napprovers = ["*"]\nreviewers = ["*"]\n', 6,
     "unknown key 'reviewers'"),
    ('[[auto_approve]]\nname = "x"\nrequesters = ["*"]\nlogins = ["ro"]\nmax_duration = "1h"\nhours = "9-5"\n', 6,
     "hours must look like"),
    ('[[auto_approve]]\nname = "x"\nrequesters = ["*"]\nlogins = ["ro"]\nmax_duration = "1h"\nhours = "17:00-09:00"\n',
     6, "end after they start"),
    ('[[auto_approve]]\nname = "x"\nrequesters = ["*"]\nlogins = ["ro"]\nmax_duration = "1h"\ndays = ["caturday"]\n',
     6, "unknown day"),
    ('[[auto_approve]]\nname = "x"\nrequesters = ["*"]\nlogins = ["ro"]\nmax_duration = "1h"\ntimezone = "Mars/Base"\n',
     6, "unknown time zone"),
    ('[break_glass]\nenabled = "yes"\n', 2, "true or false"),
    ('[break_glass]\nenabled = true\nrequesters = ["role:admin"]\nmax_duration = "1d"\n', 4, "may not exceed 4h"),
]


@pytest.mark.parametrize(("text", "line", "words"), MISTAKES)
def test_each_mistake_names_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "policy.toml")
    assert exc.value.line == line, str(exc.value)
    assert words in exc.value.problem
    assert str(exc.value).startswith(f"policy policy.toml:{line}: ")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[settings]\nrequest_timeout = "\xff"\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(bad)
    assert exc.value.line == 2 and "UTF-8" in exc.value.problem
