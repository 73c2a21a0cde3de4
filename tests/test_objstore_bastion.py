"""A bastion with object storage, as an operator and a reviewer meet it: a real ``zsp serve``
(embedded SQLite) uploading to a real SeaweedFS bucket, a real OpenSSH client, the real CLI.

The session's recording is uploaded and verified once it ends and leaves scratch; its output is
searchable (the search indexer reads the scratch file before the uploader removes it); and
``zsp verify``/``zsp play`` by session id read it from the bucket."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bastion_env import make_env
from tests.test_bastion import wait_for


def _zsp(env_vars: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zsp_tui", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env_vars}, check=False,
    )


def test_a_finished_session_is_uploaded_searchable_and_verifiable_by_id(
    tmp_path: Path, s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    env = make_env(tmp_path)
    env.configure(f'[storage]\nurl = "s3://{s3_bucket}/rec"\nendpoint = "{s3_server.endpoint}"\nregion = "us-east-1"\n')
    env.start()
    try:
        env.grant()
        marker = "upl0aded-" + os.urandom(4).hex()
        r = env.ssh("alice", "local", f"echo {marker}; echo done")
        assert r.returncode == 0 and marker in r.stdout, r.stderr

        def uploaded():
            rows = env.svc.sessions()
            return rows[0] if rows and rows[0].upload == "uploaded" else None

        row = wait_for(uploaded, 30)
        assert row.object_key == f"s3://{s3_bucket}/rec/{row.id}.zsprec"
        body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"rec/{row.id}.zsprec")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == row.sha256
        wait_for(lambda: not Path(row.path).exists(), 90)  # scratch cleared once indexed and uploaded (a liveness bound)

        cli = {"ZSP_DATA": str(env.data.root), **s3_server.env()}
        found = _zsp(cli, "search", marker, "--json")
        assert found.returncode == 0, found.stderr
        assert row.id in found.stdout and marker in found.stdout
        # Indexed by the bastion from scratch before the upload: covered, nothing to re-index.
        assert "not in the search index" not in found.stderr, found.stderr
        v = _zsp(cli, "verify", row.id[-8:])
        assert v.returncode == 0 and "VALID" in v.stdout, v.stdout + v.stderr
        p = _zsp(cli, "play", row.id[-8:], "--instant")
        assert p.returncode == 0 and marker in p.stdout, p.stderr
        assert "Traceback" not in v.stderr + p.stderr + found.stderr
    finally:
        env.stop()
