"""``zsp serve``: the SSH bastion.

asyncssh terminates the operator's connection. Hardening, where asyncssh's defaults differ:
public-key authentication only (``begin_auth`` always returns True: returning False would let a
user in without authentication); identity is bound in ``auth_completed`` to the key whose
*signature* asyncssh verified, never to a key that was merely offered; strict KEX (Terrapin) is
required; agent and X11 forwarding are off and port forwarding, direct-tcpip, streamlocal, SFTP
and SCP are refused and audited; login timeout 10 s; per-source caps on unauthenticated
connections and failed authentications, and a global cap on them in which a newcomer displaces
a connection of the busiest address, preferring one still in key exchange (see ``limits``); per-user caps
on connections, channels per connection, concurrent sessions, and on the rate and concurrency of
control commands; user names over 256 bytes are refused.

No user can starve another through the database thread: authentication lookups and session
admission (key -> user, target, grant) run in their own thread with their own SQLite connection,
and both it and the main database thread serve each user (or address) in turn (see ``limits``).

Grants are enforced to the second: a watcher checks every live session four times a second and
ends it, with the reason in the recording and the audit log, when its grant expires or is
revoked, after in-band warnings before the end. With a PostgreSQL store it also LISTENs on
``zsp_grants`` (see ``notify``) and checks at once when a grant changes anywhere; polling stays
the bound. A store that stops answering refuses new sessions at once (fail closed, with a clear
line to the operator) and ends live ones after ``store_grace`` seconds of failed checks.

Several bastions may share one store: ``zsp serve --workers N`` (``workers``) runs N of these
processes on one port, and several hosts may share a PostgreSQL store. What must hold across
them is counted in the store: the per-user session cap is checked against the store's live
sessions in the same write transaction that adds the session. What is counted per process
(per-source caps on unauthenticated connections and failed authentications, per-user
connections and control-command rates) is divided by N in each of N workers (see
:func:`per_worker`): the kernel spreads one client's connections over the workers by a hash of
its address and port, so together they allow about what one process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import shutil
import signal
import sqlite3
import sys
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, cast

import asyncssh
from asyncssh.connection import SSHServerConnection
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.misc import ChannelOpenError
from asyncssh.public_key import decode_ssh_public_key
from asyncssh.stream import SSHReader, SSHWriter

from recorder import (
    AsyncRecorder,
    EscrowPublicKey,
    FileSink,
    RecordingFailed,
    RecordingLimitReached,
    RecordingWriter,
    SessionMeta,
    SigningKey,
    new_session_id,
)
from replay import printable

from ..access import AccessService, Actor
from ..audit import NewEvent, Scalar
from ..clock import format_duration, rfc3339
from ..datadir import DataDir
from ..exceptions import DataDirError, NotFound, StoreError, ZspError
from ..indexing import LIVE_INTERVAL, BackgroundIndexer
from ..models import (
    LOCAL_TARGET,
    AccessRequest,
    HoldState,
    SessionRecord,
    Target,
    User,
    Watch,
    WatchEnd,
    owner_host,
    session_owner,
)
from ..sinks import BackgroundSink
from .control import SshHint, run_control
from .export import RemoteExports, is_export
from .limits import ControlGate, FairExecutor, Pending, window_size
from .logins import Checked, Login, Logins, Standing, find_stale, still_registered
from .moderation import FRESH_S, Moderation, record_watch, watch_view
from .notify import GrantNotices
from .recovery import InstanceLock, close_interrupted, owner_process
from .review import REVIEW_USER, ReviewApps
from .rules import LiveRules, session_facts
from .session import LiveSession, relay
from .sftp import DEFAULT_MAX_FILE_RECORD_BYTES, proxy_sftp
from .transfer import transfer_program
from .upstream import (
    KEX,
    MACS,
    SERVER_CIPHERS,
    LocalUpstream,
    SshUpstream,
    UpstreamError,
    allowed_env,
    mint_certificate,
)

if TYPE_CHECKING:
    from ..objstore import Uploader
    from ..policy import Policy

__all__ = ["Bastion", "Limits", "per_worker"]

T = TypeVar("T")
_Args = TypeVarTuple("_Args")
CONTROL_USER = "zsp"
_WATCH_DEADLINE = 5.0
_END_WAIT = 2.0
"""How long a session's client waits for its end to be stored (see ``Bastion._session_ended``)."""
_MAX_AUDITED_REFUSALS = 10
_MAX_USERNAME = 256
_STORE_DOWN = "the bastion cannot reach its database; no new sessions until it answers again (try again shortly)"
_STORE_ERRORS = (StoreError, sqlite3.Error)
"""The store is unreachable or failing (PostgreSQL down, a SQLite file that cannot be read)."""


async def _within(aw: Awaitable[T], seconds: float) -> T:
    """``await aw``, raising TimeoutError after ``seconds``: ``asyncio.wait_for`` for the grant
    watcher, which must never drop a cancel. On Python 3.11, ``wait_for`` returns the inner result
    when a cancel lands in the loop step in which the inner completes (CPython gh-86296, fixed in
    3.12); the watcher then looped on and ``Bastion.stop()`` waited for it forever."""
    async with asyncio.timeout(seconds):
        return await aw


# --- identity: the key whose signature was verified ----------------------------------------------

_original_validate = SSHServerConnection.validate_public_key


async def _validate_and_remember(
    self: SSHServerConnection, username: str, key_data: bytes, msg: bytes, signature: bytes
) -> bool:
    ok = await _original_validate(self, username, key_data, msg, signature)
    if ok and msg:
        # asyncssh has just verified a signature by this key (msg is empty for unsigned probes).
        self._zsp_signed_key = key_data  # type: ignore[attr-defined]
    return ok


SSHServerConnection.validate_public_key = _validate_and_remember  # type: ignore[method-assign]

_original_session_open = SSHServerConnection._process_session_open


def _session_open_capped(self: SSHServerConnection, packet: Any) -> Any:
    # asyncssh opens session channels itself when a process factory is set (session_requested is
    # never asked), so the per-connection channel cap is checked here, before a channel exists.
    owner = getattr(self, "_owner", None)
    if isinstance(owner, _Server):
        owner.check_channels(len(getattr(self, "_channels", ())))
    chan, session = _original_session_open(self, packet)
    if type(session) is asyncssh.SSHServerProcess:
        session.__class__ = _Process  # the sftp subsystem reaches _handle too (see _Process)
    return chan, session


class _Process(asyncssh.SSHServerProcess[Any]):
    """asyncssh serves the ``sftp`` subsystem itself (from ``sftp_factory``) or refuses it before
    any handler sees it. zsp relays it instead (sftp.py), after the same admission as a shell: so
    an ``sftp`` request is accepted and handed to the process factory like any other session."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # _handle decides (and refuses all but sftp, audited)

    def session_started(self) -> None:
        chan = self._chan
        if chan is None or chan.get_subsystem() != "sftp":
            super().session_started()
            return
        # asyncssh's own session_started would start its SFTP server here: start the process instead.
        stdin = SSHReader[Any](self, chan)
        stdout = SSHWriter[Any](self, chan)
        stderr = SSHWriter[Any](self, chan, EXTENDED_DATA_STDERR)
        handler = self._start_process(stdin, stdout, stderr)
        if inspect.isawaitable(handler) and self._conn is not None:
            self._conn.create_task(handler, stdin.logger)


SSHServerConnection._process_session_open = _session_open_capped  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Limits:
    login_timeout: float = 10.0
    max_unauthenticated_per_source: int = 64
    max_unauthenticated: int = 256
    """In all; when reached, a new connection displaces the oldest of the busiest address."""
    max_auth_failures_per_source: int = 20
    """...within ``failure_window`` seconds; further connections from that source are refused."""
    failure_window: float = 300.0
    max_sessions_per_user: int = 64
    max_connections_per_user: int = 64
    max_channels_per_connection: int = 10
    control_rate: float = 5.0
    """Control commands per second per user (token bucket refill)..."""
    control_burst: int = 20
    """...and the bucket's size."""
    max_control_per_user: int = 4
    """Control commands of one user running at once."""
    keepalive_interval: float = 30.0
    watch_interval: float = 0.25
    max_recording_bytes: int = 1 << 30
    """Input and output one session may record; the session then ends with reason ``recording-limit``."""
    min_free_bytes: int = 1 << 30
    max_file_record_bytes: int = DEFAULT_MAX_FILE_RECORD_BYTES
    """Content of one file transferred (SFTP/SCP) kept in the recording; beyond it only its hash."""
    """New sessions are refused (``session.refused``) while the recordings directory has less free space."""
    max_review_apps_per_user: int = 2
    """Review apps (``ssh -t review@BASTION``) one user may run at once..."""
    max_review_apps: int = 16
    """...and all users together (each is a Python process on the bastion host)."""
    store_grace: float = 10.0
    """Seconds of failed grant checks (store unreachable) after which live sessions end; 0 ends
    them at the first failure. New sessions are refused from the first failure on."""
    moderation_wait: float = 300.0
    """Seconds a moderated session waits for its first moderator before it ends."""
    moderation_grace: float = 30.0
    """Seconds input is held after the last moderator left; the session then ends."""


