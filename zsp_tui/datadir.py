"""The data directory: where keys, recordings and (later) the database live.

Chosen by ``--data``, else ``$ZSP_DATA``, else ``$XDG_DATA_HOME/zsp`` (``~/.local/share/zsp``).
Layout::

    DATA/
      keys/recording_ed25519      signs recordings and the audit log (OpenSSH format, 0600)
      keys/host_ed25519           the bastion's SSH host key
      keys/user_ca_ed25519        CA that signs short-lived certificates for upstream targets
      keys/escrow_x25519.pub      masked input is sealed to this key (docs/FORMAT.md 3.5)
      keys/escrow_x25519          its private half: created by init, to be moved OFF the bastion
      allowed_signers             keys whose recordings `zsp verify` trusts (ssh-keygen format)
      policy.toml                 who may request what, who approves (validated on every use)
      rules.toml                  real-time rules: flag, notify, warn, hold, terminate (docs/RULES.md)
      rules.last-good.toml        the last rules file the bastion accepted (its fallback)
      zsp.toml                    settings: built-in local target, audit sinks
      zsp.db                      users, targets, requests, grants, audit log (SQLite)
      recordings/                 one <session-id>.zsprec per session (scratch, with [storage])
      cache/recordings/           verified downloads of recordings uploaded to [storage]
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recorder import (
    EVIDENCE_NAMESPACE,
    SIGNATURE_NAMESPACE,
    EscrowPrivateKey,
    EscrowPublicKey,
    KeyFileError,
    PublicKey,
    SigningKey,
    load_trusted_keys,
)
from replay import LocalDirectory, RecordingStorage

from .clock import Clock, SystemClock
from .config import DEFAULT_CONFIG, DEMO_CONFIG, Settings, load_settings
from .exceptions import ConfigError, DataDirError
from .local_account import LocalAccount, local_account
from .policy import DEFAULT_POLICY, Policy, load_policy
from .rules.config import DEFAULT_RULES_FILE

if TYPE_CHECKING:
    from .access import AccessService
    from .models import SessionRecord
    from .store import Store

__all__ = ["DEMO_POLICY", "SIGNATURE_NAMESPACE", "DataDir", "InitResult", "resolve_data_dir"]



DEMO_POLICY = (
    DEFAULT_POLICY
    + """
