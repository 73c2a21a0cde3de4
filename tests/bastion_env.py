"""A real bastion for tests: `zsp serve` as a subprocess over a prepared data dir, real sshd upstream,
OpenSSH / paramiko / asyncssh clients over loopback."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.sshd import Sshd, start_sshd
from zsp_tui.access import AccessService, Actor
from zsp_tui.datadir import DataDir
from zsp_tui.models import AccessRequest, Role, Target

POLICY = """\
[settings]
request_timeout = "1h"
warn_before = ["5m", "2s"]

[[rule]]
name = "ops"
requesters = ["role:operator"]
targets = ["local", "*"]
logins = ["*"]
max_duration = "4h"
require_reason = true
approvers = ["role:approver"]
approvals = 1
"""

START_BOUND = 300.0
"""How long `zsp serve` may take to say it listens before it is taken for hung (seconds)."""

LOCAL_ON = "[targets]\nlocal = true\n"
"""Tests use the built-in local target, which is off by default: every test env switches it on."""


def keygen(path: Path, comment: str) -> Path:
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


@dataclass
class Env:
    root: Path
    data: DataDir
    svc: AccessService
    keys: dict[str, Path]
    sshd: Sshd | None = None
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    known_hosts: Path = field(default_factory=Path)
    output: list[str] = field(default_factory=list)
    _follower: threading.Thread | None = None

    def configure(self, text: str = "") -> None:
        """Write zsp.toml: the local target on, plus ``text`` (e.g. a ``[bastion]`` table)."""
        self.data.config_path.write_text(LOCAL_ON + text)

    # --- grants -----------------------------------------------------------------------------

    def grant(
        self,
        target: str = "local",
        login: str | None = None,
        duration: timedelta = timedelta(minutes=30),
        user: str = "alice",
    ) -> AccessRequest:
        r = self.svc.request(Actor(user), target, login, duration, "test")
        return self.svc.approve(Actor("bob"), r.id)

    # --- bastion process --------------------------------------------------------------------

    def start(self, *, fsize: int | None = None, args: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> None:
        """Start ``zsp serve`` (with ``args``, e.g. ``("--workers", "2")``; run through ``prefix``,
        a command that execs the rest) and wait until it listens."""
        def limit() -> None:  # runs in the child
            if fsize is not None:
                import resource

                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "zsp_tui", "serve", "--data", str(self.data.root), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limit,
        )
        assert self.proc.stdout is not None
        # A liveness bound, not a speed limit: on a loaded machine (2 cores, a full suite and
        # busy loops) `zsp serve` took 15-20 s to import its modules (2 s of CPU) before it said a
        # word. The bound is kept by a watchdog that kills a hung bastion, which ends the blocked
        # readline below (a deadline checked between lines cannot catch a hang, only fail a slow
        # start whose next line comes late).
        started = time.monotonic()
        watchdog = threading.Timer(START_BOUND, self.proc.kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            while True:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.output.append(line)
                if "listening on" in line:
                    self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                    break
        finally:
            watchdog.cancel()
        if not self.port:
            took = time.monotonic() - started
            self.stop()  # not left running (and reported unraisable in some later test)
            status = self.proc.returncode
            why = f"killed after {START_BOUND:.0f} s" if took >= START_BOUND else f"exit status {status}"
            raise RuntimeError(f"bastion did not start ({why}, {took:.1f} s): " + "".join(self.output))
        host_pub = Path(f"{self.data.host_key_path}.pub").read_text().split()
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is None or self.proc.stdout is None or self.proc.stdout.closed:
            return
        if self._follower is not None:
            self._follower.join(15)  # it reads to the end of the output: the bastion has exited
            if self._follower.is_alive():  # a child still holds the pipe: leave it to the thread
                return
        else:
            self.output.append(self.proc.stdout.read() or "")
        self.proc.stdout.close()

    def follow(self) -> None:
        """Collect the running bastion's output into ``output`` as it comes (a thread), so a test can
        wait for a line (:meth:`wait_output`) instead of reading it only once the bastion stopped."""
        assert self.proc is not None and self.proc.stdout is not None and self._follower is None
        stream = self.proc.stdout

        def collect() -> None:
            for line in stream:
                self.output.append(line)

        self._follower = threading.Thread(target=collect, name="bastion-output", daemon=True)
        self._follower.start()

    def wait_output(self, text: str, timeout: float = 60) -> bool:
        """Whether ``text`` shows in the bastion's output within ``timeout`` seconds (a liveness
        bound: see :meth:`follow`, which must have been called)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.output)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # --- clients ------------------------------------------------------------------------------

    def ssh_argv(self, user: str, ssh_user: str, *extra: str) -> list[str]:
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.keys[user]),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            *extra,
            f"{ssh_user}@127.0.0.1",
        ]

    def ssh(
        self,
        user: str,
        ssh_user: str,
        *command: str,
        extra: tuple[str, ...] = (),
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.ssh_argv(user, ssh_user, *extra), *command],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
        )

    def asyncssh_options(self, user: str) -> dict[str, Any]:
        return {
            "port": self.port,
            "client_keys": [str(self.keys[user])],
            "known_hosts": str(self.known_hosts),
            "agent_path": None,
        }


