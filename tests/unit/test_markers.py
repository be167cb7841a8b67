"""The ``lxd`` marker (pytest_lxdsnap.markers): its grammar, the names and options a test gets from its own,
its class's and its module's markers, the scope keys that decide which tests share a state, and what a test
asks of each container. Items come from in-process collection (pytester.getitems); no daemon."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.declarations import parse_container
from pytest_lxdsnap.markers import (
    MARKER_HELP,
    clone_of_existing,
    marker_names,
    marker_option,
    requests_for,
    scope_key,
    validate,
)
from pytest_lxdsnap.model import Request
from pytest_lxdsnap.session.strategy import SCOPES, STRATEGIES


def items(pytester: pytest.Pytester, source: str) -> dict[str, pytest.Item]:
    """The collected items of one module, by name."""
    collected = pytester.getitems(source)
    return {item.name: item for item in collected}


# -- the grammar --------------------------------------------------------------------------------------------------

def test_validate_returns_the_names_and_accepts_each_strategy_and_scope():
    assert validate("web", "db-2") == ("web", "db-2")
    for strategy in STRATEGIES:
        assert validate("web", strategy=strategy) == ("web",)
    for scope in SCOPES:
        assert validate("web", scope=scope) == ("web",)
    assert validate("a" * 63) == ("a" * 63,)  # an existing instance's name may use LXD's whole limit


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((), {}, "@pytest.mark.lxd needs at least one container name"),
    (("web/snap",), {}, "'web/snap' is not a container name"),
    (("1web",), {}, "'1web' is not a container name"),
    (("a" * 64,), {}, "is not a container name"),
    ((["web"],), {}, r"\['web'\] is not a container name"),
    (("web",), {"strategy": "fast"}, "strategy: unknown value 'fast'; valid values: auto"),
    (("web",), {"strategy": None}, "strategy: unknown value None"),
    (("web",), {"scope": "session"}, "scope: unknown value 'session'; valid values: function"),
    (("web",), {"speed": "fast"}, "unknown option 'speed'; valid options: strategy"),
])
def test_a_bad_marker_is_a_value_error_that_says_what_is_wrong(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate(*args, **kwargs)


def test_the_marker_is_registered_with_its_signature():
    assert MARKER_HELP.startswith("lxd(*names, strategy=None, scope=None): ")


# -- names and options from the test, its class and its module ------------------------------------------------------

MARKED = """
import pytest

pytestmark = pytest.mark.lxd("shared", strategy="recipe")


@pytest.mark.lxd("web", "db")
def test_function(lxd):
    pass


def test_module_only(lxd):
    pass


@pytest.mark.lxd("web", scope="class")
class TestClass:
    @pytest.mark.lxd("db", "web", strategy="inplace")
    def test_method(self, lxd):
        pass

    def test_class_only(self, lxd):
        pass
"""


def test_names_combine_closest_first_without_repeats(pytester):
    found = items(pytester, MARKED)
    assert marker_names(found["test_function"]) == ("web", "db", "shared")
    assert marker_names(found["test_module_only"]) == ("shared",)
    assert marker_names(found["test_method"]) == ("db", "web", "shared")
    assert marker_names(found["test_class_only"]) == ("web", "shared")


def test_the_closest_marker_with_an_option_wins(pytester):
    found = items(pytester, MARKED)
    assert marker_option(found["test_method"], "strategy") == "inplace"  # the test's own
    assert marker_option(found["test_class_only"], "strategy") == "recipe"  # the class's says none: the module's
    assert marker_option(found["test_class_only"], "scope") == "class"
    assert marker_option(found["test_function"], "scope") is None


# -- scope keys ---------------------------------------------------------------------------------------------------

SCOPED = """
import pytest


class TestOne:
    def test_a(self):
        pass

    def test_b(self):
        pass


class TestTwo:
    def test_c(self):
        pass


def test_free():
    pass


