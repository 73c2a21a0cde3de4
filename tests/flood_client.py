"""A hostile client for the flood tests, run as its own process so that its CPU and event loop do
not share the test's: ``python -m tests.flood_client MODE PORT KEY KNOWN_HOSTS SECONDS [ARGS...]``.

Mode ``control``: one registered user, ``ARGS[0]`` connections (default 8), each running up to
``ARGS[1]`` control commands at once (default 12; more than the channel cap), as fast as the bastion
answers, for SECONDS; it also keeps opening extra connections beyond the per-user cap. Prints a
JSON summary of what happened (exit statuses, refusals) on stdout when done.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import asyncssh

COMMANDS = ("request local --for 5m --reason flood", "grants --json", "status", "whoami")


async def control(port: int, key: str, known_hosts: str, seconds: float, conns: int, per_conn: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    end = time.monotonic() + seconds
    opts = {"port": port, "client_keys": [key], "known_hosts": known_hosts, "agent_path": None, "username": "zsp"}

    async def channel(conn: asyncssh.SSHClientConnection, i: int) -> None:
        while time.monotonic() < end:
            try:
                r = await conn.run(COMMANDS[i % len(COMMANDS)], check=False, timeout=30)
            except asyncssh.ChannelOpenError as exc:
                if "closed" in exc.reason:  # the bastion hung up on this connection: reconnect
                    seen["disconnected"] += 1
                    return
                seen["channel-refused"] += 1
                await asyncio.sleep(0.01)
                continue
            except (OSError, asyncssh.Error, TimeoutError):
                seen["error"] += 1
                return
            err = str(r.stderr or "")
            if "too many control commands" in err or "control commands running" in err:
                seen["rate-refused"] += 1
            else:
                seen[f"exit-{r.exit_status}"] += 1
            i += 1

    async def one() -> None:
        while time.monotonic() < end:
            try:
                async with asyncssh.connect("127.0.0.1", **opts) as conn:
                    await asyncio.gather(*(channel(conn, i) for i in range(per_conn)))
            except (OSError, asyncssh.Error) as exc:
                seen["connect-refused" if "connections" in str(exc) else "connect-error"] += 1
                await asyncio.sleep(0.05)

    async def extra() -> None:
        # Connections beyond the per-user cap: logged in, then held (or refused).
        held: list[asyncssh.SSHClientConnection] = []
        while time.monotonic() < end:
            try:
                held.append(await asyncssh.connect("127.0.0.1", **opts))
                seen["extra-held"] += 1
            except (OSError, asyncssh.Error):
                seen["extra-refused"] += 1
                await asyncio.sleep(0.05)
        for c in held:
            c.close()

    await asyncio.gather(*(one() for _ in range(conns)), extra())
    return seen


def main(argv: list[str]) -> int:
    mode, port, key, known_hosts, seconds = argv[0], int(argv[1]), argv[2], argv[3], float(argv[4])
    rest = argv[5:]
    if mode != "control":
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    conns = int(rest[0]) if rest else 8
    per_conn = int(rest[1]) if len(rest) > 1 else 12
    seen = asyncio.run(control(port, key, known_hosts, seconds, conns, per_conn))
    print(json.dumps(dict(seen)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
