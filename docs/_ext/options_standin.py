"""A stand-in for ``pytest_lxdsnap.options`` until that module lands: the same ``Option``/``OPTIONS`` contract,
filled from what ``pytest_lxdsnap.plugin`` registers today. Kept outside the package on purpose; the docs
extension uses the real module as soon as it exists. Delete this file then."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pytest_lxdsnap import plugin
from pytest_lxdsnap.declarations import (
    DEFAULT_LEASE_WAIT,
    DEFAULT_MAX_CLONES,
    DEFAULT_PREPARE_AHEAD,
    DEFAULT_SNAPSHOT_TTL,
)
from pytest_lxdsnap.lxd.connection import DEFAULT_TIMEOUT
from pytest_lxdsnap.session.strategy import STRATEGIES


@dataclass(frozen=True)
class Option:
    name: str
    flag: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    ini: bool = True


_TYPES: dict[str, tuple[str, Any]] = {
    "lxd_endpoint": ("str", None),
    "lxd_project": ("str", None),
    "lxd_cert": ("str", None),
    "lxd_key": ("str", None),
    "lxd_server_cert": ("str", None),
    "lxd_snapshot_ttl": ("float", DEFAULT_SNAPSHOT_TTL),
    "lxd_timeout": ("float", DEFAULT_TIMEOUT),
    "lxd_strategy": ("choice", "auto"),
    "lxd_prepare_ahead": ("int", DEFAULT_PREPARE_AHEAD),
    "lxd_lease_wait": ("float", DEFAULT_LEASE_WAIT),
    "lxd_max_clones": ("int", DEFAULT_MAX_CLONES),
}

OPTIONS: tuple[Option, ...] = (
    *(Option(name, flag, _TYPES[name][0], _TYPES[name][1], text,
             tuple(STRATEGIES) if name == "lxd_strategy" else None) for flag, name, text in plugin.OPTIONS),
    Option("lxd_insecure", "--lxd-insecure", "bool", False, plugin.INSECURE_HELP),
    Option("lxd_reuse", "--lxd-reuse", "bool", False, plugin.REUSE_HELP),
    Option("lxd_durations", "--lxd-durations", "int", 0,
           "List the N tests that waited longest for clean containers (0: none)", ini=False),
    Option("lxd_keep_failed", "--lxd-keep-failed", "bool", False, plugin.KEEP_FAILED_HELP),
)
