"""Safe defaults: the built-in `local` target (a shell as the bastion's own account) is off unless
zsp.toml switches it on, no wildcard or label glob in the policy ever matches it, and the data dir
(keys, recordings, database) is the bastion account's alone."""

from __future__ import annotations

import os
import pwd
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.bastion_env import LOCAL_ON, make_env
from tests.test_cli import no_traceback, zsp
from zsp_tui.access import Actor
from zsp_tui.datadir import DataDir
from zsp_tui.exceptions import AccessDenied, LocalTargetOff
from zsp_tui.models import Role

RULE = """
[[rule]]
name = "{name}"
requesters = ["role:operator"]
targets = {targets}
logins = ["*"]
max_duration = "1h"
require_reason = false
approvers = ["role:approver"]
"""


def _service(root: Path, policy: str, *, local: bool = True):
    d = DataDir(root)
    d.init()
    d.policy_path.write_text(policy)
    d.config_path.write_text(LOCAL_ON if local else "")
    svc = d.service()
    svc.add_user(Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}), [SigningKey.generate().public.openssh])
    svc.add_user(Actor("alice"), "bob", frozenset({Role.APPROVER}), [SigningKey.generate().public.openssh])
    return svc


# --- local is off unless zsp.toml switches it on ------------------------------------------------


def test_zsp_init_leaves_local_off_and_refuses_it_with_a_clear_line(data_dir: Path) -> None:
    assert zsp("init").returncode == 0
    assert "\nlocal = false\n" in (data_dir / "zsp.toml").read_text()
    assert zsp("user", "add", "alice", "--role", "operator").returncode == 0
    assert '"local"' not in zsp("target", "list", "--json").stdout
    p = zsp("request", "local", "--for", "5m", "--reason", "x", "--as", "alice")
    assert p.returncode == 1 and p.stderr.count("\n") == 1
    assert "`local` target" in p.stderr and "is off" in p.stderr and "local = true" in p.stderr
    no_traceback(p)
    # A zsp.toml without a [targets] table (or no zsp.toml at all) leaves it off too.
    for text in ("[bastion]\nlogin_timeout = 10\n", None):
        if text is None:
            (data_dir / "zsp.toml").unlink()
        else:
            (data_dir / "zsp.toml").write_text(text)
        p = zsp("request", "local", "--for", "5m", "--reason", "x", "--as", "alice")
        assert p.returncode == 1 and "is off" in p.stderr


def test_the_demo_data_dir_switches_local_on_and_names_it_in_a_rule(tmp_path: Path) -> None:
    d = DataDir(tmp_path / "demo")
    d.init(demo=True)
    assert "\nlocal = true\n" in d.config_path.read_text()
    svc = d.service()
    assert svc.local_target
    svc.add_user(Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}), [SigningKey.generate().public.openssh])
    svc.add_user(Actor("alice"), "bob", frozenset({Role.APPROVER}), [SigningKey.generate().public.openssh])
    r = svc.request(Actor("alice"), "local", None, timedelta(minutes=15), "trying zsp")
    assert r.rule == "demo-local"
    assert svc.approve(Actor("bob"), r.id).state.value == "approved"


def test_over_ssh_a_default_data_dir_refuses_local(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.data.config_path.write_text("")  # as `zsp init` leaves it: local off
    env.start()
    try:
        p = env.ssh("alice", "zsp", "request", "local", "--for", "5m", "--reason", "x")
        assert p.returncode == 1 and "is off" in p.stderr, p.stderr
        p = env.ssh("alice", "local", "id")
        assert p.returncode == 1 and "no such target" in p.stderr and p.stdout == ""
        assert env.svc.sessions() == []
    finally:
        env.stop()


# --- no wildcard matches local ------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets",
    ['["*"]', '["l*"]', '["loc?l"]', '["[l]ocal"]', '["*al"]', '["label:*"]', '["label:builtin"]', '["LOCAL"]'],
)
def test_a_wildcard_never_matches_local_even_when_it_is_on(tmp_path: Path, targets: str) -> None:
    svc = _service(tmp_path / "d", RULE.format(name="all", targets=targets))
    with pytest.raises(AccessDenied, match="no policy rule"):
        svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x")


