"""The ``[tool.lxdsnap]`` table of pyproject.toml: declared containers, validated with exact key paths."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.session.strategy import SCOPES, STRATEGIES, check

TABLE = "tool.lxdsnap"
FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")
"""An image named by (a prefix of) its fingerprint rather than an alias."""
REMOTES = {
    "images": ("https://images.linuxcontainers.org", "simplestreams"),
    "ubuntu": ("https://cloud-images.ubuntu.com/releases", "simplestreams"),
    "ubuntu-daily": ("https://cloud-images.ubuntu.com/daily", "simplestreams"),
}
"""Image servers a ``remote:alias`` image may name (the lxc client's default remotes)."""
TOP_KEYS = {"containers": "table of declared containers, one [tool.lxdsnap.containers.<name>] each"}
CONTAINER_KEYS = {
    "image": "local image alias or fingerprint (required), or remote:alias",
    "pool": "storage pool for the root disk",
    "profiles": "list of profiles (default: [\"default\"])",
    "config": "table of LXD config keys, e.g. \"limits.memory\" = \"256MiB\"",
    "provision": "list of shell commands run once after launch, before the baseline snapshot",
    "strategy": "how tests get a clean state: " + ", ".join(STRATEGIES) + " (default: --lxd-strategy, or auto)",
    "scope": "how long a state lives: " + ", ".join(SCOPES) + " (default: function)",
    "ready": "readiness check run before the baseline snapshot and on every fresh clone or restore: a command "
             "(string or argv list), or a table {command = ..., timeout = seconds}",
    "target": "LXD cluster member to launch on, or a list of members that pytest-xdist workers are spread over",
}
DEFAULT_READY_TIMEOUT = 60.0
NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")
"""A declared container's name: short, so the names of its clones and kept copies fit LXD's 63 characters."""


def is_instance_name(name: str) -> bool:
    """An existing instance's name as LXD accepts it (a declared name is one too)."""
    return 0 < len(name) <= 63 and name[0].isalpha() and all(c.isalnum() or c == "-" for c in name)


@dataclass(frozen=True)
class ReadyCheck:
    """A command that must exit 0 (retried until ``timeout``), or a testcontainers wait strategy
    (``"module:attribute"``), that must pass before a test sees the container."""

    command: str | tuple[str, ...] | None
    timeout: float = DEFAULT_READY_TIMEOUT
    interval: float = 0.1
    wait_strategy: str | None = None


@dataclass(frozen=True)
class ContainerSpec:
    """A container the suite declares and launches itself."""

    name: str
    image: str
    pool: str | None = None
    profiles: tuple[str, ...] = ("default",)
    config: dict[str, str] = field(default_factory=dict)
    provision: tuple[str, ...] = ()
    strategy: str | None = None
    scope: str | None = None
    ready: ReadyCheck | None = None
    targets: tuple[str, ...] = ()  # cluster members; xdist worker n uses targets[n % len(targets)]

    def target_for(self, worker: int) -> str | None:
        """The cluster member worker number ``worker`` launches this container on (None: the server decides)."""
        return self.targets[worker % len(self.targets)] if self.targets else None

    @property
    def image_remote(self) -> str | None:
        return self.image.split(":", 1)[0] if ":" in self.image else None


def _choices(keys: dict[str, str]) -> str:
    return "; ".join(f"{k} ({v})" for k, v in keys.items())


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: expected a list of strings, got {type(value).__name__} {value!r}")
    return tuple(value)


def parse_container(name: str, table: Any) -> ContainerSpec:
    path = f"[{TABLE}.containers.{name}]"
    if not NAME.match(name):
        raise ConfigError(f"{path}: container names use lowercase letters, digits and '-', start with a letter, "
                          "and are at most 40 characters")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(CONTAINER_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {_choices(CONTAINER_KEYS)}")
    if "image" not in table:
        raise ConfigError(f"{path}: missing required key 'image' (a local image alias such as "
                          "\"lxdsnap/busybox\", which `lxdsnap setup` imports, or a fingerprint)")
    image = table["image"]
    if not isinstance(image, str) or not image:
        raise ConfigError(f"{path} image: expected a non-empty string, got {image!r}")
    pool = table.get("pool")
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise ConfigError(f"{path} pool: expected a storage pool name (string), got {pool!r}")
    config_table = table.get("config", {})
    if not isinstance(config_table, dict):
        raise ConfigError(f"{path} config: expected a table of LXD config keys, got {type(config_table).__name__}")
    config: dict[str, str] = {}
    for key, value in config_table.items():
        if isinstance(value, bool):
            config[key] = "true" if value else "false"
        elif isinstance(value, int | str):
            config[key] = str(value)
        else:
            raise ConfigError(f"{path} config.{key}: expected a string, integer or boolean, "
                              f"got {type(value).__name__} {value!r}")
        if key.startswith("user.lxdsnap."):
            raise ConfigError(f"{path} config.{key}: keys under user.lxdsnap. belong to the plugin")
    profiles = _str_list(table["profiles"], f"{path} profiles") if "profiles" in table else ("default",)
    provision = _str_list(table.get("provision", []), f"{path} provision")
    try:
        strategy = check(table["strategy"], f"{path} strategy", STRATEGIES) if "strategy" in table else None
        scope = check(table["scope"], f"{path} scope", SCOPES) if "scope" in table else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    ready = parse_ready(table["ready"], f"{path} ready") if "ready" in table else None
    target = table.get("target")
    targets = () if target is None else (target,) if isinstance(target, str) else _str_list(target, f"{path} target")
    if target is not None and (not targets or not all(targets)):
        raise ConfigError(f"{path} target: expected a cluster member name or a non-empty list of them, got {target!r}")
    return ContainerSpec(name, image, pool, profiles, config, provision, strategy, scope, ready, targets)


def parse_ready(value: Any, path: str) -> ReadyCheck:
    """``ready = "cmd"``, ``["argv", ...]``, ``{command = ..., timeout = 30}`` or
    ``{wait_strategy = "module:attribute", timeout = 30}`` (a testcontainers wait strategy, or a callable
    returning one)."""
    table = value if isinstance(value, dict) else {"command": value}
    unknown = sorted(set(table) - {"command", "timeout", "wait_strategy"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: command, wait_strategy, timeout")
    if ("command" in table) == ("wait_strategy" in table):
        raise ConfigError(f"{path}: give exactly one of command (a shell command or argv list) and wait_strategy "
                          "(\"module:attribute\" naming a testcontainers wait strategy)")
    strategy = table.get("wait_strategy")
    if strategy is not None and (not isinstance(strategy, str) or ":" not in strategy):
        raise ConfigError(f"{path} wait_strategy: expected \"module:attribute\", got {strategy!r}")
    command = table.get("command")
    if isinstance(command, list):
        command = _str_list(command, f"{path} command")
    if strategy is None and (not command or not isinstance(command, str | tuple)):
        raise ConfigError(f"{path} command: expected a shell command (string) or an argv list, got {command!r}")
    timeout = table.get("timeout", DEFAULT_READY_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{path} timeout: expected a positive number of seconds, got {timeout!r}")
    return ReadyCheck(command, float(timeout), wait_strategy=strategy)


def parse_table(data: dict[str, Any]) -> dict[str, ContainerSpec]:
    """Validate a ``[tool.lxdsnap]`` table (as a dict) into container specs by name."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"[{TABLE}]: unknown key {unknown[0]!r}; valid keys: {_choices(TOP_KEYS)}")
    containers = data.get("containers", {})
    if not isinstance(containers, dict):
        raise ConfigError(f"[{TABLE}] containers: expected a table of tables, got {type(containers).__name__}")
    return {name: parse_container(name, table) for name, table in containers.items()}


def load(pyproject: Path) -> dict[str, ContainerSpec]:
    """Declared containers from ``pyproject`` (none when the file or the table is absent)."""
    if not pyproject.is_file():
        return {}
    try:
        with pyproject.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: not valid TOML: {exc}") from None
    table = document.get("tool", {}).get("lxdsnap")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{TABLE}] in {pyproject}: expected a table")
    return parse_table(table)
