"""``zsp migrate --to URL``: move an embedded (SQLite) deployment's state into PostgreSQL.

Every table is copied as it is stored, in dependency order, in one PostgreSQL transaction:
users with their ids (the sequence then moves past the highest id SQLite ever gave out, removed
users' too, so an id is never reused), keys, targets, requests, approvals, sessions, flags, holds,
and the audit log frame for frame, byte for byte, so its chain and signatures carry on unbroken
and the next event appended on PostgreSQL extends the same chain. Before that transaction
commits, the row counts and the whole audit chain are verified on the target; any failure rolls
it back and nothing is left behind. The target must be empty: migrate never merges.

Recordings are not part of the state. With ``--recordings-to s3://bucket/prefix`` they go to an
S3-compatible bucket first (each verified by hash, marked uploaded in the SQLite store, then
removed from ``DATA/recordings``, as the bastion's uploader does), so that the copied sessions
already name their objects; an upload that fails leaves that recording pending in place, and
``zsp storage upload`` (or a bastion with ``[storage]``) finishes it later. Without it they stay
in ``DATA/recordings``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from replay import printable

from ..config import check_store_url, redact_url
from ..datadir import DataDir
from ..exceptions import Conflict, UsageError
from ..store.base import ID_TABLES, TABLES, Tx
from ._common import data, emit_json, say

__all__ = ["MigrationReport", "migrate_state", "register"]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What ``migrate_state`` copied, as verified on the target."""

    where: str
    """The target, password redacted."""
    rows: dict[str, int]
    """Rows copied per table, in copy order (``meta``: without the schema version)."""
    audit_frames: int
    """Frames of the audit chain, verified on the target (0 for an empty log)."""
    audit_detail: str
    recordings: int
    """Recording files left in the data dir's ``recordings`` (not copied by the state migration)."""


def _meta_rows(tx: Tx) -> tuple[list[str], list[tuple[object, ...]]]:
    columns, rows = tx.dump_rows("meta")
    key = columns.index("key")
    return columns, [r for r in rows if r[key] != "schema_version"]  # the target keeps its own


def _state_rows(tx: Tx, table: str) -> int:
    if table == "meta":
        return len(_meta_rows(tx)[1])
    return tx.count_rows(table)


def migrate_state(d: DataDir, url: str) -> MigrationReport:
    """Copy the SQLite store of ``d`` into the empty PostgreSQL database at ``url`` and verify it
    there (counts, audit chain) before committing. Conflict if the target is not empty; nothing is
    written then, nor when anything fails."""
    from ..audit import AuditLog
    from ..store.postgres import PostgresStore, empty_problem
    from ..store.sqlite import SqliteStore

    where = redact_url(url)
    d.require()
    if d.settings().store_url is not None:
        raise UsageError(
            f"{d.root} already keeps its state in {redact_url(d.settings().store_url or '')}: "
            "migrate copies an embedded (SQLite) deployment"
        )
    problem = empty_problem(url)  # before the schema is made there: a refused target stays as it was
    if problem is not None:
        raise Conflict(f"store {where}: {problem}; nothing was written")
    key = d.signing_key()
    trusted = d.trusted_keys() or [key.public]
    audit = AuditLog(key)
    source = SqliteStore(d.db_path)
    try:
        with source.transaction(write=False) as src:
            before = audit.verify(src, trusted)
            if src.audit_tail() is not None and not before.ok:
                raise Conflict(f"the audit log of {d.root} does not verify ({before.detail}); nothing was written")
            target = PostgresStore(url)
            try:
                with target.transaction() as dst:
                    # Under the writers' lock: nobody filled it since the check above.
                    full = [t for t in TABLES if _state_rows(dst, t)]
                    if full:
                        raise Conflict(f"store {where}: it is not empty ({', '.join(full)}); nothing was written")
                    rows: dict[str, int] = {}
                    for table in TABLES:
                        if table == "meta":
                            columns, meta = _meta_rows(src)
                            rows[table] = dst.load_rows(table, columns, meta)
                            continue
                        columns, it = src.dump_rows(table)
                        missing = sorted(set(columns) - set(dst.table_columns(table)))
                        if missing:
                            raise Conflict(f"store {where}: table {table} has no column {', '.join(missing)}")
                        rows[table] = dst.load_rows(table, columns, it)
                    for table in ID_TABLES:
                        dst.raise_id_floor(table, src.id_high_water(table))
                    for table in TABLES:
                        expected, got = _state_rows(src, table), _state_rows(dst, table)
                        if got != expected or rows[table] != expected:
                            raise Conflict(f"store {where}: {table} has {got} rows after the copy, not {expected}")
                    if dst.audit_tail() != src.audit_tail():
                        raise Conflict(f"store {where}: the audit log's last frame differs after the copy")
                    after = audit.verify(dst, trusted)
                    if dst.audit_tail() is not None and not after.ok:
                        raise Conflict(f"store {where}: the copied audit log does not verify ({after.detail})")
            finally:
                target.close()
    finally:
        source.close()
    recordings = sum(1 for p in d.recordings.rglob("*") if p.is_file()) if d.recordings.is_dir() else 0
    return MigrationReport(
        where=where,
        rows=rows,
        audit_frames=after.events if rows["audit"] else 0,
        audit_detail=after.detail,
        recordings=recordings,
    )


