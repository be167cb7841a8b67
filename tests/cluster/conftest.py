"""The cluster tier: a real 2-member cluster on loopback (``lxdsnap cluster up 2 [--incus]``: two more daemons
of the suite's backend beside the host's, their own directories, 127.0.0.2 and 127.0.0.3), built once at the
start of the tier and torn down at its end, even when tests fail. The host's main daemon is never asked to
change anything; the suite's own leftover checks still watch it.

Every test gets the cluster with nothing of lxdsnap's or the suite's on any member, and must leave it so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pylxd
import pytest

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import cluster
from pytest_lxdsnap.host.cluster import Member
from pytest_lxdsnap.lxd.connection import Endpoint, connect

from ..helpers import BACKEND, plugin_leftovers

MEMBERS = 2


@dataclass
class Cluster:
    members: list[Member]
    seconds_up: float

    def client(self, index: int = 1) -> pylxd.Client:
        """A client through member ``index``'s socket (any member sees the whole cluster)."""
        return connect(Endpoint(url=self.members[index - 1].socket))

    def endpoint(self, index: int = 1) -> str:
        return f"--lxd-endpoint={self.members[index - 1].socket}"

    def rejoin(self, member: Member) -> None:
        """Start ``member`` again and wait until member 1 reaches it."""
        cluster.rejoin(member, self.members[0])

    def leftovers(self) -> list[str]:
        return plugin_leftovers(self.client())


@pytest.fixture(scope="session")
def lxd_cluster() -> Iterator[Cluster]:
    start = time.monotonic()
    try:
        members = cluster.up(MEMBERS, log=lambda line: print(f"cluster: {line}"), backend=BACKEND)
    except LxdSnapError as exc:
        cluster.down(log=lambda line: None, backend=BACKEND)
        message = f"the cluster tier needs a loopback LXD cluster; `lxdsnap cluster up {MEMBERS}` failed: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    made = Cluster(members, time.monotonic() - start)
    try:
        yield made
        left = made.leftovers()
        assert not left, f"the cluster tier left on the cluster: {left}"
    finally:
        cluster.down(log=lambda line: None, backend=BACKEND)
        assert not cluster.ROOT.exists(), f"{cluster.ROOT} is still there after `lxdsnap cluster down`"


@pytest.fixture
def on_cluster(lxd_cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, and after the test: every member back and nothing of the plugin's or the suite's on it."""
    assert lxd_cluster.leftovers() == []
    yield lxd_cluster
    for member in lxd_cluster.members[1:]:
        lxd_cluster.rejoin(member)  # a fault test may have killed one: it comes back, as a member would
    assert lxd_cluster.leftovers() == [], "left on the cluster"
