"""rules.toml: every mistake is refused with its line; the shipped set; the bastion's RuleKeeper."""

from __future__ import annotations

import os
import re
import stat
from datetime import time, timedelta
from pathlib import Path
from time import time as wall_clock

import pytest

from zsp_tui.exceptions import RulesError
from zsp_tui.rules import Action, Severity, Trigger
from zsp_tui.rules.config import (
    DEFAULT_RULES_FILE,
    MAX_PATTERN,
    STANDARD_RULES,
    RuleKeeper,
    load_rules,
    parse_rules,
    shipped_names,
    shipped_rules,
)

STANDARD = [r.name for r in shipped_rules()]


def own(text: str) -> str:
    return '[settings]\ndefaults = "none"\n\n' + text


def refused(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "rules.toml")
    return info.value


# --- the shipped set ---------------------------------------------------------------------------


def test_shipped_sets_and_the_template() -> None:
    assert shipped_names() == ("standard", "none")
    assert set(STANDARD) >= {
        "shadow-read", "history-tamper", "rm-rf-root", "disk-wipe", "curl-pipe-shell", "ssh-key-added",
        "sudo-root-prod", "root-login-prod", "private-key-output", "audit-disabled",
    }
    assert all(r.shipped and r.line == 0 for r in shipped_rules())
    # the template `zsp init` writes is the standard set, nothing of its own, 5 minutes to decide
    rs = parse_rules(DEFAULT_RULES_FILE, "rules.toml")
    assert [r.name for r in rs.rules] == STANDARD and rs.defaults == "standard"
    assert rs.hold_timeout == timedelta(minutes=5) and rs.source == "rules.toml"
    # without a file: the standard set, named for what it is
    missing = load_rules(Path("/nonexistent/rules.toml"))
    assert [r.name for r in missing.rules] == STANDARD and missing.source == "shipped:standard"
    assert len(missing.digest) == 64
    assert "[[rule]]" in STANDARD_RULES


def test_shipped_severities_and_actions() -> None:
    rules = {r.name: r for r in shipped_rules()}
    rm = rules["rm-rf-root"]
    assert rm.severity is Severity.CRITICAL and rm.actions_text == "flag,notify,warn,hold" and rm.enforcing
    disk = rules["disk-wipe"]
    assert disk.severity is Severity.CRITICAL and Action.HOLD in disk.actions
    curl = rules["curl-pipe-shell"]
    assert curl.severity is Severity.HIGH and Action.WARN in curl.actions and not curl.enforcing
    assert rules["root-login-prod"].trigger is Trigger.SESSION and rules["root-login-prod"].severity is Severity.MEDIUM
    assert rules["private-key-output"].trigger is Trigger.OUTPUT
    assert rules["sudo-root-prod"].targets == ("label:prod", "label:production")


def test_switch_off_by_name_and_reuse_the_name() -> None:
    rs = parse_rules('[settings]\ndisable = ["sudo-root-prod", "curl-pipe-shell"]\n', "r")
    assert [r.name for r in rs.rules] == [n for n in STANDARD if n not in ("sudo-root-prod", "curl-pipe-shell")]
    assert rs.disabled == {"sudo-root-prod", "curl-pipe-shell"}
    # a disabled shipped rule's name may be taken by a rule of one's own (a stricter variant)
    rs = parse_rules(
        '[settings]\ndisable = ["curl-pipe-shell"]\n[[rule]]\nname = "curl-pipe-shell"\nseverity = "critical"\n'
        'actions = ["terminate"]\ncommand = "curl .*\\\\| *sh"\n',
        "r",
    )
    mine = rs.named("curl-pipe-shell")
    assert mine is not None and not mine.shipped and mine.line == 3 and Action.TERMINATE in mine.actions
    assert rs.rules[-1] is mine  # own rules come after the shipped ones


def test_defaults_none_leaves_only_own_rules() -> None:
    assert parse_rules('[settings]\ndefaults = "none"\n', "r").rules == ()
    rs = parse_rules(own('[[rule]]\nname = "a"\nseverity = "low"\nkeys = "x"\n'), "r")
    assert [r.name for r in rs.rules] == ["a"] and rs.defaults == "none"
    assert rs.rules[0].actions == frozenset({Action.FLAG}) and rs.rules[0].trigger is Trigger.COMMAND


