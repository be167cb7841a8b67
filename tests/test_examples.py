"""The examples that `make demo` runs stay green (run here as separate pytest sessions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import assert_summary, summary

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-v", *args], cwd=folder, capture_output=True,
                          text=True, timeout=600)


def test_seed_tutorial_example(lxd_client):
    folder = EXAMPLES / "seed_tutorial"
    subprocess.run([sys.executable, "make_container.py", "create"], cwd=folder, check=True, capture_output=True)
    try:
        result = run_example(folder)
    finally:
        subprocess.run([sys.executable, "make_container.py", "delete"], cwd=folder, check=True, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout
    assert_summary(result.stdout, "demo-ubuntu-test", kind="existing", instance="demo-ubuntu-test", resets="6",
                   leftovers="0")


@pytest.mark.parametrize(("name", "args", "passed"),
                         [("declared", (), 4), ("strategies", (), 7), ("ecosystem", (), 5),
                          ("ecosystem", ("-n", "2"), 5)])
def test_declared_examples(lxd_client, name, args, passed):
    result = run_example(EXAMPLES / name, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{passed} passed" in result.stdout
    rows = summary(result.stdout)
    assert rows and all(row["leftovers"] == "0" for row in rows.values()), rows


def test_ansible_role_example(lxd_client, debian, package_cache):
    result = run_example(EXAMPLES / "ansible_role")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    assert_summary(result.stdout, "web", kind="declared", resets="5", leftovers="0")