# The demo's rule for the built-in `local` target (switched on in zsp.toml). Only a rule that names
# "local" matches it. Delete this rule and set local = false before real use.
[[rule]]
name = "demo-local"
requesters = ["role:operator"]
targets = ["local"]
logins = ["*"]
max_duration = "1h"
require_reason = true
approvers = ["role:approver", "role:admin"]
approvals = 1
"""
)
"""The policy ``zsp serve --demo`` writes into a data dir it creates."""


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
    created: tuple[str, ...]
    """Names of the files this run created (empty when everything existed)."""
    public_key: PublicKey
    allowed_signers_line: str
    ca_public_key: PublicKey
    host_public_key: PublicKey
    escrow_public_key: EscrowPublicKey
    escrow_private_created: bool
    """True when this run created the escrow private key (which must now leave the bastion)."""


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

    def scratch(self) -> LocalDirectory:
        """The local recordings directory (``recordings/``): where sessions record, and, with
        ``[storage]`` configured, where they wait until uploaded."""
        return LocalDirectory(self.recordings)

    def storage(self) -> RecordingStorage:
        """The recordings, by session id: ``recordings/``, or with ``[storage]`` configured a
        :class:`~zsp_tui.objstore.TieredStorage` (scratch first, then the bucket)."""
        settings = self.settings().storage
        if settings is None:
            return self.scratch()
        from .objstore import S3Storage, TieredStorage  # deferred: boto3 only when configured

        return TieredStorage(self.scratch(), S3Storage(settings))

    def recording_location(self, session: SessionRecord) -> Path:
        """The local file that holds ``session``'s recording: its scratch file, or for one
        uploaded to object storage its download cache file (which may not be there yet). Nothing is
        downloaded: for listings; readers use :meth:`recording_path`."""
        from .objstore.cache import recording_location

        return recording_location(self, session)

    def recording_path(self, session: SessionRecord) -> Path:
        """A local file with ``session``'s recording, for every reader that takes a path: its
        scratch file, or for one uploaded to object storage a verified download
        (``cache/recordings/<id>.zsprec``, its sha256 the store's);
        :class:`~zsp_tui.objstore.RecordingUnavailable` if that object is missing or changed."""
        from .objstore.cache import materialize

        return materialize(self, session)

    def has_store(self) -> bool:
        """Whether ``zsp init`` made this data dir's store (the SQLite file, or with a PostgreSQL
        store the recording key); reading the settings may raise ConfigError."""
        if self.db_path.exists():
            return True
        return self.settings().store_url is not None and self.signing_key_path.exists()

    @property
    def host_key_path(self) -> Path:
        return self.root / "keys" / "host_ed25519"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "keys" / "user_ca_ed25519"

    @property
    def escrow_public_path(self) -> Path:
        return self.root / "keys" / "escrow_x25519.pub"

    @property
    def escrow_private_path(self) -> Path:
        return self.root / "keys" / "escrow_x25519"

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.toml"

    @property
    def rules_path(self) -> Path:
        """``rules.toml``: the real-time rules (missing: the shipped ``standard`` set)."""
        return self.root / "rules.toml"

    @property
    def config_path(self) -> Path:
        return self.root / "zsp.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "zsp.db"

    def _key(self, path: Path, comment: str, created: list[str]) -> SigningKey:
        if path.exists():
            return SigningKey.load(path)
        key = SigningKey.generate(comment=comment)
        key.save(path)
        created.append(str(path.relative_to(self.root)))
        return key

    def init(self, *, demo: bool = False) -> InitResult:
        """Create what is missing; never overwrite a key or an edited file. Safe to run again.

        ``demo``: files this run creates switch the built-in `local` target on (zsp.toml) and name it
        in a policy rule; otherwise `local` stays off, as every installation should have it.
        """
        from .store import SqliteStore, open_store  # deferred: verify-only uses need no database

        created_dir = not self.root.exists()
        created: list[str] = []
        host = socket.gethostname()
        try:
            for d in (self.root, self.root / "keys", self.recordings):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(d, 0o700)  # also a directory that existed: keys and recordings are the bastion's alone
            key = self._key(self.signing_key_path, f"zsp-recording@{host}", created)
            host_key = self._key(self.host_key_path, f"zsp-host@{host}", created)
            ca = self._key(self.ca_key_path, f"zsp-user-ca@{host}", created)
            path = self.escrow_public_path
            escrow_created = not path.exists()
            if escrow_created:  # only the public half stays: never recreated once moved away
                pair = EscrowPrivateKey.generate(comment=f"zsp-escrow@{host}")
                pair.save(self.escrow_private_path, path)
                created += [str(p.relative_to(self.root)) for p in (self.escrow_private_path, path)]
            escrow = EscrowPublicKey.load(path)
            for private in (self.signing_key_path, self.host_key_path, self.ca_key_path):
                os.chmod(private, 0o600)  # also keys that existed
            policy, config = (DEMO_POLICY, DEMO_CONFIG) if demo else (DEFAULT_POLICY, DEFAULT_CONFIG)
            for path, text in (
                (self.policy_path, policy),
                (self.config_path, config),
                (self.rules_path, DEFAULT_RULES_FILE),
            ):
                if not path.exists():
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(text)
                    created.append(path.name)
            store_url = self.settings().store_url
            if store_url is None:
                if not self.db_path.exists():
                    created.append(self.db_path.name)
                SqliteStore(self.db_path).close()
                os.chmod(self.db_path, 0o600)
            else:  # PostgreSQL: the schema is made (or migrated) by opening it
                open_store(store_url, self.db_path).close()
            # The key signs recordings and the audit log (checkpoints) and exported evidence (SSHSIG).
            namespaces = f"{SIGNATURE_NAMESPACE},{EVIDENCE_NAMESPACE}"
            line = f'zsp@{socket.gethostname()} namespaces="{namespaces}" {key.public.openssh}'
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
        return InitResult(
            self.root, created_dir, tuple(created), key.public, line, ca.public, host_key.public, escrow, escrow_created
        )

    def check_private(self) -> None:
        """Refuse a data dir other accounts can read or enter: its keys sign recordings and the
        audit log and mint certificates for every target, and its recordings hold what was typed."""
        for path in (
            self.root,
            self.root / "keys",
            self.recordings,
            self.signing_key_path,
            self.ca_key_path,
            self.host_key_path,
            self.db_path,
        ):
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DataDirError(path=path, reason=exc.strerror or str(exc)) from None
            if mode & 0o077:
                raise DataDirError(
                    path=self.root,
                    reason=f"{path} is open to other accounts (mode {mode:04o}); `zsp init` makes it private again",
                )

    def require(self) -> None:
        """DataDirError unless ``zsp init`` made this data dir (its database, or with a PostgreSQL
        store, which keeps no file here, its recording key)."""
        marker = self.db_path if self.settings().store_url is None else self.signing_key_path
        if not marker.exists():
            raise DataDirError(path=self.root, reason="not initialised; run `zsp init` first")

    def store(self) -> Store:
        """The store this data dir's settings name (``[store] url`` / ``ZSP_DATABASE_URL``; the
        SQLite file ``zsp.db`` by default)."""
        from .store import open_store

        return open_store(self.settings().store_url, self.db_path)

    def policy(self) -> Policy:
        return load_policy(self.policy_path)

    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def service(self, clock: Clock | None = None) -> AccessService:
        """The access service over this data directory's store, keys, policy and settings."""
        from .access import AccessService
        from .store import open_store

        self.require()
        settings = self.settings()
        account = self.local_account(settings)
        return AccessService(
            open_store(settings.store_url, self.db_path),
            self.signing_key(),
            self.policy,
            clock or SystemClock(),
            sinks=settings.sinks,
            local_target=settings.local_target,
            local_login=account.name if account else None,
        )

    def local_account(self, settings: Settings | None = None) -> LocalAccount | None:
        """Who `local` shells run as, or None when `local` is off; ConfigError if that is unsafe."""
        settings = settings or self.settings()
        if not settings.local_target:
            return None
        try:
            return local_account(settings.local_user)
        except ValueError as exc:
            raise ConfigError(path=self.config_path, line=None, problem=str(exc)) from None

    def signing_key(self) -> SigningKey:
        if not self.signing_key_path.exists():
            raise DataDirError(path=self.root, reason="no recording key; run `zsp init` first")
        try:
            return SigningKey.load(self.signing_key_path)
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=str(exc)) from None

    def escrow_key(self) -> EscrowPublicKey:
        """The key masked input is sealed to; DataDirError if it is missing or unreadable."""
        path = self.escrow_public_path
        if not path.exists():
            raise DataDirError(path=self.root, reason="no escrow public key (keys/escrow_x25519.pub); run `zsp init`")
        try:
            return EscrowPublicKey.load(path)
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=f"escrow public key unreadable: {exc}") from None

    def trusted_keys(self) -> list[PublicKey]:
        """Keys from allowed_signers (which init seeds with the data dir's own key)."""
        if not self.allowed_signers_path.exists():
            return []
        try:
            return load_trusted_keys(self.allowed_signers_path)
        except KeyFileError as exc:
            raise DataDirError(path=self.root, reason=str(exc)) from None
