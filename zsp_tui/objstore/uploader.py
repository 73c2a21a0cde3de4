"""Moving finished recordings from local scratch to the bucket, never losing one.

A session records into ``DATA/recordings`` (scratch). When it ends, the bastion marks it
``upload = 'pending'`` (:func:`mark_pending`, in the transaction that ends it, or just after) and
calls :meth:`Uploader.kick`. The uploader, for each pending session:

1. re-reads the row: a session not ended (live) is never uploaded;
2. :meth:`S3Storage.put`: upload, read back, compare sha256 (and check retention);
3. in one transaction: ``set_upload(id, 'uploaded', object_key=, sha256=)`` and the
   ``recording.upload`` audit event;
4. only then removes the scratch file.

A failure at any step leaves the file in scratch and the row ``pending`` (``zsp sessions`` shows
``pending upload``); the session is retried with exponential backoff (1 s, 2 s, 4 s ... capped at
60 s), and ``recording.upload_failed`` is audited once per session and distinct reason (per
uploader process), not on every retry.

Crashes are covered by looking at scratch itself on every pass: a recording there whose session
has ended (a bastion killed mid-session, marked ``interrupted`` at the next start) but was never
marked pending is marked and uploaded; one whose row already says ``uploaded`` with the same
sha256 (the uploader stopped between steps 3 and 4) is removed. A file with no session row, or of
a live session, is left alone.

Only one uploader works on a data dir at a time (an exclusive ``flock`` on
``DATA/cache/uploader.lock`` per pass): several bastion workers may each run one.

For the bastion (helper C)::

    up = Uploader(data_dir, service=svc)   # storage from [storage]; svc: the serve process's
    up.start()                             # a daemon thread; one pass at once, then on kick/poll
    ...
    with svc.store.transaction() as tx:    # at session end, when storage is configured
        mark_pending(tx, session_id)
    up.kick()
    ...
    up.stop()                              # at shutdown: finishes the upload in progress
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from replay import LocalDirectory, printable

from ..audit import NewEvent
from ..sinks import dispatch
from ._exceptions import ObjectStoreError
from .s3 import S3Storage, sha256_file

if TYPE_CHECKING:
    from ..access import AccessService
    from ..datadir import DataDir
    from ..models import SessionRecord
    from ..store import Tx

__all__ = ["PENDING", "UPLOADED", "UploadAllReport", "UploadPass", "Uploader", "mark_pending", "upload_all"]

PENDING = "pending"
UPLOADED = "uploaded"
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
POLL_INTERVAL = 30.0
"""Seconds between two passes when nobody kicks (new pending rows of other processes, retries)."""
LOCK_FILE = Path("cache") / "uploader.lock"


def mark_pending(tx: Tx, session_id: str) -> bool:
    """Mark a session's recording as waiting in scratch for upload (call it at session end, when
    ``[storage]`` is configured, inside the transaction that ends the session or after it); False
    if there is no such session."""
    return tx.set_upload(session_id, PENDING)


@dataclass(frozen=True, slots=True)
class UploadPass:
    """What one pass did."""

    uploaded: tuple[str, ...] = ()
    """Sessions uploaded (and removed from scratch) in this pass."""
    failed: dict[str, str] = field(default_factory=dict)
    """Session id -> why its upload failed (it stays pending, in scratch)."""
    waiting: tuple[str, ...] = ()
    """Pending sessions not tried in this pass: backing off after a failure."""
    cleaned: tuple[str, ...] = ()
    """Scratch copies of sessions already uploaded, removed in this pass."""
    busy: bool = False
    """Another uploader holds the data dir's lock: this pass did nothing."""


@dataclass
class _Retry:
    failures: int = 0
    due: float = 0.0


