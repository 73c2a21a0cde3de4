"""``zsp review`` on the console: who may open it, and one clear line for every mistake."""

from __future__ import annotations

import os
import subprocess
import sys


def _review(data, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zsp_tui", "review", "--data", str(data.root), *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def _one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr.strip()


def test_an_operator_is_refused_with_one_line(reviewed) -> None:
    line = _one_line(_review(reviewed.data, "--as", "dave"))
    assert "dave may not open the review app: it needs the reviewer, approver or admin role" in line
    # and it is not a user mistake to fix with --as: no hint to name oneself
    assert "--as" not in line


def test_an_unknown_user_is_told_to_name_themselves(reviewed) -> None:
    env = {"ZSP_USER": ""}
    line = _one_line(_review(reviewed.data, env={**env, "USER": "nosuchuser", "LOGNAME": "nosuchuser"}))
    assert "no zsp user 'nosuchuser'" in line and "--as USER" in line
    line = _one_line(_review(reviewed.data, "--as", "ghost"))
    assert "no zsp user 'ghost'" in line


def test_zsp_user_names_the_reviewer(reviewed) -> None:
    # carol may review, but there is no terminal here: the refusal is about the terminal, not her
    line = _one_line(_review(reviewed.data, env={"ZSP_USER": "carol"}))
    assert "needs a terminal" in line


def test_a_hostile_name_is_escaped(reviewed) -> None:
    line = _one_line(_review(reviewed.data, "--as", "x\x1b[2J\u202ey"))
    assert "\x1b" not in line and "\u202e" not in line and "\\x1b" in line


def test_an_uninitialised_data_dir(tmp_path) -> None:
    p = subprocess.run([sys.executable, "-m", "zsp_tui", "review", "--data", str(tmp_path / "none"), "--as", "x"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert _one_line(p).startswith("zsp: error:")
    assert not (tmp_path / "none").exists()
