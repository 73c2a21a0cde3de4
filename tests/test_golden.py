"""Golden recordings: their verification outcome, and byte-identical regeneration (format pinned)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder import load_trusted_keys
from replay import verify
from tests.data.golden.make_golden import EXPECTED, generate

GOLDEN = Path(__file__).parent / "data" / "golden"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_outcome(name: str) -> None:
    expected = json.loads((GOLDEN / "expected.json").read_text())[name]
    r = verify(GOLDEN / name, load_trusted_keys(GOLDEN / "signer.pub"))
    assert r.outcome.value == expected["outcome"]
    assert (r.problem.value if r.problem else None) == expected["problem"]
    assert r.bad_frame == expected["bad_frame"]


def test_regenerated_golden_files_are_byte_identical(tmp_path: Path) -> None:
    generate(tmp_path)
    for path in [*sorted(GOLDEN.glob("*.zsprec")), GOLDEN / "signer.pub", GOLDEN / "expected.json"]:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), (
            f"{path.name} changed: the v1 byte format moved. Bump the version or revert."
        )
