"""What a forger does to an evidence bundle, shared by the tamper and attack tests: read a bundle's
members, write them back as a tar, and re-seal it (re-hash everything, sign with a key of their own)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from blake3 import blake3

from recorder import PublicKey, SigningKey, sign_sshsig

__all__ = ["read", "reseal", "write"]


def read(path: Path) -> tuple[str, dict[str, bytes]]:
    """The bundle's top directory and its members by path (relative to it)."""
    with tarfile.open(path) as tar:
        top = tar.getnames()[0].split("/")[0]
        return top, {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}


def write(path: Path, top: str, files: dict[str, bytes], extra: Sequence[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def reseal(
    files: dict[str, bytes],
    key: SigningKey,
    manifest: dict | None = None,
    *,
    recording_keys: Sequence[str] | None = None,
    render: Callable[[dict], bytes] | None = None,
) -> None:
    """Re-hash everything and sign the manifest with ``key``, listed in allowed_signers under the
    manifest's identity (as ssh-keygen -I needs it), beside ``recording_keys`` (default: the keys
    the bundle's allowed_signers already lists) for the recordings."""
    m = manifest if manifest is not None else json.loads(files["manifest.json"])
    if recording_keys is None:
        real = [ln for ln in files["allowed_signers"].decode().splitlines() if ln and not ln.startswith("#")]
        recording_keys = [" ".join(ln.split()[-2:]) for ln in real]
    lines = [f'{m["identity"]} namespaces="session-recording@zsp,evidence@zsp" {key.public.openssh}']
    lines += [f'zsp@old namespaces="session-recording@zsp" {k}' for k in recording_keys if k != key.public.openssh]
    files["allowed_signers"] = ("\n".join(lines) + "\n").encode()
    m["signer"] = {"key": key.public.openssh, "fingerprint": key.public.fingerprint}
    keys = sorted({PublicKey.from_openssh(" ".join(ln.split()[-2:])) for ln in lines}, key=lambda k: k.fingerprint)
    m["signers"] = [{"key": k.openssh, "fingerprint": k.fingerprint} for k in keys]
    skip = {"manifest.json", "manifest.json.sig", "SHA256SUMS"}
    m["files"] = [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest(), "blake3": blake3(d).hexdigest()}
        for p, d in sorted(files.items())
        if p not in skip
    ]
    files["manifest.json"] = render(m) if render else (json.dumps(m, sort_keys=True, indent=2) + "\n").encode()
    files["manifest.json.sig"] = sign_sshsig(key, files["manifest.json"]).encode()
    files["SHA256SUMS"] = "".join(
        f"{hashlib.sha256(d).hexdigest()}  {p}\n" for p, d in sorted(files.items()) if p != "SHA256SUMS"
    ).encode()