def test_a_full_rule() -> None:
    rs = parse_rules(
        own(
            """
[[rule]]
name = "night-prod-drop"
severity = "high"
actions = ["notify", "warn", "hold"]
description = "DROP at night"
message = "ask first"
command = '(?i)\\bdrop\\s+table'
keys = 'DROP'
users = ["role:operator", "group:dba", "user:alice", "bob"]
targets = ["db-*", "label:prod"]
logins = ["postgres"]
days = ["Mon", "fri"]
hours = "22:00-06:00"
timezone = "Europe/Berlin"
min_duration = "90s"
"""
        ),
        "r",
    )
    (r,) = rs.rules
    assert r.line == 5 and r.actions == {Action.FLAG, Action.NOTIFY, Action.WARN, Action.HOLD}
    assert r.command is not None and r.command.search("drop   TABLE x")
    assert r.users == ("role:operator", "group:dba", "user:alice", "user:bob")
    assert r.days == {0, 4} and r.hours == (time(22), time(6)) and str(r.timezone) == "Europe/Berlin"
    assert r.min_duration == timedelta(seconds=90) and r.shown_message == "ask first"
    rs = parse_rules(own('[[rule]]\nname = "d"\nseverity = "info"\nhours = "09:00-24:00"\n'), "r")
    assert rs.rules[0].hours == (time(9), time.max) and rs.rules[0].trigger is Trigger.SESSION


# --- every mistake, with its line ------------------------------------------------------------

RULE = '[[rule]]\nname = "r1"\nseverity = "high"\n'