class Uploader:
    """Uploads the data dir's finished recordings (see the module docstring).

    ``storage``: default the data dir's ``[storage]`` (ObjectStoreError if it has none).
    ``service``: the access service to audit with (default ``data.service()``).
    ``monotonic``: the clock backoff is measured with (tests advance it)."""

    def __init__(
        self,
        data: DataDir,
        storage: S3Storage | None = None,
        *,
        service: AccessService | None = None,
        poll_interval: float = POLL_INTERVAL,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        monotonic: Callable[[], float] = time.monotonic,
        host: str | None = None,
        warn: Callable[[str], None] | None = None,
        keep: Callable[[Path], bool] | None = None,
    ) -> None:
        if storage is None:
            settings = data.settings().storage
            if settings is None:
                raise ObjectStoreError(where=str(data.config_path), reason="no [storage] configured")
            storage = S3Storage(settings)
        self.data = data
        self.storage = storage
        self._service = service
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._now = monotonic
        self.host = host or socket.gethostname()
        self._warn = warn or _warn
        self._retry: dict[str, _Retry] = {}
        self._audited: set[tuple[str, str]] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._cleaned: list[str] = []
        self._keep = keep
        """A scratch file for which this says True stays until a later pass (the bastion's search
        indexer still has it queued, and :meth:`kick`s a pass once done); None: removed as soon as
        it is uploaded and verified."""

    @property
    def service(self) -> AccessService:
        if self._service is None:
            self._service = self.data.service()
        return self._service

    # --- the background thread ------------------------------------------------------------

    def start(self) -> None:
        """Run passes in a daemon thread: one now, then on :meth:`kick`, at the earliest retry
        due, and every ``poll_interval`` seconds."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="zsp-uploader", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """A session ended (or storage came back): run a pass now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread after the upload in progress (pending ones stay pending)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive a bad pass (a store outage)
                self._warn(f"recording upload pass failed: {exc}; retrying")
            self._wake.wait(self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        wait = self.poll_interval
        if self._retry:
            soonest = min(r.due for r in self._retry.values())
            wait = min(wait, max(0.05, soonest - self._now()))
        return wait

    def backoff(self, session_id: str) -> float | None:
        """Seconds until ``session_id`` is tried again (0 if due), None if it is not backing off."""
        r = self._retry.get(session_id)
        return None if r is None else max(0.0, r.due - self._now())

    # --- one pass -------------------------------------------------------------------------------

    def run_once(self) -> UploadPass:
        """Upload every pending recording that is due; pick up crash leftovers in scratch."""
        with self._locked() as got:
            if not got:
                return UploadPass(busy=True)
            return self._pass()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bool]:
        path = self.data.root / LOCK_FILE
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def _pass(self) -> UploadPass:
        store = self.service.store
        self._adopt_leftovers()
        with store.transaction(write=False) as tx:
            pending = tx.pending_uploads(limit=1000)
        uploaded: list[str] = []
        failed: dict[str, str] = {}
        waiting: list[str] = []
        now = self._now()
        for record in pending:
            if self._stopping.is_set():
                break
            retry = self._retry.get(record.id)
            if retry is not None and retry.due > now:
                waiting.append(record.id)
                continue
            try:
                if self.upload(record):
                    uploaded.append(record.id)
            except ObjectStoreError as exc:
                failed[record.id] = exc.reason
                self._failed(record, exc.reason)
        return UploadPass(tuple(uploaded), failed, tuple(waiting), tuple(self._cleaned))

    def upload(self, record: SessionRecord) -> bool:
        """Upload one session's recording now (no backoff); True if it was uploaded, False if
        there was nothing to do here (live, already uploaded, or another host's scratch).
        ObjectStoreError (the row stays pending, the file stays) if it failed."""
        svc = self.service
        with svc.store.transaction(write=False) as tx:
            current = tx.get_session(record.id)
        if current is None or current.ended_at is None or current.upload != PENDING:
            self._retry.pop(record.id, None)
            return False  # never a live session; someone else finished it
        path = Path(current.path)
        if not path.is_file():
            if _owner_host(current.owner) not in (None, self.host):
                return False  # another bastion's scratch: its uploader's to do
            raise ObjectStoreError(where=str(path), reason="the recording is missing from scratch")
        object_key, digest = self.storage.put(current.id, path)
        size = path.stat().st_size
        with svc.store.transaction() as tx:
            now = svc.clock.now()
            latest = tx.get_session(current.id)
            if latest is None or latest.upload != PENDING:
                return False
            tx.set_upload(current.id, UPLOADED, object_key=object_key, sha256=digest)
            written = svc.audit_log.append(
                tx,
                [
                    NewEvent(
                        "recording.upload",
                        "system",
                        "system",
                        f"recording of session {current.id} uploaded to {object_key} and verified "
                        f"(sha256 {digest[:16]}..., {size} bytes)",
                        target=current.target,
                        login=current.login,
                        grant_id=current.grant_id,
                        session_id=current.id,
                        fields={"object_key": object_key, "sha256": digest, "bytes": size},
                    )
                ],
                now,
            )
        dispatch(svc.sinks, written)
        self._retry.pop(current.id, None)
        self._remove_scratch(path, digest)
        return True

    def _failed(self, record: SessionRecord, reason: str) -> None:
        retry = self._retry.setdefault(record.id, _Retry())
        retry.failures += 1
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (retry.failures - 1))
        retry.due = self._now() + delay
        if (record.id, reason) in self._audited:
            return
        try:
            self.service.record_event(
                NewEvent(
                    "recording.upload_failed",
                    "system",
                    "system",
                    f"recording of session {record.id} could not be uploaded ({reason}); it stays in scratch "
                    "and is retried",
                    outcome="failure",
                    target=record.target,
                    login=record.login,
                    grant_id=record.grant_id,
                    session_id=record.id,
                    fields={"reason": reason},
                )
            )
        except Exception as exc:  # noqa: BLE001 - a store outage: audited at a later failure
            self._warn(f"could not audit the failed upload of {record.id}: {exc}")
            return
        self._audited.add((record.id, reason))

    def _remove_scratch(self, path: Path, digest: str) -> None:
        """Remove the scratch copy if it is still the file uploaded (and nobody still needs it)."""
        if self._keep is not None and self._keep(path):
            return  # _adopt_leftovers removes it on a later pass (the keeper kicks one when done)
        try:
            if sha256_file(path)[0] == digest:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn(f"could not remove {path} after upload: {exc.strerror or exc}")

    def _adopt_leftovers(self) -> None:
        """Recordings in scratch of ended sessions that nobody marked pending (a killed bastion),
        and scratch copies of uploaded ones that were not removed (a stop between the steps)."""
        self._cleaned = []
        store = self.service.store
        for stored in LocalDirectory(self.data.recordings).list():
            with store.transaction(write=False) as tx:
                row = tx.get_session(stored.name)
            if row is None or row.ended_at is None:
                continue  # not a session of this store, or live
            path = Path(stored.location)
            if Path(row.path).absolute() != path.absolute():
                continue  # the file is not the one the row names
            if row.upload == UPLOADED:
                if self._keep is not None and self._keep(path):
                    continue
                with contextlib.suppress(OSError):
                    if row.sha256 and sha256_file(path)[0] == row.sha256:
                        path.unlink(missing_ok=True)
                        self._cleaned.append(row.id)
                continue
            if row.upload != PENDING:
                with store.transaction() as tx:
                    latest = tx.get_session(row.id)
                    if latest is not None and latest.ended_at is not None and latest.upload is None:
                        mark_pending(tx, row.id)


