"""Architecture and code rules that keep zsp honest, checked on every run."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("recorder", "replay", "zsp_tui")


def test_recorder_and_replay_load_neither_textual_nor_asyncssh() -> None:
    code = (
        "import sys, recorder, replay\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'asyncssh', 'zsp_tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("package", ["recorder", "replay"])
def test_public_api_is_explicit_and_sorted(package: str) -> None:
    mod = importlib.import_module(package)
    names = list(mod.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)) or names == sorted(names)
    for name in names:
        assert hasattr(mod, name), name
    public = {n for n in vars(mod) if not n.startswith("_") and not isinstance(getattr(mod, n), type(sys))}
    public -= {"annotations"}
    assert public == set(names)


def _sources() -> list[Path]:
    return [p for pkg in SHIPPED for p in (ROOT / pkg).rglob("*.py")]


def test_no_assert_in_shipped_code() -> None:
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assert):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "validate with if/raise, not assert: " + ", ".join(offenders)


def test_no_silently_swallowed_exceptions() -> None:
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ExceptHandler):
                broad = node.type is None or (
                    isinstance(node.type, ast.Name) and node.type.id in ("Exception", "BaseException")
                )
                if broad and all(isinstance(s, ast.Pass) for s in node.body):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    marker = "# test command (the README's, verbatim)\n"
    assert marker in ci
    command = ci.split(marker, 1)[1].strip().splitlines()[0]
    assert f"\n{command}\n" in readme


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_is_clean() -> None:
    p = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy not installed")
def test_mypy_strict_on_recorder_and_replay() -> None:
    p = subprocess.run([sys.executable, "-m", "mypy", "recorder", "replay", "zsp_tui"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_package_is_installed() -> None:
    """A subpackage left out of the distribution breaks `pip install .` but no editable install."""
    import tomllib

    from setuptools import find_packages

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(str(ROOT), include=cfg["include"]))
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".") for pkg in SHIPPED for p in (ROOT / pkg).rglob("__init__.py")}
    assert on_disk <= shipped, on_disk - shipped
