"""Hooks of pytest-lxdsnap: implement them in a conftest.py or a plugin (``pytest_addhooks`` adds them).

Every hook is prefixed ``pytest_lxdsnap_``; results are validated and a wrong type is an error naming
the hook, the container and the test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import pytest

    from pytest_lxdsnap.declarations import ContainerSpec
    from pytest_lxdsnap.handle import Container

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_lxdsnap_provision(container: Container, spec: ContainerSpec) -> None:
    """Provision a declared container after its ``provision`` commands and before its baseline snapshot."""


@hookspec
def pytest_lxdsnap_container_ready(container: Container, spec: ContainerSpec | None) -> None:
    """A fresh container (baseline, clone or restored instance) passed its readiness check; raise to refuse it."""


@hookspec(firstresult=True)
def pytest_lxdsnap_choose_strategy(item: pytest.Item, name: str, declared: bool, requested: str | None) -> str | None:
    """Return the reset strategy for ``item``'s use of container ``name`` (None: the usual choice)."""


@hookspec
def pytest_lxdsnap_before_reset(item: pytest.Item, container: Container, strategy: str) -> None:
    """Called after ``item`` and before its container is reset (still in the test's state)."""


@hookspec
def pytest_lxdsnap_after_reset(item: pytest.Item, name: str, strategy: str) -> None:
    """Called once the container ``name`` that ``item`` used is reset."""


@hookspec
def pytest_lxdsnap_cleanup(config: pytest.Config, containers: Mapping[str, Container]) -> Iterable[str] | None:
    """Before the session cleans up: do extra cleanup, or return names of declared containers to keep."""
