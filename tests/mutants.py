"""Hand mutations of the claims zsp makes, and the tests that must kill each one.

A mutant is one small change to shipped code that breaks a promise (the verifier skips a check,
self-approval is refused only as a first approval, expiry waits for the database...). Each is
applied to a copy of the tree and the tests named for it are run: the mutant must make them
fail. A mutant that survives is a claim the suite does not protect.

    python3 tests/mutants.py                 # every mutant (several minutes)
    python3 tests/mutants.py --ci            # the fast ones (what tests/test_mutants.py runs)
    python3 tests/mutants.py NAME...         # chosen ones; --list shows them

Prints a table (mutant, file, verdict, seconds) and exits 1 if any mutant survived or could not
be applied (the code it targets changed: update the mutant with the code).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".hypothesis", "build")


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    path: str
    old: str
    """Exact text, found once in ``path``."""
    new: str
    tests: tuple[str, ...]
    """pytest arguments (files or node ids) that must fail with the mutant in place."""
    claim: str
    ci: bool = True
    """Fast enough (a few seconds) for every CI run."""


MUTANTS: tuple[Mutant, ...] = (
    # --- recorder ------------------------------------------------------------------------------
    Mutant(
        "writer-checkpoint-before-held-output",
        "recorder/_writer.py",
        "        if self._pend:\n            self._emit_pending()\n            if not self._unsigned:",
        "        if False:\n            self._emit_pending()\n            if not self._unsigned:",
        ("tests/test_writer_ordering.py", "-k", "held_output or short_sequence"),
        "held output goes out before the checkpoint that covers it (honest sessions verify VALID)",
    ),
    Mutant(
        "writer-never-checkpoints-by-time",
        "recorder/_writer.py",
        "        if self._unsigned and at - self._unsigned_since >= self._ckpt_ns:\n            self._checkpoint(self._t(at))\n        self.flush()",
        "        self.flush()",
        ("tests/test_writer.py", "tests/test_async_recorder.py", "-k", "checkpoint"),
        "frames are signed within checkpoint_ms even when no more frames come",
    ),
    Mutant(
        "chain-ignores-previous-head",
        "recorder/_chain.py",
        "self.head = head = blake3(body, key=self.head).digest()",
        "self.head = head = blake3(body, key=genesis(self.session_id)).digest()",
        ("tests/test_golden.py",),
        "each head chains to the previous one (a dropped or moved frame is detected)",
    ),
    # --- replay: the verifier ----------------------------------------------------------------
    Mutant(
        "verify-skips-seal-signature",
        "replay/_verify.py",
        "            if signer is None or not signer.verify(value.signature, message):",
        "            if signer is None or (not sealed and not signer.verify(value.signature, message)):",
        ("tests/test_tamper.py", "-k", "forged_checkpoint"),
        "the seal's own checkpoint signature is verified",
    ),
    Mutant(
        "verify-skips-any-signature",
        "replay/_verify.py",
        "            if signer is None or not signer.verify(value.signature, message):",
        "            if signer is None:",
        ("tests/test_tamper.py", "-k", "forged_checkpoint or recomputed_chain"),
        "a forger who recomputes heads but cannot sign is caught",
    ),
    Mutant(
        "verify-allows-time-backwards",
        "replay/_verify.py",
        "        if t < last_t:\n",
        "        if False:\n",
        ("tests/test_tamper.py", "-k", "time_going_back"),
        "time never goes backwards",
    ),
    Mutant(
        "verify-trusts-any-signer",
        "replay/_verify.py",
        "            if signer.raw not in trusted_raw:",
        "            if False:",
        ("tests/test_tamper.py", "-k", "untrusted or resigned"),
        "a recording signed by an untrusted key is not VALID",
    ),
    Mutant(
        "verify-no-unsigned-limit",
        "replay/_verify.py",
        "            if unsigned > max_unsigned:\n                return st.report(\n                    corrupt, Problem.MISSING_SIGNATURE, index, offset, f\"over {max_unsigned} frames unsigned\"\n                )\n            # max:",
        "            # max:",
        ("tests/test_tamper.py", "-k", "stripped_checkpoints"),
        "at most checkpoint_frames frames go unsigned",
    ),
    Mutant(
        "verify-ignores-seal-counts",
        "replay/_verify.py",
        "if value.frames != index or value.output_bytes != out_bytes or value.input_bytes != in_bytes:",
        "if value.frames != index:",
        ("tests/test_tamper.py", "-k", "lies_about_counts"),
        "the seal's byte counts must match the recording",
    ),
    Mutant(
        "verify-allows-data-after-seal",
        "replay/_verify.py",
        "        if final:\n            return st.report(corrupt, Problem.AFTER_SEAL, index, offset, \"frame after the seal's signature\")",
        "        if False:\n            return st.report(corrupt, Problem.AFTER_SEAL, index, offset, \"frame after the seal's signature\")",
        ("tests/test_tamper.py", "-k", "appended"),
        "nothing may be appended after the seal",
    ),
    Mutant(
        "verify-legacy-order-accepts-any-gap",
        "replay/_verify.py",
        "and data_t <= t and last_t - t < coalesce_us",
        "and data_t <= t",
        ("tests/test_writer_ordering.py", "-k", "legacy"),
        "--legacy-order accepts only the 0.1.0 writer's exact inversion",
    ),
    # --- access ------------------------------------------------------------------------------
    Mutant(
        "self-approval-refused-only-first",
        "zsp_tui/access.py",
        "            if req.requester_id == approver.id:",
        "            if req.requester_id == approver.id and not req.approvals:",
        ("tests/test_access_gaps.py", "-k", "requester"),
        "nobody approves their own request, at any position in an N-approval rule",
    ),
    Mutant(
        "one-approval-is-enough",
        "zsp_tui/access.py",
        "            if count >= req.approvals_needed:",
        "            if count >= 1:",
        ("tests/test_access.py", "-k", "two_approvals or request_approve"),
        "a rule needing N approvals grants after N, not before",
    ),
    Mutant(
        "revoke-by-anyone",
        "zsp_tui/access.py",
        "            if not allowed:\n                raise AccessDenied(\n                    f\"{user.name} may not revoke {req.id}\",",
        "            if False:\n                raise AccessDenied(\n                    f\"{user.name} may not revoke {req.id}\",",
        ("tests/test_access_gaps.py", "-k", "revoke"),
        "only the requester, an approver of the rule or an admin revokes",
    ),
    Mutant(
        "masking-prompt-unanchored",
        "zsp_tui/masking.py",
        # The end-of-line anchor is held twice (the cheap ':' pre-check and the pattern's ``$``):
        # the mutant drops the pre-check and lets any line with a prompt word end in ':'.
        '        if not tail.rstrip(_BLANK).endswith(b":"):\n            return\n        if _PROMPT.search(tail.rsplit(b"\\n", 1)[-1]):',
        '        if _PROMPT.search(tail.rsplit(b"\\n", 1)[-1] + b":"):',
        ("tests/test_masking.py",),
        "only a line ending in a prompt arms masking on SSH targets",
    ),
    Mutant(
        "transfer-refusal-by-exact-string",
        "zsp_tui/bastion/transfer.py",
        "        name = os.path.basename(word)",
        "        name = word",
        ("tests/test_bastion_gaps.py", "-k", "transfer_program"),
        "scp and sftp-server are refused by program name, whatever the path",
    ),
    Mutant(
        "recording-limit-not-enforced",
        "recorder/_async.py",
        "        if self._max_bytes is not None and self._recorded + size > self._max_bytes:",
        "        if False:",
        ("tests/test_bastion_gaps.py", "-k", "async_recorder_limit"),
        "one session cannot record more than max_recording_bytes",
    ),
    # --- the bastion (real sshd, real clients: slower) ------------------------------------------
    Mutant(
        "expiry-waits-for-the-database",
        "zsp_tui/bastion/server.py",
        "                if ends is not None and now >= ends and not live.ending.is_set():",
        "                if False:",
        ("tests/test_bastion_enforcement.py::test_expiry_needs_no_database",),
        "a session ends at its grant's expiry even when the database does not answer",
        ci=False,
    ),
    Mutant(
        "upstream-left-open",
        "zsp_tui/bastion/session.py",
        "    try:\n        return await _relay(live, upstream, pty=pty, local=local)\n    finally:\n        await upstream.close()",
        "    return await _relay(live, upstream, pty=pty, local=local)",
        ("tests/test_bastion_lifecycle.py", "-k", "hundreds"),
        "a session that ends leaves no target connection, PTY or descriptor behind",
        ci=False,
    ),
    Mutant(
        "remote-command-not-signalled",
        "zsp_tui/bastion/upstream.py",
        "                with contextlib.suppress(OSError, asyncssh.Error):\n                    for name in names:\n                        proc.send_signal(name)",
        "                with contextlib.suppress(OSError, asyncssh.Error):\n                    pass",
        ("tests/test_bastion_lifecycle.py", "-k", "revoke_stops_the_command_on_a_remote_target"),
        "revoke stops a remote command that never touches its output, within 2 s",
        ci=False,
    ),
    Mutant(
        "input-relayed-before-recorded",
        "zsp_tui/bastion/session.py",
        "            await rec.synced()\n",
        "",
        ("tests/test_bastion_enforcement.py", "-k", "typed_input"),
        "typed input reaches the target only once it is on disk",
        ci=False,
    ),
)


_SERIAL = ("-x", "-q", "-p", "no:cacheprovider", "-n", "0")
"""A mutant's few tests run serially: two more workers per mutant would cost more than they save."""


