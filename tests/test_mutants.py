"""Every fast hand mutant of tests/mutants.py must be killed by the tests named for it.

The slower ones (through the real bastion) run with ``python3 tests/mutants.py``; set
``ZSP_LONG=1`` to run them here too.
"""

from __future__ import annotations

import os

import pytest

from tests.mutants import MUTANTS, controls, run

LONG = os.environ.get("ZSP_LONG") == "1"


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.ci or LONG], ids=lambda m: m.name)
def test_mutant_is_killed(mutant) -> None:
    verdict, _seconds = run(mutant)
    assert verdict == "killed", f"{mutant.name}: {verdict}: {mutant.claim} ({mutant.path}) is not protected"


def test_every_mutants_tests_pass_on_the_unmutated_tree() -> None:
    """The control: a kill proves something only if the same tests pass without the mutant."""
    assert controls([m for m in MUTANTS if m.ci or LONG]) == []
