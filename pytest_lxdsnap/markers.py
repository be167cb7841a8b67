"""The ``lxd`` marker: its grammar, and what a marked test asks of each container (strategy, scope key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_lxdsnap.declarations import ContainerSpec, is_instance_name
from pytest_lxdsnap.session.strategy import SCOPES, STRATEGIES, check

if TYPE_CHECKING:  # only for annotations: a suite without marked tests never loads the session (or pylxd)
    from pytest_lxdsnap.model import Request

MARKER = "lxd"
MARKER_OPTIONS = {
    "strategy": "how this test gets a clean state: " + ", ".join(STRATEGIES),
    "scope": "how long the state lives: " + ", ".join(SCOPES),
}
MARKER_HELP = (
    "lxd(*names, strategy=None, scope=None): the LXD containers this test uses, by declared name "
    "([tool.lxdsnap.containers.<name>]) or existing instance name; each gets a clean state for the test"
)
REQUESTS: pytest.StashKey[list[Request]] = pytest.StashKey()


def validate(*names: object, **options: object) -> tuple[str, ...]:
    """The marker's API: ``@pytest.mark.lxd("web", "db", strategy=..., scope=...)``; ValueError says what is wrong."""
    if not names:
        raise ValueError("@pytest.mark.lxd needs at least one container name, e.g. @pytest.mark.lxd(\"web\")")
    checked = []
    for name in names:
        if not isinstance(name, str) or not is_instance_name(name):
            raise ValueError(f"@pytest.mark.lxd: {name!r} is not a container name (letters, digits and '-')")
        checked.append(name)
    for option, value in options.items():
        if option == "strategy":
            check(value, "@pytest.mark.lxd strategy", STRATEGIES)
        elif option == "scope":
            check(value, "@pytest.mark.lxd scope", SCOPES)
        else:
            valid = "; ".join(f"{k} ({v})" for k, v in MARKER_OPTIONS.items())
            raise ValueError(f"@pytest.mark.lxd: unknown option {option!r}; valid options: {valid}")
    return tuple(checked)


def marker_names(item: pytest.Item) -> tuple[str, ...]:
    """The container names of every ``lxd`` marker on the item, its class and module (closest first)."""
    names: list[str] = []
    for mark in item.iter_markers(MARKER):
        for name in validate(*mark.args, **mark.kwargs):
            if name not in names:
                names.append(name)
    return tuple(names)


def marker_option(item: pytest.Item, option: str) -> str | None:
    """The closest ``lxd`` marker's value of ``option`` (test, then class, then module)."""
    for mark in item.iter_markers(MARKER):
        if option in mark.kwargs:
            value: str = mark.kwargs[option]
            return value
    return None


def scope_key(item: pytest.Item, scope: str) -> str:
    """Tests with the same key share one state: the test itself, its class (or module) or its module."""
    node: pytest.Item | pytest.Collector | None = item
    if scope == "class":
        node = item.getparent(pytest.Class) or item.getparent(pytest.Module)
    elif scope == "module":
        node = item.getparent(pytest.Module)
    return f"{scope}:{(node or item).nodeid}"


def requests_for(item: pytest.Item, specs: dict[str, ContainerSpec]) -> list[Request]:
    """What the item asks of each container: strategy and the key of the scope its state lives in
    (worked out once per item: the plan, its own fixture and the previous test's teardown all ask)."""
    if REQUESTS in item.stash:
        return item.stash[REQUESTS]
    from pytest_lxdsnap.hookcalls import choose_strategy
    from pytest_lxdsnap.model import Request

    requested = marker_option(item, "strategy")
    scope = marker_option(item, "scope")
    found = []
    for name in marker_names(item):
        spec = specs.get(name)
        strategy = choose_strategy(item, name, spec is not None, requested) or requested
        found.append(Request(name, strategy, scope_key(item, scope or (spec.scope if spec else None) or "function")))
    item.stash[REQUESTS] = found
    return found


def clone_of_existing(item: pytest.Item, specs: dict[str, ContainerSpec]) -> str | None:
    """Why the item's markers cannot be run: strategy 'clone' on an existing instance (None: they can)."""
    undeclared = [n for n in marker_names(item) if n not in specs]
    if marker_option(item, "strategy") != "clone" or not undeclared:
        return None
    return (f"{item.nodeid}: strategy 'clone' needs declared containers, and {undeclared[0]!r} is an existing "
            "instance (it keeps its identity and is restored in place). Use strategy='inplace' for it, or "
            f"declare it in [tool.lxdsnap.containers.{undeclared[0]}]")
