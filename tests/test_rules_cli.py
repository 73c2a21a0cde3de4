"""`zsp rules check|list|test` as an operator runs them: one-line errors with the line of the mistake,
hostile text escaped, exact JSON, and `test` agreeing with the rule events recorded live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.helpers import fixed_session_id
from tests.rules_helpers import PROMPT, LiveRec, Rec, facts, ruleset
from zsp_tui.cli import main
from zsp_tui.rules.config import DEFAULT_RULES_FILE, load_rules

OWN = """
[settings]
disable = ["curl-pipe-shell"]

[[rule]]
name = "no-drop"
severity = "high"
actions = ["flag", "hold"]
description = "DROP TABLE"
command = '(?i)drop\\s+table'

[[rule]]
name = "boom"
severity = "low"
output = 'BOOM'
"""


def zsp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "zsp_tui", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised data dir (shared: tests write recordings of their own ids into it)."""
    d = tmp_path_factory.mktemp("rules-cli") / "data"
    subprocess.run([sys.executable, "-m", "zsp_tui", "--version"], check=True, capture_output=True)
    main(["init", "--data", str(d)])
    return d


@pytest.fixture
def key(data: Path) -> SigningKey:  # the data dir's own key: its recordings verify
    return SigningKey.load(data / "keys" / "recording_ed25519")


@pytest.fixture(autouse=True)
def _data_env(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSP_DATA", str(data))


# --- check, list ---------------------------------------------------------------------------------


def test_init_writes_the_template(data: Path) -> None:
    path = data / "rules.toml"
    assert path.read_text() == DEFAULT_RULES_FILE and (path.stat().st_mode & 0o777) == 0o600
    assert [r.name for r in load_rules(path).rules][:3] == ["shadow-read", "history-tamper", "rm-rf-root"]


def test_check(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "rules", "check", str(data / "rules.toml")) == (0, "ok: 13 rules (13 shipped, 0 own)\n", "")
    own = tmp_path / "own.toml"
    own.write_text(OWN)
    assert run(capsys, "rules", "check", str(own))[1] == "ok: 14 rules (12 shipped, 2 own)\n"


def test_check_refuses_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(OWN.replace('severity = "low"', 'severity = "loud"'))
    p = zsp("rules", "check", str(bad))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"zsp: error: rules {bad}:14: severity must be one of info, low, medium, high, critical\n"
    bad.write_text('[[rule]]\nname = "x"\nseverity = "low"\nkeys = "x"\n"evil\\u001b[2J" = 1\n')
    p = zsp("rules", "check", str(bad))
    assert p.returncode == 2 and "\x1b" not in p.stderr and "\\x1b[2J" in p.stderr and ":5: unknown key" in p.stderr
    p = zsp("rules", "check", str(tmp_path / "missing.toml"))
    assert p.returncode == 2 and p.stderr.endswith("missing.toml: no such file\n")
    bad.write_text("[settings\n")
    p = zsp("rules", "check", str(bad))
    assert p.returncode == 2 and f"rules {bad}:1: not valid TOML" in p.stderr and p.stderr.count("\n") == 1


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "list")
    lines = out.splitlines()
    assert code == 0 and "13 rules (13 shipped, 0 own), shipped set 'standard'" in lines[0]
    assert lines[1].split() == ["NAME", "SEVERITY", "TRIGGER", "ACTIONS", "FROM", "DESCRIPTION"]
    rm = next(line for line in lines if line.startswith("rm-rf-root"))
    assert rm.split()[:5] == ["rm-rf-root", "critical", "command", "flag,notify,warn,hold", "shipped"]
    own = tmp_path / "own.toml"
    own.write_text(OWN.replace('"DROP TABLE"', '"DROP \\u001b]52;c;eA==\\u0007 TABLE\\r\\nFORGED"'))
    code, out, _ = run(capsys, "rules", "list", "--rules", str(own))
    assert "\x1b" not in out and "\\x1b]52;c;eA==\\x07" in out and "\nFORGED" not in out
    assert "switched off: curl-pipe-shell" in out and "own:5" in out
    code, out, _ = run(capsys, "rules", "list", "--rules", str(own), "--json")
    doc = json.loads(out)
    mine = doc["rules"][-2]
    assert mine["name"] == "no-drop" and mine["description"] == "DROP \x1b]52;c;eA==\x07 TABLE\r\nFORGED"
    assert mine["actions"] == ["flag", "hold"] and mine["line"] == 5 and mine["command"] == "(?i)drop\\s+table"
    assert doc["disabled"] == ["curl-pipe-shell"] and doc["hold_timeout_s"] == 300 and len(doc["rules"]) == 14


