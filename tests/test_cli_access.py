"""The admin console as a newcomer uses it (the README walk-through), with real processes,
a real SQLite file, a real sshd for --scan, and real sink endpoints on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.sshd import start_sshd
from tests.test_cli import no_traceback, zsp


def keypair(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return Path(f"{path}.pub")


@pytest.fixture
def sshd(tmp_path: Path):
    s = start_sshd(tmp_path / "sshd")
    yield s
    s.stop()


def test_newcomer_walkthrough(data_dir: Path, tmp_path: Path, sshd) -> None:
    # Sinks a SIEM and a chat webhook would use, on loopback.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    hooks: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hooks.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    p = zsp("init")
    assert p.returncode == 0 and "TrustedUserCAKeys" in p.stdout
    jsonl = tmp_path / "audit.jsonl"
    (data_dir / "zsp.toml").write_text(
        f'[audit]\njsonl = "{jsonl}"\nsyslog = "udp://127.0.0.1:{udp.getsockname()[1]}"\n'
        f'webhook = "http://127.0.0.1:{http.server_address[1]}/hook"\n'
    )
    alice, bob = keypair(tmp_path, "alice"), keypair(tmp_path, "bob")
    assert zsp("user", "add", "alice", "--key", str(alice), "--role", "operator,admin").returncode == 0
    assert zsp("user", "add", "bob", "--key", str(bob), "--role", "approver", "--as", "alice").returncode == 0

    p = zsp("target", "add", "db1", "--host", "127.0.0.1", "--port", str(sshd.port), "--login", "postgres",
            "--login", "root", "--scan", "--as", "alice")
    assert p.returncode == 0, p.stderr
    fp = subprocess.run(["ssh-keygen", "-lf", str(sshd.dir / "host_ed25519.pub")], capture_output=True,
                        text=True).stdout.split()[1]
    assert fp in p.stdout
    targets = json.loads(zsp("target", "list", "--json").stdout)
    db1 = next(t for t in targets if t["name"] == "db1")
    assert db1["host_key"] == " ".join(sshd.host_key_pub.split()[:2]) and db1["logins"] == ["postgres", "root"]
    assert not any(t["name"] == "local" for t in targets)  # the built-in local target is off by default

    p = zsp("request", "db1", "--login", "postgres", "--for", "30m", "--reason", "INC-7 vacuum", "--as", "alice")
    assert p.returncode == 0, p.stderr
    rid = p.stdout.split()[0]
    assert rid.startswith("r-") and "pending" in p.stdout

    p = zsp("approve", rid, "--as", "alice")
    assert p.returncode == 1 and "cannot approve their own request" in p.stderr
    no_traceback(p)
    p = zsp("approve", rid, "--as", "BOB")
    assert p.returncode == 0 and "active until" in p.stdout

    grants = json.loads(zsp("grants", "--active", "--json").stdout)
    assert [g["id"] for g in grants] == [rid] and grants[0]["ends_at"].endswith("Z")
    assert zsp("revoke", rid, "--as", "bob", "--reason", "done").returncode == 0
    assert zsp("grants", "--active").stdout.strip() == "no active grants"

    p = zsp("audit")
    for name in ("user.create", "target.create", "access_request.create", "access_request.refused",
                 "access_request.approve", "grant.start", "grant.revoke"):
        assert name in p.stdout, name
    v = zsp("audit", "verify")
    assert v.returncode == 0 and "audit log OK" in v.stdout

    # JSON Lines, from the command and from the sink, parse back to the same events.
    cmd_events = [json.loads(x) for x in zsp("audit", "--json").stdout.splitlines()]
    sink_events = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert any(e["event"] == "audit.anchor" for e in sink_events)  # checkpoint heads (tests/test_audit_anchor.py)
    sink_events = [e for e in sink_events if e["event"] != "audit.anchor"]
    assert [e["seq"] for e in sink_events] == [e["seq"] for e in cmd_events]
    assert cmd_events == sink_events
    # Syslog got RFC 5424 messages; the webhook got the new request.
    msg = udp.recv(65536).decode()
    assert msg.startswith("<86>1 ") and "[zsp@32473 " in msg
    assert any(e["event"] == "access_request.create" for h in hooks for e in h["events"])
    http.shutdown()
    http.server_close()
    udp.close()


def test_host_key_file_and_mistakes(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    hk = keypair(tmp_path, "host")
    p = zsp("target", "add", "web", "--host", "10.0.0.5", "--login", "deploy", "--host-key", str(hk))
    assert p.returncode == 0, p.stderr
    p = zsp("target", "add", "web2", "--host", "h", "--login", "x")
    assert p.returncode == 2 and "pin the target's host key" in p.stderr
    p = zsp("target", "add", "web", "--host", "h", "--login", "x", "--host-key", str(hk))
    assert p.returncode == 1 and "already exists" in p.stderr
    junk = tmp_path / "junk"
    junk.write_text("hello")
    p = zsp("target", "add", "web3", "--host", "h", "--login", "x", "--host-key", str(junk))
    assert p.returncode == 2 and "no SSH public key" in p.stderr
    p = zsp("target", "add", "web4", "--host", "127.0.0.1", "--port", "1", "--login", "x", "--scan")
    assert p.returncode == 2 and "cannot scan" in p.stderr
    no_traceback(p)


def test_policy_mistake_blocks_requests_with_a_clear_line(data_dir: Path, tmp_path: Path) -> None:
    zsp("init")
    zsp("user", "add", "alice", "--role", "operator")
    (data_dir / "policy.toml").write_text(
        '[[rule]]\nname = "x"\nrequesters = ["role:nope"]\nmax_duration = "1h"\napprovers = ["*"]\n'
    )
    p = zsp("policy", "check")
    assert p.returncode == 2 and "policy.toml:3:" in p.stderr and "unknown role 'nope'" in p.stderr
    p = zsp("request", "local", "--for", "5m", "--reason", "x", "--as", "alice")
    assert p.returncode == 2 and "policy.toml:3" in p.stderr
    no_traceback(p)
    assert json.loads(zsp("grants", "--json").stdout) == []  # nothing written


def test_usage_mistakes_are_one_line(data_dir: Path) -> None:
    zsp("init")
    zsp("user", "add", "alice", "--role", "operator")
    for args, words in [
        (("request", "local", "--for", "soon", "--as", "alice"), "--for"),
        (("request", "nowhere", "--for", "5m", "--as", "alice"), "no such target"),
        (("request", "local", "--for", "5m", "--as", "nobody"), "no such user"),
        (("approve", "r-zzzzzz", "--as", "alice"), "no such request"),
        (("user", "add", "x y", "--role", "operator", "--as", "alice"), "invalid name"),
        (("user", "add", "eve", "--role", "wizard"), "unknown role"),
        (("audit", "--since", "yesterday"), "RFC 3339"),
    ]:
        p = zsp(*args)
        assert p.returncode in (1, 2), args
        assert words in p.stderr and p.stderr.count("\n") == 1, (args, p.stderr)
        no_traceback(p)


def test_commands_need_an_initialised_data_dir(data_dir: Path) -> None:
    p = zsp("grants")
    assert p.returncode == 2 and "zsp init" in p.stderr
    assert not (data_dir / "zsp.db").exists()


def test_local_target_can_be_switched_off(data_dir: Path) -> None:
    zsp("init")
    zsp("user", "add", "alice", "--role", "operator")
    (data_dir / "zsp.toml").write_text("[targets]\nlocal = false\n")
    assert not any(t["name"] == "local" for t in json.loads(zsp("target", "list", "--json").stdout))
    p = zsp("request", "local", "--for", "5m", "--reason", "x", "--as", "alice")
    assert p.returncode == 1 and "no such target: local" in p.stderr
    (data_dir / "zsp.toml").write_text("[targets]\nlocal = 1\n")
    p = zsp("grants")
    assert p.returncode == 2 and "zsp.toml:2" in p.stderr and "true or false" in p.stderr
