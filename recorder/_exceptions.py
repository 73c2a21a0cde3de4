"""Errors raised while writing recordings or handling recording keys.

::

    RecorderError
     ├── KeyFileError          a signing, public or escrow key file cannot be read or parsed
     ├── EscrowError           a sealed box of masked input does not open
     ├── SignatureError        an SSHSIG signature is malformed, for another namespace, or does not verify
     ├── ResumeRefused         a recording whose writer died cannot be sealed as it stands (nothing written)
     └── RecordingFailed       the recording can no longer be written; the session must end
          └── RecordingLimitReached   the session has recorded as much as it may; it must end

Every error carries its data in keyword-only attributes so callers (the CLI, the bastion)
can turn it into one clear line without parsing messages.
"""

from __future__ import annotations

from pathlib import Path


class RecorderError(Exception):
    """Base class of every error raised by :mod:`recorder`."""


class KeyFileError(RecorderError):
    """A key file is missing, unreadable, or not a key of a supported type."""

    def __init__(self, *, path: Path | str | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{reason}")


class RecordingFailed(RecorderError):
    """Writing the recording failed; the session it records must not go on.

    Once a writer raises this it stays failed: every later call raises it again, so no byte
    can be relayed unrecorded after the first failure (fail closed).
    """

    def __init__(self, *, path: Path | str | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        where = f"{path}: " if path is not None else ""
        super().__init__(f"recording failed: {where}{reason}")


class RecordingLimitReached(RecordingFailed):
    """The session has recorded ``limit`` bytes of input and output and may record no more.

    The recording itself is intact: events can still be added and it can be sealed. It is a
    :class:`RecordingFailed` so that code unaware of limits still stops relaying (fail closed).
    """

    def __init__(self, *, path: Path | str | None, limit: int) -> None:
        self.limit = limit
        super().__init__(path=path, reason=f"the session reached its recording limit of {limit} bytes")


class EscrowError(RecorderError):
    """A sealed box of masked input is malformed, or does not open with the key and place given."""

    def __init__(self, *, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SignatureError(RecorderError):
    """An SSHSIG signature (``ssh-keygen -Y``) is malformed, made for another namespace, or does not verify."""

    def __init__(self, *, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ResumeRefused(RecorderError):
    """A recording whose writer died is not sealed: the bastion's key is not its signer, or the
    file changed between being verified and being appended to. Nothing was written."""

    def __init__(self, *, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
