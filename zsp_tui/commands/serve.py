"""``zsp serve``: the bastion."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from recorder import SigningKey
from replay import printable

from ..access import Actor
from ..datadir import DataDir
from ..exceptions import Conflict, RulesError, UsageError
from ..models import Role
from ._common import data

__all__ = ["register"]

DEMO_OPERATOR = "demo-operator"
DEMO_APPROVER = "demo-approver"


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT") from None
    if not 0 <= p < 65536:
        raise UsageError(f"--listen {text!r}: port out of range")
    return host.strip("[]") or "127.0.0.1", p


def demo_data_dir(arg: str | None) -> Path:
    """The demo's own data dir: ``--data`` if given, else ``$XDG_DATA_HOME/zsp-demo``
    (``~/.local/share/zsp-demo``), so a demo never touches the installation in the default data dir."""
    if arg:
        return Path(arg).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "zsp-demo"


def _demo(d: DataDir) -> Path:
    """Users with their own key files, an ssh config that pins the bastion's host key."""
    svc = d.service()
    if any(u.name not in (DEMO_OPERATOR, DEMO_APPROVER) for u in svc.users()):
        # Checked before anything is written: the demo leaves a real installation untouched.
        raise UsageError(
            f"--demo needs a data dir of its own, and {d.root} has users: run `zsp serve --demo` "
            f"without --data (it uses {demo_data_dir(None)}), or with --data NEW_DIR"
        )
    demo = d.root / "demo"
    demo.mkdir(mode=0o700, exist_ok=True)
    # The approver reviews too: in the demo's review app (ssh -t review@zsp-approver) they see the
    # sessions just recorded (replay, search, live) as well as the requests to decide.
    demo_roles = (
        (DEMO_OPERATOR, frozenset({Role.OPERATOR})),
        (DEMO_APPROVER, frozenset({Role.APPROVER, Role.REVIEWER})),
    )
    for name, roles in demo_roles:
        key = demo / name
        if not key.exists():
            SigningKey.generate(comment=name).save(key)  # an ordinary OpenSSH ed25519 key pair
        try:
            svc.add_user(Actor(None), name, roles, [Path(f"{key}.pub").read_text().strip()])
        except Conflict:
            pass  # a second `zsp serve --demo` reuses the demo users
    return demo


def _write_demo_ssh_config(d: DataDir, demo: Path, host: str, port: int) -> Path:
    host_pub = Path(f"{d.host_key_path}.pub").read_text().split()
    (demo / "known_hosts").write_text(f"[{host}]:{port} {host_pub[0]} {host_pub[1]}\n")
    cfg = demo / "ssh_config"
    lines = []
    for alias, name in (("zsp-operator", DEMO_OPERATOR), ("zsp-approver", DEMO_APPROVER)):
        lines += [
            f"Host {alias}",
            f"  HostName {host}",
            f"  Port {port}",
            f"  IdentityFile {demo / name}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {demo / 'known_hosts'}",
            "  StrictHostKeyChecking yes",
            "",
        ]
    cfg.write_text("\n".join(lines))
    return cfg


def demo_steps(d: DataDir, demo: Path, cfg: Path) -> str:
    """The demo's printed steps: each command pastes as is (after replacing r-xxxxxx and SESSION_ID)."""
    s = f"ssh -F {cfg}"
    z = f"--data {d.root}"
    return f"""
Try it (each line in another terminal; the demo users' keys and a pinned known_hosts are in {demo}):

  1. as the operator, ask for a shell on this host:
       {s} zsp@zsp-operator request local --for 15m --reason "trying zsp"
  2. as the approver, approve it (use the id printed by step 1):
       {s} zsp@zsp-approver approve r-xxxxxx
  3. as the operator, open the recorded shell (exit when done):
       {s} local@zsp-operator
  4. list the sessions, verify one, search them all for WORDS (say, a command you typed), and
     replay one (SESSION_ID from the list; its last 8 characters are enough; in the player: space
     pauses, arrows seek, q quits):
       zsp sessions {z}
       zsp verify {z} SESSION_ID
       zsp search {z} WORDS
       zsp play {z} SESSION_ID
  5. as the approver (a reviewer too), the same in the review app through the bastion (? lists
     the keys, q quits), or on this host:
       ssh -t -F {cfg} review@zsp-approver
       zsp review {z} --as {DEMO_APPROVER}
  6. as the approver (a reviewer), export a session as signed evidence and check it offline, as a
     responder with no access here would (the bundle's README.txt shows the same with ssh-keygen
     and sha256sum alone):
       {s} zsp@zsp-approver export SESSION_ID > evidence.tar
       zsp verify evidence.tar
"""