@dataclass(frozen=True, slots=True)
class RecordingsReport:
    """What ``--recordings-to`` uploaded (before the state was copied)."""

    url: str
    uploaded: int
    bytes: int
    failed: dict[str, str]
    """Session id -> why its upload failed (left pending in scratch)."""


def _migrate_recordings(args: argparse.Namespace, d: DataDir, url: str) -> RecordingsReport | None:
    """Upload every ended session's recording to ``--recordings-to`` (None without it). Runs
    before the state is copied, after the target was checked empty, so the copied rows carry
    their object keys and hashes."""
    if args.recordings_to is None:
        return None
    from ..objstore import ObjectStoreError, S3Storage, upload_all
    from ..store.postgres import empty_problem
    from .storage import storage_settings

    settings = storage_settings(d, args.recordings_to, args.endpoint)
    problem = empty_problem(url)  # refuse before anything is uploaded, as the state copy would
    if problem is not None:
        raise Conflict(f"store {redact_url(url)}: {problem}; nothing was written")
    try:
        done = upload_all(d, S3Storage(settings))
    except ObjectStoreError as exc:
        raise UsageError(f"recordings to {settings.url}: {exc.reason}; the state was not copied") from None
    return RecordingsReport(settings.url, len(done.uploaded), done.bytes, dict(done.failed))


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        url = check_store_url(args.to)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    d = data(args)
    uploaded = _migrate_recordings(args, d, url)
    report = migrate_state(d, url)
    if args.json:
        emit_json(
            {
                "to": report.where,
                "rows": report.rows,
                "audit_frames": report.audit_frames,
                "audit_verified": True,
                "recordings_left_in": str(d.recordings),
                "recordings": report.recordings,
                "recordings_to": None
                if uploaded is None
                else {
                    "url": uploaded.url,
                    "uploaded": uploaded.uploaded,
                    "bytes": uploaded.bytes,
                    "failed": uploaded.failed,
                },
            }
        )
        return 1 if uploaded is not None and uploaded.failed else 0
    say(f"copied the state of {d.root} into {report.where}:")
    for table, n in report.rows.items():
        say(f"  {table:<10} {n:>8} rows")
    if report.audit_frames:
        say(f"audit log verified on the target: {report.audit_frames} frames, {report.audit_detail}")
    if uploaded is not None:
        say(f"recordings: {uploaded.uploaded} uploaded to {uploaded.url} ({uploaded.bytes:,} bytes, hashes checked)")
        for sid, why in sorted(uploaded.failed.items()):
            say(f"  not uploaded (left pending in {d.recordings}): {sid}: {printable(why)}")
    if report.recordings:
        say(f"recordings: {report.recordings} file(s) stay in {d.recordings}")
    say(f"To switch over, stop the bastion and set this line in the [store] section of {d.config_path}")
    say("(or ZSP_DATABASE_URL in the service's environment):")
    say(f'  url = "{report.where}"' + ("   # with its password" if report.where != url else ""))
    if uploaded is not None:
        say("and in its [storage] section (the bucket's credentials stay in the environment):")
        say(f'  url = "{uploaded.url}"')
        if args.endpoint:
            say(f'  endpoint = "{args.endpoint}"')
    return 1 if uploaded is not None and uploaded.failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy this embedded (SQLite) deployment's state into an empty PostgreSQL database",
        description=(
            "Copy users, keys, targets, requests, grants, sessions, flags, holds and the audit log "
            "(its chain unbroken) into an empty PostgreSQL database, verify it there, and print the "
            "zsp.toml line that switches this data dir over. Stop the bastion first. Recordings stay "
            "in the data dir unless --recordings-to uploads them."
        ),
    )
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (empty)")
    p.add_argument(
        "--recordings-to",
        metavar="S3URL",
        help="also upload the recordings to this bucket (s3://BUCKET/PREFIX), each verified by hash",
    )
    p.add_argument("--endpoint", metavar="URL", help="the S3 endpoint for --recordings-to (MinIO, SeaweedFS...)")
    p.add_argument("--json", action="store_true", help="what was copied, as JSON")
    p.set_defaults(func=cmd_migrate)
