"""The ``[tool.lxdsnap]`` table of pyproject.toml: declared containers and settings for existing ones, validated
with exact key paths."""

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
TOP_KEYS = {
    "containers": "table of declared containers, one [tool.lxdsnap.containers.<name>] each",
    "existing": "table of settings for existing containers, one [tool.lxdsnap.existing.<instance>] each",
}
CONTAINER_KEYS = {
    "image": "local image alias or fingerprint (required), or remote:alias",
    "pool": "storage pool for the root disk",
    "profiles": "list of profiles (default: [\"default\"])",
    "config": "table of LXD config keys, e.g. \"limits.memory\" = \"256MiB\"",
    "provision": "list of shell commands run once after launch, before the baseline snapshot",
    "strategy": "how tests get a clean state: " + ", ".join(STRATEGIES) + " (default: --lxd-strategy, or auto)",
    "scope": "how long a state lives: " + ", ".join(SCOPES) + " (default: function)",
    "ready": "readiness check run before the baseline snapshot and on every fresh clone or restore: \"systemd\" "
             "(systemctl is-system-running --wait), a command (string or argv list), a table {systemd = true, "
             "allow_degraded = false, timeout = seconds} or {command = ..., timeout = seconds}, or false for none "
             "(default: \"systemd\" when PID 1 is systemd, else none)",
    "package_cache": "true: apt in the container fetches through the host's package cache on 127.0.0.1:3142 "
                     "(`lxdsnap setup --package-cache`); or \"host:port\" of another cache (default: false)",
    "target": "LXD cluster member to launch on, or a list of members that pytest-xdist workers are spread over",
    "playbook": "an Ansible playbook (path from the folder of pyproject.toml) run once after provision, before the "
                "baseline snapshot, so every test starts converged; with --lxd-reuse the build is keyed by the "
                "playbook's and its roles' content (needs pytest-lxdsnap[ansible])",
}
EXISTING_KEYS = {
    "ready": "readiness check after every in-place restore of the running container, as for declared containers "
             "(default: \"systemd\" when PID 1 is systemd, else none); false for none",
}
DEFAULT_READY_TIMEOUT = 60.0
PACKAGE_CACHE = "127.0.0.1:3142"
"""Where ``package_cache = true`` finds the host's cache (``lxdsnap setup --package-cache`` starts it there)."""
NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$|^[a-z]$")
"""A declared container's name: short, so the names of its clones and kept copies fit LXD's 63 characters."""


def is_instance_name(name: str) -> bool:
    """An existing instance's name as LXD accepts it (a declared name is one too)."""
    return 0 < len(name) <= 63 and name[0].isalpha() and all(c.isalnum() or c == "-" for c in name)


@dataclass(frozen=True)
class ReadyCheck:
    """What must pass before a test sees the container: a command that must exit 0 (retried until ``timeout``),
    a testcontainers wait strategy (``"module:attribute"``), or systemd's boot (``systemctl is-system-running
    --wait`` says ``running``, or ``degraded`` when ``allow_degraded``). None of the three: no check at all
    (``ready = false``)."""

    command: str | tuple[str, ...] | None
    timeout: float = DEFAULT_READY_TIMEOUT
    interval: float = 0.1
    wait_strategy: str | None = None
    systemd: bool = False
    allow_degraded: bool = True

    @property
    def off(self) -> bool:
        return self.command is None and self.wait_strategy is None and not self.systemd


READY_OFF = ReadyCheck(None)
"""``ready = false``: no check, not even waiting for systemd."""
SYSTEMD_READY = ReadyCheck(None, systemd=True)
"""``ready = "systemd"``, and what a container whose PID 1 is systemd gets when it declares no ``ready``."""


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
    package_cache: str | None = None  # "host:port" of the host's package cache apt in the container goes through
    playbook: str | None = None  # absolute path of the Ansible playbook that converges it before the baseline

    def target_for(self, worker: int) -> str | None:
        """The cluster member worker number ``worker`` launches this container on (None: the server decides)."""
        return self.targets[worker % len(self.targets)] if self.targets else None

    @property
    def changes_the_image(self) -> bool:
        """Whether anything of the declaration changes the container between its first boot and its baseline."""
        return bool(self.provision or self.package_cache or self.playbook)

    @property
    def image_remote(self) -> str | None:
        return self.image.split(":", 1)[0] if ":" in self.image else None


