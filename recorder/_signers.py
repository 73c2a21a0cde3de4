"""Trusted keys from a file: ``.pub`` lines, an OpenSSH private key, or an ``allowed_signers`` file.

The allowed_signers format is ssh-keygen's (``ssh-keygen(1)``, ALLOWED SIGNERS), so one file serves
``ssh-keygen -Y verify`` and ``zsp verify``::

    principals [options] keytype base64 [comment]

Options are parsed as OpenSSH parses them (``sshsig.c``, ``sshsigopt_parse``) and each one is
honoured or the file is refused; none is ignored:

* ``namespaces="pattern-list"``: the key is trusted for recordings only if the list matches
  :data:`SIGNATURE_NAMESPACE` (``*``/``?`` wildcards, ``!`` negation, as ssh_config PATTERNS).
  A line for other namespaces (``git``, ``file``) is left out, so a shared file works.
* ``valid-after="time"`` / ``valid-before="time"``: the key is trusted only for checkpoints whose
  signed wall time lies in the window (:meth:`PublicKey.valid_at`). Times are ``YYYYMMDDZ`` or
  ``YYYYMMDDHHMM[SS]Z`` (``UTC`` also ends one), read as ssh-keygen reads them. A time without
  ``Z`` is refused: ssh-keygen reads it in the verifying machine's zone, so the verdict would
  depend on where the recording is checked.
* ``cert-authority`` is refused: recordings are signed by plain keys, never certificates.
* Anything else is refused: an option we do not know could restrict the key in a way we would skip.

Lines of key types other than Ed25519 are skipped (they cannot sign a v1 recording) after their
options are checked. Principals are not matched: a recording names its signer by key, not identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ._exceptions import KeyFileError
from ._keys import PublicKey, SigningKey, read_small

__all__ = [
    "SIGNATURE_NAMESPACE",
    "SignerOptions",
    "load_trusted_keys",
    "names_principal",
    "parse_signer_options",
    "parse_trusted_keys",
]

SIGNATURE_NAMESPACE = "session-recording@zsp"
"""The namespace an allowed_signers ``namespaces=`` list must match for a key to sign recordings.

Checkpoint signatures are not SSHSIG (they are Ed25519 over a domain-separated message, FORMAT.md
section 3.2); the name is what ``zsp init`` writes into allowed_signers for them."""

_ED25519 = "ssh-ed25519"
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "rsa-sha2-256",
        "rsa-sha2-512",
    }
)
_BLANK = " \t"


@dataclass(frozen=True, slots=True)
class SignerOptions:
    """The options field of one allowed_signers line."""

    cert_authority: bool = False
    namespaces: str | None = None
    """The raw pattern-list, or None when the line names no namespaces (any namespace)."""
    valid_after: int | None = None
    valid_before: int | None = None

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces) == 1


def _is_key_type(token: str) -> bool:
    return token in _KEY_TYPES or token.endswith("-cert-v01@openssh.com")


def _word(s: str) -> tuple[str, str]:
    """Split off the first field, quote-aware like OpenSSH's ``strdelimw``; return ``(field, rest)``."""
    s = s.lstrip(_BLANK)
    if s.startswith('"'):
        end = s.find('"', 1)
        if end < 0:
            raise ValueError("unterminated quote in the principals field")
        return s[1:end], s[end + 1 :].lstrip(_BLANK)
    i = 0
    while i < len(s) and s[i] not in _BLANK:
        i += 1
    return s[:i], s[i:].lstrip(_BLANK)


def _options_field(s: str) -> tuple[str, str]:
    """Split off the options field: up to the first blank outside double quotes (``\\"`` escapes)."""
    quoted = False
    i = 0
    while i < len(s) and (quoted or s[i] not in _BLANK):
        if s[i] == "\\" and s[i + 1 : i + 2] == '"':
            i += 1
        elif s[i] == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise ValueError("unterminated quote in the options field")
    return s[:i], s[i:].lstrip(_BLANK)


def _dequote(s: str, name: str) -> tuple[str, str]:
    """A double-quoted option value (``\\"`` inside is a quote); return ``(value, rest)``."""
    if not s.startswith('"'):
        raise ValueError(f'{name}: value must be in double quotes ({name}="...")')
    out: list[str] = []
    i = 1
    while i < len(s) and s[i] != '"':
        if s[i] == "\\" and s[i + 1 : i + 2] == '"':
            i += 1
        out.append(s[i])
        i += 1
    if i >= len(s):
        raise ValueError(f"{name}: missing end quote")
    return "".join(out), s[i + 1 :]


def parse_time(value: str, name: str) -> int:
    """``YYYYMMDDZ`` or ``YYYYMMDDHHMM[SS]Z`` (or ``UTC`` for ``Z``) as Unix seconds; local times are refused."""
    v = value
    utc = False
    if len(v) > 1 and v[-1:].upper() == "Z":
        utc, v = True, v[:-1]
    elif len(v) > 3 and v[-3:].upper() == "UTC":
        utc, v = True, v[:-3]
    if len(v) not in (8, 12, 14) or not (v.isascii() and v.isdigit()):
        raise ValueError(f"{name}: not a time in YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z] form: {value!r}")
    if not utc:
        # ssh-keygen reads these in the verifying machine's zone (and, via mktime with
        # tm_isdst=0, an hour off in summer): a verdict must not depend on where it is checked.
        raise ValueError(f"{name}: local times are not accepted, write the time in UTC with a Z suffix: {value!r}")
    try:
        dt = datetime(
            int(v[0:4]),
            int(v[4:6]),
            int(v[6:8]),
            int(v[8:10] or 0),
            int(v[10:12] or 0),
            int(v[12:14] or 0),
            tzinfo=UTC,
        )
    except ValueError:
        raise ValueError(f"{name}: not a valid date or time: {value!r}") from None
    seconds = int(dt.timestamp())
    if seconds <= 0:
        raise ValueError(f"{name}: time before 1970: {value!r}")
    return seconds