def _owner_host(owner: str) -> str | None:
    """The host of ``serve:HOST:PID`` / ``record:HOST:PID``; None if it does not name one."""
    parts = owner.split(":")
    return parts[1] if len(parts) >= 3 and parts[1] else None


def _warn(message: str) -> None:
    print(f"zsp: warning: {printable(message)}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class UploadAllReport:
    uploaded: tuple[str, ...]
    failed: dict[str, str]
    skipped: tuple[str, ...]
    """Live sessions, and sessions whose recording is not in this data dir."""
    bytes: int


def upload_all(
    data: DataDir,
    storage: S3Storage,
    *,
    service: AccessService | None = None,
    progress: Callable[[SessionRecord, int], None] | None = None,
) -> UploadAllReport:
    """Upload every ended session's recording of ``data`` that is not in the bucket yet (for
    ``zsp migrate --recordings-to s3://...`` and ``zsp storage upload``), marking each uploaded and
    removing it from scratch as the uploader does. ``progress(record, bytes)`` after each upload."""
    up = Uploader(data, storage, service=service)
    svc = up.service
    uploaded: list[str] = []
    failed: dict[str, str] = {}
    skipped: list[str] = []
    total = 0
    with up._locked() as got:
        if not got:
            raise ObjectStoreError(where=str(data.root), reason="another uploader is working on this data dir")
        for record in svc.sessions():
            if record.upload == UPLOADED:
                continue
            if record.ended_at is None or not Path(record.path).is_file():
                skipped.append(record.id)
                continue
            if record.upload != PENDING:
                with svc.store.transaction() as tx:
                    mark_pending(tx, record.id)
            size = Path(record.path).stat().st_size
            try:
                if up.upload(record):
                    uploaded.append(record.id)
                    total += size
                    if progress is not None:
                        progress(record, size)
            except ObjectStoreError as exc:
                failed[record.id] = exc.reason
                up._failed(record, exc.reason)
    return UploadAllReport(tuple(uploaded), failed, tuple(skipped), total)
