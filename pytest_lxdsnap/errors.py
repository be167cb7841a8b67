"""Every error pytest-lxdsnap raises, in one place. Every message says what to do next.

All derive from :class:`LxdSnapError` except :class:`OperationFailed` (a fault LXD reported);
:class:`UndeclaredContainer` is also a :class:`KeyError`, as a mapping's missing key should be.
"""

from __future__ import annotations

from typing import Any


class LxdSnapError(Exception):
    """Base class of every error the plugin raises on purpose."""


class LxdUnreachable(LxdSnapError):
    """The LXD daemon could not be reached at the configured endpoint."""


class ConfigError(LxdSnapError):
    """The ``[tool.lxdsnap]`` table, a marker or an option is invalid."""


class ContainerNotFound(LxdSnapError):
    """A marker names a container that is neither declared nor present in LXD."""


class OwnershipError(LxdSnapError):
    """A destructive call was refused because the plugin does not own the target."""


class ResetError(LxdSnapError):
    """Restoring a container to its snapshot failed; the snapshot is kept for recovery."""


class ProvisionError(LxdSnapError):
    """A provision command of a declared container failed."""


class ExecError(LxdSnapError):
    """A command run with ``check=True`` exited non-zero, or could not run at all."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class ExecTimeout(ExecError):
    """A command did not finish within its ``timeout`` (it was killed in the container)."""


class ExecOutputTooLarge(ExecError):
    """A command's stdout or stderr passed its ``max_output`` cap (a running command is killed);
    ``result`` holds the output up to the cap."""


class PortError(LxdSnapError):
    """A proxy device for a container port (``Container.get_exposed_port``) could not be added."""


class HookError(LxdSnapError):
    """A ``pytest_lxdsnap_*`` hook raised, or returned something of the wrong type."""


class ReadinessError(LxdSnapError):
    """A declared container's readiness check did not pass within its timeout."""


class UndeclaredContainer(LxdSnapError, KeyError):
    """A test asked ``lxd`` for a container its marker does not name. A ``KeyError``, as a mapping's should be:
    ``"db" in lxd`` is False and ``lxd.get("db")`` is None."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # KeyError would quote the message


class OperationFailed(Exception):
    """An LXD background operation ended in failure; ``metadata`` is what it reported anyway. A fault of LXD,
    like pylxd's ``LXDAPIException``, not a plugin error: the plugin turns it into one of the errors above."""

    def __init__(self, message: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metadata = metadata or {}


class MissingExtra(LxdSnapError):
    """An optional part (testinfra, Ansible) was used but its extra is not installed; the message names it."""


class PlaybookError(LxdSnapError):
    """``ansible-playbook`` could not run the play (a missing file, a syntax error, a container it could not
    reach) or the play failed; ``result`` is the :class:`~pytest_lxdsnap.ansible.runner.PlaybookResult` when it
    ran."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class NotIdempotent(LxdSnapError, AssertionError):
    """A play run again on a converged container changed something (``lxd.idempotent``); the message names each
    task that did. An ``AssertionError`` too: it is a failed check."""
