"""Adversarial tests of issue 12 (PostgreSQL store, S3 recording storage, several bastions and
workers): a malicious bucket, a careless operator, real servers and real clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import free_port
from tests.test_store_postgres import zsp_at

# --- the store's password -----------------------------------------------------------------------

SECRET = "s3cr3t-Pw"

_QUERY_PASSWORD_URLS = [
    "postgresql://zsp@127.0.0.1:{port}/zsp?password=" + SECRET,
    "postgresql://zsp@127.0.0.1:{port}/zsp?sslmode=disable&password=" + SECRET,
    "postgresql://zsp@127.0.0.1:{port}/zsp?pass%77ord=" + SECRET,  # libpq decodes the keyword too
    "postgresql://zsp@127.0.0.1:{port}/zsp?sslpassword=" + SECRET,
]


@pytest.mark.parametrize("template", _QUERY_PASSWORD_URLS)
def test_a_password_given_as_a_url_query_parameter_is_never_printed(tmp_path: Path, template: str) -> None:
    """libpq takes ``?password=`` as well as ``user:password@``: an unreachable store named so must
    not print the password (the CLI's error, migrate's refusal, redact_url itself)."""
    from zsp_tui.config import redact_url

    url = template.format(port=free_port())
    assert SECRET not in redact_url(url)
    d = tmp_path / "d"
    assert zsp_at(d, "init").returncode == 0
    p = zsp_at(d, "sessions", env={"ZSP_DATABASE_URL": url})
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert SECRET not in p.stderr + p.stdout, p.stderr
    p = zsp_at(d, "migrate", "--to", url)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert SECRET not in p.stderr + p.stdout, p.stderr


def test_a_query_parameter_password_is_scrubbed_from_the_drivers_own_error_text() -> None:
    """The store and the search index scrub their password from psycopg's messages; one given as
    ``?password=`` too."""
    from zsp_tui.exceptions import StoreError
    from zsp_tui.store.postgres import PostgresStore

    url = f"postgresql://zsp@127.0.0.1:{free_port()}/zsp?password={SECRET}%zz"  # libpq quotes a bad token
    from zsp_tui.store.pg_search import PostgresSearchIndex

    with pytest.raises(StoreError) as got:
        PostgresStore(url)
    assert SECRET not in str(got.value) and SECRET not in repr(got.value)
    with pytest.raises(Exception) as other:
        PostgresSearchIndex(url)
    assert SECRET not in str(other.value) and SECRET not in repr(other.value)
