"""SSHSIG (recorder/_sshsig.py) against stock OpenSSH and asyncssh, both ways."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from recorder import EVIDENCE_NAMESPACE, SignatureError, SigningKey, sign_sshsig, verify_sshsig
from zsp_tui.evidence.sign import sign_file

MESSAGE = b'{"format": "zsp-evidence-bundle"}\n' + bytes(range(256))


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigningKey, Path, Path]:
    """A key saved as an OpenSSH key file, and an allowed_signers naming it for evidence@zsp."""
    root = tmp_path_factory.mktemp("sshsig")
    key = SigningKey.generate(comment="zsp-recording@test")
    key.save(root / "id_ed25519")
    signers = root / "allowed_signers"
    signers.write_text(f'zsp@test namespaces="session-recording@zsp,evidence@zsp" {key.public.openssh}\n')
    return key, root / "id_ed25519", signers


def _keygen(*args: str, message: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh-keygen", *args], input=message, capture_output=True, timeout=20)


def test_identical_to_ssh_keygen_sign(signer, tmp_path: Path) -> None:
    key, keyfile, _ = signer
    msg = tmp_path / "manifest.json"
    msg.write_bytes(MESSAGE)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(keyfile), "-n", EVIDENCE_NAMESPACE, str(msg)],
        check=True,
        capture_output=True,
        timeout=20,
    )
    # Ed25519 is deterministic: the same key, message and namespace give the same bytes.
    assert sign_sshsig(key, MESSAGE, EVIDENCE_NAMESPACE) == (tmp_path / "manifest.json.sig").read_text()
    assert verify_sshsig((tmp_path / "manifest.json.sig").read_bytes(), MESSAGE).raw == key.public.raw
    # the streaming helper the exporters use for .sig files signs the same bytes
    assert sign_file(key, msg) == (tmp_path / "manifest.json.sig").read_text()


def test_ssh_keygen_verifies_ours(signer, tmp_path: Path) -> None:
    key, _, signers = signer
    sig = tmp_path / "m.sig"
    sig.write_text(sign_sshsig(key, MESSAGE, EVIDENCE_NAMESPACE))
    ok = _keygen(
        "-Y", "verify", "-f", str(signers), "-I", "zsp@test", "-n", EVIDENCE_NAMESPACE, "-s", str(sig), message=MESSAGE
    )
    assert ok.returncode == 0, ok.stderr
    assert b"Good" in ok.stdout
    assert _keygen("-Y", "check-novalidate", "-n", EVIDENCE_NAMESPACE, "-s", str(sig), message=MESSAGE).returncode == 0
    # ssh-keygen itself refuses it for another namespace, or over another message
    assert _keygen("-Y", "check-novalidate", "-n", "file", "-s", str(sig), message=MESSAGE).returncode != 0
    assert (
        _keygen(
            "-Y",
            "verify",
            "-f",
            str(signers),
            "-I",
            "zsp@test",
            "-n",
            EVIDENCE_NAMESPACE,
            "-s",
            str(sig),
            message=MESSAGE + b"x",
        ).returncode
        != 0
    )


def test_asyncssh_both_ways(signer) -> None:
    key, keyfile, signers = signer
    theirs = asyncssh.create_sshsig(asyncssh.read_private_key(str(keyfile)), MESSAGE, namespace=EVIDENCE_NAMESPACE)
    assert verify_sshsig(theirs, MESSAGE, EVIDENCE_NAMESPACE).fingerprint == key.public.fingerprint
    ours = sign_sshsig(key, MESSAGE, EVIDENCE_NAMESPACE).encode()
    assert ours == theirs
    assert asyncssh.validate_sshsig(MESSAGE, ours, "zsp@test", signers.read_bytes())
    assert not asyncssh.validate_sshsig(MESSAGE + b"!", ours, "zsp@test", signers.read_bytes())


def test_namespace_mismatch_refused(signer) -> None:
    key, keyfile, _ = signer
    other_ns = asyncssh.create_sshsig(asyncssh.read_private_key(str(keyfile)), MESSAGE, namespace="file")
    with pytest.raises(SignatureError, match="namespace 'file'"):
        verify_sshsig(other_ns, MESSAGE, EVIDENCE_NAMESPACE)
    with pytest.raises(SignatureError, match="namespace"):
        verify_sshsig(sign_sshsig(key, MESSAGE, "session-recording@zsp"), MESSAGE, EVIDENCE_NAMESPACE)


def test_tampering_refused(signer) -> None:
    key, _, _ = signer
    armored = sign_sshsig(key, MESSAGE)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_sshsig(armored, MESSAGE[:-1] + b"\x00")
    lines = armored.splitlines()
    # flip one base64 character inside the signature bytes (the last line holds its tail)
    last = lines[-2]
    lines[-2] = last[:10] + ("A" if last[10] != "A" else "B") + last[11:]
    with pytest.raises(SignatureError):
        verify_sshsig("\n".join(lines) + "\n", MESSAGE)
    for bad, why in (
        ("hello", "not an armored"),
        ("-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n", "base64"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", "truncated"),
        ("-----BEGIN SSH SIGNATURE-----\nWFNIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n", "magic"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAg==\n-----END SSH SIGNATURE-----\n", "version 2"),
    ):
        with pytest.raises(SignatureError, match=why):
            verify_sshsig(bad, MESSAGE)


def test_other_key_types_refused(tmp_path: Path) -> None:
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    sig = asyncssh.create_sshsig(rsa, MESSAGE, namespace=EVIDENCE_NAMESPACE)
    with pytest.raises(SignatureError, match="unsupported key type"):
        verify_sshsig(sig, MESSAGE)
