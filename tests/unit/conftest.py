"""The fast tier: pure logic and in-process pytest runs, no daemon.

Every test here sees LXD_DIR pointing at an empty directory, so anything that tried to reach LXD (the plugin,
pylxd, the lxdsnap command) fails here rather than quietly using a daemon that happens to run on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

IN_PROCESS = "-W ignore::pytest.PytestAssertRewriteWarning"
"""pytest_lxdsnap is imported already when pytester runs pytest in this process, so pytest warns that it cannot
rewrite its asserts, and the inner suite's ``filterwarnings = error`` would make that an internal error."""


@pytest.fixture(autouse=True)
def _fast_tier(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    nowhere = tmp_path_factory.getbasetemp() / "no-lxd-here"
    nowhere.mkdir(exist_ok=True)
    monkeypatch.setenv("LXD_DIR", str(nowhere))
    monkeypatch.delenv("INCUS_DIR", raising=False)
    yield
    assert list(nowhere.iterdir()) == [], "something made a daemon socket where no daemon may be"


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester, with the warning filter for in-process runs (pytester clears $PYTEST_ADDOPTS when it starts)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", IN_PROCESS)
    return pytester


@pytest.fixture(autouse=True)
def _left_by_this_test() -> None:
    """The per-test leftover check of tests/conftest.py, off: nothing here reaches a daemon."""
