"""Cluster members (pytest_lxdsnap.lxd.members): an LXD fault told as "member X is offline", from the texts LXD
5.0 gave on the loopback cluster when a member's daemon was killed; members from made-up listings."""

from __future__ import annotations

from typing import Any

import pytest
from pylxd.exceptions import LXDAPIException

from pytest_lxdsnap.lxd import lxdapi, members

UNREACHABLE = ('Get "https://127.0.0.3:8443/1.0/instances/c/state": Unable to connect to: 127.0.0.3:8443 ([dial tcp '
               '127.0.0.3:8443: connect: connection refused])')


class Response:
    def __init__(self, error: str) -> None:
        self.error = error
        self.status_code = 500

    def json(self) -> dict[str, Any]:
        return {"error": self.error}


def fault(text: str) -> LXDAPIException:
    return LXDAPIException(Response(text))  # type: ignore[arg-type]


class Cluster:
    """A client of a 2-member cluster whose member listing is served by the monkeypatched lxdapi.listing."""

    def __init__(self) -> None:
        self.host_info = {"environment": {"server_clustered": True}}
        self.api = type("Api", (), {"cluster": type("C", (), {"members": "members"})})()


@pytest.fixture
def two_members(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    records = [{"server_name": "m1", "url": "https://127.0.0.2:8443", "status": "Online", "message": "ok"},
               {"server_name": "m2", "url": "https://127.0.0.3:8443", "status": "Online", "message": "ok"}]
    monkeypatch.setattr(lxdapi, "listing", lambda node, **kw: records)
    return Cluster()


def test_a_refused_connection_to_a_member_names_the_member(two_members):
    text = members.explain(two_members, fault(UNREACHABLE))  # type: ignore[arg-type]
    assert text.startswith("cluster member 'm2' (127.0.0.3:8443) is offline: its daemon does not answer. Tests on "
                           "its containers fail until it is back; then `lxdsnap gc` restores")
    assert text.endswith(f"({UNREACHABLE})")


def test_any_other_fault_is_told_as_lxd_tells_it(two_members):
    assert members.explain(two_members, fault("Instance not found")) == "Instance not found"  # type: ignore[arg-type]


def test_on_a_standalone_server_nothing_is_a_member(monkeypatch: pytest.MonkeyPatch):
    standalone = type("S", (), {"host_info": {"environment": {"server_clustered": False}}})()
    assert members.member_states(standalone) == []  # type: ignore[arg-type]
    assert members.explain(standalone, fault(UNREACHABLE)) == UNREACHABLE  # type: ignore[arg-type]


def test_an_instance_listed_without_config_and_in_error_is_on_an_offline_member():
    assert members.on_offline_member({"name": "c", "config": None, "status": "Error", "location": "m2"})
    assert not members.on_offline_member({"name": "c", "config": {}, "status": "Error", "location": "m2"})