def _serve_workers(d: DataDir, host: str, port: int, n: int) -> int:
    """``--workers N``: the supervising parent (see bastion/workers.py)."""
    from ..bastion.recovery import InstanceLock
    from ..bastion.rules import LiveRules
    from ..bastion.workers import Supervisor, reserve_port, worker_argv

    d.check_private()
    try:  # what would stop every worker at start, said once, before any is started
        LiveRules(d.rules_path).load()
    except RulesError as exc:
        print(f"zsp: error: {printable(str(exc))}; the bastion does not start", file=sys.stderr)
        return 1
    lock = InstanceLock(d.root)
    lock.acquire()  # one zsp serve per data dir: its workers are that one
    try:
        try:
            held = reserve_port(host, port)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        with held:
            port = held.getsockname()[1]
            supervisor = Supervisor(worker_argv(d.root, host, port, n), n)

            def ready(s: Supervisor) -> None:
                pids = ", ".join(str(p) for p in s.pids)
                print(f"zsp: bastion listening on {host}:{port} (data {d.root}; {n} workers: {pids})", flush=True)

            return asyncio.run(supervisor.run(ready))
    finally:
        lock.release()


def cmd_serve(args: argparse.Namespace) -> int:
    from ..bastion import Bastion
    from ..bastion.control import SshHint
    from ..bastion.server import serve_forever
    from ..bastion.workers import READY

    d = DataDir(demo_data_dir(args.data)) if args.demo else data(args)
    host, port = _listen(args.listen)
    if not 1 <= args.workers <= 256:
        raise UsageError(f"--workers {args.workers}: expected 1 to 256")
    if args.demo and args.workers > 1:
        raise UsageError("--demo runs one bastion process: leave out --workers")
    if args.workers > 1 and args.worker_of is None:
        d.require()
        return _serve_workers(d, host, port, args.workers)
    worker = args.worker_of is not None
    if args.demo:
        if not d.db_path.exists():
            d.init(demo=True)
            print(f"zsp: initialised {d.root}", file=sys.stderr)
        demo = _demo(d)
    d.require()
    wildcard = host in ("0.0.0.0", "::", "")  # noqa: S104 - comparing, not binding
    try:
        bastion = Bastion(d, public_host=None if wildcard else host, workers=args.workers, supervised=worker)
    except RulesError as exc:
        # No usable rules (a bad rules.toml and no last good copy): enforcing nothing is no option.
        print(f"zsp: error: {printable(str(exc))}; the bastion does not start", file=sys.stderr)
        return 1

    def ready(b: Bastion) -> None:
        shown = "127.0.0.1" if wildcard else host
        if worker:  # the parent says where the service listens, once all its workers do
            print(f"{READY}{b.port}", flush=True)
        else:
            print(f"zsp: bastion listening on {host}:{b.port} (data {d.root})", flush=True)
        if b.svc.local_target:
            acct = b.local_account
            who = (
                f"the unprivileged account {acct.name} on this host"
                if acct is not None and acct.switch
                else "this bastion's own account (its keys, database and recordings)"
            )
            print(
                f"zsp: warning: the built-in `local` target is on: a grant on it is a shell as {who}. "
                f"Turn it off in production: [targets] local = false in {d.config_path}",
                file=sys.stderr,
                flush=True,
            )
        if args.demo:
            cfg = _write_demo_ssh_config(d, demo, shown, b.port)
            b.hint_template = SshHint(
                port=b.port,
                host=shown,
                ssh_config=str(cfg),
                aliases=((DEMO_OPERATOR, "zsp-operator"), (DEMO_APPROVER, "zsp-approver")),
                approver=DEMO_APPROVER,
            )
            print(demo_steps(d, demo, cfg), flush=True)

    try:
        asyncio.run(serve_forever(bastion, host, port, ready, parent=args.worker_of))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the SSH bastion")
    p.add_argument("--listen", default="127.0.0.1:2222", metavar="HOST:PORT", help="default 127.0.0.1:2222")
    p.add_argument(
        "--demo",
        action="store_true",
        help="run a demo in a data dir of its own (--data, default ~/.local/share/zsp-demo): "
        "initialise it, add a demo operator and approver with key files, and print the commands to try",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N bastion processes on the one port (SO_REUSEPORT), kept by a supervising parent; "
        "per-source and per-user connection caps and control rates are divided among them, the per-user "
        "session cap is counted in the store (default 1: one process)",
    )
    p.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)  # set by the parent
    p.set_defaults(func=cmd_serve)
