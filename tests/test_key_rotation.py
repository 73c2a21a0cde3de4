"""Key rotation as docs/DEPLOY.md tells an admin to do it: old keys stay trusted for verification.

Real CLI processes over a real data dir: recordings made before and after a recording-key rotation
both verify, and a user CA made by stock ssh-keygen replaces the generated one. The audit log does
not yet survive a recording-key rotation (an xfail, strict, so it is noticed when it does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.test_cli import no_traceback, zsp


def _record(data_dir: Path, out: Path) -> None:
    p = zsp("record", "-q", "-o", str(out), "--", "sh", "-c", "echo rotated-$$")
    assert p.returncode == 0, p.stderr
    no_traceback(p)


def _rotate(data_dir: Path, tmp_path: Path) -> tuple[str, str, Path, Path]:
    """Record, rotate the recording key as docs/DEPLOY.md says, record again: (old, new, before, after)."""
    assert zsp("init").returncode == 0
    assert zsp("user", "add", "alice", "--role", "admin").returncode == 0
    before = tmp_path / "before.zsprec"
    _record(data_dir, before)
    keys = data_dir / "keys"
    old_public = (keys / "recording_ed25519.pub").read_text().split()[1]
    # The documented procedure: move the key away (offline), `zsp init` makes only what is missing.
    offline = tmp_path / "offline"
    offline.mkdir()
    (keys / "recording_ed25519").rename(offline / "recording_ed25519")
    (keys / "recording_ed25519.pub").rename(offline / "recording_ed25519.pub")
    p = zsp("init")
    assert p.returncode == 0, p.stderr
    new_public = (keys / "recording_ed25519.pub").read_text().split()[1]
    assert new_public != old_public
    signers = (data_dir / "allowed_signers").read_text()
    assert old_public in signers and new_public in signers  # the old line stays
    after = tmp_path / "after.zsprec"
    _record(data_dir, after)
    return old_public, new_public, before, after


def test_rotating_the_recording_key_keeps_recordings_of_both_keys_verifiable(data_dir: Path, tmp_path: Path) -> None:
    old_public, _new, before, after = _rotate(data_dir, tmp_path)
    for path in (before, after):
        v = zsp("verify", str(path))
        assert v.returncode == 0 and "VALID" in v.stdout, (path, v.stdout, v.stderr)
        no_traceback(v)
    # Dropping the old key's line (what an admin does only for a compromised key) is noticed.
    signers = (data_dir / "allowed_signers").read_text()
    kept = "".join(line for line in signers.splitlines(keepends=True) if old_public not in line)
    (data_dir / "allowed_signers").write_text(kept)
    assert zsp("verify", str(before)).returncode != 0
    assert zsp("verify", str(after)).returncode == 0


@pytest.mark.xfail(
    strict=True,
    reason="the audit log is one recording whose checkpoints are verified against the key in its header; "
    "a signed key hand-over inside the chain is not built yet (docs/DEPLOY.md, Rotating keys)",
)
def test_the_audit_chain_verifies_across_a_recording_key_rotation(data_dir: Path, tmp_path: Path) -> None:
    _rotate(data_dir, tmp_path)
    assert zsp("user", "add", "bob", "--role", "approver", "--as", "alice").returncode == 0  # under the new key
    audit = zsp("audit", "verify")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_user_ca_made_by_ssh_keygen_replaces_the_generated_one(data_dir: Path, tmp_path: Path) -> None:
    assert zsp("init").returncode == 0
    old = zsp("ca")
    assert old.returncode == 0
    new_ca = tmp_path / "new_ca"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zsp-user-ca-2027", "-f", str(new_ca)], check=True
    )
    target = data_dir / "keys" / "user_ca_ed25519"
    target.write_bytes(new_ca.read_bytes())
    target.chmod(0o600)
    p = zsp("ca")
    assert p.returncode == 0, p.stderr
    no_traceback(p)
    assert new_ca.with_suffix(".pub").read_text().split()[1] in p.stdout
    assert p.stdout != old.stdout
