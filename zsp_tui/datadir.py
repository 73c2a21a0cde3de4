"""The data directory: where keys, recordings and (later) the database live.

Chosen by ``--data``, else ``$ZSP_DATA``, else ``$XDG_DATA_HOME/zsp`` (``~/.local/share/zsp``).
Layout::

    DATA/
      keys/recording_ed25519      recording signing key (OpenSSH format, 0600)
      keys/recording_ed25519.pub
      allowed_signers             keys whose recordings `zsp verify` trusts (ssh-keygen format)
      recordings/                 one <session-id>.zsprec per session
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from recorder import KeyFileError, PublicKey, SigningKey, load_trusted_keys

from .exceptions import DataDirError

__all__ = ["SIGNATURE_NAMESPACE", "DataDir", "InitResult", "resolve_data_dir"]

SIGNATURE_NAMESPACE = "session-recording@zsp"
"""SSHSIG namespace of zsp's signatures; written into allowed_signers for ssh-keygen -Y verify."""


def resolve_data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    env = os.environ.get("ZSP_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "zsp"


@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    created_dir: bool
    created_key: bool
    public_key: PublicKey
    allowed_signers_line: str


@dataclass(frozen=True, slots=True)
class DataDir:
    root: Path

    @property
    def signing_key_path(self) -> Path:
        return self.root / "keys" / "recording_ed25519"

    @property
    def allowed_signers_path(self) -> Path:
        return self.root / "allowed_signers"

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    def init(self) -> InitResult:
        """Create what is missing; never overwrite a key. Safe to run again."""
        created_dir = not self.root.exists()
        try:
            for d in (self.root, self.root / "keys", self.recordings):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            key_path = self.signing_key_path
            created_key = False
            if key_path.exists():
                key = SigningKey.load(key_path)
            else:
                key = SigningKey.generate(comment=f"zsp-recording@{socket.gethostname()}")
                key.save(key_path)
                created_key = True
            line = f'zsp@{socket.gethostname()} namespaces="{SIGNATURE_NAMESPACE}" {key.public.openssh}'
            signers = self.allowed_signers_path
            existing = signers.read_text() if signers.exists() else ""
            if key.public.openssh not in existing:
                with open(signers, "a") as f:
                    if not existing:
                        f.write("# Keys whose recordings zsp verify trusts (ssh-keygen ALLOWED SIGNERS format).\n")
                    f.write(line + "\n")
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=str(exc)) from None
        except OSError as exc:
            raise DataDirError(path=self.root, reason=exc.strerror or str(exc)) from None
        return InitResult(self.root, created_dir, created_key, key.public, line)

    def signing_key(self) -> SigningKey:
        if not self.signing_key_path.exists():
            raise DataDirError(path=self.root, reason="no recording key; run `zsp init` first")
        try:
            return SigningKey.load(self.signing_key_path)
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=str(exc)) from None

    def trusted_keys(self) -> list[PublicKey]:
        """Keys from allowed_signers (which init seeds with the data dir's own key)."""
        if not self.allowed_signers_path.exists():
            return []
        try:
            return load_trusted_keys(self.allowed_signers_path)
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=str(exc)) from None
