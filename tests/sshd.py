"""A real OpenSSH sshd on a free loopback port, for tests (the upstream target the bastion reaches)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    host: str
    port: int
    dir: Path
    host_key_pub: str
    proc: subprocess.Popen[bytes]
    log: Any

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_sshd(
    workdir: Path,
    *,
    trusted_ca: str | None = None,
    authorized: dict[str, str] | None = None,
    options: tuple[str, ...] = (),
) -> Sshd:
    """Start sshd as the current user on 127.0.0.1:<free port>. Needs root (as CI is) for logins.
    ``options`` are further sshd_config lines; the first value given for a keyword wins."""
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    key = workdir / "host_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    auth_dir = workdir / "authorized_keys"
    auth_dir.mkdir(exist_ok=True)
    for user, line in (authorized or {}).items():
        (auth_dir / user).write_text(line + "\n")
    lines = [
        *options,
        "ListenAddress 127.0.0.1",
        f"HostKey {key}",
        f"PidFile {workdir}/sshd.pid",
        f"AuthorizedKeysFile {auth_dir}/%u",
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin yes",
        "LogLevel VERBOSE",
    ]
    if trusted_ca is not None:
        (workdir / "ca.pub").write_text(trusted_ca + "\n")
        lines.append(f"TrustedUserCAKeys {workdir}/ca.pub")
    for _attempt in range(5):
        port = free_port()
        cfg = workdir / "sshd_config"
        cfg.write_text("\n".join([f"Port {port}", *lines]) + "\n")
        log = open(workdir / "sshd.log", "ab")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log,
                                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pub = (workdir / "host_ed25519.pub").read_text().strip()
                    return Sshd("127.0.0.1", port, workdir, pub, proc, log)
            except OSError:
                time.sleep(0.05)
        proc.kill()
        proc.wait()
        log.close()
    raise RuntimeError(f"sshd did not start; see {workdir}/sshd.log")