def per_worker(limits: Limits, workers: int) -> Limits:
    """One worker's share of the caps counted in each process: per-source unauthenticated
    connections and failed authentications, all unauthenticated connections, connections per
    user, and the control-command rate, burst and concurrency per user, each divided by
    ``workers`` (rounded up, at least 1). Sessions per user are counted in the store instead."""
    if workers <= 1:
        return limits

    def share(n: int) -> int:
        return max(1, math.ceil(n / workers))

    return replace(
        limits,
        max_unauthenticated_per_source=share(limits.max_unauthenticated_per_source),
        max_unauthenticated=share(limits.max_unauthenticated),
        max_auth_failures_per_source=share(limits.max_auth_failures_per_source),
        max_connections_per_user=share(limits.max_connections_per_user),
        control_rate=limits.control_rate / workers,
        control_burst=share(limits.control_burst),
        max_control_per_user=share(limits.max_control_per_user),
    )


class _Sources:
    """Per-source-address counters for unauthenticated connections and failed authentications."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.pending: Pending[_Server] = Pending(limits.max_unauthenticated_per_source, limits.max_unauthenticated)
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, ip: str) -> str | None:
        q = self.failures[ip]
        now = time.monotonic()
        while q and now - q[0] > self.limits.failure_window:
            q.popleft()
        if len(q) >= self.limits.max_auth_failures_per_source:
            return "too many failed authentications from your address; try again later"
        return None

    def fail(self, ip: str) -> None:
        self.failures[ip].append(time.monotonic())


class _Server(asyncssh.SSHServer):
    def __init__(self, bastion: Bastion) -> None:
        self.b = bastion
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ip = "?"
        self.client = "?"
        self.user: User | None = None
        self.counted = False
        self.offered = 0
        self.candidates: dict[str, User] = {}
        self.ssh_user: str | None = None
        self.refusals = 0
        self.not_failed: str | None = None
        """Why a connection that never logged in is no failed authentication (displaced, user at cap)."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.ip, self.client = str(peer[0]), f"{peer[0]}:{peer[1]}"
        why = self.b.sources.blocked(self.ip)
        admitted, displaced = (False, None) if why else self.b.sources.pending.admit(self.ip, self)
        if not admitted:
            why = why or "too many unauthenticated connections from your address"
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, why)
            return
        self.counted = True
        if displaced is not None:
            displaced.counted = False
            displaced.not_failed = "displaced: too many unauthenticated connections"
            if displaced.conn is not None:
                displaced.conn.disconnect(
                    asyncssh.DISC_TOO_MANY_CONNECTIONS, "too many unauthenticated connections; try again"
                )

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.b.logins.discard(self.conn)
        if isinstance(exc, (asyncssh.ProtocolError, asyncssh.KeyExchangeFailed)):
            self.b.protocol_dropped(self.client, self.user.name if self.user else None, exc)
        if self.counted and self.user is None:
            self.b.sources.pending.remove(self, self.ip)
            self.counted = False
        if self.user is not None:
            self.b.connections[self.user.name] -= 1
            if self.b.connections[self.user.name] <= 0:
                del self.b.connections[self.user.name]
        if self.user is None and self.ssh_user is not None:
            # The client asked to authenticate and never succeeded: one audited failure per connection.
            reason = "no registered key" if not self.offered or not self.candidates else "signature not accepted"
            if exc is not None and not self.candidates:
                reason = f"{reason} ({type(exc).__name__})"
            if self.not_failed is not None:
                reason = self.not_failed
            else:
                self.b.sources.fail(self.ip)
            self.b.spawn(
                self.b.audit(
                    NewEvent(
                        "user.login.failure",
                        "?",
                        "ssh",
                        f"failed login from {self.client} as {self.ssh_user!r}: {reason}",
                        outcome="failure",
                        fields={
                            "client": self.client,
                            "ssh_user": self.ssh_user,
                            "keys_offered": self.offered,
                            "reason": reason,
                        },
                    )
                )
            )

    def begin_auth(self, username: str) -> bool:
        self.ssh_user = username[:_MAX_USERNAME]
        conn = self.conn
        if conn is None:
            return True
        if self.counted:  # past key exchange: displaced only after connections that are not
            self.b.sources.pending.authenticating(self, self.ip)
        if len(username.encode()) > _MAX_USERNAME:
            conn.disconnect(asyncssh.DISC_ILLEGAL_USER_NAME, "user name too long")
        elif not getattr(conn, "_strict_kex", False):
            conn.disconnect(
                asyncssh.DISC_KEY_EXCHANGE_FAILED,
                "strict key exchange required (CVE-2023-48795, Terrapin): update your SSH client",
            )
        return True  # always authenticate; False would mean "no authentication needed"

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # client certificates are not accepted: identity is a registered key

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.offered += 1
        fp = key.get_fingerprint("sha256")
        # The authentication thread, in this address's turn: nothing a user queues can delay it.
        try:
            user = await self.b.auth_db(self.ip, self.b.auth_svc.user_by_key, fp)
        except _STORE_ERRORS as exc:  # fail closed, and say why: no key can be checked
            self.b.store_failed(exc)
            self.not_failed = "the bastion's database is unavailable"
            if self.conn is not None:
                self.conn.disconnect(asyncssh.DISC_SERVICE_NOT_AVAILABLE, f"zsp: {_STORE_DOWN}")
            return False
        if user is not None:
            self.candidates[fp] = user  # bound only if asyncssh then verifies this key's signature
        return user is not None

    def auth_completed(self) -> None:
        # Synchronous on purpose: asyncssh may accept a session channel as soon as this returns,
        # so the identity must be bound before it does.
        conn = self.conn
        key_data = getattr(conn, "_zsp_signed_key", None)
        if conn is None or key_data is None:
            if conn is not None:
                conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "authentication state lost")
            return
        fp = decode_ssh_public_key(key_data).get_fingerprint("sha256")
        user = self.candidates.get(fp)
        if user is None:
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "key no longer registered")
            return
        if self.counted:
            self.b.sources.pending.remove(self, self.ip)
            self.counted = False
        mine = self.b.connections.get(user.name, 0)
        if mine >= self.b.limits.max_connections_per_user:
            self.not_failed = f"{user.name} already has {mine} connections open (limit)"
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, self.not_failed)
            return
        self.b.connections[user.name] = mine + 1
        self.user = user
        conn.set_extra_info(zsp_user=user, zsp_fingerprint=fp)
        self.b.logins.add(Login(conn, user, fp, self.client))
        ssh_user = str(conn.get_extra_info("username"))[:_MAX_USERNAME]
        self.b.spawn(
            self.b.audit(
                NewEvent(
                    "user.login",
                    user.name,
                    "ssh",
                    f"{user.name} logged in from {self.client}",
                    fields={"client": self.client, "fingerprint": fp, "ssh_user": ssh_user},
                )
            )
        )

    def check_channels(self, open_now: int) -> None:
        """Refuse a new channel beyond the per-connection cap (raises asyncssh's ChannelOpenError)."""
        cap = self.b.limits.max_channels_per_connection
        if open_now >= cap:
            self._refuse("channel-limit", f"{open_now} channels already open on this connection (limit {cap})")
            raise ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"too many channels on this connection (limit {cap})"
            )

    # Every forwarding is refused, and said so in the audit log.
    def count_refusal(self) -> bool:
        """Count one refusal on this connection (channel, session, limit); True while it is still
        to be audited. Audited at most a few per connection, and the connection is dropped well
        past that: a client opening thousands must not flood the log or the database thread."""
        self.refusals += 1
        if self.refusals > 4 * _MAX_AUDITED_REFUSALS and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, "too many refused requests")
        return self.refusals <= _MAX_AUDITED_REFUSALS

    def _refuse(self, kind: str, detail: str) -> bool:
        if not self.count_refusal():
            return False
        if self.refusals == _MAX_AUDITED_REFUSALS:
            detail += " (further refusals on this connection are not audited)"
        who = self.user.name if self.user else "?"
        self.b.spawn(
            self.b.audit(
                NewEvent(
                    "channel.refused",
                    who,
                    "ssh",
                    f"{kind} refused: {detail}",
                    outcome="failure",
                    fields={"kind": kind, "detail": detail[:200], "client": self.client},
                )
            )
        )
        return False

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return self._refuse("direct-tcpip", f"{dest_host}:{dest_port}")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return self._refuse("tcpip-forward", f"{listen_host}:{listen_port}")

    def unix_connection_requested(self, dest_path: str) -> bool:
        return self._refuse("direct-streamlocal", dest_path)

    def unix_server_requested(self, listen_path: str) -> bool:
        return self._refuse("streamlocal-forward", listen_path)