@pytest.mark.parametrize("i", range(2))
def test_param(i):
    pass
"""


def test_scope_keys_group_by_test_class_and_module(pytester):
    found = items(pytester, SCOPED)
    a, b, c, free = found["test_a"], found["test_b"], found["test_c"], found["test_free"]
    module = "test_scope_keys_group_by_test_class_and_module.py"
    assert scope_key(a, "function") == f"function:{module}::TestOne::test_a"
    assert scope_key(a, "function") != scope_key(b, "function")
    assert scope_key(a, "class") == scope_key(b, "class") == f"class:{module}::TestOne"
    assert scope_key(c, "class") == f"class:{module}::TestTwo" != scope_key(a, "class")
    assert scope_key(a, "module") == scope_key(c, "module") == scope_key(free, "module") == f"module:{module}"
    params = [item for name, item in found.items() if name.startswith("test_param")]
    assert len({scope_key(item, "function") for item in params}) == 2  # each parametrized case is its own test


def test_a_test_outside_any_class_with_scope_class_shares_its_modules_state(pytester):
    found = items(pytester, SCOPED)
    module = "test_a_test_outside_any_class_with_scope_class_shares_its_modules_state.py"
    assert scope_key(found["test_free"], "class") == f"class:{module}"
    assert scope_key(found["test_free"], "class") == scope_key(found["test_param[0]"], "class")
    assert scope_key(found["test_free"], "class") != scope_key(found["test_a"], "class")


# -- what a test asks of each container ---------------------------------------------------------------------------

REQUESTS = """
import pytest


@pytest.mark.lxd("web", "mine")
def test_plain(lxd):
    pass


@pytest.mark.lxd("web", "mine", strategy="recipe", scope="module")
def test_explicit(lxd):
    pass


@pytest.mark.lxd("mine", strategy="clone")
def test_clone_of_existing(lxd):
    pass


@pytest.mark.lxd("web", strategy="clone")
def test_clone_of_declared(lxd):
    pass
"""


def test_requests_take_the_declared_scope_unless_the_marker_names_one(pytester):
    found = items(pytester, REQUESTS)
    specs = {"web": parse_container("web", {"image": "x", "scope": "class", "strategy": "inplace"})}
    module = "test_requests_take_the_declared_scope_unless_the_marker_names_one.py"
    assert requests_for(found["test_plain"], specs) == [
        Request("web", None, f"class:{module}"),  # the declaration's scope; its strategy is applied later
        Request("mine", None, f"function:{module}::test_plain"),
    ]
    assert requests_for(found["test_explicit"], specs) == [
        Request("web", "recipe", f"module:{module}"), Request("mine", "recipe", f"module:{module}")]
    assert requests_for(found["test_plain"], specs) is requests_for(found["test_plain"], {})  # worked out once


def test_a_choose_strategy_hook_decides_per_container(pytester):
    pytester.makeconftest("""
        def pytest_lxdsnap_choose_strategy(item, name, declared, requested):
            return "readonly" if declared else None
    """)
    found = items(pytester, REQUESTS)
    specs = {"web": parse_container("web", {"image": "x"})}
    assert [(r.name, r.strategy) for r in requests_for(found["test_explicit"], specs)] == [
        ("web", "readonly"), ("mine", "recipe")]


def test_clone_is_refused_for_an_existing_instance_only(pytester):
    found = items(pytester, REQUESTS)
    specs = {"web": parse_container("web", {"image": "x"})}
    refusal = clone_of_existing(found["test_clone_of_existing"], specs)
    assert refusal is not None
    assert refusal.startswith(f"{found['test_clone_of_existing'].nodeid}: strategy 'clone' needs declared containers, "
                              "and 'mine' is an existing instance")
    assert "declare it in [tool.lxdsnap.containers.mine]" in refusal
    assert clone_of_existing(found["test_clone_of_declared"], specs) is None
    assert clone_of_existing(found["test_plain"], specs) is None