# --- test ------------------------------------------------------------------------------------------


def _session(data: Path, seed: int) -> tuple[Path, str]:
    sid = fixed_session_id(1000 + seed)
    return data / "recordings" / f"{sid}.zsprec", str(sid)


def _live_session(data: Path, key: SigningKey, seed: int, *, allow: bool = True) -> tuple[Path, str]:
    path, sid = _session(data, seed)
    rules = load_rules(data / "rules.toml")
    rec = LiveRec(path, key, rules, facts(login="root", labels=("prod",)), login="root",
                  session_id=fixed_session_id(1000 + seed))
    rec.out(PROMPT).command(b"cat /etc/shadow > /dev/null").command(b"sudo -i", b"root@db1:~# ")
    rec.typed(b"rm -rf /").key(b"\r", allow=allow)
    rec.out(b"\r\n" + PROMPT if allow else b"\r" + PROMPT + b"\x1b[K")
    rec.out(b"-----BEGIN OPENSSH PRIVATE KEY-----\r\n").command(b"history -c")
    rec.close()
    return path, sid


def test_agrees_with_what_fired_live(data: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]) -> None:
    path, sid = _live_session(data, key, 1)
    code, out, err = run(capsys, "rules", "test", sid[-8:])
    assert code == 0 and err == "", err
    assert f"session {sid}  alice -> root@db1" in out and "VALID" in out
    assert "facts from the recording (rules.loaded): roles operator; labels prod" in out
    for rule, text in [("root-login-prod", "alice as root@db1"), ("shadow-read", "cat /etc/shadow > /dev/null"),
                       ("sudo-root-prod", "sudo -i"), ("rm-rf-root", "rm -rf /"),
                       ("private-key-output", "-----BEGIN OPENSSH PRIVATE KEY-----"), ("history-tamper", "history -c")]:
        assert any(rule in line and text in line for line in out.splitlines()), (rule, out)
    assert "would fire: 6" in out and "recorded live: 6 rule event(s)" in out
    assert out.rstrip().endswith("agree: yes: these rules find the 6 match(es) recorded live")
    assert f"zsp play {sid} --from 00:00" in out
    code, out, _ = run(capsys, "rules", "test", str(path), "--json")
    (doc,) = json.loads(out)
    assert doc["agree"] is True and doc["live"]["same_rules"] is True and doc["outcome"] == "VALID"
    assert [m["rule"] for m in doc["matches"]] == [
        "root-login-prod", "shadow-read", "sudo-root-prod", "rm-rf-root", "private-key-output", "history-tamper"
    ]
    rm = doc["matches"][3]
    assert rm["actions"] == "flag,notify,warn,hold" and rm["trigger"] == "command" and rm["wall"].endswith("Z")
    assert doc["live"]["matches"][3]["hold"] == "h-00000001"
    assert doc["facts"]["labels"] == ["prod"] and doc["facts"]["from"] == "the recording (rules.loaded)"


def test_a_denied_hold_is_not_a_disagreement(data: Path, key: SigningKey, capsys: pytest.CaptureFixture[str]) -> None:
    _, sid = _live_session(data, key, 2, allow=False)
    code, out, _ = run(capsys, "rules", "test", sid)
    assert code == 0 and "would fire: 5" in out and "recorded live: 6 rule event(s)" in out
    assert "note: 1 held and not allowed (or ended by terminate) live, so its Enter is not in the recording" in out
    assert out.rstrip().endswith("agree: yes: these rules find the 5 match(es) recorded live")
    code, out, _ = run(capsys, "rules", "test", sid, "--json")
    (doc,) = json.loads(out)
    assert doc["agree"] is True and doc["never_entered"] == [{"rule": "rm-rf-root", "text": "rm -rf /"}]