def _choices(keys: dict[str, str]) -> str:
    return "; ".join(f"{k} ({v})" for k, v in keys.items())


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: expected a list of strings, got {type(value).__name__} {value!r}")
    return tuple(value)


def _check_keys(table: Any, keys: dict[str, str], path: str) -> None:
    """``table`` is a table whose keys are all among ``keys``; ConfigError names the first that is not."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {_choices(keys)}")


def parse_container(name: str, table: Any, base: Path | None = None) -> ContainerSpec:
    path = f"[{TABLE}.containers.{name}]"
    if not NAME.match(name):
        raise ConfigError(f"{path}: container names use lowercase letters, digits and '-', start with a letter, "
                          "and are at most 40 characters")
    _check_keys(table, CONTAINER_KEYS, path)
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
    cache = parse_package_cache(table["package_cache"], f"{path} package_cache") if "package_cache" in table else None
    playbook = parse_playbook(table["playbook"], f"{path} playbook", base) if "playbook" in table else None
    return ContainerSpec(name, image, pool, profiles, config, provision, strategy, scope, ready, targets, cache,
                         playbook)


def parse_playbook(value: Any, path: str, base: Path | None) -> str:
    """An existing playbook file (relative to ``base``, the folder of pyproject.toml), with Ansible installed."""
    import importlib.util

    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: expected the path of an Ansible playbook (string), got {value!r}")
    playbook = (base or Path.cwd()) / value
    if not playbook.is_file():
        raise ConfigError(f"{path}: {playbook} does not exist (the path starts at the folder of pyproject.toml)")
    if importlib.util.find_spec("ansible") is None:
        raise ConfigError(f"{path}: a playbook needs Ansible (ansible-core), which is not installed: "
                          "pip install 'pytest-lxdsnap[ansible]'")
    return str(playbook.resolve())


@dataclass(frozen=True)
class ExistingSpec:
    """Settings for an existing container (one the suite does not declare): ``[tool.lxdsnap.existing.<name>]``."""

    name: str
    ready: ReadyCheck | None = None  # None: "systemd" when its PID 1 is systemd, else no check


def parse_existing(name: str, table: Any) -> ExistingSpec:
    path = f"[{TABLE}.existing.{name}]"
    if not is_instance_name(name):
        raise ConfigError(f"{path}: not an LXD instance name (letters, digits and '-', starting with a letter, at "
                          "most 63 characters)")
    _check_keys(table, EXISTING_KEYS, path)
    return ExistingSpec(name, parse_ready(table["ready"], f"{path} ready") if "ready" in table else None)


def parse_package_cache(value: Any, path: str) -> str | None:
    """``true`` (the host's cache at 127.0.0.1:3142), ``false``, or ``"host:port"``."""
    if value is True:
        return PACKAGE_CACHE
    if value is False:
        return None
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{path}: expected true (the cache `lxdsnap setup --package-cache` starts on "
                          f"{PACKAGE_CACHE}), false, or \"host:port\" of another apt cache, got {value!r}")
    return f"{host}:{int(port)}"


READY_KEYS = ("command", "wait_strategy", "systemd", "allow_degraded", "timeout")


def parse_ready(value: Any, path: str) -> ReadyCheck:
    """``ready = "systemd"``, ``"cmd"``, ``["argv", ...]``, ``false``, ``{systemd = true, allow_degraded = false,
    timeout = 120}``, ``{command = ..., timeout = 30}`` or ``{wait_strategy = "module:attribute", timeout = 30}``
    (a testcontainers wait strategy, or a callable returning one)."""
    if value is False:
        return READY_OFF
    if value == "systemd":
        return SYSTEMD_READY
    if value is True:
        raise ConfigError(f"{path}: true is not a check; give \"systemd\", a command (string or argv list), a table "
                          "{systemd = true, ...} or {command = ..., timeout = ...}, or false for none")
    table = value if isinstance(value, dict) else {"command": value}
    unknown = sorted(set(table) - set(READY_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(READY_KEYS)}")
    if sum(k in table for k in ("command", "wait_strategy", "systemd")) != 1:
        raise ConfigError(f"{path}: give exactly one of command (a shell command or argv list), wait_strategy "
                          "(\"module:attribute\" naming a testcontainers wait strategy) and systemd = true")
    timeout = _timeout(table, path)
    if "systemd" in table:
        if table["systemd"] is not True:
            raise ConfigError(f"{path} systemd: expected true (leave ready out, or ready = false, for no wait), "
                              f"got {table['systemd']!r}")
        allow = table.get("allow_degraded", True)
        if not isinstance(allow, bool):
            raise ConfigError(f"{path} allow_degraded: expected true or false, got {allow!r}")
        return ReadyCheck(None, timeout, systemd=True, allow_degraded=allow)
    if "allow_degraded" in table:
        raise ConfigError(f"{path} allow_degraded: only with systemd = true")
    strategy = table.get("wait_strategy")
    if strategy is not None and (not isinstance(strategy, str) or ":" not in strategy):
        raise ConfigError(f"{path} wait_strategy: expected \"module:attribute\", got {strategy!r}")
    command = table.get("command")
    if isinstance(command, list):
        command = _str_list(command, f"{path} command")
    if strategy is None and (not command or not isinstance(command, str | tuple)):
        raise ConfigError(f"{path} command: expected a shell command (string) or an argv list, got {command!r}")
    return ReadyCheck(command, timeout, wait_strategy=strategy)


def _timeout(table: dict[str, Any], path: str) -> float:
    timeout = table.get("timeout", DEFAULT_READY_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{path} timeout: expected a positive number of seconds, got {timeout!r}")
    return float(timeout)


def parse_table(data: dict[str, Any]) -> dict[str, ContainerSpec]:
    """Validate a ``[tool.lxdsnap]`` table (as a dict) into container specs by name."""
    return parse_all(data)[0]


def parse_all(data: dict[str, Any], base: Path | None = None) -> tuple[dict[str, ContainerSpec],
                                                                         dict[str, ExistingSpec]]:
    """Validate a ``[tool.lxdsnap]`` table (as a dict): declared containers and existing ones' settings, by name
    (paths in it start at ``base``, the folder of pyproject.toml; default: the working directory)."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"[{TABLE}]: unknown key {unknown[0]!r}; valid keys: {_choices(TOP_KEYS)}")
    tables = {}
    for key in TOP_KEYS:
        tables[key] = data.get(key, {})
        if not isinstance(tables[key], dict):
            raise ConfigError(f"[{TABLE}] {key}: expected a table of tables, got {type(tables[key]).__name__}")
    declared = {name: parse_container(name, table, base) for name, table in tables["containers"].items()}
    existing = {name: parse_existing(name, table) for name, table in tables["existing"].items()}
    both = sorted(set(declared) & set(existing))
    if both:
        raise ConfigError(f"[{TABLE}.existing.{both[0]}]: {both[0]!r} is also declared in [{TABLE}.containers."
                          f"{both[0]}]; a declared container takes its settings from there: remove one")
    return declared, existing


def load(pyproject: Path) -> dict[str, ContainerSpec]:
    """Declared containers from ``pyproject`` (none when the file or the table is absent)."""
    return load_all(pyproject)[0]


def load_all(pyproject: Path) -> tuple[dict[str, ContainerSpec], dict[str, ExistingSpec]]:
    """Declared containers and existing containers' settings from ``pyproject`` (none when the file or the
    table is absent)."""
    if not pyproject.is_file():
        return {}, {}
    try:
        with pyproject.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: not valid TOML: {exc}") from None
    table = document.get("tool", {}).get("lxdsnap")
    if table is None:
        return {}, {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{TABLE}] in {pyproject}: expected a table")
    return parse_all(table, pyproject.parent)
