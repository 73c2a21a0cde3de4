"""Recording commands: ``zsp init``, ``zsp record``, ``zsp verify``."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shlex
import sqlite3
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from recorder import (
    EVIDENCE_NAMESPACE,
    SIGNATURE_NAMESPACE,
    EscrowPublicKey,
    FileSink,
    FsyncPolicy,
    KeyFileError,
    PublicKey,
    RecordingFailed,
    RecordingWriter,
    Seal,
    SealInfo,
    SessionMeta,
    load_trusted_keys,
    new_session_id,
)
from replay import BundleReport, Outcome, SourceError, VerificationReport, printable, verify

from ..audit import NewEvent
from ..datadir import DataDir
from ..exceptions import DataDirError, UsageError, ZspError
from ..indexing import index_quietly
from ..masking import Excessive, MaskLimits
from ..models import SessionRecord, session_owner
from ..record import default_size, output_path, run_recorded
from ..session_ref import SessionIndex, SessionRef, SessionRefError, identity_problem, resolve_ref
from ._common import data as _data
from ._common import table

__all__ = ["register"]


def _err(message: str) -> None:
    print(f"zsp: error: {printable(message)}", file=sys.stderr)


def _fmt_time(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- init ------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    result = _data(args).init()
    state = "created" if result.created_dir else "exists"
    print(f"data directory   {printable(str(result.root))} ({state})")
    print(f"created          {', '.join(result.created) if result.created else 'nothing (all present; kept)'}")
    print(f"recording key    {result.public_key.fingerprint}  keys/recording_ed25519")
    print(f"host key         {result.host_public_key.fingerprint}  keys/host_ed25519")
    print(f"user CA          {result.ca_public_key.fingerprint}  keys/user_ca_ed25519")
    print(f"escrow key       {result.escrow_public_key.fingerprint}  keys/escrow_x25519.pub")
    print("CA public key line (for a target's TrustedUserCAKeys file):")
    print(f"  {result.ca_public_key.openssh} zsp-user-ca")
    print("allowed_signers line (for `ssh-keygen -Y verify` and other verifiers):")
    print(f"  {result.allowed_signers_line}")
    if result.escrow_private_created or result.root.joinpath("keys", "escrow_x25519").exists():
        print("IMPORTANT: move the escrow PRIVATE key off this machine now, e.g.")
        print(f"  scp {result.root}/keys/escrow_x25519 auditor@vault: && shred -u {result.root}/keys/escrow_x25519")
        print("  Masked input (passwords) is sealed to keys/escrow_x25519.pub; only the private key reveals it")
        print("  (`zsp unseal SESSION --escrow-key FILE`). Kept here, anyone who can read the bastion can too.")
    return 0


# --- record ----------------------------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    data = _data(args)
    key = data.signing_key()
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        argv = [os.environ.get("SHELL") or pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"]
    sid = new_session_id()
    path = Path(args.output) if args.output else output_path(data.recordings, sid)
    cols, rows = default_size()
    user = pwd.getpwuid(os.getuid()).pw_name
    meta = SessionMeta(
        user=user,
        target="local",
        login=user,
        term=os.environ.get("TERM", ""),
        cols=cols,
        rows=rows,
        command=shlex.join(argv) if args.command else None,
        extra={"source": "zsp record"},
    )
    try:
        sink = FileSink(path, sync_dir=args.fsync != "never")
    except FileExistsError:
        raise UsageError(f"{path} exists; zsp never overwrites a recording") from None
    except OSError as exc:
        raise UsageError(f"cannot create recording {path}: {exc.strerror}") from None
    try:
        writer = RecordingWriter(sink, key, meta, session_id=sid, fsync=FsyncPolicy(args.fsync))
    except RecordingFailed as exc:
        raise UsageError(f"cannot start recording: {exc.reason}; the command was not run") from None
    if not args.quiet:
        print(f"zsp: recording to {printable(str(path))}", file=sys.stderr)
    try:
        registered = _register_start(data, sid, meta, path)
    except BaseException:
        writer.abandon()  # not listed, not run: leave no recording behind either
        path.unlink(missing_ok=True)
        raise
    escrow, limits, on_excessive = _masking(data, sid, user, path)
    code, info, failure = run_recorded(
        argv, writer, size=(cols, rows), escrow=escrow, mask_limits=limits, on_excessive=on_excessive
    )
    if registered is not None:
        _register_end(data, registered, info, code)
    index_quietly(data, path)  # searchable at once (`zsp search`); a failure is only a warning
    if failure is not None:
        _err(f"{failure}; the session was ended")
        return code
    if info is not None and not args.quiet:
        print(
            f"zsp: recording sealed: {printable(str(path))} ({info.frames} frames, head {info.head_hex[:16]}...)",
            file=sys.stderr,
        )
    return code


def _masking(
    data: DataDir, sid: uuid.UUID, user: str, path: Path
) -> tuple[EscrowPublicKey | None, MaskLimits, Callable[[Excessive], None]]:
    """The escrow key (None, with a warning, if missing: input is then recorded in clear), the
    limits, and what to do when a session masks too much: an audit event if there is a log."""
    try:
        escrow: EscrowPublicKey | None = data.escrow_key()
    except DataDirError as exc:
        escrow = None
        print(f"zsp: warning: {exc.reason}; input at password prompts will be recorded in clear", file=sys.stderr)

    def on_excessive(report: Excessive) -> None:
        if not data.db_path.exists():
            return
        event = NewEvent(
            "input.masked.excessive",
            user,
            "console",
            report.message,
            target="local",
            login=user,
            session_id=str(sid),
            fields={"recording": str(path), **report.fields()},
        )
        try:
            data.service().record_event(event)
        except (ZspError, OSError, sqlite3.Error) as exc:  # the recording holds the event regardless
            print(f"\r\nzsp: warning: could not write the audit event: {exc}\r", file=sys.stderr)

    return escrow, data.settings().masking, on_excessive


def _register_start(data: DataDir, sid: uuid.UUID, meta: SessionMeta, path: Path) -> SessionRecord | None:
    """List a ``zsp record`` session in the store, as the bastion does its sessions, so that
    ``zsp sessions`` shows it. A data dir without a database (recording only) has no list."""
    if not data.db_path.exists():
        return None
    record = SessionRecord(
        id=str(sid),
        user=meta.user,
        target=meta.target,
        login=meta.login,
        grant_id=None,
        command=meta.command,
        client="console",
        path=str(path.absolute()),
        started_at=datetime.now(UTC),
        owner=session_owner("record"),  # a bastion closes it as interrupted if this process dies
    )
    data.service().session_started(record, via="console")
    return record


def _register_end(data: DataDir, record: SessionRecord, info: SealInfo | None, code: int) -> None:
    """Close the store's entry with what the writer sealed: its reason, exit status and final head
    (no seal, the recording failed: its reason is ``recording-failed`` and it has no head)."""
    if info is None:
        data.service().session_ended(record, code, "recording-failed", None, None, via="console")
    else:
        data.service().session_ended(record, info.exit_status, info.reason, info.head_hex, info.frames, via="console")


# --- verify ----------------------------------------------------------------------------------


def _trusted(args: argparse.Namespace) -> list[PublicKey]:
    keys: list[PublicKey] = []
    for f in args.signer or []:
        try:
            keys.extend(load_trusted_keys(Path(f)))
        except KeyFileError as exc:
            raise UsageError(f"--signer {exc}") from None
    data = _data(args)
    if data.root.exists():
        keys.extend(data.trusted_keys())
    if not keys and getattr(args, "data", None) and not data.root.exists():
        raise UsageError(f"no data directory {data.root} (and no --signer KEYFILE to trust)")
    if not keys:
        raise UsageError("no trusted signer keys: pass --signer KEYFILE (a .pub or allowed_signers file) or --data DIR")
    return keys


def _recovered(seal: Seal | None) -> str:
    """What a seal written at restart (reason ``interrupted``) says of the session's own frames:
    those after ``session-signed-frames`` were signed only by the seal (FORMAT.md 3.3)."""
    if seal is None:
        return ""
    frames, signed = seal.extra.get("session_frames"), seal.extra.get("session_signed_frames")
    if type(frames) is not int or type(signed) is not int:
        return ""
    by = seal.extra.get("recovered_by") or "-"
    return f" session-frames={frames} session-signed-frames={signed} sealed-by={by}"


def _describe(r: VerificationReport) -> str:
    h = r.header
    dur = f"{r.duration_us / 1e6:.1f}s"
    who = f"{h.user}->{h.login}@{h.target}" if h else "-"
    signer = r.signer_fingerprint or "-"
    if r.outcome is Outcome.VALID:
        seal = r.seal
        exit_s = "-" if seal is None or seal.exit_status is None else str(seal.exit_status)
        why = f" reason={seal.reason}" if seal is not None and seal.reason else ""
        legacy = f" legacy-order-frames={','.join(map(str, r.legacy_order))}" if r.legacy_order else ""
        return (
            f"VALID       {r.source}  frames={r.frames} duration={dur} {who} exit={exit_s}{why}{_recovered(seal)} "
            f"signer={signer}{legacy}"
        )
    if r.outcome is Outcome.INCOMPLETE:
        return (
            f"INCOMPLETE  {r.source}  intact up to frame {r.frames - 1 if r.frames else '-'}, signed up to "
            f"frame {r.signed_frames - 1 if r.signed_frames else '-'} (last checkpoint "
            f"{_fmt_time(r.last_checkpoint_wall_us)}), {r.problem.value if r.problem else ''}: {r.detail}; "
            f"duration={dur} {who} signer={signer}"
        )
    where = "the file preamble" if r.bad_frame is None else f"frame {r.bad_frame}"
    return (
        f"CORRUPT     {r.source}  at {where} (offset {r.bad_offset}): "
        f"{r.problem.value if r.problem else ''}: {r.detail}; signer={signer}"
    )


def _session_ref(args: argparse.Namespace, name: str, index: SessionIndex | None = None) -> SessionRef:
    """A path (it has a ``/``), or the session with this id (or unique start or end of one) in the data dir."""
    return resolve_ref(_data(args), name, index)


def require_identity(ref: SessionRef, report: VerificationReport) -> None:
    """Refuse (one line, exit 2) a recording that is not the session asked for."""
    problem = identity_problem(ref, report)
    if problem is not None:
        raise UsageError(f"CORRUPT: {problem}")


def _pinned(args: argparse.Namespace) -> tuple[list[PublicKey], list[PublicKey]] | None:
    """``--allowed-signers FILE``: the keys it trusts for recordings and for evidence (manifests)."""
    if not args.allowed_signers:
        return None
    path = Path(args.allowed_signers)
    keys: dict[str, list[PublicKey]] = {}
    for ns in (SIGNATURE_NAMESPACE, EVIDENCE_NAMESPACE):
        try:
            keys[ns] = load_trusted_keys(path, ns)
        except KeyFileError as exc:
            if "no ssh-ed25519 public key" not in exc.reason:
                raise UsageError(f"--allowed-signers {exc}") from None
            keys[ns] = []
    if not keys[EVIDENCE_NAMESPACE]:
        raise UsageError(
            f"--allowed-signers {path}: no key trusted for {EVIDENCE_NAMESPACE}; the bastion's line needs "
            f'namespaces="{SIGNATURE_NAMESPACE},{EVIDENCE_NAMESPACE}" (as the bundle\'s allowed_signers has it)'
        )
    return keys[SIGNATURE_NAMESPACE], keys[EVIDENCE_NAMESPACE]


def _describe_bundle(r: BundleReport) -> list[str]:
    """The verdict on a bundle, for a person: first line the outcome, then what it rests on."""
    n = len(r.recordings)
    if r.outcome is Outcome.CORRUPT:
        lines = [f"CORRUPT     {r.source}  {r.problem.value if r.problem else ''}: {r.detail}"]
    else:
        states = ", ".join(f"{x.outcome.value} {x.header.session_id if x.header else '-'}" for x in r.recordings)
        lines = [
            f"{r.outcome.value:<11} {r.source}  export {r.export_id} by {r.exported_by} at {r.exported_at}: "
            f"{n} recording(s): {states}"
        ]
        if r.redacted:
            shown = ", ".join(f"{sid} ({frames} frame(s))" for sid, frames in r.redacted)
            lines.append(
                f"  redacted on export: {shown}; every other frame is proven original, the redacted bytes "
                "are vouched for only by the exporter's signature"
            )
        if r.transfers:
            lines.append(
                f"  {r.transfers} transferred file(s) listed as the recordings give them; {r.transfer_content} with "
                "their content in files/, each hashing to its recorded sha256"
            )
        lines.extend(f"  note: {note}" for note in r.notes)
    if r.signer_fingerprint:
        if r.trust == "pinned":
            lines.append(f"  manifest signed by {r.signer_fingerprint}, trusted by --allowed-signers")
        else:
            lines.append(
                f"  manifest signed by {r.signer_fingerprint}, trusted ONLY because the bundle's own allowed_signers "
                "names it: compare this fingerprint with the bastion's, obtained out of band, or pass "
                "--allowed-signers FILE"
            )
    return lines


def _verify_bundle(args: argparse.Namespace, name: str, results: list[dict[str, object]]) -> int:
    from replay import verify_bundle

    pinned = _pinned(args)
    try:
        if pinned is None:
            report = verify_bundle(Path(name))
        else:
            report = verify_bundle(Path(name), pinned[0], manifest_signers=pinned[1])
    except SourceError as exc:
        if args.json:
            results.append({"source": name, "kind": "bundle", "outcome": "ERROR", "detail": exc.reason})
        else:
            print(printable(f"ERROR       {name}  {exc.reason}"))
        return 2
    if args.json:
        results.append(report.to_json())
    else:
        for line in _describe_bundle(report):
            print(printable(line))
    return 0 if report.outcome is Outcome.VALID else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from replay import is_bundle

    if args.all:
        if args.paths:
            raise UsageError("--all verifies every recording of the data dir: give it no PATH")
        from .verify_all import run

        return run(args, _trusted(args))
    if args.anchor:
        raise UsageError("--anchor is for `zsp verify --all` (and `zsp audit verify`)")
    if not args.paths:
        raise UsageError("give a PATH, SESSION_ID or BUNDLE to verify, or --all")
    # A .tar is always checked as a bundle, so an empty or cut download says what is wrong with the
    # file instead of asking for recording keys.
    bundles = {
        n for n in args.paths if n.endswith(".tar") or (("/" in n or os.path.exists(n)) and is_bundle(Path(n)))
    }
    trusted = _trusted(args) if set(args.paths) - bundles else []
    worst = 0
    results: list[dict[str, object]] = []
    data = _data(args)  # what it knows of its sessions is read once for all the references
    index = SessionIndex(data) if data.root.exists() and any("/" not in n for n in args.paths) else None
    for name in args.paths:
        if name in bundles:
            worst = max(worst, _verify_bundle(args, name, results))
            continue
        try:
            ref = _session_ref(args, name, index)
            report = verify(ref.path, trusted, legacy_order=args.legacy_order)
        except (SourceError, SessionRefError) as exc:
            worst = 2
            detail = exc.reason if isinstance(exc, SourceError) else str(exc)
            if args.json:
                results.append({"source": name, "outcome": "ERROR", "detail": detail})
            else:
                print(printable(f"ERROR       {name}  {detail}"))
            continue
        problem = identity_problem(ref, report)
        if report.outcome is not Outcome.VALID or problem is not None:
            worst = max(worst, 1)
        if problem is not None:
            # A genuine recording, but not of the session asked for: as bad as a forged one.
            if args.json:
                wrong = {"outcome": "CORRUPT", "problem": "wrong-session", "detail": problem}
                results.append({**report.to_json(), **wrong})
            else:
                print(printable(f"CORRUPT     {report.source}  wrong-session: {problem}"))
        elif args.json:
            results.append({**report.to_json(), "end_reason": ref.end_reason})
        else:
            # header fields are whatever the file says; the store's end reason is what the bastion
            # saw (the seal's reason, when there is one, is the signed account of the same)
            ended = f" ended={ref.end_reason}" if ref.end_reason else ""
            print(printable(_describe(report) + ended))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    return worst


def cmd_play(args: argparse.Namespace) -> int:
    """Show a recording: the emulated screen, played on this terminal or printed as text.

    Everything shown is covered by a verified signature; nothing recorded reaches the terminal
    except through the emulator and the renderer (zsp_tui/player.py)."""
    from replay import ReplayError, Seeker

    from .. import player

    if not 0 < args.speed <= 1000:
        raise UsageError("--speed must be above 0 (at most 1000)")
    if args.idle_limit is not None and not args.idle_limit > 0:
        raise UsageError("--idle-limit must be above 0 seconds")
    try:
        start_us = player.parse_time(args.start) if args.start is not None else None
    except ValueError as exc:
        raise UsageError(f"--from: {exc}") from None
    trusted = _trusted(args)
    data = _data(args)
    index = SessionIndex(data) if data.root.exists() and "/" not in args.path else None
    ref = _session_ref(args, args.path, index)
    path = ref.path
    try:
        report = verify(path, trusted)
    except SourceError as exc:
        raise UsageError(f"cannot read {path}: {exc.reason}") from None
    require_identity(ref, report)  # nothing is shown of a file that is not the session asked for
    if args.commands:
        _print_commands(path, trusted, start_us)
        return _play_verdict(report)
    if args.files:
        _print_files(path, trusted, only=True)
        return _play_verdict(report)
    live = args.follow or (ref.session_id is not None and _is_live(data, ref.session_id))
    live = live and report.outcome is Outcome.INCOMPLETE
    interactive = not args.instant and player.is_interactive()
    verdict_report = report
    code = 0
    cache = _seek_cache(data, report) if data.root.exists() else None
    feed: player.LiveFeed | None = None
    try:
        if live and interactive:
            seeker, feed = player.follow_seeker(path, trusted, report)
        elif report.signed_frames == 0:
            return _play_verdict(report)  # nothing is signed: nothing is shown
        elif interactive:
            seeker, feed = player.background_seeker(path, trusted, report, cache)
        else:
            seeker = Seeker.open(path, trusted, report, cache=cache)
        # While the index is still being built, the verified duration is the bound.
        end = seeker.duration_us if feed is None else report.duration_us
        if start_us is not None and start_us > end and not (feed is not None and feed.follow):
            if feed is not None:
                feed.stop()
            raise UsageError(f"--from {args.start}: past the end of the recording ({player.format_time(end)})")
        if interactive:
            opts = player.PlayOptions(args.speed, args.idle_limit, start_us or 0, report.duration_us)
            word = player.outcome_word(report)

            def verdict() -> str:
                final = feed.report if feed is not None and feed.follow else None
                return word if final is None else player.outcome_word(final)

            code = player.play_interactive(seeker, verdict, opts, live=feed)
            if feed is not None and feed.follow and feed.report is not None:
                verdict_report = feed.report
        else:
            lines = player.screen_text(seeker, end if start_us is None else start_us)
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
    except ReplayError as exc:
        if feed is not None:
            feed.stop()
        raise UsageError(f"cannot play {path}: {exc}") from None
    if report.header is not None and report.header.extra.get("subsystem") == "sftp":
        _print_files(path, trusted, only=False)  # only SFTP sessions carry file events: no second pass otherwise
    status = _play_verdict(verdict_report)
    return code or status


def _print_commands(path: Path, trusted: list[PublicKey], until_us: int | None) -> None:
    """Each Enter typed (up to ``until_us``): its time, the command as the screen showed it, and the
    raw keystrokes; input typed blind (it did not echo) is shown as typed and marked, masked input
    as its length only. Signed frames only, as everywhere a recording is shown."""
    from replay import Command, keys_text, only_signed, scan, verify_frames

    from .. import player

    rows: list[list[str]] = []
    with open(path, "rb") as f:
        for item in scan(only_signed(verify_frames(f, trusted, source=str(path))), final=False):
            if not isinstance(item, Command):
                continue
            if until_us is not None and item.t_us > until_us:
                break
            shown = item.text
            if item.blind:
                shown = f"(typed, not echoed) {keys_text(item.keys)}"
            if item.masked_bytes:
                shown = f"{shown} (masked, {item.masked_bytes} bytes)".lstrip()
            when = f"{player.format_time(item.t_us)}.{item.t_us // 1000 % 1000:03d}"
            rows.append([when, shown, item.keys.decode("utf-8", "replace")])  # table() escapes controls
    if not rows:
        print("no commands typed (on the main screen)", file=sys.stderr)
        return
    table(rows, ["TIME", "COMMAND (as the screen showed it)", "KEYS (raw)"])


def _print_files(path: Path, trusted: list[PublicKey], *, only: bool) -> None:
    """The files the session transferred (SFTP, scp), after its screen: a pure SFTP session shows
    nothing on a terminal, so this list is its replay. ``only``: say so when there are none."""
    from .files import file_activity, print_changes, print_files

    found, changes = file_activity(path, trusted)
    if found:
        if not only:
            print(f"files transferred ({len(found)}):")
        print_files(found)
    elif only:
        print("no files transferred", file=sys.stderr)
    if changes:
        print(f"{chr(10) if found or only else ''}other changes to files ({len(changes)}):")
        print_changes(changes)


def _is_live(data: DataDir, sid: str) -> bool:
    """Whether the data dir's store says the session has not ended."""
    if not data.db_path.exists():
        return False
    s = data.service().session(sid)  # one row, not the whole list
    return s is not None and s.ended_at is None