def test_disagreement_and_other_rules(tmp_path: Path, data: Path, key: SigningKey,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, sid = _session(data, 3)
    rec = Rec(path, key, session_id=fixed_session_id(1003)).event("rules.loaded", "", ruleset="0" * 64, rules=1,
                                                                   roles="", groups="", labels="")
    rec.out(PROMPT).command(b"cat /etc/shadow")
    rec.event("rule.match", "", rule="shadow-read", severity="high", trigger="command", actions="flag,notify",
              text="cat /etc/passwd")
    rec.close()
    code, out, _ = run(capsys, "rules", "test", sid)
    assert code == 0
    assert "note: the session ran with other rules (sha256 000000000000...): differences are expected" in out
    assert out.rstrip().endswith(
        "agree: no: found here, not recorded live: shadow-read 'cat /etc/shadow'; "
        "recorded live, not found here: shadow-read 'cat /etc/passwd'"
    )
    own = tmp_path / "own.toml"
    own.write_text('[settings]\ndefaults = "none"\n')
    code, out, _ = run(capsys, "rules", "test", sid, "--rules", str(own), "--json")
    (doc,) = json.loads(out)
    assert doc["matches"] == [] and doc["agree"] is False and doc["rules"]["count"] == 0


def test_facts_from_the_store_without_rules_loaded(data: Path, key: SigningKey,
                                                  capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from zsp_tui.access import Actor
    from zsp_tui.datadir import DataDir
    from zsp_tui.models import Role

    svc = DataDir(data).service()
    if not any(u.name == "carol" for u in svc.users()):
        svc.add_user(Actor(None, "console"), "carol", frozenset({Role.ADMIN}))
    path, sid = _session(data, 4)
    Rec(path, key, user="carol", session_id=fixed_session_id(1004)).out(PROMPT).command(b"id").close()
    own = tmp_path / "own.toml"
    own.write_text('[settings]\ndefaults = "none"\n[[rule]]\nname = "admins"\nseverity = "info"\n'
                   'users = ["role:admin"]\n')
    code, out, _ = run(capsys, "rules", "test", sid, "--rules", str(own))
    assert code == 0 and "facts from the store as it is now" in out and "roles admin" in out
    assert "admins" in out and "carol as postgres@db1" in out
    assert "recorded live: no rule events (no rules ran in this session): nothing to compare" in out


def test_a_corrupt_recording_is_refused(tmp_path: Path, data: Path, key: SigningKey,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _live_session(data, key, 5)
    bad = tmp_path / "bad.zsprec"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    bad.write_bytes(bytes(raw))
    p = zsp("rules", "test", str(bad))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(f"zsp: error: {bad}: CORRUPT recording, not tested: ") and p.stderr.count("\n") == 1
    # the good one still runs beside it; the status says one was refused
    code, out, err = run(capsys, "rules", "test", str(bad), str(path))
    assert code == 1 and "CORRUPT" in err and "agree: yes" in out


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    p = zsp("rules", "test", "nosuchsession")
    assert p.returncode == 2 and p.stderr.startswith("zsp: error: no session") and p.stderr.count("\n") == 1
    bad = tmp_path / "r.toml"
    bad.write_text('[settings]\nhold_timeout = "1s"\n')
    p = zsp("rules", "test", "--rules", str(bad), "x/y.zsprec")
    assert p.returncode == 2 and p.stderr == f"zsp: error: rules {bad}:2: hold_timeout must be from 10s to 1h\n"
    p = zsp("rules", "test", str(tmp_path / "nothing.zsprec"))
    assert p.returncode == 2 and p.stderr.startswith("zsp: error: cannot read") and p.stderr.count("\n") == 1
    p = zsp("rules")
    assert p.returncode == 2 and "ACTION" in p.stderr


def test_hostile_text_in_matches_is_escaped(data: Path, key: SigningKey, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    path, sid = _session(data, 6)
    rec = Rec(path, key, session_id=fixed_session_id(1006))
    rec.out(b"BOOM \x1b]52;c;ZXZpbA==\x07\xe2\x80\xaeevil\x1b[2J\r\n").close()
    own = tmp_path / "own.toml"
    own.write_text('[settings]\ndefaults = "none"\n[[rule]]\nname = "boom"\nseverity = "low"\noutput = "BOOM"\n')
    code, out, _ = run(capsys, "rules", "test", sid, "--rules", str(own))
    assert code == 0 and "\x1b" not in out and "\u202e" not in out and "BOOM" in out
    code, out, _ = run(capsys, "rules", "test", sid, "--rules", str(own), "--json")
    assert json.loads(out)[0]["matches"][0]["text"] == "BOOM \u202eevil"
    assert ruleset("").rules == ()
