"""What a test gets (pytest_lxdsnap.handle): the ``lxd`` mapping, and a Container that testcontainers' wait
strategies accept. The protocol is read from the installed testcontainers, member by member, so a member a later
testcontainers adds fails here until the adapter has it. The same strategies run on a real container in
tests/test_wait_target.py. No daemon here."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest
from testcontainers.core.waiting_utils import WaitStrategyTarget

from pytest_lxdsnap.errors import LxdSnapError, UndeclaredContainer
from pytest_lxdsnap.handle import Container, Containers
from pytest_lxdsnap.lxd import ports

from ..helpers import protocol_members

NODEID = "tests/test_app.py::test_it"


# -- the lxd mapping ----------------------------------------------------------------------------------------------

def test_an_undeclared_name_is_not_in_the_mapping():
    lxd = Containers(NODEID, {})
    assert "db" not in lxd
    assert lxd.get("db") is None
    assert lxd.get("db", "fallback") == "fallback"
    assert len(lxd) == 0 and list(lxd) == [] and dict(lxd) == {}


def test_asking_for_an_undeclared_name_is_a_key_error_that_says_how_to_declare_it():
    lxd = Containers(NODEID, {})
    with pytest.raises(UndeclaredContainer) as raised:
        lxd["db"]
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, LxdSnapError)
    assert str(raised.value) == (f"container 'db' is not declared for {NODEID} (declared: ); add it to the marker: "
                                 '@pytest.mark.lxd("db")')  # unquoted, unlike a plain KeyError's message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no KeyError chained above it


def test_the_declared_containers_are_a_read_only_mapping_in_marker_order():
    web, db = Container(None, "web", "lxdsnap-web-ab12cd34-1"), Container(None, "db", "db")  # type: ignore[arg-type]
    lxd = Containers(NODEID, {"web": web, "db": db})
    assert list(lxd) == ["web", "db"] and len(lxd) == 2
    assert lxd["web"] is web and lxd.get("db") is db and "web" in lxd and "cache" not in lxd
    assert dict(lxd.items()) == {"web": web, "db": db}
    with pytest.raises(UndeclaredContainer, match=r'\(declared: "web", "db"\); add it to the marker: '
                                                  r'@pytest.mark.lxd\("web", "db", "cache"\)$'):
        lxd["cache"]
    with pytest.raises(TypeError):
        lxd["cache"] = web  # type: ignore[index]
    assert repr(web) == "<lxdsnap.Container 'web' instance='lxdsnap-web-ab12cd34-1'>"


# -- testcontainers' WaitStrategyTarget ----------------------------------------------------------------------------

MEMBERS = protocol_members(WaitStrategyTarget)


def test_the_protocol_is_read_whole():
    assert {"get_container_host_ip", "get_exposed_port", "get_logs", "status"} <= set(MEMBERS)  # the reading works
    get_protocol_members = getattr(typing, "get_protocol_members", None)  # Python 3.13+
    if get_protocol_members is None:
        typing_extensions = pytest.importorskip("typing_extensions")
        get_protocol_members = typing_extensions.get_protocol_members
    assert set(MEMBERS) == set(get_protocol_members(WaitStrategyTarget))


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_the_container_has_every_member_of_testcontainers_wait_strategy_target(name):
    declared = MEMBERS[name]
    try:
        ours = inspect.getattr_static(Container, name)
    except AttributeError:
        pytest.fail(f"WaitStrategyTarget.{name} (testcontainers) has no counterpart on lxdsnap's Container")
    if isinstance(declared, property):
        assert isinstance(ours, property), f"Container.{name} must be a property, as WaitStrategyTarget's is"
        want, got = typing.get_type_hints(declared.fget), typing.get_type_hints(ours.fget)
    elif callable(declared):
        assert callable(ours) and not isinstance(ours, property | staticmethod), f"Container.{name} is no method"
        wanted, given = inspect.signature(declared), inspect.signature(ours)
        params = list(wanted.parameters.values())[1:]  # without self
        given.bind(None, *(object() for p in params if p.default is p.empty))  # our method takes its arguments
        assert [p.name for p in list(given.parameters.values())[1:len(params) + 1]] == [p.name for p in params]
        want, got = typing.get_type_hints(declared), typing.get_type_hints(ours)
    else:
        return  # a plain attribute: its presence is enough
    if want.get("return", Any) is not Any:
        assert got.get("return") == want["return"], f"Container.{name} returns {got.get('return')}, not {want}"


class FakeClient:
    """Just enough of pylxd's client for WrappedInstance: the instance's state."""

    def __init__(self, status: str) -> None:
        self.status = status
        outer = self

        class Node:
            def get(self) -> Any:
                return self

            def json(self) -> dict[str, Any]:
                return {"metadata": {"status": outer.status}}

            def __getitem__(self, name: str) -> Any:
                return self

            def __getattr__(self, name: str) -> Any:
                return self

        self.api = Node()


@pytest.mark.parametrize(("lxd", "docker"), [("Running", "running"), ("Stopped", "exited"), ("Frozen", "paused"),
                                             ("Starting", "starting")])
def test_the_wrapped_container_reads_like_dockers_to_the_wait_strategies(lxd, docker):
    client = FakeClient(lxd)
    wrapped = ports.WrappedInstance(client, "web")  # type: ignore[arg-type]
    assert wrapped.status == docker and wrapped.attrs["State"] == {"Status": docker, "ExitCode": 0, "Error": ""}
    client.status = "Running"
    wrapped.reload()  # the strategies reload, then read the status again
    assert wrapped.status == "running"
