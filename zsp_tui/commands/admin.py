"""Admin commands: ``zsp user``, ``zsp target``, ``zsp policy``, ``zsp ca``."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path

from ..clock import rfc3339
from ..exceptions import UsageError
from ..models import Role, Target
from ._common import actor, add_as, data, emit_json, say, service, table

__all__ = ["register"]

_HOST_KEY = re.compile(r"((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+([A-Za-z0-9+/]+={0,2})")


def _read_key_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read key file {path}: {exc.strerror}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise UsageError(f"{path} holds no public key")
    return lines


def _roles(values: list[str] | None) -> frozenset[Role]:
    out = set()
    for v in values or []:
        for part in v.split(","):
            try:
                out.add(Role(part.strip().lower()))
            except ValueError:
                raise UsageError(f"unknown role {part!r} (roles: {', '.join(r.value for r in Role)})") from None
    return frozenset(out)


# --- users -----------------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    keys = [line for f in args.key or [] for line in _read_key_file(f)]
    roles = _roles(args.role)
    if not roles:
        raise UsageError("give the user at least one --role (operator, approver, reviewer, admin)")
    user = service(args).add_user(actor(args), args.name, roles, keys)
    say(f"user {user.name} added: roles {', '.join(sorted(user.roles))}; {len(user.keys)} key(s)")
    for k in user.keys:
        say(f"  {k.fingerprint} {k.comment}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    users = service(args).users()
    if args.json:
        emit_json(
            [
                {
                    "name": u.name,
                    "roles": sorted(u.roles),
                    "created_at": rfc3339(u.created_at),
                    "keys": [{"fingerprint": k.fingerprint, "comment": k.comment} for k in u.keys],
                }
                for u in users
            ]
        )
        return 0
    table(
        [[u.name, ",".join(sorted(u.roles)), " ".join(k.fingerprint for k in u.keys) or "-"] for u in users],
        ["NAME", "ROLES", "KEYS"],
    )
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    service(args).remove_user(actor(args), args.name)
    say(f"user {args.name} removed")
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    svc = service(args)
    for line in _read_key_file(args.keyfile):
        key = svc.add_key(actor(args), args.name, line)
        say(f"key {key.fingerprint} added to {args.name}")
    return 0


def cmd_key_remove(args: argparse.Namespace) -> int:
    service(args).remove_key(actor(args), args.name, args.fingerprint)
    say(f"key {args.fingerprint} removed from {args.name}")
    return 0


# --- targets ---------------------------------------------------------------------------------


async def _scan(host: str, port: int) -> str:
    import asyncssh  # deferred: only --scan needs it

    key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port), 15)
    if key is None:
        raise UsageError(f"{host}:{port} offered no host key")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _host_key_line(text: str, source: str) -> str:
    m = _HOST_KEY.search(text)
    if not m:
        raise UsageError(f"no SSH public key found in {source}")
    import asyncssh

    line = f"{m.group(1)} {m.group(2)}"
    try:
        asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise UsageError(f"{source}: not a valid host key ({exc})") from None
    return line


def _fingerprint(line: str) -> str:
    import asyncssh

    return str(asyncssh.import_public_key(line).get_fingerprint("sha256"))


def cmd_target_add(args: argparse.Namespace) -> int:
    if bool(args.host_key) == bool(args.scan):
        raise UsageError("pin the target's host key: give exactly one of --host-key FILE or --scan")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port")
    if args.scan:
        import asyncssh

        try:
            line = asyncio.run(_scan(args.host, args.port))
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise UsageError(f"cannot scan the host key of {args.host}:{args.port}: {exc}") from None
        say(f"scanned {args.host}:{args.port}: {_fingerprint(line)} (pinned; check it out of band)")
    else:
        try:
            text = Path(args.host_key).read_text(errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read {args.host_key}: {exc.strerror}") from None
        line = _host_key_line(text, args.host_key)
    logins = tuple(dict.fromkeys(x for v in args.login for x in v.split(",") if x))
    client_key = ""
    if args.key:
        import asyncssh

        client_key = str(Path(args.key).resolve())
        try:
            asyncssh.read_private_key(client_key)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise UsageError(f"--key {args.key}: not a readable, unencrypted private key ({exc})") from None
    target = Target(
        name=args.name,
        host=args.host,
        port=args.port,
        logins=logins,
        host_key=line,
        labels=frozenset(args.label or ()),
        client_key=client_key,
    )
    service(args).add_target(actor(args), target)
    say(
        f"target {args.name} added: {args.host}:{args.port}, logins {', '.join(logins)}, host key {_fingerprint(line)}"
    )
    return 0


def cmd_target_list(args: argparse.Namespace) -> int:
    targets = service(args).targets()
    if args.json:
        emit_json(
            [
                {
                    "name": t.name,
                    "host": t.host,
                    "port": t.port,
                    "logins": list(t.logins),
                    "labels": sorted(t.labels),
                    "host_key": t.host_key,
                    "builtin": t.builtin,
                }
                for t in targets
            ]
        )
        return 0
    rows = [
        [
            t.name,
            "(this host)" if t.builtin else f"{t.host}:{t.port}",
            ",".join(t.logins),
            ",".join(sorted(t.labels)) or "-",
            _fingerprint(t.host_key) if t.host_key else "-",
        ]
        for t in targets
    ]
    table(rows, ["NAME", "ADDRESS", "LOGINS", "LABELS", "HOST KEY"])
    return 0


def cmd_target_remove(args: argparse.Namespace) -> int:
    service(args).remove_target(actor(args), args.name)
    say(f"target {args.name} removed")
    return 0


# --- policy and CA ---------------------------------------------------------------------------


def cmd_policy_check(args: argparse.Namespace) -> int:
    from ..policy import load_policy

    path = Path(args.file) if args.file else data(args).policy_path
    policy = load_policy(path)
    say(
        f"{path}: valid: {len(policy.rules)} rule(s), {len(policy.auto_rules)} auto-approval rule(s), "
        f"break-glass {'enabled' if policy.break_glass.enabled else 'disabled'}; sha256 {policy.digest[:16]}..."
    )
    return 0


def cmd_ca(args: argparse.Namespace) -> int:
    from recorder import SigningKey

    d = data(args)
    d.require()
    key = SigningKey.load(d.ca_key_path)
    print(f"{key.public.openssh} zsp-user-ca")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("user", help="add, list and remove users and their keys")
    us = p.add_subparsers(dest="user_cmd", metavar="ACTION", required=True)
    a = us.add_parser("add", parents=[common], help="add a user")
    a.add_argument("name")
    a.add_argument("--key", action="append", metavar="PUBKEY_FILE", help="OpenSSH public key file (repeatable)")
    a.add_argument("--role", action="append", metavar="ROLE", help="operator, approver, reviewer, admin (repeatable)")
    add_as(a, help="the admin doing this (not needed before the first admin exists)")
    a.set_defaults(func=cmd_user_add)
    a = us.add_parser("list", parents=[common], help="list users")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_user_list)
    a = us.add_parser("remove", parents=[common], help="remove a user")
    a.add_argument("name")
    add_as(a)
    a.set_defaults(func=cmd_user_remove)
    k = us.add_parser("key", help="add or remove a user's SSH keys")
    ks = k.add_subparsers(dest="key_cmd", metavar="ACTION", required=True)
    a = ks.add_parser("add", parents=[common], help="add a key")
    a.add_argument("name")
    a.add_argument("keyfile", metavar="PUBKEY_FILE")
    add_as(a)
    a.set_defaults(func=cmd_key_add)
    a = ks.add_parser("remove", parents=[common], help="remove a key by fingerprint")
    a.add_argument("name")
    a.add_argument("fingerprint", metavar="SHA256:...")
    add_as(a)
    a.set_defaults(func=cmd_key_remove)

    p = sub.add_parser("target", help="add, list and remove targets")
    ts = p.add_subparsers(dest="target_cmd", metavar="ACTION", required=True)
    a = ts.add_parser("add", parents=[common], help="add an SSH target with a pinned host key")
    a.add_argument("name")
    a.add_argument("--host", required=True)
    a.add_argument("--port", type=int, default=22)
    a.add_argument(
        "--login",
        action="append",
        required=True,
        metavar="LOGIN",
        help="remote account operators may ask for (repeatable; the first is the default)",
    )
    a.add_argument("--host-key", metavar="FILE", help="the target's host public key (.pub or ssh-keyscan output)")
    a.add_argument("--scan", action="store_true", help="fetch the host key now, print its fingerprint and pin it")
    a.add_argument("--label", action="append", metavar="LABEL", help="label for policy globs (repeatable)")
    a.add_argument(
        "--key",
        metavar="PRIVATE_KEY_FILE",
        help="fallback for targets that cannot trust the zsp CA: log in with this static key "
        "instead of a per-session certificate (a standing credential: avoid if you can)",
    )
    add_as(a)
    a.set_defaults(func=cmd_target_add)
    a = ts.add_parser("list", parents=[common], help="list targets")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_target_list)
    a = ts.add_parser("remove", parents=[common], help="remove a target")
    a.add_argument("name")
    add_as(a)
    a.set_defaults(func=cmd_target_remove)

    p = sub.add_parser("policy", help="check the access policy")
    ps = p.add_subparsers(dest="policy_cmd", metavar="ACTION", required=True)
    a = ps.add_parser("check", parents=[common], help="validate the policy file (default: DATA/policy.toml)")
    a.add_argument("file", nargs="?")
    a.set_defaults(func=cmd_policy_check)

    p = sub.add_parser("ca", parents=[common], help="print the user CA public key line for TrustedUserCAKeys")
    p.set_defaults(func=cmd_ca)
