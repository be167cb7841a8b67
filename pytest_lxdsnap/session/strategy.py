"""Reset strategies and scopes: what each one means and how ``auto`` picks (pure logic, no LXD)."""

from __future__ import annotations

STRATEGIES = {
    "auto": "clone for declared containers on copy-on-write pools, inplace otherwise (the default)",
    "inplace": "restore the instance itself to its baseline snapshot (one LXD call)",
    "recipe": "the tutorial's explicit stop, restore, start (three LXD calls)",
    "clone": "each test gets a fresh copy-on-write copy of the baseline, prepared ahead (declared containers)",
    "readonly": "no reset: the test promises not to change anything",
}
SCOPES = {
    "function": "a clean state for every test (the default)",
    "class": "tests of one class share a state, reset after the class",
    "module": "tests of one module share a state, reset after the module",
}
COPY_ON_WRITE_DRIVERS = frozenset({"btrfs", "zfs", "lvm", "ceph"})
"""Pool drivers whose snapshots and copies share blocks instead of copying the rootfs."""


def describe(choices: dict[str, str]) -> str:
    return "; ".join(f"{name} ({meaning})" for name, meaning in choices.items())


def check(value: object, what: str, choices: dict[str, str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError naming ``what`` and the valid ones."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{what}: unknown value {value!r}; valid values: {describe(choices)}")
    return value


def resolve(requested: str, *, declared: bool, pool_driver: str | None) -> str:
    """The concrete strategy for ``requested`` on one container; ValueError when it cannot apply."""
    if requested == "auto":
        return "clone" if declared and pool_driver in COPY_ON_WRITE_DRIVERS else "inplace"
    if requested == "clone" and not declared:
        raise ValueError(
            "strategy 'clone' needs a declared container (an existing instance keeps its identity and is "
            "restored in place); use 'inplace', or declare the container in [tool.lxdsnap.containers]"
        )
    return requested
