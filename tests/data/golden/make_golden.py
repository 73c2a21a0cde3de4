"""Regenerate the golden recordings: ``python -m tests.data.golden.make_golden [DIR]``.

Everything is deterministic (fixed keys, session ids and clocks; Ed25519 signatures are
deterministic), so ``tests/test_golden.py`` regenerates them and demands identical bytes: any
change to the format shows up as a diff here, and must come with a version bump.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from recorder import SigningKey
from tests.helpers import SEED_A, SEED_B, frame_spans, write_recording

HERE = Path(__file__).parent

# name -> (expected outcome, problem, bad_frame)
EXPECTED: dict[str, dict[str, object]] = {
    "valid.zsprec": {"outcome": "VALID", "problem": None, "bad_frame": None},
    "unsealed.zsprec": {"outcome": "INCOMPLETE", "problem": "no-seal", "bad_frame": 35},
    "torn.zsprec": {"outcome": "INCOMPLETE", "problem": "torn-tail", "bad_frame": 20},
    "flipped.zsprec": {"outcome": "CORRUPT", "problem": "hash-mismatch", "bad_frame": 12},
    "dropped.zsprec": {"outcome": "CORRUPT", "problem": "sequence-gap", "bad_frame": 12},
    "appended.zsprec": {"outcome": "CORRUPT", "problem": "data-after-seal", "bad_frame": 37},
    "version2.zsprec": {"outcome": "CORRUPT", "problem": "unknown-version", "bad_frame": None},
    "untrusted.zsprec": {"outcome": "CORRUPT", "problem": "untrusted-signer", "bad_frame": 0},
}


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    key = SigningKey.from_seed(SEED_A, comment="golden-signer")
    other = SigningKey.from_seed(SEED_B, comment="someone-else")
    (out / "signer.pub").write_text(key.public.openssh + " golden-signer\n")

    def rec(name: str, k: SigningKey = key, **kw: object) -> bytes:
        path = out / name
        path.unlink(missing_ok=True)
        return write_recording(path, k, seed=1, frames=30, checkpoint_frames=8, **kw).read_bytes()  # type: ignore[arg-type]

    valid = rec("valid.zsprec")
    spans = frame_spans(valid)
    rec("unsealed.zsprec", seal=False)
    (out / "torn.zsprec").write_bytes(valid[: spans[20][0] + 7])
    flipped = bytearray(valid)
    flipped[spans[12][0] + 9] ^= 0x20
    (out / "flipped.zsprec").write_bytes(bytes(flipped))
    (out / "dropped.zsprec").write_bytes(valid[: spans[12][0]] + valid[spans[12][1] :])
    (out / "appended.zsprec").write_bytes(valid + valid[spans[3][0] : spans[3][1]])
    (out / "version2.zsprec").write_bytes(valid[:7] + b"\x02" + valid[8:])
    rec("untrusted.zsprec", other)
    (out / "expected.json").write_text(json.dumps(EXPECTED, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
