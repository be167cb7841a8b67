"""The plugin's options, one table: flag, ini twin, type, default, help and validation (no pytest here).

:mod:`pytest_lxdsnap.plugin` registers each row as a command-line option and an ini key, and the docs
generate the options reference from it. A value on the command line wins over the ini file; every
boolean also has a ``--no-…`` switch, so a value set in the ini file can be turned off for one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.session.strategy import STRATEGIES

DEFAULT_TIMEOUT = 120.0
"""Seconds to wait for one LXD API request (--lxd-timeout)."""
DEFAULT_SNAPSHOT_TTL = 24 * 3600.0
"""Seconds after which LXD deletes a plugin snapshot by itself (--lxd-snapshot-ttl)."""
DEFAULT_PREPARE_AHEAD = 3
"""Clones of a declared container prepared ahead of the tests (--lxd-prepare-ahead)."""
DEFAULT_MAX_CLONES = 12
"""Clones one session keeps at once, all containers together (--lxd-max-clones)."""
DEFAULT_LEASE_WAIT = 60.0
"""Seconds to wait for an existing container another live session holds (--lxd-lease-wait)."""


@dataclass(frozen=True)
class Option:
    """One option: ``--lxd-foo`` on the command line, ``lxd_foo`` in the ini file."""

    name: str  # the ini key and the attribute of Options, e.g. "lxd_strategy"
    type: str  # text, path, seconds, count, choice or bool
    default: object
    help: str
    choices: tuple[str, ...] | None = None
    minimum: int = 0  # count: the smallest valid value
    header: str = ""  # its label in the report header line ("" : not shown there)
    ini: bool = True  # also an ini key

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def off_flag(self) -> str:
        """The ``--no-…`` switch (booleans have one)."""
        return f"--no-{self.flag[2:]}"

    @property
    def metavar(self) -> str | None:
        if self.type == "bool":
            return None
        return {"path": "PATH", "seconds": "SECONDS", "count": "N"}.get(self.type, self.name[4:].upper())

    @property
    def help_with_default(self) -> str:
        if self.type == "bool":
            return f"{self.help} (default: {'on' if self.default else 'off'})"
        choices = f"; one of {', '.join(self.choices)}" if self.choices else ""
        if self.default is None:
            return self.help + choices
        return f"{self.help}{choices} (default: {_show(self.default)})"

    def parse(self, raw: object) -> object:
        """The typed value of ``raw`` (a string from the command line or ini file, or None: the default)."""
        if raw is None or raw == "":
            return self.default
        return _PARSERS[self.type](self, raw)


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(option: Option, what: str, raw: object) -> ConfigError:
    return ConfigError(f"{option.name} ({option.flag}): expected {what}, got {raw!r}")


def _text(option: Option, raw: object) -> str:
    return str(raw)


def _seconds(option: Option, raw: object) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise _expected(option, "a positive number of seconds", raw)
    return value


def _count(option: Option, raw: object) -> int:
    text = str(raw).strip()
    if not text.isdigit() or int(text) < option.minimum:
        raise _expected(option, f"a whole number of at least {option.minimum}", raw)
    return int(text)


def _choice(option: Option, raw: object) -> str:
    assert option.choices is not None
    if raw not in option.choices:
        raise ConfigError(f"{option.name} ({option.flag}): unknown value {raw!r}; valid values: "
                          f"{', '.join(option.choices)}")
    return str(raw)


def _bool(option: Option, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _expected(option, "true or false", raw)


_PARSERS: dict[str, Callable[[Option, object], object]] = {
    "text": _text, "path": _text, "seconds": _seconds, "count": _count, "choice": _choice, "bool": _bool,
}

OPTIONS: tuple[Option, ...] = (
    Option("lxd_endpoint", "text", None,
           "Unix socket path or https:// URL of LXD (default: the local socket, LXD's or else Incus's)"),
    Option("lxd_project", "text", None,
           "LXD project of the containers; 'auto' makes one for the session and deletes it at the end "
           "(default: the default project)"),
    Option("lxd_cert", "path", None,
           "Client certificate (PEM) for an https:// endpoint (default: ~/.config/lxc/client.crt)"),
    Option("lxd_key", "path", None, "Private key of --lxd-cert (default: ~/.config/lxc/client.key)"),
    Option("lxd_server_cert", "path", None,
           "Pin the server's certificate (PEM) of an https:// endpoint (default: verify against the system's CAs)"),
    Option("lxd_insecure", "bool", False,
           "Do not verify the https:// endpoint's certificate (a warning says so; prefer --lxd-server-cert)"),
    Option("lxd_timeout", "seconds", DEFAULT_TIMEOUT, "Seconds to wait for one LXD API request", header="timeout"),
    Option("lxd_strategy", "choice", "auto",
           "Default reset strategy (auto: clones on copy-on-write pools for declared containers, in place otherwise)",
           choices=tuple(STRATEGIES), header="strategy"),
    Option("lxd_snapshot_ttl", "seconds", DEFAULT_SNAPSHOT_TTL,
           "Seconds after which LXD deletes a plugin snapshot even if the run crashed", header="snapshot ttl"),
    Option("lxd_prepare_ahead", "count", DEFAULT_PREPARE_AHEAD,
           "Clones of a declared container prepared ahead of the tests (0 prepares none ahead)",
           header="prepare ahead"),
    Option("lxd_max_clones", "count", DEFAULT_MAX_CLONES,
           "At most this many clones exist at once in this session, prepared, in use or being deleted",
           minimum=1, header="max clones"),
    Option("lxd_lease_wait", "seconds", DEFAULT_LEASE_WAIT,
           "Seconds to wait for an existing container another live session holds", header="lease wait"),
    Option("lxd_reuse", "bool", False,
           "Keep provisioned declared containers and their baselines between runs (rebuilt when the "
           "declaration changes; `lxdsnap gc` removes them)", header="reuse"),
    Option("lxd_keep_failed", "bool", False,
           "When a test fails, keep its containers' state (a clone, copy or snapshot that expires) before the "
           "reset, and print the lxc commands to inspect it", header="keep failed"),
    Option("lxd_durations", "count", 0, "List the N tests that waited longest for clean containers (0: none)"),
)
BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Options:
    """The run's options, typed and checked: what ``pytest --lxd-…`` and the ini file said."""

    lxd_endpoint: str | None = None
    lxd_project: str | None = None
    lxd_cert: str | None = None
    lxd_key: str | None = None
    lxd_server_cert: str | None = None
    lxd_insecure: bool = False
    lxd_timeout: float = DEFAULT_TIMEOUT
    lxd_strategy: str = "auto"
    lxd_snapshot_ttl: float = DEFAULT_SNAPSHOT_TTL
    lxd_prepare_ahead: int = DEFAULT_PREPARE_AHEAD
    lxd_max_clones: int = DEFAULT_MAX_CLONES
    lxd_lease_wait: float = DEFAULT_LEASE_WAIT
    lxd_reuse: bool = False
    lxd_keep_failed: bool = False
    lxd_durations: int = 0

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Options:
        """Check every value (raw strings, or None for unset) against its row; ConfigError names the first bad one."""
        unknown = sorted(set(raw) - set(BY_NAME))
        if unknown:
            raise ConfigError(f"unknown lxdsnap option {unknown[0]!r}; valid options: {', '.join(BY_NAME)}")
        return cls(**{name: BY_NAME[name].parse(value) for name, value in raw.items()})  # type: ignore[arg-type]

    def header(self) -> str:
        """The settings part of the report header line: every labelled option, booleans only when on."""
        parts = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            if not option.header or (option.type == "bool" and not value):
                continue
            unit = " s" if option.type == "seconds" else ""
            parts.append(option.header if option.type == "bool" else f"{option.header} {_show(value)}{unit}")
        return ", ".join(parts)