def parse_signer_options(opts: str) -> SignerOptions:
    """Parse an allowed_signers options field; raise ValueError naming the first problem."""
    ca = False
    namespaces: str | None = None
    after: int | None = None
    before: int | None = None
    s = opts
    while s:
        low = s.lower()
        if low.startswith("cert-authority"):
            ca, s = True, s[len("cert-authority") :]
        elif low.startswith("namespaces="):
            if namespaces is not None:
                raise ValueError('more than one "namespaces" option')
            namespaces, s = _dequote(s[len("namespaces=") :], "namespaces")
        elif low.startswith("valid-after="):
            if after is not None:
                raise ValueError('more than one "valid-after" option')
            value, s = _dequote(s[len("valid-after=") :], "valid-after")
            after = parse_time(value, "valid-after")
        elif low.startswith("valid-before="):
            if before is not None:
                raise ValueError('more than one "valid-before" option')
            value, s = _dequote(s[len("valid-before=") :], "valid-before")
            before = parse_time(value, "valid-before")
        else:
            name = re.split(r"[=,]", s, maxsplit=1)[0]
            raise ValueError(
                f"unknown option {name!r} (zsp knows cert-authority, namespaces, valid-after, valid-before)"
            )
        if not s:
            break
        if s[0] != ",":
            raise ValueError(f"unexpected text after an option: {s[:20]!r}")
        s = s[1:]
        if not s:
            raise ValueError("options end with a comma")
    if after is not None and before is not None and before <= after:
        raise ValueError('"valid-before" is not after "valid-after"')
    return SignerOptions(cert_authority=ca, namespaces=namespaces, valid_after=after, valid_before=before)


def match_pattern_list(string: str, patterns: str) -> int:
    """OpenSSH ``match_pattern_list``: 1 if a pattern matches, -1 if a ``!pattern`` does, else 0."""
    positive = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in sub)
        if re.fullmatch(regex, string, re.DOTALL):
            if negated:
                return -1
            positive = 1
    return positive


def _parse_line(line: str) -> tuple[SignerOptions, str]:
    """``(options, "keytype base64 [comment]")`` of one non-comment line."""
    first, _ = _word(line)
    if _is_key_type(first):  # a bare .pub line: no principals, no options
        return SignerOptions(), line
    no_key = "no ssh-ed25519 public key found on the line (expected: principals [options] ssh-ed25519 AAAA...)"
    principals, rest = _word(line)
    if not principals or not rest:
        raise ValueError(no_key)
    opts = ""
    if not _is_key_type(_word(rest)[0]):
        opts, rest = _options_field(rest)
        if not _is_key_type(_word(rest)[0]):
            raise ValueError(no_key)
    return parse_signer_options(opts), rest


def load_trusted_keys(path: Path, namespace: str = SIGNATURE_NAMESPACE) -> list[PublicKey]:
    """Public keys from a file: an OpenSSH private key, ``.pub`` lines, or an allowed_signers file.

    Keys whose ``namespaces`` option does not match ``namespace``, and keys of other types, are
    left out; every other option is honoured or refused (:class:`KeyFileError` naming the line).
    A file with no usable key is an error.
    """
    data = read_small(path)
    if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        return [SigningKey.load(path).public]
    return parse_trusted_keys(data, path, namespace)


def parse_trusted_keys(data: bytes, source: Path | str, namespace: str = SIGNATURE_NAMESPACE) -> list[PublicKey]:
    """The keys of ``.pub`` lines or an allowed_signers file held in ``data`` (read from ``source``),
    by the rules of :func:`load_trusted_keys`: an evidence bundle's allowed_signers is read this way."""
    path = source
    keys: list[PublicKey] = []
    excluded = 0
    for lineno, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            opts, key_text = _parse_line(line)
            if not opts.allows(namespace):
                excluded += 1
                continue
            if opts.cert_authority:
                raise ValueError("cert-authority is not supported: zsp recordings are signed by plain keys")
            if key_text.split(None, 1)[0] != _ED25519:
                continue
            key = PublicKey.from_openssh(key_text)
        except ValueError as exc:
            raise KeyFileError(path=path, reason=f"line {lineno}: {exc}") from None
        keys.append(
            PublicKey(raw=key.raw, comment=key.comment, valid_after=opts.valid_after, valid_before=opts.valid_before)
        )
    if not keys:
        why = f" allowed for namespace {namespace}" if excluded else ""
        raise KeyFileError(path=path, reason=f"no ssh-ed25519 public key{why} found")
    return keys


def names_principal(data: bytes, namespace: str, key: PublicKey, identity: str) -> bool:
    """Whether an allowed_signers file (``data``) names ``identity`` among the principals of a line
    trusting ``key`` for ``namespace``: what ``ssh-keygen -Y verify -I IDENTITY`` requires. A bare
    ``.pub`` line names no principal; lines that do not parse are skipped (parse_trusted_keys
    refuses them)."""
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or _is_key_type(_word(line)[0]):
            continue
        try:
            opts, key_text = _parse_line(line)
            if not opts.allows(namespace) or key_text.split(None, 1)[0] != _ED25519:
                continue
            if PublicKey.from_openssh(key_text).raw != key.raw:
                continue
        except ValueError:
            continue
        if match_pattern_list(identity, _word(line)[0]) == 1:
            return True
    return False
