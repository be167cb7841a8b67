"""pytest-lxdsnap: snapshot real LXD containers before each test and restore them after.

The public API is what this module exports (``__all__``): the handle a test gets (:class:`Container`,
:class:`Containers`, :class:`ExecResult`), :class:`ContainerSpec` (in hook signatures), and every error.
The hooks are in :mod:`pytest_lxdsnap.hookspecs`; options, pyproject keys and the ``lxdsnap`` command are
documented in the docs. Every other module (``session``, ``safety``, ``lxd``, ``host`` and the pytest glue)
is internal and may change between releases.
"""

from typing import TYPE_CHECKING

from pytest_lxdsnap.errors import (
    ConfigError,
    ContainerNotFound,
    ExecError,
    ExecOutputTooLarge,
    ExecTimeout,
    HookError,
    LxdSnapError,
    LxdUnreachable,
    MissingExtra,
    NotIdempotent,
    OperationFailed,
    OwnershipError,
    PlaybookError,
    PortError,
    ProvisionError,
    ReadinessError,
    ResetError,
    UndeclaredContainer,
)

if TYPE_CHECKING:  # what the lazy names are, for type checkers (py.typed)
    from pytest_lxdsnap.ansible.runner import PlaybookResult
    from pytest_lxdsnap.declarations import ContainerSpec, ReadyCheck
    from pytest_lxdsnap.handle import Container, Containers
    from pytest_lxdsnap.lxd.execution import ExecResult

_LAZY = {"Container": "handle", "ExecResult": "lxd.execution", "Containers": "handle", "ContainerSpec": "declarations",
         "ReadyCheck": "declarations", "PlaybookResult": "ansible.runner"}


def __getattr__(name: str) -> object:
    if name == "__version__":  # importlib.metadata is slow to import: only when asked
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pytest-lxdsnap")
        except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
            return "0.0.0"
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ConfigError",
    "Container",
    "ContainerNotFound",
    "ContainerSpec",
    "Containers",
    "ExecError",
    "ExecOutputTooLarge",
    "ExecResult",
    "ExecTimeout",
    "HookError",
    "LxdSnapError",
    "LxdUnreachable",
    "MissingExtra",
    "NotIdempotent",
    "OperationFailed",
    "OwnershipError",
    "PlaybookError",
    "PlaybookResult",
    "PortError",
    "ProvisionError",
    "ReadinessError",
    "ReadyCheck",
    "ResetError",
    "UndeclaredContainer",
    "__version__",
]
