from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder import SigningKey
from tests.bastion_env import Env, make_env
from tests.helpers import SEED_A, SEED_B, write_recording

# Real PostgreSQL and S3-compatible servers (issue 12): postgres_url, s3_server, s3_bucket.
pytest_plugins = ["tests.servers"]

# A pytest-xdist worker has COLUMNS and LINES set (80x24); Textual and other programs the tests
# start in PTYs of their own size would take those over the PTY's. A terminal does not set them.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def key() -> SigningKey:
    return SigningKey.from_seed(SEED_A, comment="test-a")


@pytest.fixture(scope="session")
def other_key() -> SigningKey:
    return SigningKey.from_seed(SEED_B, comment="test-b")


@pytest.fixture(scope="session")
def small_recording(tmp_path_factory: pytest.TempPathFactory, key: SigningKey) -> bytes:
    path = tmp_path_factory.mktemp("rec") / "small.zsprec"
    return write_recording(path, key, frames=25).read_bytes()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("ZSP_DATA", str(d))
    return d


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A running bastion (``zsp serve``) over a prepared data dir: alice (operator, admin), bob (approver)."""
    e = make_env(tmp_path)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def remote_env(tmp_path: Path) -> Iterator[Env]:
    """As ``env``, with a real sshd target ``srv`` that trusts the bastion's CA."""
    e = make_env(tmp_path, with_sshd=True)
    e.start()
    yield e
    e.stop()
    if e.sshd:
        e.sshd.stop()


@pytest.fixture(scope="session")
def reviewed_template(tmp_path_factory: pytest.TempPathFactory):
    """Sessions recorded through the real bastion once per run (tests/tui_helpers.py); use ``reviewed``."""
    from tests.tui_helpers import build_template

    return build_template(tmp_path_factory.mktemp("reviewed-template"))


@pytest.fixture
def reviewed(reviewed_template, tmp_path: Path):
    """A private copy of the review app's data dir: real sessions, users alice/bob/carol/dave."""
    from tests.tui_helpers import copy_reviewed

    return copy_reviewed(reviewed_template, tmp_path)