def make_env(
    root: Path,
    *,
    with_sshd: bool = False,
    wrong_host_key: bool = False,
    direct_key: bool = False,
    sshd_options: tuple[str, ...] = (),
) -> Env:
    """A data dir with alice (operator, admin) and bob (approver); optionally a real sshd target
    ``srv`` trusting the bastion's CA (and, with ``direct_key``, alice's key, for benchmarks)."""
    d = DataDir(root / "data")
    d.init()
    d.policy_path.write_text(POLICY)
    d.config_path.write_text(LOCAL_ON)
    svc = d.service()
    keys = {name: keygen(root / f"{name}_ed25519", name) for name in ("alice", "bob", "mallory")}
    svc.add_user(
        Actor(None), "alice", frozenset({Role.OPERATOR, Role.ADMIN}), [Path(f"{keys['alice']}.pub").read_text()]
    )
    svc.add_user(Actor("alice"), "bob", frozenset({Role.APPROVER}), [Path(f"{keys['bob']}.pub").read_text()])
    env = Env(root=root, data=d, svc=svc, keys=keys)
    if with_sshd:
        ca_line = Path(f"{d.ca_key_path}.pub").read_text().strip()
        login = pwd.getpwuid(os.getuid()).pw_name
        authorized = {login: Path(f"{keys['alice']}.pub").read_text().strip()} if direct_key else None
        env.sshd = start_sshd(root / "sshd", trusted_ca=ca_line, authorized=authorized, options=sshd_options)
        pinned = " ".join(env.sshd.host_key_pub.split()[:2])
        if wrong_host_key:
            other = keygen(root / "other_host_ed25519", "other")
            pinned = " ".join(Path(f"{other}.pub").read_text().split()[:2])
        svc.add_target(
            Actor("alice"), Target(name="srv", host="127.0.0.1", port=env.sshd.port, logins=(login,), host_key=pinned)
        )
    return env


_EXIT_NOISE = re.compile(
    r"Exception ignored in: <function BaseSubprocessTransport\.__del__[^\n]*\n"
    r"(?:Traceback[^\n]*\n|[ \t][^\n]*\n)*RuntimeError: Event loop is closed\n?"
)


def tracebacks(output: list[str]) -> str:
    """What of a bastion's output is a traceback, but for one known message at exit: asyncio
    reporting, from a subprocess transport's ``__del__`` after the loop closed, that the loop is
    closed (seen under load when a local session's child outlives the shutdown; harmless, and
    not of these tests' making). Empty if there is none."""
    text = _EXIT_NOISE.sub("", "".join(output))
    return text if "Traceback" in text else ""
