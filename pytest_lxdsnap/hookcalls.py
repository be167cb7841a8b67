"""Calling pytest-lxdsnap's own hooks (:mod:`pytest_lxdsnap.hookspecs`) and checking what they return."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import pytest

from pytest_lxdsnap.errors import HookError
from pytest_lxdsnap.session.strategy import STRATEGIES, check

if TYPE_CHECKING:
    from pytest_lxdsnap.declarations import ContainerSpec
    from pytest_lxdsnap.model import Checkout
    from pytest_lxdsnap.session.core import LxdSession


def choose_strategy(item: pytest.Item, name: str, declared: bool, requested: str | None) -> str | None:
    result = item.ihook.pytest_lxdsnap_choose_strategy(item=item, name=name, declared=declared, requested=requested)
    if result is None:
        return None
    try:
        return check(result, f"hook pytest_lxdsnap_choose_strategy returned a bad strategy for container {name!r} "
                     f"in {item.nodeid}", STRATEGIES)
    except ValueError as exc:
        raise HookError(str(exc)) from None


def session_callbacks(config: pytest.Config, lxd: LxdSession) -> tuple[Callable[[ContainerSpec, str], None] | None,
                                                                       Callable[[str, str], None]]:
    """The provision and readiness callbacks the session calls, as hook calls (no provision callback when nobody
    implements the hook: a base nothing provisions may serve the first test itself)."""
    def on_provision(spec: ContainerSpec, instance: str) -> None:
        container = lxd.container(spec.name, instance)
        _call("pytest_lxdsnap_provision", spec.name, instance,
              lambda: config.hook.pytest_lxdsnap_provision(container=container, spec=spec))

    def on_ready(name: str, instance: str) -> None:
        spec = lxd.specs.get(name)
        container = lxd.container(name, instance)
        _call("pytest_lxdsnap_container_ready", name, instance,
              lambda: config.hook.pytest_lxdsnap_container_ready(container=container, spec=spec))

    return on_provision if config.hook.pytest_lxdsnap_provision.get_hookimpls() else None, on_ready


def _call(hook: str, name: str, instance: str, call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as exc:  # any failure of user code becomes one clear error
        raise HookError(f"hook {hook} failed for container {name!r} (instance {instance}): "
                        f"{type(exc).__name__}: {exc}") from exc


def around_reset(item: pytest.Item, lxd: LxdSession, checkouts: list[Checkout], keep: set[str]) -> Callable[[], None]:
    """Call before_reset for each checkout about to be reset; the callable to run after the reset."""
    resetting = [c for c in checkouts if c.tracked.name not in keep]
    for c in resetting:
        container = lxd.container(c.tracked.name, c.instance)
        item.ihook.pytest_lxdsnap_before_reset(item=item, container=container, strategy=c.strategy)

    def after() -> None:
        for c in resetting:
            item.ihook.pytest_lxdsnap_after_reset(item=item, name=c.tracked.name, strategy=c.strategy)

    return after


def cleanup_keep(config: pytest.Config, lxd: LxdSession) -> set[str]:
    """Call pytest_lxdsnap_cleanup; the declared containers its implementations ask to keep."""
    containers = {t.name: lxd.container(t.name, t.instance) for t in lxd.tracked.values()}
    keep: set[str] = set()
    for result in config.hook.pytest_lxdsnap_cleanup(config=config, containers=containers):
        if result is None:
            continue
        if isinstance(result, str) or not isinstance(result, Iterable):
            raise HookError(f"hook pytest_lxdsnap_cleanup must return None or a list of container names, "
                            f"got {result!r}")
        for name in result:
            tracked = lxd.tracked.get(name) if isinstance(name, str) else None
            if tracked is None or not tracked.declared:
                raise HookError(
                    f"hook pytest_lxdsnap_cleanup asked to keep {name!r}, which is not a declared container of "
                    f"this session (declared: {', '.join(t.name for t in lxd.tracked.values() if t.declared)}); "
                    "existing containers are always restored"
                )
            keep.add(name)
    return keep