def _seek_cache(data: DataDir, report: VerificationReport) -> Path | None:
    """Where the seek index of this recording is cached (derived data, rebuilt when it does not match)."""
    if report.header is None:
        return None
    return data.root / "cache" / "seek" / f"{report.header.session_id}.seek"


def _play_verdict(report: VerificationReport) -> int:
    """Print the verdict (and what was not shown) on stderr; the exit status it calls for."""
    print(f"zsp: {printable(_describe(report))}", file=sys.stderr)
    signed = report.signed_frames
    withheld = report.frames - (signed + 1 if signed else 0)
    if withheld > 0:
        first = signed + 1 if signed else 0
        print(
            f"zsp: {withheld} frame(s) from frame {first} on were not shown: not covered by a verified signature",
            file=sys.stderr,
        )
    return 0 if report.outcome is Outcome.VALID else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create the data directory and its keys (idempotent)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "record",
        parents=[common],
        help="run a command (default: your shell) in a recorded PTY",
        description="Run CMD in a PTY on this machine, passing the terminal through, and record "
        "it in format v1 signed with the data directory's key.",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="recording file (default: DATA/recordings/<id>.zsprec)")
    p.add_argument(
        "--fsync",
        choices=[x.value for x in FsyncPolicy],
        default=FsyncPolicy.CHECKPOINT.value,
        help="when to fsync (default: checkpoint)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="do not print where the recording went")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="command to run")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="verify recordings and evidence bundles: VALID, INCOMPLETE or CORRUPT",
        description="Verify recordings, and evidence bundles made by `zsp export` (a tar, or the directory "
        "it was extracted to: offline, no data directory needed). Exit 0 only if every file is VALID; 1 if "
        "any is INCOMPLETE or CORRUPT; 2 if any cannot be read. With --all: every recording of the data dir, "
        "cross-checked against the audit log (missing, truncated, re-signed and unknown recordings are caught).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH|SESSION_ID|BUNDLE")
    p.add_argument(
        "--all",
        action="store_true",
        help="every recording in the data dir's storage and every session in its audit log, cross-checked: "
        "VALID, LIVE, INTERRUPTED, INCOMPLETE, TRUNCATED, RESIGNED, CORRUPT, MISSING or UNKNOWN",
    )
    p.add_argument(
        "--anchor",
        metavar="FILE",
        help="with --all: the audit log must also reach the last of these anchors (lines its checkpoints sent "
        "to a sink off the box), or it was cut back or rewritten",
    )
    p.add_argument(
        "--signer",
        action="append",
        metavar="KEYFILE",
        help="trust this key (.pub, allowed_signers or OpenSSH private key file); repeatable",
    )
    p.add_argument(
        "--allowed-signers",
        metavar="FILE",
        help="bundles: trust only the keys of this allowed_signers file (the manifest's signer must be trusted "
        "for evidence@zsp); without it a bundle's own allowed_signers is trusted and its fingerprint shown",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array of reports")
    p.add_argument(
        "--legacy-order",
        action="store_true",
        help="accept the output-after-checkpoint time inversion of zsp 0.1.0's writer (docs/FORMAT.md)",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "play",
        parents=[common],
        help="replay a session's screen in this terminal (verified; nothing recorded is passed through)",
        description="Play what the session showed: its output goes through a terminal emulator and only "
        "the resulting screen is drawn, so nothing the session printed (queries, titles, clipboard writes) "
        "reaches your terminal. A frame is shown only once a checkpoint signature by a trusted key covers it. "
        "Keys: space pause/resume, + / - speed (0.25x-16x), left/right seek 5 s, up/down seek 60 s, "
        ". one frame (pauses), q or Ctrl-C quit; at the end q or Enter. With stdout not a terminal, or "
        "--instant, the screen at the end (or at --from) is printed as text. A live session (still "
        "recorded) is followed as it grows; its newest frames appear once signed. The verification result "
        "is printed at the end (exit 0 only if VALID).",
    )
    p.add_argument("path", metavar="SESSION", help="session id, unique start or end of one, or a path with '/'")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor (default 1)")
    p.add_argument(
        "--idle-limit", type=float, default=2.0, metavar="SECONDS", help="shorten pauses longer than this (default 2 s)"
    )
    p.add_argument(
        "--from", dest="start", metavar="T", help="start at this time: seconds, MM:SS or HH:MM:SS from the start"
    )
    p.add_argument("--instant", action="store_true", help="print the screen (at the end, or at --from) as text")
    p.add_argument("--follow", action="store_true", help="follow a recording that is still being written")
    p.add_argument(
        "--commands",
        action="store_true",
        help="list the commands typed (as the screen showed them at each Enter, beside the raw keys; input "
        "that did not echo marked, masked input as its length) instead of playing; up to --from if given",
    )
    p.add_argument(
        "--files",
        action="store_true",
        help="list the files transferred (SFTP, scp: time, direction, size, sha256, path) instead of playing; "
        "'zsp files' has --json and --extract",
    )
    p.add_argument("--signer", action="append", metavar="KEYFILE", help="trust this key (repeatable)")
    p.set_defaults(func=cmd_play)
