"""A pytest-testinfra backend that runs commands through the plugin's REST exec (no ``lxc exec`` subprocess), so
``lxd["web"].host`` works alike for existing and declared containers, clones, HTTPS endpoints, projects and Incus.

Imported only when a test asks for ``.host``: testinfra is an optional extra (``pytest-lxdsnap[testinfra]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_lxdsnap.errors import MissingExtra
from pytest_lxdsnap.lxd.execution import ExecResult

EXTRA_HINT = "pip install 'pytest-lxdsnap[testinfra]'"

try:
    from testinfra.backend.base import BaseBackend, CommandResult
    from testinfra.host import Host
except ImportError:
    raise MissingExtra(f"Container.host needs pytest-testinfra, which is not installed: {EXTRA_HINT}") from None

NAME = "lxdsnap"


class LxdSnapBackend(BaseBackend):  # type: ignore[misc]  # testinfra ships no type information
    """testinfra's view of one container: ``run`` is a REST exec of ``/bin/sh -c <command>`` as root."""

    NAME = NAME

    def __init__(self, name: str, run: Callable[[list[str]], ExecResult], **kwargs: Any) -> None:
        self._exec = run
        super().__init__(name, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)  # quoting, and sudo inside host.sudo()
        result = self._exec(["/bin/sh", "-c", cmd])
        return self.result(result.exit_code, self.encode(cmd), result.stdout_bytes, result.stderr_bytes)


def make_host(name: str, run: Callable[[list[str]], ExecResult]) -> Host:
    """A testinfra ``Host`` named ``name`` whose commands go through ``run`` (a container's exec)."""
    backend = LxdSnapBackend(name, run)
    host = Host(backend)
    backend.set_host(host)
    return host