def test_auto_approval_and_break_glass_with_wildcards_never_reach_local(tmp_path: Path) -> None:
    policy = (
        RULE.format(name="explicit", targets='["local"]')
        + '\n[[auto_approve]]\nname = "auto"\nrequesters = ["*"]\ntargets = ["*"]\nlogins = ["*"]\n'
        'max_duration = "1h"\nrequire_reason = false\n'
        '\n[break_glass]\nenabled = true\nrequesters = ["role:admin"]\ntargets = ["*"]\nlogins = ["*"]\n'
    )
    svc = _service(tmp_path / "d", policy)
    with pytest.raises(AccessDenied, match="break-glass"):
        svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x", break_glass=True)
    r = svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x")
    assert r.state.value == "pending" and r.rule == "explicit"  # the explicit rule, not the "*" auto-approval


def test_a_rule_that_names_local_grants_it(tmp_path: Path) -> None:
    policy = RULE.format(name="all", targets='["*"]') + RULE.format(name="local-only", targets='["db-*", "local"]')
    svc = _service(tmp_path / "d", policy)
    r = svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x")
    assert r.rule == "local-only"
    assert svc.approve(Actor("bob"), r.id).state.value == "approved"


def test_a_rule_naming_local_does_not_switch_it_on(tmp_path: Path) -> None:
    svc = _service(tmp_path / "d", RULE.format(name="local", targets='["local"]'), local=False)
    with pytest.raises(LocalTargetOff):
        svc.request(Actor("alice"), "local", None, timedelta(minutes=5), "x")


# --- the data dir is the bastion's alone --------------------------------------------------------


def test_init_makes_the_data_dir_private_even_if_it_existed(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for sub in ("", "keys", "recordings"):
        (root / sub).mkdir(mode=0o755, exist_ok=True)
        (root / sub).chmod(0o755)
    d = DataDir(root)
    d.init()
    for path in (root, root / "keys", root / "recordings"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for key in (d.signing_key_path, d.ca_key_path, d.host_key_path, d.db_path, d.config_path, d.policy_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_the_bastion_refuses_a_data_dir_others_can_read(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    for path, mode in ((env.data.root, 0o755), (env.data.recordings, 0o711), (env.data.signing_key_path, 0o640)):
        path.chmod(mode)
        with pytest.raises(RuntimeError, match="is open to other accounts") as err:
            env.start()
        env.stop()  # collects the refused process
        assert str(path) in str(err.value) and "Traceback" not in str(err.value)
        env.output.clear()
        assert zsp("init", "--data", str(env.data.root)).returncode == 0  # makes it private again
    env.start()
    try:
        assert env.ssh("alice", "zsp", "whoami").returncode == 0
    finally:
        env.stop()


# --- a `local` shell cannot read the keys or the recordings ---------------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only a bastion running as root can switch accounts")


@root_only
def test_local_shells_run_unprivileged_and_cannot_read_keys_or_recordings(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    env.start()
    try:
        g = env.grant()
        assert g.login == "nobody"  # the grant says who the shell runs as
        d = env.data
        secrets = [d.signing_key_path, d.ca_key_path, d.host_key_path, d.db_path, d.config_path]
        probe = "id -u; id -G; " + "; ".join(f"cat {p}" for p in secrets) + f"; ls {d.recordings}; ls {d.root}/keys"
        p = env.ssh("alice", "local", probe)
        lines = p.stdout.splitlines()
        nobody = pwd.getpwnam("nobody")
        assert lines[0] == str(nobody.pw_uid) and "0" not in lines[1].split()
        assert "PRIVATE KEY" not in p.stdout and "SQLite" not in p.stdout and "[targets]" not in p.stdout
        assert p.stderr.count("Permission denied") == len(secrets) + 2, p.stderr
        # An earlier session's recording cannot be read either, with a PTY or without.
        rec = env.svc.sessions()[-1].path
        p = env.ssh("alice", "local", f"id -un; tty; cat {rec} | head -c 20; echo", extra=("-tt",))
        assert "nobody" in p.stdout and "/dev/pts/" in p.stdout and "Permission denied" in p.stdout
        assert Path(rec).read_bytes()[:8].decode("latin-1") not in p.stdout
    finally:
        env.stop()


@root_only
@pytest.mark.parametrize(("user", "why"), [("root", "never run as root"), ("no-such-account", "no such account")])
def test_an_unsafe_local_user_is_refused(tmp_path: Path, user: str, why: str) -> None:
    env = make_env(tmp_path)
    env.configure(f'local_user = "{user}"\n')  # lands in the [targets] table
    with pytest.raises(RuntimeError, match=why):
        env.start()
    env.stop()
    p = zsp("request", "local", "--for", "5m", "--reason", "x", "--as", "alice", "--data", str(env.data.root))
    assert p.returncode == 2 and why in p.stderr and p.stderr.count("\n") == 1
    no_traceback(p)