BAD = [
    # (text, line, what the problem says)
    ("x = 1\n", 1, "unknown key 'x' at the top level"),
    ("[settings]\ndefaults = \"strict\"\n", 2, "no shipped rule set 'strict'"),
    ("[settings]\ndisable = [\"no-such\"]\n", 2, "no shipped rule named 'no-such'"),
    ("[settings]\ndefaults = \"none\"\ndisable = [\"rm-rf-root\"]\n", 3, "ships no rules"),
    ("[settings]\ndisable = \"rm-rf-root\"\n", 2, "disable must be a list"),
    ("[settings]\nhold_timeout = \"5s\"\n", 2, "from 10s to 1h"),
    ("[settings]\nhold_timeout = \"2h\"\n", 2, "from 10s to 1h"),
    ("[settings]\nhold_timeout = \"soon\"\n", 2, "not a duration"),
    ("[settings]\n\ncolour = 1\n", 3, "unknown key 'colour' in [settings]"),
    ("settings = 3\n", 1, "[settings] must be a table"),
    ("[rule]\nname = \"x\"\n", 1, "[[rule]] tables"),
    (own(RULE + 'command = "x"\nfoo = 1\n'), 8, "unknown key 'foo' in [rule]"),
    (own(RULE), 4, "has no condition"),
    (own('[[rule]]\nname = "r1"\ncommand = "x"\n'), 4, "needs a severity"),
    (own(RULE.replace("high", "severe") + 'command = "x"\n'), 6, "severity must be one of"),
    (own(RULE + 'actions = ["flag", "page"]\ncommand = "x"\n'), 7, "unknown action 'page'"),
    (own(RULE + 'actions = []\ncommand = "x"\n'), 7, "actions must be a non-empty list"),
    (own(RULE + 'command = "(unclosed"\n'), 7, "command is not a valid regular expression"),
    (own(RULE + 'keys = "[[a]"\n'), 7, "keys is not a valid regular expression"),  # FutureWarning: nested set
    (own(RULE + "output = ''\n"), 7, "output must be a non-empty regular expression"),
    (own(RULE + "command = 3\n"), 7, "command must be a non-empty regular expression"),
    (own(RULE + f"command = '{'a' * (MAX_PATTERN + 1)}'\n"), 7, "longer than 1000 characters"),
    (own(RULE + 'actions = ["hold"]\noutput = "x"\n'), 7, "hold needs a command line"),
    (own(RULE + 'actions = ["hold"]\nlogins = ["root"]\n'), 7, "matches session, not a command"),
    (own(RULE + 'actions = ["hold"]\nmin_duration = "1h"\n'), 7, "matches duration, not a command"),
    (own(RULE + 'users = ["role:wizard"]\n'), 7, "unknown role 'wizard'"),
    (own(RULE + 'users = ["group:"]\n'), 7, "names no group"),
    (own(RULE + 'users = ["Bad Name!"]\n'), 7, "users:"),
    (own(RULE + "users = []\n"), 7, "users must be a non-empty list"),
    (own(RULE + 'targets = ["db1", 2]\n'), 7, "targets must be a non-empty list"),
    (own(RULE + "logins = \"root\"\n"), 7, "logins must be a non-empty list"),
    (own(RULE + 'days = ["mon", "funday"]\n'), 7, "unknown day 'funday'"),
    (own(RULE + 'hours = "9-17"\n'), 7, "hours must look like"),
    (own(RULE + 'hours = "25:00-06:00"\n'), 7, "hours must look like"),
    (own(RULE + 'hours = "10:00-10:00"\n'), 7, "must not start and end at the same time"),
    (own(RULE + 'timezone = "Mars/Olympus"\n'), 7, "unknown time zone"),
    (own(RULE + 'timezone = "../../etc/passwd"\n'), 7, "unknown time zone"),
    (own(RULE + 'min_duration = "40d"\n'), 7, "may not exceed 30d"),
    (own(RULE + 'min_duration = "0s"\n'), 7, "must be positive"),
    (own(RULE + 'description = 5\nlogins = ["x"]\n'), 7, "description must be a string"),
    (own(RULE + f'message = "{"m" * 1001}"\nlogins = ["x"]\n'), 7, "message is longer than 1000"),
    (own(RULE + 'logins = ["x"]\n\n' + RULE + 'logins = ["y"]\n'), 10, "'r1' is taken: the name of another rule"),
    ('[[rule]]\nname = "rm-rf-root"\nseverity = "low"\ncommand = "x"\n', 2, "a shipped rule in force"),
    (own("[[rule]]\nseverity = \"low\"\ncommand = \"x\"\n"), 4, "name must be"),
    ("[settings]\ndefaults = \"none\"\n[[rule]]\nname = \"ok\"\nkeys = 'x'\nseverity = 'low'\n[[rule]]\nname = 'BAD'\n", 8,
     "name must be"),
    ("[[rule]]\nname = \"a\"\nseverity = \n", 3, "not valid TOML"),
    ("rule = [1, 2]\n", 1, "[[rule]] tables"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BAD)
def test_every_mistake_names_its_line(text: str, line: int, problem: str) -> None:
    err = refused(text)
    assert err.line == line, (err.line, str(err))
    assert problem in err.problem, err.problem
    assert str(err) == f"rules rules.toml:{line}: {err.problem}"


def test_headers_with_spaces_and_comments_still_give_the_line() -> None:
    text = own('[[rule]]\nname = "a"\nseverity = "low"\nkeys = "x"\n\n[[ rule ]]   # the second\nname = "b"\n'
               'severity = "low"\n')
    assert refused(text).line == 9


@pytest.mark.parametrize(
    "name",
    [
        "evil\x1b[2Jname", "tab\tname", "new\nline", "nul\x00", "Upper", "ünïcode", "-dash-first", "",
        "a" * 65, "spaces in it", "bidi\u202ename", "semi;colon",
    ],
)
def test_hostile_rule_names_are_refused(name: str) -> None:
    import json

    err = refused(own(f"[[rule]]\nname = {json.dumps(name)}\nseverity = \"low\"\nkeys = \"x\"\n"))
    assert err.line == 5 and "name must be" in err.problem


def test_names_that_are_fine() -> None:
    for name in ("a", "0", "db.drop_table-2", "x" * 64):
        parse_rules(own(f'[[rule]]\nname = "{name}"\nseverity = "low"\nkeys = "x"\n'), "r")


def test_not_utf8_and_unreadable(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_bytes(b'[settings]\ndefaults = "none"\n# caf\xe9\n')
    with pytest.raises(RulesError) as info:
        load_rules(p)
    assert info.value.line == 3 and "not valid UTF-8" in info.value.problem
    p.write_bytes(b"#" * (1 << 20) + b"\n")
    with pytest.raises(RulesError, match="larger than"):
        load_rules(p)
    with pytest.raises(RulesError):
        load_rules(tmp_path)  # a directory


# --- shipped patterns: what they catch, and what they must not ---------------------------------

CATCH = {
    "shadow-read": (
        ["cat /etc/shadow", "sudo cat /etc/shadow", "sudo -u root less /etc/gshadow", "grep root /etc/shadow",
         "cp /etc/shadow /tmp/x", "python3 -c \"print(open('/etc/shadow').read())\"",
         "while read l; do echo $l; done < /etc/shadow", "dd if=/etc/shadow of=/tmp/s", "getent shadow",
         "tar czf x.tgz /etc/shadow", "ls; cat /etc/shadow-", "/bin/cat '/etc/shadow'", "vipw -s",
         "head -n3 /etc/shadow | tail -1", "base64 /etc/shadow", "unshadow /etc/passwd /etc/shadow"],
        ["grep shadow /etc/group", "ls -l /etc/shadow", "stat /etc/shadow", "echo /etc/shadow",
         "cat /etc/shadowsocks/config.json", "man shadow", "chmod 640 /etc/shadow", "cat /etc/passwd", "vipw",
         "find /etc -name shadow"],
    ),
    "history-tamper": (
        ["history -c", "history -cw", "history -d 12", "unset HISTFILE", "export HISTFILE=/dev/null",
         "HISTFILE=/dev/null bash", "HISTSIZE=0", "export HISTFILESIZE=0", "set +o history", "rm ~/.bash_history",
         "rm -f /root/.zsh_history", "truncate -s 0 ~/.bash_history", "cat /dev/null > ~/.bash_history",
         "> ~/.bash_history", "echo >.bash_history", "ln -sf /dev/null ~/.bash_history", "shred -u .bash_history",
         "kill -9 $$", "export HISTFILE=", "unset HISTFILE HISTSIZE", "export HISTIGNORE='*'"],
        ["history", "history 20", "cat ~/.bash_history", "grep ssh ~/.bash_history", "echo x >> ~/.bash_history",
         "HISTSIZE=10000", "echo history -c", "rm -rf /tmp/my_history_notes", "export HISTFILE=~/.hist2",
         "kill -9 1234", "unset HISTSIZE", "cp ~/.bash_history /tmp/h"],
    ),
    "rm-rf-root": (
        ["rm -rf /", "rm -rf /*", "sudo rm -rf /", "rm -rf --no-preserve-root /", "rm -fr /", "rm -r -f /", "rm -R /",
         "/bin/rm -rf /", "rm --recursive --force /", 'rm -rf "/"', "rm -rf '/*'", "cd /tmp && rm -rf /",
         "rm -rf /tmp/x /", "sudo -u root rm -rf /", "FOO=1 rm -rf /", "rm -rf / ; echo done", "nohup rm -rf / &"],
        ["rm -rf /tmp/x", "rm -rf ./", "rm -rf ~/", "rm -f /", "echo rm -rf /", "rm -rf /home/*", "rm -rf ./*",
         "rm -rf /var/tmp/", "grep 'rm -rf /' notes.txt", "rm -rf dir/ /tmp/x", "rm -rf /opt"],
    ),
    "disk-wipe": (
        ["mkfs.ext4 /dev/sdb1", "sudo mkfs -t xfs /dev/nvme0n1p1", "dd if=/dev/zero of=/dev/sda bs=1M",
         "dd if=/dev/urandom of=/dev/nvme0n1", "wipefs -a /dev/sdb", "wipefs --all /dev/vdb", "shred -n3 /dev/sda",
         "cat /dev/zero > /dev/sda", "mkswap /dev/sdc1", "sudo dd of=/dev/xvda if=img", "blkdiscard /dev/nvme0n1",
         "mke2fs /dev/md0"],
        ["man mkfs", "mkfs.ext4 disk.img", "dd if=/dev/sda of=disk.img", "dd if=/dev/zero of=/tmp/file bs=1M count=1",
         "wipefs /dev/sdb", "shred secret.txt", "echo x > /dev/null", "lsblk /dev/sda", "cat /dev/sda | head",
         "ls /dev/sda"],
    ),
    "curl-pipe-shell": (
        ["curl -fsSL https://x.sh | sh", "curl https://get.x.io | bash", "wget -qO- http://x | sudo sh",
         "curl x | sudo -E bash -s -- --yes", "bash <(curl -s http://x)", 'sh -c "$(curl -fsSL https://x)"',
         "curl x | tee i.sh | bash", "wget -O - x|/bin/bash", "source <(curl -s x)", "curl -s x | zsh"],
        ["curl https://api | python -m json.tool", "curl x | shasum", "curl x | sha256sum", "curl -o install.sh x",
         "curl x | less", "bash install.sh", "curl x | jq .", "wget x; sh x.sh", "curl x | grep -i bash",
         "curl x | sh-like-tool"],
    ),
    "ssh-key-added": (
        ["echo 'ssh-ed25519 AAAA x' >> ~/.ssh/authorized_keys", "cat k.pub >> /root/.ssh/authorized_keys",
         "ssh-copy-id bob@h", "echo k | tee -a ~/.ssh/authorized_keys", "cp k.pub ~/.ssh/authorized_keys",
         "vi ~/.ssh/authorized_keys", "curl -o ~/.ssh/authorized_keys https://x",
         "sed -i 's/a/b/' .ssh/authorized_keys", "echo k > authorized_keys2"],
        ["cat ~/.ssh/authorized_keys", "grep bob ~/.ssh/authorized_keys", "cp ~/.ssh/authorized_keys /tmp/backup",
         "ssh-keygen -t ed25519", "wc -l .ssh/authorized_keys", "ls -la ~/.ssh"],
    ),
    "sudo-root-prod": (
        ["sudo -i", "sudo -s", "sudo su", "sudo su -", "sudo su - root", "sudo bash", "sudo -E -s", "su -", "su",
         "su root", "su - root", "sudo -i -u root", "sudo bash -l", "sudo /bin/bash", "doas -s", "sudo --login",
         "sudo -sE", "sudo -u root -i"],
        ["sudo systemctl restart nginx", "sudo -l", "sudo su postgres", "sudo -iu postgres", "sudo -u postgres psql",
         "sudo -u postgres bash", "sudo bash script.sh", "sudo -i -u postgres", "su postgres", "echo su -",
         "sudo -k", "summary"],
    ),
    "audit-disabled": (
        ["systemctl stop auditd", "sudo systemctl disable --now rsyslog", "systemctl mask systemd-journald",
         "service auditd stop", "/etc/init.d/rsyslog stop", "auditctl -D", "auditctl -e 0", "killall auditd",
         "pkill -9 rsyslogd", "systemctl stop auditd.service", "chkconfig auditd off", "systemctl stop nginx auditd"],
        ["systemctl status auditd", "systemctl restart auditd", "auditctl -l", "auditctl -e 1", "service nginx stop",
         "systemctl stop nginx", "journalctl -u auditd", "systemctl stop auditd-helper"],
    ),
}
BENIGN = ["ls -la", "cd /", "git status", "vim /etc/hosts", "ps aux | grep ssh", "tail -f /var/log/syslog", "df -h",
          "top", "kubectl get pods", "echo hello", "make -j4", "sudo apt-get update", "rm -rf build/", "docker ps",
          "ssh db1", "cat README.md | less"]


@pytest.mark.parametrize("name", sorted(CATCH))
def test_shipped_command_patterns_both_ways(name: str) -> None:
    rule = next(r for r in shipped_rules() if r.name == name)
    assert rule.command is not None
    catches, spares = CATCH[name]
    assert [c for c in catches if not rule.command.search(c)] == []
    assert [c for c in spares if rule.command.search(c)] == []


def test_everyday_commands_fire_nothing() -> None:
    fired = [(r.name, c) for c in BENIGN for r in shipped_rules() if r.command is not None and r.command.search(c)]
    assert fired == []


def test_private_key_output_pattern() -> None:
    rule = next(r for r in shipped_rules() if r.name == "private-key-output")
    assert rule.output is not None
    for kind in ("RSA ", "OPENSSH ", "", "EC ", "ENCRYPTED ", "DSA "):
        assert rule.output.search(f"-----BEGIN {kind}PRIVATE KEY-----")
    assert rule.output.search("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    for other in ("-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----", "BEGIN RSA PRIVATE KEY"):
        assert not rule.output.search(other)


# --- RuleKeeper ------------------------------------------------------------------------------

GOOD_A = '[settings]\ndisable = ["curl-pipe-shell"]\n'
GOOD_B = '[settings]\ndefaults = "none"\n[[rule]]\nname = "b"\nseverity = "low"\nkeys = "x"\n'
BAD_1 = '[settings]\ndefaults = "none"\n[[rule]]\nname = "b"\nseverity = "awful"\nkeys = "x"\n'
BAD_2 = "[settings\n"


def test_keeper_waits_for_a_file_being_written_to_settle(tmp_path: Path) -> None:
    """An editor or a shell's ``>`` truncates, then writes: the empty (or half-written) file in
    between is neither taken (dropping every rule) nor refused; it is looked at again once its
    last write is ``settle`` seconds old."""
    path = tmp_path / "rules.toml"
    path.write_text(GOOD_A)
    old = wall_clock() - 10
    os.utime(path, (old, old))
    keeper = RuleKeeper(path, settle=0.5)
    good = keeper.reload()
    assert good.changed and good.rules.source == str(path)
    path.write_text("")  # truncated, the new content not yet written
    r = keeper.reload()
    assert not r.changed and r.error is None and r.rules is good.rules
    path.write_text(GOOD_A + '\n[[rule]]\nname = "half"\nseverity = "hi')  # half-written: not refused yet
    r = keeper.reload()
    assert not r.changed and r.error is None and r.rules is good.rules
    path.write_text(GOOD_B)
    os.utime(path, (old, old))  # settled
    r = keeper.reload()
    assert r.changed and r.error is None and r.rules.digest != good.rules.digest


def test_keeper_takes_good_files_and_keeps_a_copy(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    keeper = RuleKeeper(path)
    first = keeper.reload()  # no file: the shipped set
    assert first.changed and first.error is None and first.rules.source == "shipped:standard"
    assert not keeper.reload().changed
    path.write_text(GOOD_A)
    r = keeper.reload()
    assert r.changed and r.error is None and "curl-pipe-shell" not in [x.name for x in r.rules.rules]
    copy = tmp_path / "rules.last-good.toml"
    assert copy.read_text() == GOOD_A and stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert not keeper.reload().changed
    # a change of mtime alone is no change; a change of content is, whatever the mtime and size
    os.utime(path, (1, 1))
    assert not keeper.reload().changed
    same_size = GOOD_A.replace("curl-pipe-shell", "disk-wipe-xxxxx").replace("disk-wipe-xxxxx", "disk-wipe")
    path.write_text(same_size + " " * (len(GOOD_A) - len(same_size)))
    os.utime(path, (1, 1))
    r = keeper.reload()
    assert r.changed and "disk-wipe" not in [x.name for x in r.rules.rules]


def test_keeper_refuses_a_bad_file_once_and_keeps_the_last_good_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD_B)
    keeper = RuleKeeper(path)
    good = keeper.reload()
    assert good.changed and [r.name for r in good.rules.rules] == ["b"]
    path.write_text(BAD_1)
    r = keeper.reload()
    assert not r.changed and r.rules is good.rules
    assert r.error == f"rules {path}:5: severity must be one of info, low, medium, high, critical"
    assert keeper.reload().error is None  # said once per distinct bad content
    path.write_text(BAD_2)
    r = keeper.reload()
    assert r.error is not None and f"{path}:1" in r.error and r.rules is good.rules
    path.write_text(BAD_1)
    assert keeper.reload().error is not None  # different from the last bad one: said again
    # the copy holds the good file, not a bad one
    assert (tmp_path / "rules.last-good.toml").read_text() == GOOD_B
    path.write_text(GOOD_A)
    r = keeper.reload()
    assert r.changed and r.error is None
    path.write_text(BAD_1)
    assert keeper.reload().error is not None  # bad again after a good one: said again


def test_a_restarted_keeper_falls_back_to_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD_B)
    RuleKeeper(path).reload()
    path.write_text(BAD_1)
    fresh = RuleKeeper(path)  # the bastion restarted with a bad file
    r = fresh.reload()
    assert [x.name for x in r.rules.rules] == ["b"] and r.changed
    assert r.error is not None and "severity must be one of" in r.error and "last good copy" in r.error
    assert r.rules.source == str(tmp_path / "rules.last-good.toml")
    assert fresh.reload().error is None and fresh.reload().rules is r.rules
    # neither usable: refused outright
    (tmp_path / "rules.last-good.toml").write_text(BAD_2)
    with pytest.raises(RulesError) as info:
        RuleKeeper(path).reload()
    assert info.value.line == 5
    (tmp_path / "rules.last-good.toml").unlink()
    with pytest.raises(RulesError):
        RuleKeeper(path).reload()
    # the file removed: the shipped set
    path.unlink()
    assert RuleKeeper(path).reload().rules.source == "shipped:standard"


def test_keeper_survives_an_unwritable_copy(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD_B)
    (tmp_path / "rules.last-good.toml").mkdir()  # cannot be replaced by a file
    r = RuleKeeper(path).reload()
    assert r.changed and r.error is None


def test_error_text_is_one_line_for_hostile_content() -> None:
    err = refused(own(RULE + 'keys = "x"\nbogus\x1b[2J = 1\n'))
    assert "\n" not in str(err)
    assert re.search(r"rules rules\.toml:\d+: ", str(err))