def _env() -> dict[str, str]:
    """This environment without the variables of a pytest-xdist worker (the child is not one)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}


def controls(mutants: list[Mutant], python: str = sys.executable) -> list[str]:
    """Run each mutant's tests on an unmutated copy of the tree; returns the names whose tests fail
    there (their kills would prove nothing)."""
    failing = []
    with tempfile.TemporaryDirectory(prefix="zsp-control-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=_IGNORE)
        for m in mutants:
            p = subprocess.run(
                [python, "-m", "pytest", *_SERIAL, *m.tests],
                cwd=copy,
                env=_env(),
                capture_output=True,
                text=True,
            )
            if p.returncode != 0:
                failing.append(m.name)
    return failing


def run(mutant: Mutant, python: str = sys.executable) -> tuple[str, float]:
    """Apply ``mutant`` to a copy of the tree and run its tests: killed, SURVIVED or NOT APPLIED."""
    start = time.monotonic()
    source = (ROOT / mutant.path).read_text()
    if source.count(mutant.old) != 1:
        return "NOT APPLIED", 0.0
    with tempfile.TemporaryDirectory(prefix="zsp-mutant-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=_IGNORE)
        (copy / mutant.path).write_text(source.replace(mutant.old, mutant.new))
        p = subprocess.run(
            [python, "-m", "pytest", *_SERIAL, *mutant.tests],
            cwd=copy,
            env=_env(),
            capture_output=True,
            text=True,
        )
    verdict = {0: "SURVIVED", 1: "killed"}.get(p.returncode, f"ERROR (pytest exit {p.returncode})")
    return verdict, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--ci", action="store_true", help="only the fast mutants")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if (not args.names or m.name in args.names) and (m.ci or not args.ci)]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:40} {m.path:30} {m.claim}")
        return 0
    bad = 0
    print(f"{'mutant':40} {'file':28} {'verdict':14} {'s':>6}")
    for m in chosen:
        verdict, secs = run(m)
        bad += verdict != "killed"
        print(f"{m.name:40} {m.path:28} {verdict:14} {secs:6.1f}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
