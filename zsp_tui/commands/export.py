"""``zsp export``: signed evidence of recorded sessions (bundle, asciicast v2/v3, text).

The command selects the sessions, checks who is exporting, and hands an :class:`ExportJob` to the
format's writer, which prepares its files beside their final place. Only once the
``recording.export`` events naming each file's sha256 are in the audit log are the files moved
into place: an export that cannot be audited leaves nothing behind (fail closed).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from pathlib import Path

from recorder import new_session_id

from ..evidence import FORMATS, ExportJob, SelectedSession
from ..evidence.run import run_export
from ..exceptions import UsageError
from ._common import add_as, data, say

__all__ = ["register"]


def _patterns(raw: list[str]) -> tuple[re.Pattern[bytes], ...]:
    out: list[re.Pattern[bytes]] = []
    for p in raw:
        if not p:
            raise UsageError("--redact: an empty pattern would match everywhere")
        try:
            out.append(re.compile(p.encode("utf-8", "surrogateescape")))
        except re.error as exc:
            raise UsageError(f"--redact {p!r}: not a valid regular expression: {exc}") from None
    return tuple(out)


def _output(args: argparse.Namespace, count: int) -> Path | None:
    if args.output == "-":
        if args.format == "bundle" and sys.stdout.isatty():
            raise UsageError("-o -: a bundle is a tar file; redirect stdout to a file (or name one with -o)")
        if args.format != "bundle" and count != 1:
            raise UsageError("-o -: only one session can be written to stdout")
        return None
    out = Path(args.output)
    if args.format != "bundle" and (count > 1 or out.is_dir()):
        # one file per session, named by its id (a filter may select one session or many)
        if not out.is_dir():
            raise UsageError(f"-o {args.output}: {count} sessions need an existing directory for their files")
        return out
    if out.is_dir():
        raise UsageError(f"-o {args.output} is a directory; name the file to write")
    if not out.parent.is_dir():
        raise UsageError(f"-o {args.output}: no directory {out.parent}")
    if out.exists() and not args.force:
        raise UsageError(f"{args.output} exists; pass --force to replace it")
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from ..evidence import audit as export_audit
    from ..evidence import select

    d = data(args)
    d.require()
    patterns = _patterns(args.redact or [])
    if args.include_input and args.format not in ("asciicast", "asciicast3"):
        raise UsageError("--include-input is for the asciicast formats (a bundle always holds the input)")
    if args.files and args.format != "bundle":
        raise UsageError("--files is for bundles (a bundle lists transferred files always; --files adds their content)")
    name = args.as_user or os.environ.get("ZSP_USER") or getpass.getuser()
    exporter = export_audit.exporter(d, name, explicit=bool(args.as_user), via=args.via)
    sessions: tuple[SelectedSession, ...] = select.select_sessions(
        d, args.sessions, user=args.user, target=args.target, since=args.since
    )
    output = _output(args, len(sessions))
    job = ExportJob(
        data=d,
        sessions=sessions,
        format=args.format,
        output=output,
        patterns=patterns,
        include_input=args.include_input,
        force=args.force,
        exporter=exporter,
        via=args.via,
        export_id=str(new_session_id()),
        key=d.signing_key(),
        include_files=args.files,
    )
    prepared = run_export(job, sys.stdout.buffer)
    if job.patterns:
        frames = sum(p.redacted_frames for p in prepared)
        changed = sum(p.redacted_bytes for p in prepared)
        if frames:
            say(f"redacted {changed} byte(s) in {frames} frame(s); check the result before you hand it out",
                file=sys.stderr)
        else:
            say("warning: no --redact pattern matched anything: nothing was redacted", file=sys.stderr)
    for p in prepared:
        where = "stdout" if p.final is None else str(p.final)
        say(f"exported {len(p.session_ids)} session(s) as {args.format}: {where} sha256 {p.sha256}", file=sys.stderr)
        if p.final is None and args.format != "bundle":
            say("  no .sig for stdout: export to a file (-o FILE) to get FILE.sig beside it", file=sys.stderr)
        if p.final is not None and args.format == "bundle":
            say(
                f"  check: zsp verify {p.final}  (or extract it and follow its README.txt: ssh-keygen -Y verify, "
                f"sha256sum -c against the manifest, python3 verify.py); signer {job.key.public.fingerprint}",
                file=sys.stderr,
            )
        if p.final is not None and p.signature is not None:
            say(
                f"  check: ssh-keygen -Y verify -f {d.allowed_signers_path} -I {export_audit.identity()} "
                f"-n evidence@zsp -s {p.final}.sig < {p.final}",
                file=sys.stderr,
            )
    refused = [line for p in prepared for line in p.refused_files]
    for line in refused:
        say(f"refused: transferred {line}; it is listed with its hash only", file=sys.stderr)
    if refused:
        say(f"{len(refused)} transferred file(s) left out of the bundle: their content does not match their hash",
            file=sys.stderr)
    return 1 if refused else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export sessions as signed evidence (bundle, asciicast, text)",
        description="Export recorded sessions for people without access to the bastion. A bundle is a tar with "
        "the recordings, their grants, an audit excerpt, a manifest signed in OpenSSH's SSHSIG format, SHA256SUMS "
        "and a standalone verify.py; check it with `zsp verify BUNDLE` or ssh-keygen -Y verify (docs/EXPORT.md). "
        "asciicast/asciicast3/text write one file per session with an SSHSIG .sig beside it.",
    )
    p.add_argument("sessions", nargs="*", metavar="SESSION", help="session id, unique prefix, or path of a recording")
    p.add_argument("--user", metavar="U", help="also every session of this zsp user")
    p.add_argument("--target", metavar="T", help="also every session on this target")
    p.add_argument("--since", metavar="T", help="with --user/--target: sessions started since T (2026-11-30, 7d)")
    p.add_argument("--format", choices=FORMATS, default="bundle", help="what to write (default: bundle)")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="output file (a directory for several casts)")
    p.add_argument(
        "--redact",
        action="append",
        metavar="REGEX",
        help="replace bytes matching REGEX with '*' in the exported recordings (repeatable); a bundle lists "
        "every changed frame so verifiers prove nothing else changed",
    )
    p.add_argument("--include-input", action="store_true", help="asciicast: add keystrokes as 'i' events")
    p.add_argument(
        "--files",
        action="store_true",
        help="bundle: add the content of each transferred file the recording holds in full (files/NNNN-..., "
        "checked against its recorded sha256; content that does not match is left out, exit 1)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    add_as(p, help="the zsp user exporting (a reviewer or admin; default: $ZSP_USER, else your login name)")
    p.add_argument("--via", choices=("console", "ssh"), default="console", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_export)
