"""Independent verifier for the zsp recording format v1.

Written from docs/FORMAT.md alone (no code from recorder/, replay/ or zsp_tui/), to check that
the specification is complete enough to implement. Uses only the stdlib, msgpack, blake3 and
cryptography. It follows the order of checks of FORMAT.md section 4 step by step.

The verifier itself now lives in ``zsp_tui/evidence/verify_bundle.py``: the standalone ``verify.py``
shipped in every evidence bundle grew out of this file (adding validity windows, redacted frames and
streaming). It is loaded here by path, as a script, never through the zsp package, so the
differential tests (tests/test_independent_verifier.py) check the very code a responder runs
against the production verifier, and it stays independent of zsp.

    python tests/independent_verifier.py KEYFILE.pub FILE...
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

STANDALONE = Path(__file__).resolve().parent.parent / "zsp_tui" / "evidence" / "verify_bundle.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zsp_standalone_verify", STANDALONE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {STANDALONE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standalone = _load()
VALID, INCOMPLETE, CORRUPT = standalone.VALID, standalone.INCOMPLETE, standalone.CORRUPT
Result = standalone.Result

# Behaviours of the production verifier (replay.verify) that once differed from this reading of
# FORMAT.md, found by tests/test_independent_verifier.py; all four were fixed in the production
# verifier (and FORMAT.md made explicit) on 2026-11-26, and the switches that imitated them were
# removed when the verifier moved into the standalone verify.py. What they were:
#   nil-keys-optional  header `grant_id`/`command` and seal `exit_status` may be absent (as nil)
#   version-py-equal   header `version` compared with Python `==`, so `true` and `1.0` pass as 1
#                      (then fail the type rule: malformed instead of unknown-version)
#   int63-ranges       header `started_at_us`, checkpoint `wall_us` and seal `wall_us`,
#                      `output_bytes`, `input_bytes` must be 0..2^63-1, seal `frames` 1..2^63-1
#                      (malformed; FORMAT.md gives these fields no range, so a wrong seal count is
#                      seal-mismatch and an unsigned value is caught by the signature)
#   header-time        frame 1's `t_us` is not compared with the header's
# A new disagreement is a bug in one of the two verifiers (or a gap in FORMAT.md).
KNOWN_DEVIATIONS: frozenset[str] = frozenset()


def parse_trusted_keys(lines: list[str]) -> list[object]:
    """OpenSSH public key lines (``ssh-ed25519 BASE64 [comment]``) -> trusted keys (no windows)."""
    out = []
    for line in lines:
        parts = line.strip().split()
        if len(parts) < 2 or parts[0] != "ssh-ed25519":
            continue
        try:
            out.append(standalone.TrustedKey(standalone.ed25519_raw(base64.b64decode(parts[1], validate=True))))
        except (binascii.Error, ValueError):
            continue
    return out


def verify(data: bytes, trusted: list[object]) -> object:
    return standalone.verify_recording(io.BytesIO(data), trusted)


def verify_file(
    data: bytes, trusted_keys: list[str], *, deviations: frozenset[str] = frozenset()
) -> tuple[str, str | None, int | None]:
    """(outcome, problem code, frame): the bad frame for CORRUPT (None for the preamble), the
    number of intact frames for INCOMPLETE, None for VALID."""
    if deviations:
        raise ValueError(f"deviation switches were removed (all fixed in production): {sorted(deviations)}")
    r = verify(data, parse_trusted_keys(trusted_keys))
    return r.outcome, r.problem, r.frame  # type: ignore[attr-defined]


def _main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: independent_verifier.py KEYFILE.pub FILE...", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        trusted = parse_trusted_keys(f.read().splitlines())
    worst = 0
    for path in argv[1:]:
        with open(path, "rb") as f:
            r = standalone.verify_recording(f, trusted)
        if r.outcome == VALID:
            print(f"{path}: VALID frames={r.frames} signed={r.signed} wall_us={r.signed_wall_us}")
        elif r.outcome == INCOMPLETE:
            print(
                f"{path}: INCOMPLETE {r.problem} intact={r.frames} offset={r.offset} signed={r.signed} "
                f"wall_us={r.signed_wall_us} ({r.detail})"
            )
            worst = max(worst, 1)
        else:
            print(f"{path}: CORRUPT {r.problem} frame={r.frame} offset={r.offset} ({r.detail})")
            worst = 2
    return worst


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
