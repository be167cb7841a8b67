"""The README's first example runs as written: its pyproject table and its test file, unchanged."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import assert_summary

README = Path(__file__).resolve().parent.parent / "README.md"


def first_block(language: str) -> str:
    """The first fenced code block in the README in ``language``."""
    match = re.search(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)
    assert match, f"README.md has no ```{language} block"
    return match.group(1)


def test_the_readme_example_runs_as_written(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=first_block("toml"))
    pytester.makepyfile(test_readme=first_block("python"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    tests = len(re.findall(r"^def test_", first_block("python"), re.M))
    assert tests >= 2, "the example shows at least a change and a test that no longer sees it"
    result.assert_outcomes(passed=tests)
    for name in re.findall(r"^\[tool\.lxdsnap\.containers\.([\w-]+)\]", first_block("toml"), re.M):
        assert_summary(result.stdout.str(), name, kind="declared", leftovers="0")
