"""Strategy resolution (pytest_lxdsnap.session.strategy.resolve) for every strategy, declared or existing
container, and pool driver; and the checks that name what is wrong. Pure logic."""

from __future__ import annotations

import itertools

import pytest

from pytest_lxdsnap.session.strategy import COPY_ON_WRITE_DRIVERS, SCOPES, STRATEGIES, check, describe, resolve

DRIVERS = ["btrfs", "zfs", "lvm", "ceph", "dir", "cephfs", "powerflex", "", None]


def expected(strategy: str, declared: bool, driver: str | None) -> str | None:
    """The rule, spelled out: auto clones declared containers on copy-on-write pools and restores everything
    else in place; clone needs a declared container (None: refused); the rest are what they say."""
    if strategy == "auto":
        return "clone" if declared and driver in ("btrfs", "zfs", "lvm", "ceph") else "inplace"
    if strategy == "clone" and not declared:
        return None
    return strategy


def test_the_strategies_and_drivers_are_the_ones_this_table_knows():
    assert list(STRATEGIES) == ["auto", "inplace", "recipe", "clone", "readonly"]  # a new one needs a row here
    assert COPY_ON_WRITE_DRIVERS == {"btrfs", "zfs", "lvm", "ceph"}


@pytest.mark.parametrize(("strategy", "declared", "driver"),
                         list(itertools.product(STRATEGIES, [True, False], DRIVERS)))
def test_resolve(strategy, declared, driver):
    want = expected(strategy, declared, driver)
    if want is None:
        with pytest.raises(ValueError, match="strategy 'clone' needs a declared container .* use 'inplace', or "
                                             r"declare the container in \[tool.lxdsnap.containers\]"):
            resolve(strategy, declared=declared, pool_driver=driver)
    else:
        resolved = resolve(strategy, declared=declared, pool_driver=driver)
        assert resolved == want
        assert resolved != "auto" and resolved in STRATEGIES  # always concrete


def test_check_names_the_setting_and_the_valid_values():
    assert check("clone", "x", STRATEGIES) == "clone"
    with pytest.raises(ValueError, match=r"^\[t\] strategy: unknown value 'Clone'; valid values: auto \(clone for"):
        check("Clone", "[t] strategy", STRATEGIES)
    with pytest.raises(ValueError, match=r"^s: unknown value 3; valid values: function \("):
        check(3, "s", SCOPES)
    assert describe({"a": "one", "b": "two"}) == "a (one); b (two)"