class Bastion:
    """The running bastion: listener, live sessions, and the watcher that enforces grants."""

    def __init__(
        self,
        data: DataDir,
        *,
        limits: Limits | None = None,
        public_host: str | None = None,
        workers: int = 1,
        supervised: bool = False,
    ) -> None:
        """``workers``: how many bastion processes share the port (``zsp serve --workers``):
        this one takes its share of the per-process caps (:func:`per_worker`) and listens with
        SO_REUSEPORT. ``supervised``: a worker under ``zsp serve --workers``, whose parent holds
        the data dir's instance lock."""
        data.check_private()  # keys and recordings are the bastion account's alone
        self.data = data
        settings = data.settings()
        self.workers = workers
        self.limits = per_worker(limits or Limits(**settings.bastion), workers)
        self.store_url = settings.store_url
        self.storage = settings.storage
        """Object storage for recordings: set, a sealed session's recording is marked pending upload."""
        self.uploader: Uploader | None = None
        """Uploads pending recordings (``objstore.Uploader``), when storage is configured."""
        self.mask_limits = settings.masking
        try:
            self.escrow: EscrowPublicKey | None = data.escrow_key()
        except DataDirError as exc:  # fail closed: without escrow nothing is masked, all is in clear
            self.escrow = None
            print(f"zsp: warning: {exc.reason}; input at password prompts will be recorded in clear", file=sys.stderr)
        if data.escrow_private_path.exists():
            print("zsp: warning: the escrow private key is still here (keys/escrow_x25519)", file=sys.stderr)
        self.svc: AccessService = data.service()
        self.local_account = data.local_account(settings)
        self.key: SigningKey = data.signing_key()
        self.ca = asyncssh.read_private_key(str(data.ca_key_path))
        self.host_key = asyncssh.read_private_key(str(data.host_key_path))
        self.sources = _Sources(self.limits)
        self.connections: dict[str, int] = {}  # authenticated connections per user
        lim = self.limits
        self.control = ControlGate(lim.control_rate, lim.control_burst, lim.max_control_per_user)
        self.live: set[LiveSession] = set()
        self._views: set[asyncio.Task[Any]] = set()
        """Moderators' watch views running (``zsp watch`` over ssh): ended first by :meth:`stop`."""
        # Each live session's grant end on the monotonic clock, taken from the wall clock once, when
        # the session starts: a wall clock stepped hours forward or back (NTP, an operator, a VM
        # resumed) then neither ends a session early nor lets it run late.
        self._deadlines: dict[LiveSession, tuple[datetime | None, float]] = {}
        self.logins = Logins()  # authenticated connections; ended when their key or user is removed
        self._logins_checked: Checked | None = None
        self.reserved: dict[str, int] = defaultdict(int)  # sessions per user, counted from admission
        self.review = ReviewApps(data.root, lim.max_review_apps_per_user, lim.max_review_apps)  # review@
        self.exports = RemoteExports(data.root)  # ssh zsp@ export
        self.public_host = public_host
        self.hint_template: SshHint | None = None
        """Set by ``zsp serve --demo``: hints name the demo's ssh_config and host aliases."""
        self._db = FairExecutor("zsp-db")
        # Authentication and session admission: their own thread and connection, so the control
        # commands and audit writes users can generate never queue ahead of someone's login.
        self._auth = FairExecutor("zsp-auth")
        self.auth_svc: AccessService = data.service()
        self._watch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsp-watch")
        self.watch_svc: AccessService = data.service()
        # Audit sinks send from their own threads: a slow collector must not hold the database
        # threads that logins, sessions and grant checks wait on. One set, shared by the services.
        self.sinks = tuple(BackgroundSink(sink) for sink in self.svc.sinks)
        for service in (self.svc, self.auth_svc, self.watch_svc):
            service.sinks = self.sinks
        # Sessions are indexed for `zsp search` as they are sealed, in a thread of its own.
        self.indexer = BackgroundIndexer(data)
        self._server: asyncssh.SSHAcceptor | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._live_indexing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.owner = session_owner("serve")
        self._lock = None if supervised else InstanceLock(data.root)
        self._store_down_since: float | None = None
        """When grant checks started failing (monotonic), None while the store answers."""
        self._store_warned = 0.0
        self._store_why = ""
        self._dropped_said = -math.inf
        self._dropped_unsaid = 0
        """Connections dropped for protocol errors since the last line about them (``protocol_dropped``)."""
        self._poke = asyncio.Event()
        """Set to check grants now (a ``zsp_grants`` notification), not at the next tick."""
        self._notices: GrantNotices | None = None
        self._stopping = False
        # Real-time rules: a bad file with no last good copy is a RulesError here, before any port
        # is opened (``zsp serve`` refuses to start); the audit events are written at start.
        self.rules = LiveRules(data.rules_path)
        self._rules_events = self.rules.load()
        self._policy_ok: Policy | None = None
        """The last policy read without error (which sessions are moderated, see ``moderation``)."""
        self._watches_warned = 0.0
        self._losing: set[str] = set()
        """Watches being ended ``lost`` (one store write each, not one per tick)."""
        self._watches: list[Watch] = []
        """The watches of this bastion's moderated sessions as last read (``_moderate``); when
        the store fails they age, so no moderator is known present once their heartbeat is stale."""

    async def db(self, fn: Callable[[*_Args], T], *args: *_Args, lane: str = "") -> T:
        """Run a store call in the database thread (SQLite connections are not shared), in the
        turn of ``lane`` (the user whose action it is): one user's pile waits behind others' work."""
        return await self._db.run(lane, fn, *args)

    async def auth_db(self, lane: str, fn: Callable[[*_Args], T], *args: *_Args) -> T:
        """Run an authentication or admission lookup on ``auth_svc`` in its own thread."""
        return await self._auth.run(lane, fn, *args)

    async def watch_db(self, fn: Callable[[*_Args], T], *args: *_Args) -> T:
        """The grant watcher's own thread and connection: client traffic cannot queue ahead of it."""
        return await asyncio.get_running_loop().run_in_executor(self._watch_pool, lambda: fn(*args))

    async def _channel_refused(
        self, conn: asyncssh.SSHServerConnection, user: User, message: str, kind: str, detail: str, **where: Any
    ) -> None:
        """Audit a refused channel (``channel.refused``: a subsystem, a file transfer), capped per
        connection like every refusal (:meth:`_audit_refusal`)."""
        fields: dict[str, Scalar] = {"kind": kind, "detail": detail[:200]}
        event = NewEvent("channel.refused", user.name, "ssh", message, outcome="failure", fields=fields, **where)
        await self._audit_refusal(conn, event)

    async def _session_refused(
        self,
        conn: asyncssh.SSHServerConnection,
        user: User,
        message: str,
        reason: str,
        fields: dict[str, Scalar] | None = None,
        *,
        capped: bool = True,
        **where: Any,
    ) -> None:
        """Audit a refused session (``session.refused`` with its ``reason`` among the fields),
        capped per connection like every refusal (:meth:`_audit_refusal`) unless ``capped`` is
        false: a refusal for the bastion's own state (disk space) is always written."""
        fields = {"reason": reason, **(fields or {})}
        event = NewEvent("session.refused", user.name, "ssh", message, outcome="failure", fields=fields, **where)
        await (self._audit_refusal(conn, event) if capped else self.audit(event))

    async def _audit_refusal(self, conn: asyncssh.SSHServerConnection, event: NewEvent) -> None:
        """Audit a refused session, at most so many per connection (see ``_Server.count_refusal``)."""
        owner = conn.get_owner()
        if not isinstance(owner, _Server) or owner.count_refusal():
            await self.audit(event)

    async def audit(self, event: NewEvent) -> None:
        await self.db(self.svc.record_event, event, lane=event.actor)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        self._background(coro)

    def _background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, _STORE_ERRORS):
            self.store_failed(exc)  # an audit write while the store is down: said once in a while
        else:
            print(f"zsp: warning: background task failed: {printable(repr(exc))}", file=sys.stderr)

    def store_failed(self, exc: BaseException) -> None:
        """Tell the operator running the bastion that its store fails (at most every 10 s)."""
        now = time.monotonic()
        if now - self._store_warned >= 10:
            self._store_warned = now
            print(f"zsp: error: the store fails ({printable(str(exc))}); new sessions are refused", file=sys.stderr)

    def protocol_dropped(self, client: str, user: str | None, exc: asyncssh.DisconnectError) -> None:
        """Say on the bastion's output that asyncssh dropped a connection for breaking the protocol
        (a message out of place in key exchange, a channel with no room for a packet). One line at
        most every 10 s, counting the others: a client can make these as fast as it connects, and
        one that never logged in gets no audit row (see ``_Server.connection_lost``)."""
        now = time.monotonic()
        if now - self._dropped_said < 10:
            self._dropped_unsaid += 1
            return
        more = f" ({self._dropped_unsaid} more since the last such line)" if self._dropped_unsaid else ""
        self._dropped_said, self._dropped_unsaid = now, 0
        who = f"{client} ({user})" if user else f"{client} before login"
        reason = printable(exc.reason)[:200]
        print(f"zsp: dropped {printable(who)}: {type(exc).__name__}: {reason}{more}", file=sys.stderr)

    async def start(self, host: str, port: int) -> None:
        # One bastion per data dir (the supervising parent holds the lock for its workers); what a
        # killed predecessor (or worker) left live is closed as interrupted.
        if self._lock is not None:
            self._lock.acquire()
        self.recover()
        with contextlib.suppress(ZspError):  # a broken policy file: sessions are admitted as below
            self._policy_ok = self.svc.policy()
        self._server = await asyncssh.listen(
            host,
            port,
            server_factory=lambda: _Server(self),
            server_host_keys=[self.host_key],
            process_factory=self._handle,
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            sftp_factory=None,
            login_timeout=self.limits.login_timeout,
            keepalive_interval=self.limits.keepalive_interval,
            keepalive_count_max=3,
            encryption_algs=list(SERVER_CIPHERS),  # see upstream.SERVER_CIPHERS
            mac_algs=list(MACS),
            password_auth=False,
            kbdint_auth=False,
            public_key_auth=True,
            kex_algs=list(KEX),
            reuse_port=True if self.workers > 1 else None,  # N workers, one port: the kernel spreads them
        )
        self.port = self._server.sockets[0].getsockname()[1]
        for event in self._rules_events:
            await self.audit(event)
        self._rules_events = []
        self._watcher = asyncio.create_task(self._watch())
        self._live_indexing = asyncio.create_task(self._index_live())
        if self.store_url is not None and self.store_url.startswith(("postgresql:", "postgres:")):
            loop = asyncio.get_running_loop()
            self._notices = GrantNotices(self.store_url, lambda: loop.call_soon_threadsafe(self._poke.set))
        if self.storage is not None:
            self.uploader = _start_uploader(self)

    def recover(self) -> list[str]:
        """Close what dead bastions (or workers) of this host left live as interrupted, cancel
        the holds of sessions that are over; returns the ids of the sessions closed."""
        interrupted = close_interrupted(
            self.svc,
            self.data.trusted_keys(),
            key=self.key,
            shared_store=self.store_url is not None,
            upload=self.storage is not None,
        )
        for sid in interrupted:
            print(f"zsp: session {sid} was interrupted (its bastion stopped without sealing it)", file=sys.stderr)
        if interrupted:  # indexed as LIVE while it ran: what it is now (sealed, or INCOMPLETE) replaces that
            for s in self.svc.sessions():
                if s.id in interrupted:
                    self.indexer.submit(s.path)
        # Commands held by a rule whose session is over: nobody waits for them. Holds of live
        # sessions (another worker's, another bastion's) are theirs to decide.
        unended = self.svc.unended_sessions()
        live = {s.id for s in unended}
        if self._lock is not None:
            # This bastion holds the data dir's lock: a `zsp serve` session it leaves live has an
            # owner that is still running (orphaned workers of a killed supervisor, say). Said,
            # with what has that pid, so a session nobody closes is explained.
            for s in unended:
                if s.owner.startswith("serve:") and s.owner != self.owner:
                    why = owner_process(s.owner)
                    if why:
                        said = f"its owner {printable(s.owner)} runs ({printable(why)})"
                        print(f"zsp: session {s.id} left live: {said}", file=sys.stderr)
        for h in self.svc.holds(pending_only=False):
            if h.state is HoldState.PENDING and h.session_id not in live:
                self.svc.cancel_hold(h.id, "the bastion stopped while the command was held")
        return interrupted

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for live in list(self.live):
            live.end("shutdown", "the bastion is shutting down; session closed")
        deadline = time.monotonic() + 5
        while self.live and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.review.stop()
        await self.exports.stop()
        # Moderators' views end now, while the store still records their watches' end (their
        # connections would otherwise be torn down after it, and the write fail).
        views = list(self._views)
        for view in views:
            view.cancel()
        if views:
            await asyncio.wait(views, timeout=5)
        if self._live_indexing is not None:
            self._live_indexing.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._notices is not None:
            self._notices.close()
        if self.uploader is not None:
            await asyncio.to_thread(self.uploader.stop)
        self._db.shutdown(wait=True)
        self._auth.shutdown(wait=True)
        self._watch_pool.shutdown(wait=True)
        for sink in self.sinks:
            sink.close()
        self.indexer.close()
        if self._lock is not None:
            self._lock.release()

    async def _index_live(self) -> None:
        """Live sessions are searchable as they go: their recordings are handed to the indexer
        every few seconds (it re-indexes only those that grew, see indexing.LIVE_MAX_BYTES)."""
        while True:
            await asyncio.sleep(LIVE_INTERVAL)
            for live in list(self.live):
                self.indexer.submit_live(live.record.path)

    # --- the grant watcher --------------------------------------------------------------------

    async def _watch(self) -> None:
        """Keep the grant checks running whatever happens: on any failure, end every live session
        (fail closed) and start checking again."""
        while True:
            try:
                # Expiry runs apart from the database checks: a database that hangs delays only
                # revocation (bounded by a deadline), never the end of a grant's time.
                async with asyncio.TaskGroup() as group:  # one failing cancels the other
                    group.create_task(self._expiry_loop())
                    group.create_task(self._watch_loop())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - enforcement must survive; sessions end instead
                print(f"zsp: error: grant watcher failed ({exc!r}); ending live sessions", file=sys.stderr)
                for live in list(self.live):
                    self._end(live, "error", f"cannot check grants ({exc}); session closed")
                await asyncio.sleep(self.limits.watch_interval)

    def _grant_checks_failed(self, exc: BaseException, since: float) -> None:
        """The watcher's store calls fail: live sessions go on for ``store_grace`` seconds (their
        expiry is still enforced, apart), then end (:meth:`_grace_over`, from the expiry loop, so
        calls that hang cannot stretch the grace), counted from when the failed call began
        (``since``). Revocations made meanwhile are not seen, so the grace is short, and the
        operators are told at once. Over when the grants are read again."""
        if self._store_down_since is not None or not self.live:
            return
        self._store_down_since = since
        self._store_why = printable(repr(exc))
        grace = self.limits.store_grace
        if grace > 0:
            print(
                f"zsp: error: cannot check grants ({self._store_why}); live sessions end in {grace:g} s "
                "unless the store answers again",
                file=sys.stderr,
            )
            for live in list(self.live):
                if not live.ending.is_set():
                    live.notify(f"the bastion cannot reach its database; this session ends in {grace:g} s")
        self._grace_over()

    def _grace_over(self) -> None:
        since = self._store_down_since
        if since is None or time.monotonic() - since < self.limits.store_grace:
            return
        for live in list(self.live):
            if not live.ending.is_set():
                # The operator (and the recording) get no store address or driver text: that is
                # on the bastion's stderr, said when the checks began failing.
                self._end(
                    live,
                    "error",
                    f"the bastion could not check grants for {self.limits.store_grace:g} s "
                    "(its database does not answer); session closed",
                )

    def _end(self, live: LiveSession, reason: str, message: str) -> None:
        """End a session, noting why in its recording if the recording still works."""
        if live.recorder.failed is None:
            with contextlib.suppress(RecordingFailed):  # failed meanwhile: the session ends anyway
                live.recorder.event(
                    f"grant.{reason}" if reason in ("expired", "revoked") else "session.ended",
                    message,
                    grant_id=live.grant.id,
                )
        live.end(reason, message)

    def deadline(self, live: LiveSession, ends_at: datetime | None = None) -> float | None:
        """When ``live``'s grant ends, on the monotonic clock (:func:`_grant_clock`; None: it has no
        end). Taken from the wall clock the first time it is asked for (at the session's start), and
        again only if the grant's end changes (``ends_at``, as the store now says)."""
        ends = ends_at if ends_at is not None else live.grant.ends_at
        if ends is None:
            return None
        known = self._deadlines.get(live)
        if known is None or known[0] != ends:
            left = (ends - self.svc.clock.now()).total_seconds()
            known = (ends, _grant_clock() + left)
            self._deadlines[live] = known
        return known[1]

    async def _expiry_loop(self) -> None:
        """Expiry needs no database: every session knows when its grant ends (on the monotonic
        clock: :meth:`deadline`)."""
        while True:
            await asyncio.sleep(self.limits.watch_interval)
            mono = _grant_clock()
            for gone in self._deadlines.keys() - self.live:
                del self._deadlines[gone]
            for live in list(self.live):
                ends = self.deadline(live)
                if ends is not None and mono >= ends and not live.ending.is_set():
                    self._end(live, "expired", f"grant {live.grant.id} expired; session closed")
            self._grace_over()  # a store that fails: its grace is timed here, whatever the checks wait on

    async def _watch_loop(self) -> None:
        policy_warn: tuple[timedelta, ...] = (timedelta(minutes=5), timedelta(minutes=1))
        last_sweep = 0.0
        while True:
            # A tick, or at once when a grant changed on any bastion (LISTEN zsp_grants).
            with contextlib.suppress(TimeoutError):
                await _within(self._poke.wait(), self.limits.watch_interval)
            self._poke.clear()
            if time.monotonic() - last_sweep > 5:
                # Record due expiries and lapses in the audit log even when nobody acts.
                last_sweep = began = time.monotonic()
                try:
                    await _within(self.watch_db(self.watch_svc.sweep), _WATCH_DEADLINE)
                except (ZspError, OSError, sqlite3.Error, TimeoutError) as exc:
                    why = printable(repr(exc))
                    print(f"zsp: warning: recording expiries in the audit log failed: {why}", file=sys.stderr)
                    if isinstance(exc, (*_STORE_ERRORS, TimeoutError)):
                        self._grant_checks_failed(exc, began)
            if len(self.logins):
                await self._check_logins()
            await self._rules_tick()
            if not self.live:
                self._store_down_since = None  # a grace period belongs to the sessions it spared
                continue
            await self._moderate()
            # Revocations need the database. The watcher has its own connection and thread, so
            # nothing queued by clients can delay it; no answer in time means sessions end,
            # once the store has failed for ``store_grace`` seconds.
            began = time.monotonic()
            # Only the sessions asked about are judged by the answer: one admitted while the
            # store was asked (its grant checked at admission) may hold a grant not in it, and
            # would be ended as if that grant were gone. It is checked at the next tick.
            asked = list(self.live)
            try:
                ids = [live.grant.id for live in asked]
                active = await _within(self.watch_db(self.watch_svc.standing_grants, ids), _WATCH_DEADLINE)
            except (Exception, TimeoutError) as exc:  # noqa: BLE001 - fail closed
                self._grant_checks_failed(exc, began)
                continue
            if self._store_down_since is not None:
                down = time.monotonic() - self._store_down_since
                print(f"zsp: the store answers again (after {down:.1f} s); grants are checked", file=sys.stderr)
                self._store_down_since = None
            try:
                policy = await _within(self.watch_db(self.watch_svc.policy), _WATCH_DEADLINE)
                policy_warn = policy.warn_before
            except (ZspError, TimeoutError) as exc:  # an invalid policy file: keep the last warning times
                print(f"zsp: warning: {printable(str(exc))}; keeping the previous warning times", file=sys.stderr)
            now = self.svc.clock.now()
            for live in asked:
                if live.ending.is_set() or live not in self.live:
                    continue
                try:
                    self._check(live, active.get(live.grant.id), now, policy_warn)
                except Exception as exc:  # noqa: BLE001 - one broken session must not stop the others' checks
                    self._end(live, "error", f"cannot check this session's grant ({exc!r}); session closed")

    async def _rules_tick(self) -> None:
        """Re-read the rules file if it changed (new sessions take a good new set; a bad one is
        refused once per content, said on stderr and audited), then let duration rules fire."""
        try:
            reload = await _within(self.watch_db(self.rules.keeper.reload), _WATCH_DEADLINE)
        except Exception as exc:  # noqa: BLE001 - the rules in force stay; grants are still checked
            print(f"zsp: warning: cannot re-read the rules file: {printable(repr(exc))}", file=sys.stderr)
        else:
            if reload.changed or reload.error is not None:
                for event in self.rules.took(reload):
                    self.spawn(self.audit(event))
        for live in list(self.live):
            if live.rules is None or live.ending.is_set():
                continue
            try:
                live.rules.tick()
            except Exception as exc:  # noqa: BLE001 - one session's failure must not stop the watcher
                self._end(live, "error", f"rules failed in this session ({exc!r}); session closed")

    def _check(
        self, live: LiveSession, grant: AccessRequest | None, now: datetime, warn: tuple[timedelta, ...]
    ) -> None:
        if grant is None:
            self.spawn(self._end_inactive(live, now))
            return
        # Time left on the monotonic clock (see deadline), not the wall clock's say.
        ends = self.deadline(live, grant.ends_at)
        left = timedelta(seconds=ends - _grant_clock()) if ends is not None else timedelta(0)
        # Every threshold already passed counts as warned: a grant shorter than several
        # thresholds gets one warning (the nearest), not one per threshold at once.
        due = {i for i, w in enumerate(warn) if left <= w} - live.warned
        if due and left > timedelta(0):
            live.warned.update(due)
            msg = (
                f"access to {grant.login}@{grant.target} ends in {format_duration(left)} "
                f"(grant {grant.id}, at {rfc3339(grant.ends_at)[:19]}Z)"
                if grant.ends_at
                else ""
            )
            if live.recorder.failed is None:
                live.recorder.event("grant.warning", msg, grant_id=grant.id, seconds_left=int(left.total_seconds()))
            live.notify(msg)

    async def _end_inactive(self, live: LiveSession, now: datetime) -> None:
        """The grant is no longer active: find out why (for the record), then end the session."""
        state = "revoked"
        with contextlib.suppress(ZspError, OSError, sqlite3.Error, TimeoutError):
            req = await _within(self.watch_db(self.watch_svc.get, live.grant.id), _WATCH_DEADLINE)
            state = req.effective_state(now).value
        if state == "approved":  # not yet started or clock skew: it is not active now, so end anyway
            state = "inactive"
        self._end(live, state, f"grant {live.grant.id} {state}; session closed")

    async def _check_logins(self) -> None:
        """End connections whose key or user was removed since they logged in (see :mod:`.logins`)."""
        logins = list(self.logins)  # taken before the lookups: a login made meanwhile waits a tick
        began = time.monotonic()
        try:
            stale, self._logins_checked = await _within(
                self.watch_db(find_stale, self.watch_svc, logins, self._logins_checked), _WATCH_DEADLINE
            )
        except (ZspError, OSError, sqlite3.Error, TimeoutError) as exc:
            # New channels still re-check their key; live sessions end on the grant check's failure.
            why = printable(repr(exc))
            print(f"zsp: warning: cannot check logins against the registered keys: {why}", file=sys.stderr)
            if isinstance(exc, (*_STORE_ERRORS, TimeoutError)):
                self._grant_checks_failed(exc, began)
            return
        for standing in self.logins.drop(stale):
            self.spawn(self._end_login(standing))

    async def _end_login(self, standing: Standing) -> None:
        """End a connection whose key or user is gone: its live sessions first (recorded and sealed
        with the reason), then the connection itself; audited."""
        login = standing.login
        mine = [live for live in self.live if live.conn is login.conn]
        for live in mine:
            if not live.ending.is_set():
                self._end(live, standing.reason, standing.message)
        deadline = time.monotonic() + _WATCH_DEADLINE
        while any(live in self.live for live in mine) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        login.conn.disconnect(asyncssh.DISC_BY_APPLICATION, standing.message)
        await self.audit(
            NewEvent(
                "user.disconnect",
                login.user.name,
                "ssh",
                f"connection from {login.client} ended: {standing.message}",
                fields={"client": login.client, "fingerprint": login.fingerprint, "reason": standing.reason},
            )
        )

    # --- sessions -----------------------------------------------------------------------------

    def _hint(self, conn: Any) -> SshHint:
        sock = conn.get_extra_info("sockname") or ("127.0.0.1", self.port)
        user: User | None = conn.get_extra_info("zsp_user")
        hint = self.hint_template or SshHint(port=0, host="")
        return replace(hint, port=int(sock[1]), host=self.public_host or str(sock[0]), user=user.name if user else None)

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        conn = cast(asyncssh.SSHServerConnection, process.channel.get_connection())  # a server's channel
        user: User | None = conn.get_extra_info("zsp_user")
        try:
            if user is None:
                process.exit(255)
                return
            # The key (or user) may have been removed since login: nothing more on this connection.
            fingerprint = str(conn.get_extra_info("zsp_fingerprint"))
            current = await self.auth_db(user.name, self.auth_svc.user_by_key, fingerprint)
            if not still_registered(user, current) or current is None:
                return self._refuse(process, "the key you logged in with is no longer registered", 255)
            user = current  # as it is now (roles may have changed since login)
            if process.channel.is_closing():
                return  # the client closed the channel meanwhile: nothing to answer
            username = str(conn.get_extra_info("username"))  # the connection's: a channel's goes with it
            if (field := _nul_field(username, process.command, process.get_terminal_type())) is not None:
                # No target gets it intact (a C string ends there: OpenSSH's sshd drops the
                # connection, a local shell cannot be given such a TERM), and PostgreSQL text
                # cannot hold it: refused for what it is, before any session, and audited.
                refusal = f"a NUL byte in the {_NUL_FIELDS[field]} is not accepted"
                await self._session_refused(conn, user, refusal, "nul-byte", {"field": field})
                return self._refuse(process, refusal)
            hint = self._hint(conn)
            if process.subsystem and username in (CONTROL_USER, REVIEW_USER):
                # Subsystems reach this handler (see _Process); the console and the review app have none.
                server = conn.get_owner()
                if isinstance(server, _Server):
                    server._refuse("subsystem", process.subsystem)  # audited a few times per connection
                return self._refuse(process, f"{username} has no {process.subsystem} subsystem")
            if username == CONTROL_USER:
                why = self.control.enter(user.name)
                if why is not None:
                    server = conn.get_owner()
                    if isinstance(server, _Server):
                        server._refuse("control-limit", why)  # audited a few times per connection
                    return self._refuse(process, why)
                words = (process.command or "").split()
                if words[:1] == ["watch"]:  # long-lived: not held in the control gate
                    self.control.leave(user.name)
                    await self._watch_session(process, conn, user, words[1:])
                    return
                if is_export(process.command):  # the gate counted it; the exports have caps of their own
                    self.control.leave(user.name)
                    await self.exports.run(process, user)
                    return
                try:
                    status, out, err = await self.db(
                        run_control, self.svc, user, process.command, hint, self.data, lane=user.name
                    )
                finally:
                    self.control.leave(user.name)
                if status == 0 and _decides_hold(process.command):
                    self.rules.poke()  # the held relay reads its hold now, not at its next poll
                if process.get_terminal_type() is not None:  # a PTY (ssh -t): no output post-processing
                    out, err = out.replace("\n", "\r\n"), err.replace("\n", "\r\n")
                process.stdout.write(out.encode())
                process.stderr.write(err.encode())
                process.exit(status)
                return
            if username == REVIEW_USER:  # the review app (review.py): not a target, not recorded
                await self.review.run(process, user, hint, lambda event: self._audit_refusal(conn, event))
                return
            await self._session(process, conn, user, username, hint)
        except _STORE_ERRORS as exc:  # fail closed, and say why
            self.store_failed(exc)
            with contextlib.suppress(OSError, asyncssh.Error):
                self._refuse(process, _STORE_DOWN, 255)
        except (OSError, asyncssh.Error):
            with contextlib.suppress(OSError, asyncssh.Error):
                process.exit(255)

    def _refuse(
        self, process: asyncssh.SSHServerProcess[bytes], message: str, status: int = 1, *, hint: str | None = None
    ) -> None:
        # The message quotes what the client sent (user name, subsystem, command): escaped, one line.
        text = f"zsp: {printable(message)}\r\n" + (f"  {printable(hint)}\r\n" if hint else "")
        process.stderr.write(text.encode())
        process.exit(status)

    async def _session(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        conn: asyncssh.SSHServerConnection,
        user: User,
        username: str,
        hint: SshHint,
    ) -> None:
        # ``conn`` is taken before any await: a channel the client closes meanwhile no longer
        # knows its connection (asyncssh asserts), and must not take the connection down with it.
        login, _, target_name = username.rpartition("@")
        command = process.command
        sftp = process.subsystem == "sftp"  # file transfer: admitted below under a grant that allows it
        if process.subsystem and not sftp:
            await self._channel_refused(
                conn, user, f"subsystem {process.subsystem} refused", "subsystem", process.subsystem
            )
            return self._refuse(process, f"the {process.subsystem} subsystem is not available through zsp")
        program = transfer_program(command)  # see transfer.py for what this refusal does and does not do
        if program is not None:
            kind = "scp" if program == "scp" else "sftp"
            await self._channel_refused(conn, user, f"file transfer ({program}) refused", kind, command or "")
            return self._refuse(
                process,
                "file transfer runs through zsp over SFTP only (sftp, or scp without -O), "
                "under a grant whose rule has file_transfer = true",
            )
        try:
            target = await self.auth_db(user.name, self.auth_svc.target, target_name)
        except NotFound:
            message = f"no such target {target_name[:64]!r}"
            await self._session_refused(conn, user, message, "no-such-target", {"requested_target": target_name[:200]})
            listing = hint.control("targets")
            return self._refuse(process, f"no such target {target_name!r}; list what you may request: {listing}")
        login = login or target.default_login
        grant = await self.auth_db(user.name, self.auth_svc.active_grant, user, target.name, login)
        if grant is None and login not in target.logins:
            # Nothing to ask for: say which logins there are instead of a request that fails.
            message = f"no login {login[:64]!r} on {target.name}"
            await self._session_refused(conn, user, message, "no-such-login", target=target.name, login=login[:64])
            return self._refuse(
                process,
                f"{target.name} has no login {login!r} (logins: {', '.join(target.logins)}); list them:",
                hint=hint.control("targets"),
            )
        if grant is None:
            ask = f"request {target.name} --login {login} --for 30m --reason why you need it"
            message = f"no active grant for {login}@{target.name}"
            await self._session_refused(conn, user, message, "no-grant", target=target.name, login=login)
            return self._refuse(
                process,
                f"{user.name} has no active grant for {login}@{target.name}. Ask for one:",
                hint=hint.control(ask),
            )
        if sftp and (why := await self._transfer_refused(conn, user, target, login, grant)) is not None:
            return self._refuse(process, why)
        # The user's live sessions in the store (every worker's and bastion's) and those this
        # process is starting: counted and reserved with no await between, so this process's
        # concurrent channels cannot all pass; the store checks again as it adds the session.
        stored = await self.auth_db(user.name, _live_sessions, self.auth_svc, user.name)
        mine = stored + self.reserved[user.name]
        if mine >= self.limits.max_sessions_per_user:
            return self._refuse(process, f"{user.name} already has {mine} open sessions (limit)")
        self.reserved[user.name] += 1
        released = False

        def release() -> None:  # once the store counts the session, or it will not start
            nonlocal released
            if not released:
                released = True
                self.reserved[user.name] -= 1

        try:
            await self._run_session(process, conn, user, target, login, grant, command, hint, release)
        finally:
            release()

    async def _transfer_refused(
        self, conn: asyncssh.SSHServerConnection, user: User, target: Target, login: str, grant: AccessRequest
    ) -> str | None:
        """SFTP (and scp, which speaks it) only under a grant whose policy rule has
        ``file_transfer = true``; never break-glass, never the bastion itself. Refusals are audited."""
        policy = await self.auth_db(user.name, self.auth_svc.policy)
        why = None
        if target.name == LOCAL_TARGET and target.builtin:
            why = "file transfer to the bastion itself is not offered"
        elif not policy.allows_file_transfer(grant.rule, grant.break_glass):
            why = (
                f"grant {grant.id} does not allow file transfer (rule {grant.rule!r} has no file_transfer = true"
                + ("; break-glass grants never do" if grant.break_glass else "")
                + ")"
            )
        if why is None:
            return None
        await self._channel_refused(
            conn, user, f"file transfer (sftp) refused: {why}", "sftp", why,
            target=target.name, login=login, grant_id=grant.id,
        )
        return why

    async def _run_session(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        conn: asyncssh.SSHServerConnection,
        user: User,
        target: Target,
        login: str,
        grant: AccessRequest,
        command: str | None,
        hint: SshHint,
        release: Callable[[], None],
    ) -> None:
        """Record, connect and relay one admitted session (its grant checked, its slot reserved
        until ``release``)."""
        term = process.get_terminal_type()
        size = process.get_terminal_size()
        cols, rows = window_size(size[0], size[1]) if term else (0, 0)
        peer = conn_peer(conn)
        meta = SessionMeta(
            user=user.name,
            target=target.name,
            login=login,
            grant_id=grant.id,
            term=term or "",
            cols=cols,
            rows=rows,
            command=command,
            # The environment passed on to the target is part of the record too.
            extra={"source": "zsp serve", "client": peer, "env": allowed_env(process.env)}
            | ({"subsystem": process.subsystem} if process.subsystem else {}),
        )
        # Never fill the disk that the audit log and the other sessions' recordings need.
        if (low := _low_disk(self.data.recordings, self.limits.min_free_bytes)) is not None:
            await self._session_refused(
                conn,
                user,
                f"too little free space for recordings ({low})",
                "disk-space",
                {"detail": low},
                capped=False,
                target=target.name,
                login=login,
                grant_id=grant.id,
            )
            return self._refuse(process, "the bastion is short of disk space for recordings; try again later")
        # Fail closed: no recording, no session.
        t0_ns = time.monotonic_ns()  # the recording's clock starts now: rule matches are timed from it
        try:
            sid = new_session_id()
            path = self.data.recordings / f"{sid}.zsprec"
            writer = RecordingWriter(FileSink(path), self.key, meta, session_id=sid, autoflush=False)
        except (OSError, RecordingFailed) as exc:
            reason = exc.reason if isinstance(exc, RecordingFailed) else (exc.strerror or str(exc))
            await self.audit(
                NewEvent(
                    "session.recording_failed",
                    user.name,
                    "ssh",
                    f"recording could not start: {reason}",
                    outcome="failure",
                    target=target.name,
                    login=login,
                    grant_id=grant.id,
                )
            )
            return self._refuse(process, f"this session cannot be recorded ({reason}), so it will not start")
        record = SessionRecord(
            id=str(sid),
            user=user.name,
            target=target.name,
            login=login,
            grant_id=grant.id,
            command=command,
            client=peer,
            path=str(path),
            started_at=self.svc.clock.now(),
            owner=self.owner,
        )
        live: LiveSession | None = None

        def on_error(exc: RecordingFailed) -> None:
            if live is None:
                return
            if isinstance(exc, RecordingLimitReached):
                # The recording is intact: say in it why it stops there; it is sealed as usual.
                message = f"this session reached its recording limit ({exc.limit} bytes); session ended"
                live.end("recording-limit", message)
                with contextlib.suppress(RecordingFailed):
                    recorder.event("session.recording_limit", message, limit=exc.limit)
            else:
                live.end("recording-failed", f"recording failed ({exc.reason}); session ended")

        recorder = AsyncRecorder(writer, on_error=on_error, max_bytes=self.limits.max_recording_bytes)
        live = LiveSession(
            record=record,
            grant=grant,
            process=process,
            recorder=recorder,
            conn=conn,
            escrow=self.escrow,
            mask_limits=self.mask_limits,
            audit=self.audit,
        )
        cap = self.limits.max_sessions_per_user
        try:
            started = await self.db(
                functools.partial(self.svc.session_started, record, max_live=cap), lane=user.name
            )
        except _STORE_ERRORS as exc:
            started = None
            self.store_failed(exc)
        finally:
            release()  # in the store now (or not started): counted there
        if not started:
            with contextlib.suppress(RecordingFailed):
                await recorder.close(None, "refused")
            path.unlink(missing_ok=True)  # no session row names it: a header and nothing else
            if started is None:
                return self._refuse(process, _STORE_DOWN)
            return self._refuse(process, f"{user.name} already has {cap} open sessions (limit)")
        self.live.add(live)
        self.deadline(live)  # the grant's end, fixed on the monotonic clock from now on
        status: int | None = None
        try:
            if not await self._await_moderator(live, user, hint):
                return  # no moderator came (or the session ended meanwhile): the finally seals it
            if not await self._start_rules(live, user, target, cols, rows, term is not None, t0_ns, hint):
                return  # ended by a rule before the target was reached (the finally seals it)
            upstream: LocalUpstream | SshUpstream
            try:
                if target.name == LOCAL_TARGET and target.builtin:
                    upstream = LocalUpstream(self.local_account)
                    await upstream.start(command, term, (cols, rows), process.env)
                else:
                    upstream = SshUpstream()
                    ends = grant.ends_at.timestamp() if grant.ends_at else time.time()
                    key_id = f"zsp user={user.name} grant={grant.id} session={sid}"
                    identity = None if target.client_key else mint_certificate(self.ca, login, key_id, ends)
                    await upstream.start(
                        target, login, identity, command, term, (cols, rows), process.env, subsystem=process.subsystem
                    )
            except UpstreamError as exc:
                recorder.event(exc.event, str(exc))
                await self.audit(
                    NewEvent(
                        exc.event,
                        user.name,
                        "ssh",
                        str(exc),
                        outcome="failure",
                        target=target.name,
                        login=login,
                        grant_id=grant.id,
                        session_id=str(sid),
                    )
                )
                live.end("upstream-error", str(exc))
                status = None
            else:
                if process.subsystem == "sftp" and isinstance(upstream, SshUpstream) and upstream.process:
                    status = await self._transfer(live, upstream, upstream.process)
                else:
                    status = await relay(
                        live, upstream, pty=term is not None, local=isinstance(upstream, LocalUpstream)
                    )
                if upstream.error and not live.ending.is_set():
                    # The target's connection broke: say so in the recording, the audit log and the seal.
                    live.reason = "upstream-error"
                    if recorder.failed is None:
                        recorder.event("upstream.error", f"connection to {target.name} lost: {upstream.error}")
                    await self.audit(
                        NewEvent(
                            "upstream.error",
                            user.name,
                            "ssh",
                            f"connection to {target.name} lost: {upstream.error}",
                            outcome="failure",
                            target=target.name,
                            login=login,
                            grant_id=grant.id,
                            session_id=str(sid),
                        )
                    )
        finally:
            if live.moderation is not None:
                # Who still watched, in the recording before its seal; their watches end in the
                # store (audited), so their views, beating, end by themselves.
                for w in live.moderation.close():
                    record_watch(
                        live,
                        "moderation.watch.end",
                        f"{w.user} stopped watching (session-ended)",
                        moderator=w.user,
                        since=rfc3339(w.since),
                        how=WatchEnd.SESSION_ENDED.value,
                        via=w.via,
                    )
                try:
                    await self.db(self.svc.end_watches, str(sid), lane=user.name)
                except (*_STORE_ERRORS, ZspError) as exc:
                    self.store_failed(exc)
            if live.rules is not None:  # while still listed: a stopping bastion waits for this too
                await live.rules.close()
            self.live.discard(live)
            head: str | None = None
            frames: int | None = None
            try:
                info = await recorder.close(status, live.reason)
                head, frames = info.head_hex, info.frames
            except RecordingFailed:
                head = None
            # Queued for search before the end is stored: the uploader (kicked by the end) leaves
            # the scratch file until the indexer is done with it.
            self.indexer.submit(path)  # searchable within moments; never waited for
            await self._session_ended(record, status, live.reason, head, frames)
            with contextlib.suppress(OSError, asyncssh.Error):
                process.exit(status if status is not None and status >= 0 else 255)

    async def _transfer(
        self, live: LiveSession, upstream: SshUpstream, remote: asyncssh.SSHClientProcess[bytes]
    ) -> int | None:
        """The recorded SFTP relay (sftp.py) of an admitted file-transfer session; audited at its
        start, and once per file transferred (path, direction, size, sha256)."""
        rec = live.record
        await self.audit(
            NewEvent(
                "transfer.start",
                rec.user,
                "ssh",
                f"file transfer (sftp) to {rec.login}@{rec.target}",
                target=rec.target,
                login=rec.login,
                grant_id=rec.grant_id,
                session_id=rec.id,
            )
        )
        files: list[dict[str, Any]] = []
        try:
            status = await proxy_sftp(live, remote, self.limits.max_file_record_bytes, files.append)
        finally:
            await upstream.close()
        for f in files[:100]:  # the recording has them all; the audit log names the first hundred
            await self.audit(
                NewEvent(
                    "transfer.file",
                    rec.user,
                    "ssh",
                    f"{f['direction']} {printable(str(f['path']))[:300]} "
                    f"({f['size']} bytes, sha256 {f['sha256'] or '-'})",
                    target=rec.target,
                    login=rec.login,
                    grant_id=rec.grant_id,
                    session_id=rec.id,
                    fields={k: v for k, v in f.items() if isinstance(v, (str, int, bool))},
                )
            )
        return status

    async def _session_ended(
        self, record: SessionRecord, status: int | None, reason: str, head: str | None, frames: int | None
    ) -> None:
        """Store a session's end (and, with object storage, that its recording waits for upload).
        The client's channel is closed after this, so that a session seen closed is stored closed;
        but a store that does not answer within ``_END_WAIT`` seconds does not hold the client:
        the end is then stored in the background, retried until the store is back (the row must
        not stay live while this bastion runs; if it stops first, the next start's recovery
        closes it as interrupted)."""
        upload = "pending" if self.storage is not None else None
        end = functools.partial(self.svc.session_ended, record, status, reason, head, frames, upload=upload)
        stored = self._background(self._end_stored(end, record.user))
        # Known down (the watcher says so): the client is not kept waiting on it at all.
        await asyncio.wait({stored}, timeout=0 if self._store_down_since is not None else _END_WAIT)

    async def _end_stored(self, end: Callable[[], None], lane: str) -> None:
        delay = 0.5
        while True:
            try:
                await self.db(end, lane=lane)
            except _STORE_ERRORS as exc:
                self.store_failed(exc)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if self.uploader is not None:
                self.uploader.kick()
            return

    # --- moderated sessions (see moderation.py) -------------------------------------------------

    async def _await_moderator(self, live: LiveSession, user: User, hint: SshHint) -> bool:
        """A session under a moderated grant waits here, before its target is reached, for its
        first moderator (at most ``moderation_wait`` seconds). False: it must not go on."""
        grant = live.grant
        if grant.break_glass:
            return True  # break-glass is for when nobody else is there
        try:
            policy = await self.auth_db(user.name, self.auth_svc.policy)
            self._policy_ok = policy
        except ZspError as exc:
            # A policy file broken meanwhile: the last good one this bastion read decides; with
            # none, fail closed (whether the session must be moderated is not known).
            if self._policy_ok is None:
                self._end(live, "error", f"cannot read the policy ({exc}); session closed")
                return False
            policy = self._policy_ok
        moderators = policy.moderated_by(grant.rule)
        if not moderators:
            return True
        r = live.record

        def lapse() -> None:
            grace = self.limits.moderation_grace
            message = f"no moderator watched this session for {grace:g} s; session closed"
            self.spawn(self._moderation_event("session.moderation.lapsed", live, message, outcome="failure"))
            self._end(live, "moderation-lapsed", message)

        live.moderation = Moderation(moderators, self.limits.moderation_grace, lapse)
        wait = self.limits.moderation_wait
        # In the demo the approver (a reviewer too) is the moderator: the hint uses their ssh alias.
        how = hint.control(f"watch {r.id}", hint.approver).replace("ssh ", "ssh -t ", 1)
        message = f"this session waits for a moderator ({', '.join(moderators)}) to watch it (at most {wait:g} s)"
        record_watch(live, "moderation.wait", message, moderators=", ".join(moderators), wait_s=int(wait))
        await self._moderation_event("session.moderation.wait", live, message, moderators=", ".join(moderators))
        live.notify(f"{message}; a moderator joins with: {how} (or j on the review app's Live screen)")
        joined = asyncio.create_task(live.moderation.present.wait())
        ending = asyncio.create_task(live.ending.wait())
        gone = asyncio.create_task(live.process.channel.wait_closed())
        try:
            done, _ = await asyncio.wait({joined, ending, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (joined, ending, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if live.ending.is_set():
            return False
        if gone in done:
            live.end("client-closed")
            return False
        if joined in done:
            live.notify("a moderator is watching; the session starts")
            return True
        message = f"no moderator joined within {wait:g} s; session closed"
        await self._moderation_event("session.moderation.timeout", live, message, outcome="failure")
        self._end(live, "moderation-timeout", message)
        return False

    async def _moderation_event(
        self,
        name: str,
        live: LiveSession,
        message: str,
        *,
        actor: str | None = None,
        outcome: str = "success",
        **fields: Any,
    ) -> None:
        r = live.record
        await self.audit(
            NewEvent(
                name,
                actor or r.user,
                "ssh",
                message,
                outcome=outcome,
                target=r.target,
                login=r.login,
                grant_id=r.grant_id,
                session_id=r.id,
                fields=fields,
            )
        )

    async def _moderate(self) -> None:
        """Who watches this bastion's moderated sessions, from the store (one query for all of
        them, on the watcher's thread): fresh watches are present, a stale heartbeat counts as
        left (``lost``), a watch ended ``terminated`` ends its session. Joins and leaves are
        recorded in the session's recording here, by its owner, and told to the operator. A
        store that does not answer leaves the last read to age: fail closed."""
        moderated = [
            live
            for live in self.live
            if live.moderation is not None and not live.moderation.closed and not live.ending.is_set()
        ]
        if not moderated:
            return
        ids = [live.record.id for live in moderated]
        fresh_read = True
        try:
            self._watches = await _within(
                self.watch_db(functools.partial(self.watch_svc.watches, ids, open_only=False)), _WATCH_DEADLINE
            )
        except (Exception, TimeoutError) as exc:  # noqa: BLE001 - fail closed: the watches age
            fresh_read = False
            if time.monotonic() - self._watches_warned >= 10:  # said once in a while, not 4 times a second
                self._watches_warned = time.monotonic()
                print(f"zsp: warning: cannot read who moderates: {printable(repr(exc))}", file=sys.stderr)
        now = self.svc.clock.now()
        by_session: dict[str, list[Watch]] = defaultdict(list)
        for w in self._watches:
            by_session[w.session_id].append(w)
        for live in moderated:
            moderation = live.moderation
            if moderation is None:
                continue
            mine = by_session.get(live.record.id, [])
            present = [w for w in mine if w.open and (now - w.seen_at).total_seconds() <= FRESH_S]
            if fresh_read:
                for w in mine:
                    if w.open and w not in present and w.id not in self._losing:
                        self._losing.add(w.id)
                        self.spawn(self._lose_watch(w))
            joined, left = moderation.sync(present)
            ended = {w.id: w for w in mine if not w.open}
            for w in joined:
                record_watch(
                    live,
                    "moderation.watch.start",
                    f"{w.user} watches from {w.client}",
                    moderator=w.user,
                    client=w.client,
                    via=w.via,
                )
                live.notify(f"moderator {w.user} is watching")
            for w in left:
                how = ended[w.id].how if w.id in ended and ended[w.id].how is not None else WatchEnd.LOST
                record_watch(
                    live,
                    "moderation.watch.end",
                    f"{w.user} stopped watching ({how})",
                    moderator=w.user,
                    since=rfc3339(w.since),
                    how=str(how),
                    via=w.via,
                )
            terminated = next((w for w in mine if w.how is WatchEnd.TERMINATED), None)
            if terminated is not None:
                self._end(live, "moderator-terminated", f"moderator {terminated.user} ended this session")
            elif left and not moderation.watchers:
                grace = self.limits.moderation_grace
                live.notify(
                    f"no moderator is watching: input is held; the session ends in {grace:g} s unless one joins"
                )

    async def _lose_watch(self, watch: Watch) -> None:
        """A watch whose heartbeat stopped: ended ``lost`` in the store (audited, once)."""
        try:
            await self.watch_db(self.watch_svc.leave_watch, watch.id, WatchEnd.LOST)
        finally:
            self._losing.discard(watch.id)

    async def _watch_session(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        conn: asyncssh.SSHServerConnection,
        user: User,
        args: list[str],
    ) -> None:
        """``ssh -t zsp@BASTION watch SESSION``: a moderator watches a moderated session. Through
        the store (``AccessService.join_watch``), so any bastion process of the session's host
        (a worker of ``zsp serve --workers``, not only its owner) serves it."""
        sid = args[0] if len(args) == 1 else ""
        why: str | None = None
        if len(args) != 1:
            why = "usage: ssh -t zsp@BASTION watch SESSION"
        elif process.get_terminal_type() is None:
            why = "the watch view needs a terminal: ssh -t"
        if why is not None:
            await self._audit_refusal(
                conn,
                NewEvent(
                    "session.watch.refused",
                    user.name,
                    "ssh",
                    f"watch {printable(sid)[:64]} refused: {why}",
                    outcome="failure",
                    fields={"reason": why, "requested_session": printable(sid)[:64], "bastion": self.owner},
                ),
            )
            return self._refuse(process, why)
        actor = Actor(user.name, "ssh")
        here = owner_host(self.owner)
        try:
            watch = await self.db(
                functools.partial(
                    self.svc.join_watch, actor, sid, client=conn_peer(conn), here=here, served_by=self.owner
                ),
                lane=user.name,
            )
            record = await self.db(self.svc.session, watch.session_id, lane=user.name)
        except _STORE_ERRORS as exc:
            self.store_failed(exc)
            return self._refuse(process, _STORE_DOWN)
        except ZspError as exc:  # WatchRefused (audited by the service), NotFound
            return self._refuse(process, str(exc))
        self._poke.set()  # the owner (if it is this process) lets the session go on at once
        if record is None:
            return self._refuse(process, f"no live session {printable(sid)[:64]!r}")

        async def beat() -> bool:
            try:
                return await self.db(self.svc.beat_watch, watch.id, lane=user.name)
            except (*_STORE_ERRORS, ZspError) as exc:
                self.store_failed(exc)  # the owner counts the watch lost if this lasts
                return True

        async def terminate() -> None:
            try:
                await self.db(self.svc.terminate_watch, actor, watch.id, lane=user.name)
            except ZspError as exc:
                with contextlib.suppress(OSError, asyncssh.Error):
                    process.stderr.write(f"\r\nzsp: {exc}\r\n".encode())
            self._poke.set()

        how = "error"
        view = asyncio.current_task()
        if view is not None:
            self._views.add(view)  # stop() ends it while the store still records the watch's end
        try:
            how = await watch_view(process, record, self.data.trusted_keys(), beat=beat, terminate=terminate)
        finally:
            if view is not None:
                self._views.discard(view)
            if how != "terminated":
                end = WatchEnd(how) if how in WatchEnd._value2member_map_ else WatchEnd.LEFT
                with contextlib.suppress(*_STORE_ERRORS, ZspError):
                    await self.db(self.svc.leave_watch, watch.id, end, lane=user.name)
            self._poke.set()
        with contextlib.suppress(OSError, asyncssh.Error):
            process.exit(0)

    async def _start_rules(
        self,
        live: LiveSession,
        user: User,
        target: Target,
        cols: int,
        rows: int,
        pty: bool,
        t0_ns: int,
        hint: SshHint,
    ) -> bool:
        """The session's rules: its ``rules.loaded`` frame and what fires at the start (an exec
        command held waits here, before it runs). False: the session must not go on."""
        groups = await self.auth_db(user.name, self.rules.groups_of, user.name, self.auth_svc.policy)
        facts = session_facts(live.record, user.roles, groups, target.labels)
        guard = self.rules.guard(self, live, facts, cols=cols, rows=rows, pty=pty, t0_ns=t0_ns, hint=hint)
        live.rules = guard
        try:
            guard.loaded()
        except RecordingFailed:
            return False  # the recorder's on_error has ended the session
        starting = asyncio.create_task(guard.start())
        ending = asyncio.create_task(live.ending.wait())
        gone = asyncio.create_task(live.process.channel.wait_closed())
        try:
            done, _ = await asyncio.wait({starting, ending, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (starting, ending, gone):
                task.cancel()
            for task in (ending, gone):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(asyncio.CancelledError, RecordingFailed):
                await starting  # a failed recording has ended the session (on_error)
        if starting in done and not starting.cancelled() and starting.exception() is None and starting.result():
            return not live.ending.is_set()
        if gone in done:
            live.end("client-closed")
        return False


def _live_sessions(svc: AccessService, user: str) -> int:
    """``user``'s sessions the store holds live, on every worker and bastion sharing it."""
    with svc.store.transaction(write=False) as tx:
        return tx.live_sessions(user)


def _start_uploader(bastion: Bastion) -> Uploader | None:
    """Upload recordings marked pending to object storage from this process, in a thread of its
    own (``objstore.Uploader``: its own store connection, made in that thread). None, said once,
    when storage cannot be used (boto3 missing, a bad ``[storage]``): recordings stay in scratch,
    marked pending, for a later start or ``zsp migrate`` to upload."""
    try:
        from ..objstore import Uploader

        uploader = Uploader(bastion.data, keep=bastion.indexer.busy)
        bastion.indexer.on_indexed = lambda _path: uploader.kick()  # a scratch copy it kept goes now
    except (ImportError, ZspError) as exc:
        print(
            f"zsp: warning: object storage is configured but cannot be used ({printable(str(exc))}); "
            "recordings stay in the recordings directory, marked pending upload",
            file=sys.stderr,
        )
        return None
    uploader.start()
    return uploader


_NUL_FIELDS = {"user": "user name", "command": "command", "term": "terminal type (TERM)"}


def _nul_field(username: str, command: str | None, term: str | None) -> str | None:
    """Which of what the client sent to open a session holds a NUL byte (a key of ``_NUL_FIELDS``),
    if any. asyncssh takes a NUL as ASCII, so a pty request with one reaches the handler."""
    for field, value in (("user", username), ("command", command), ("term", term)):
        if value is not None and "\x00" in value:
            return field
    return None


def _decides_hold(command: str | None) -> bool:
    """``allow ...`` or ``deny ...``: a control command that may have decided a hold."""
    words = (command or "").split()[:2]
    if words[:1] == ["zsp"]:
        words = words[1:]
    return bool(words) and words[0] in ("allow", "deny")


def _grant_clock() -> float:
    """Seconds on the clock grant deadlines are kept on: CLOCK_BOOTTIME where there is one (Linux),
    which no wall-clock step moves and which, unlike CLOCK_MONOTONIC, keeps counting while the host
    is suspended (a VM paused for three hours does not resume with three hours more of its grants);
    else the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _low_disk(path: Path, min_free: int) -> str | None:
    """Why ``path``'s file system is too full for a new recording, or None if it is not."""
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return f"cannot check free space: {exc.strerror or exc}"
    if free < min_free:
        return f"{free} bytes free, {min_free} required"
    return None


def conn_peer(conn: asyncssh.SSHServerConnection) -> str:
    peer = conn.get_extra_info("peername") or ("?", 0)
    return f"{peer[0]}:{peer[1]}"


async def serve_forever(
    bastion: Bastion, host: str, port: int, ready: Callable[[Bastion], None], *, parent: int | None = None
) -> None:
    """Serve until SIGINT or SIGTERM (or, for a worker, until its ``parent`` is gone)."""
    await bastion.start(host, port)
    ready(bastion)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    orphan: asyncio.Task[None] | None = None
    if parent is not None:
        from .workers import watch_parent

        orphan = asyncio.create_task(watch_parent(parent, stop.set))
    await stop.wait()
    if orphan is not None:
        orphan.cancel()
    print("zsp: shutting down; ending live sessions", file=sys.stderr)
    await bastion.stop()
