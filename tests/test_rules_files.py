"""File rules (``path``, ``file_ops``) without a bastion: the rules file refuses their mistakes,
the shipped file rules catch what they say, the engine decides a request (deny, terminate, caps,
facts, hostile paths), and ``zsp rules test`` finds in a recording's ``sftp.op`` events what
the relay would have decided. ``tests/test_rules_sftp.py`` runs them live, through the bastion."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.rules_helpers import Rec, facts, file_rules, fired, rule, ruleset, run
from zsp_tui.cli import main
from zsp_tui.exceptions import RulesError
from zsp_tui.rules import Action, FileOp, Trigger
from zsp_tui.rules.config import DEFAULT_RULES_FILE, parse_rules, shipped_rules
from zsp_tui.rules.engine import MAX_MATCHES, MAX_TEXT, SessionRules
from zsp_tui.rules.files import file_ops_of, file_request, file_text

R = '[settings]\ndefaults = "none"\n\n[[rule]]\nname = "f1"\nseverity = "high"\n'


def refused(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    return info.value


# --- the rules file ------------------------------------------------------------------------------


def test_a_rule_with_path_or_file_ops_is_a_file_rule() -> None:
    rs = ruleset(
        '[[rule]]\nname = "a"\nseverity = "high"\nactions = ["deny", "warn"]\npath = \'^/etc/\'\n'
        '[[rule]]\nname = "b"\nseverity = "low"\nfile_ops = ["remove", "rmdir"]\nlogins = ["root"]\n'
    )
    a, b = rs.rules
    assert a.trigger is Trigger.FILE and a.file_ops is None and a.path is not None and Action.DENY in a.actions
    assert a.actions_text == "flag,warn,deny"
    assert b.trigger is Trigger.FILE and b.file_ops == {FileOp.REMOVE, FileOp.RMDIR} and b.path is None


BAD = [
    (R + 'file_ops = ["read", "chmod"]\n', 7, "file_ops: unknown file operation 'chmod' (use read, write, remove"),
    (R + "file_ops = []\n", 7, "file_ops must be a non-empty list"),
    (R + 'file_ops = "read"\n', 7, "file_ops must be a non-empty list"),
    (R + "path = '(unclosed'\n", 7, "path is not a valid regular expression"),
    (R + "path = ''\n", 7, "path must be a non-empty regular expression"),
    (R + f"path = '{'a' * 1001}'\n", 7, "path is longer than 1000 characters"),
    (R + 'actions = ["hold"]\npath = "x"\n', 7, "hold is for command lines: rule 'f1' matches file operations"),
    (R + 'actions = ["deny"]\ncommand = "x"\n', 7, "deny refuses a file operation: rule 'f1' matches command"),
    (R + 'actions = ["deny"]\nlogins = ["root"]\n', 7, "matches session, not file operations"),
    (R + "command = 'x'\npath = 'y'\n", 7, "command and path in one rule"),
    (R + "output = 'x'\nfile_ops = ['read']\n", 7, "output and file_ops in one rule"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BAD)
def test_file_rule_mistakes_name_their_line(text: str, line: int, problem: str) -> None:
    err = refused(text)
    assert (err.line, problem in err.problem) == (line, True), str(err)


def test_the_template_documents_file_rules_and_still_parses() -> None:
    assert "file_ops" in DEFAULT_RULES_FILE and "deny" in DEFAULT_RULES_FILE
    parse_rules(DEFAULT_RULES_FILE, "rules.toml")


# --- the shipped file rules ----------------------------------------------------------------------

SHIPPED = {
    "ssh-key-upload": (
        [
            ((FileOp.WRITE,), "/root/.ssh/authorized_keys"),
            ((FileOp.WRITE,), ".ssh/authorized_keys2"),
            ((FileOp.RENAME,), "/home/a/upload.tmp", "/home/a/.ssh/authorized_keys"),
            ((FileOp.READ, FileOp.WRITE), "/home/a/.ssh/authorized_keys"),
        ],
        [
            ((FileOp.READ,), "/root/.ssh/authorized_keys"),
            ((FileOp.WRITE,), "/root/.ssh/authorized_keys.bak"),
            ((FileOp.REMOVE,), "/root/.ssh/authorized_keys"),
        ],
    ),
    "sudoers-upload": (
        [
            ((FileOp.WRITE,), "/etc/sudoers"),
            ((FileOp.WRITE,), "/etc/sudoers.d/90-me"),
            ((FileOp.WRITE,), "//etc/./sudoers"),
            ((FileOp.SETSTAT,), "/etc/sudoers"),
            ((FileOp.REMOVE,), "/etc/sudoers.d/README"),
            ((FileOp.RENAME,), "/tmp/x", "/etc/sudoers.d/x"),
        ],
        [
            ((FileOp.READ,), "/etc/sudoers"),
            ((FileOp.WRITE,), "/home/a/etc/sudoers"),
            ((FileOp.WRITE,), "/etc/sudoersx"),
        ],
    ),
    "shadow-download": (
        [
            ((FileOp.READ,), "/etc/shadow"),
            ((FileOp.READ,), "/etc/gshadow"),
            ((FileOp.READ,), "/etc/shadow-"),
            ((FileOp.READ,), "//etc//shadow"),
            ((FileOp.SYMLINK,), "/etc/shadow", "/home/a/s"),
            ((FileOp.LINK,), "/etc/gshadow", "/home/a/g"),
        ],
        [
            ((FileOp.WRITE,), "/etc/shadow"),
            ((FileOp.READ,), "/etc/shadowsocks"),
            ((FileOp.READ,), "/home/a/etc/shadow"),
            ((FileOp.LIST,), "/etc"),
            ((FileOp.SYMLINK,), "/etc/passwd", "/home/a/s"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_file_rules_both_ways(name: str) -> None:
    rule = next(r for r in shipped_rules() if r.name == name)
    assert rule.trigger is Trigger.FILE and rule.actions_text == "flag,notify"
    rs = ruleset("", standard=True)
    for caught, wanted in ((SHIPPED[name][0], True), (SHIPPED[name][1], False)):
        for ops, *paths in caught:
            engine = SessionRules(rs, facts(), cols=80, rows=24, pty=False)
            got = [m.rule.name for m in engine.file_op(ops, tuple(paths), 1000)]
            assert (name in got) is wanted, (name, ops, paths, got)


def test_shipped_command_rules_do_not_fire_on_file_operations() -> None:
    engine = SessionRules(ruleset("", standard=True), facts(), cols=80, rows=24, pty=False)
    assert [m.rule.name for m in engine.file_op((FileOp.LIST,), ("/etc/shadow",), 1)] == []


# --- what a request is ---------------------------------------------------------------------------


def test_sftp_requests_map_to_file_ops() -> None:
    assert file_ops_of("open", "read") == (FileOp.READ,)
    assert file_ops_of("open", "write,creat,trunc") == (FileOp.WRITE,)
    assert file_ops_of("open", "read,write") == (FileOp.READ, FileOp.WRITE)
    assert file_ops_of("open", "append") == (FileOp.WRITE,)
    assert file_ops_of("open", "") == (FileOp.READ,)
    assert file_ops_of("opendir") == (FileOp.LIST,)
    assert file_ops_of("fsetstat") == (FileOp.SETSTAT,)
    assert file_ops_of("extended", name="posix-rename@openssh.com") == (FileOp.RENAME,)
    assert file_ops_of("extended", name="hardlink@openssh.com") == (FileOp.LINK,)
    assert file_ops_of("extended", name="lsetstat@openssh.com") == (FileOp.SETSTAT,)
    for quiet in ("stat", "lstat", "fstat", "realpath", "readlink", "read", "write", "close", "readdir", "init"):
        assert file_ops_of(quiet) == (), quiet
    assert file_ops_of("extended", name="statvfs@openssh.com") == ()
    # a recorded event: its exact bytes win over its escaped text
    raw = b"/tmp/\xff\x1bname"
    ops, paths = file_request(
        {"op": "open", "flags": "write,creat", "path": "/tmp/\\xff\x1bname", "path_b64": base64.b64encode(raw).decode()}
    )
    assert ops == (FileOp.WRITE,) and paths == ("/tmp/\ufffd\x1bname",)
    assert file_request({"op": "rename", "path": "/a", "path2": "/b"}) == ((FileOp.RENAME,), ("/a", "/b"))
    assert file_text((FileOp.RENAME,), ("/a", "/b")) == "rename /a -> /b"


# --- the engine ----------------------------------------------------------------------------------

RULES = "\n" + file_rules(
    rule("up", "medium", actions=["flag", "notify"], path="UP", file_ops=["write"]),
    rule("no-rm", "high", actions=["deny"], path="KEEP", file_ops=["remove", "rename"]),
    rule("stop", "critical", actions=["terminate"], path="SECRET", file_ops=["read"]),
    rule("any-op-in-etc", "low", path="^/etc/"),
    rule("prod-only", "high", actions=["terminate"], path="SCOPED", targets=["label:prod"]),
    rule("root-only", "high", actions=["terminate"], path="SCOPED", logins=["root"]),
    rule("nights", "low", path="NIGHT", hours="22:00-06:00"),
)


def engine(**kw: object) -> SessionRules:
    return SessionRules(ruleset(RULES), facts(**kw), cols=80, rows=24, pty=False)  # type: ignore[arg-type]


def test_a_request_is_flagged_denied_or_terminated_in_rule_order() -> None:
    e = engine()
    v = e.file_verdict((FileOp.WRITE,), ("/tmp/UP.txt",), 10)
    assert [(m.rule.name, m.trigger, m.text) for m in v.matches] == [("up", Trigger.FILE, "write /tmp/UP.txt")]
    assert v.refused is None
    v = e.file_verdict((FileOp.READ,), ("/tmp/UP.txt",), 11)  # not a write
    assert v.matches == () and v.refused is None
    v = e.file_verdict((FileOp.RENAME,), ("/tmp/a", "/tmp/KEEP"), 12)  # either path
    assert v.refused is not None and v.refused.rule.name == "no-rm" and not v.terminates
    v = e.file_verdict((FileOp.READ,), ("/etc/SECRET",), 13)
    assert [m.rule.name for m in v.matches] == ["stop", "any-op-in-etc"]
    assert v.refused is not None and v.refused.rule.name == "stop" and v.terminates
    assert [m.rule.name for m in e.file_op((FileOp.LIST,), ("/etc/ssh",), 14)] == ["any-op-in-etc"]
    # a request no rule looks at, and one with no path: a path rule needs a path
    assert e.file_op((), ("/etc/x",), 15) == [] and e.file_op((FileOp.SETSTAT,), (), 16) == []


def test_deny_keeps_refusing_past_the_report_cap_and_terminate_is_always_reported() -> None:
    e = engine()
    for i in range(MAX_MATCHES + 5):
        v = e.file_verdict((FileOp.REMOVE,), (f"/tmp/KEEP-{i}",), i)
        assert v.refused is not None and v.refused.rule.name == "no-rm"
        assert bool(v.matches) is (i < MAX_MATCHES)
    assert e.suppressed == {"no-rm": 5}
    for i in range(MAX_MATCHES + 2):
        assert [m.rule.name for m in e.file_op((FileOp.READ,), ("/x/SECRET",), 100 + i)] == ["stop"]


def test_file_rules_are_scoped_by_target_login_and_time() -> None:
    assert engine().file_op((FileOp.WRITE,), ("/tmp/SCOPED",), 1) == []
    assert [m.rule.name for m in engine(labels=("prod",)).file_op((FileOp.WRITE,), ("/tmp/SCOPED",), 1)] == [
        "prod-only"
    ]
    assert [m.rule.name for m in engine(login="root").file_op((FileOp.WRITE,), ("/tmp/SCOPED",), 1)] == ["root-only"]
    # the recordings here start at 14:13:20Z: not at night; 8 hours later it is
    assert engine().file_op((FileOp.WRITE,), ("/tmp/NIGHT",), 1) == []
    assert len(engine().file_op((FileOp.WRITE,), ("/tmp/NIGHT",), 8 * 3600 * 10**6)) == 1


def test_hostile_paths_are_matched_as_sent_and_cut_in_the_text() -> None:
    e = engine()
    evil = "/tmp/UP\x1b]0;owned\x07\nnext line\u202e"
    [m] = e.file_op((FileOp.WRITE,), (evil,), 1)
    assert m.text == f"write {evil}"  # exact: escaped by whoever shows it
    huge = "/tmp/" + "a" * 65536 + "/UP"  # matched whole (the target refuses it: PATH_MAX)
    [m] = e.file_op((FileOp.WRITE,), (huge,), 2)
    assert len(m.text) == MAX_TEXT and m.text.endswith("…")


# --- offline: zsp rules test over sftp.op events -------------------------------------------------


def test_recorded_sftp_requests_are_found_offline(tmp_path: Path, key: SigningKey) -> None:
    rec = Rec(tmp_path / "s.zsprec", key, term="", cols=0, rows=0)
    raw = b"/tmp/UP-\xff\x1b[2J"
    rec.event("sftp.op", "init", op="init", version=3)
    rec.event("sftp.op", "open", op="open", id=1, path="/tmp/UP.txt", flags="write,creat,trunc")
    rec.event("sftp.op", "write", op="write", id=2, handle="00", offset=0, length=3, path="/tmp/UP.txt")
    rec.event("sftp.op", "open", op="open", id=3, path=raw.decode("utf-8", "backslashreplace"),
              path_b64=base64.b64encode(raw).decode(), flags="write,creat")
    rec.event("sftp.op", "stat", op="stat", id=4, path="/etc/shadow")
    rec.event("sftp.op", "extended", op="extended", id=5, name="posix-rename@openssh.com", path="/a", path2="/b/KEEP")
    rec.event("sftp.op", "open", op="open", id=6, path="/srv/SECRET", flags="read")
    path = rec.close()
    matches, suppressed = run(ruleset(RULES), path, key)
    assert fired(matches) == {
        ("up", "write /tmp/UP.txt"): 1,
        ("up", "write /tmp/UP-\ufffd\x1b[2J"): 1,
        ("no-rm", "rename /a -> /b/KEEP"): 1,
        ("stop", "read /srv/SECRET"): 1,
    }
    assert all(m.trigger is Trigger.FILE for m in matches) and suppressed == {}


# --- the CLI -------------------------------------------------------------------------------------


def test_rules_check_and_list_show_file_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "rules.toml"
    own.write_text('[[rule]]\nname = "no-etc"\nseverity = "high"\nactions = ["deny"]\npath = \'^/etc/\'\n'
                   'file_ops = ["write", "remove"]\n')
    assert main(["rules", "check", str(own)]) == 0
    assert capsys.readouterr().out == "ok: 14 rules (13 shipped, 1 own)\n"
    assert main(["rules", "list", "--rules", str(own), "--json", "--data", str(tmp_path / "data")]) == 0
    doc = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rules"]}
    assert doc["no-etc"]["trigger"] == "file" and doc["no-etc"]["actions"] == ["flag", "deny"]
    assert (doc["no-etc"]["path"], doc["no-etc"]["file_ops"]) == ("^/etc/", ["remove", "write"])
    assert doc["shadow-download"]["file_ops"] == ["link", "read", "symlink"] and doc["shadow-read"]["file_ops"] is None
    own.write_text(own.read_text().replace('["deny"]', '["hold"]'))
    assert main(["rules", "check", str(own)]) == 2
    assert f"rules {own}:4: hold is for command lines" in capsys.readouterr().err
