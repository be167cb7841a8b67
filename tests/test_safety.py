"""The tutorial's warning as a rule: the plugin deletes only what it owns, checked before each call."""

from __future__ import annotations

import datetime
import time

import pytest

from pytest_lxdsnap.errors import OwnershipError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import OWNER_KEY, SessionIdentity

from .helpers import as_found, assert_left_as_found, lxc, snapshot_names


def test_a_user_snapshot_with_the_plugin_prefix_is_never_deleted(lxd_client, make_instance):
    me = SessionIdentity()
    name = make_instance(snapshot=me.snapshot_name("base"))
    with pytest.raises(OwnershipError, match=r"does not carry this session's user\.lxdsnap\.owner tag"):
        lxdapi.delete_owned_snapshot(lxd_client, name, me.snapshot_name("base"), me)
    assert snapshot_names(lxd_client, name) == [me.snapshot_name("base")]


def test_another_sessions_snapshot_is_not_deleted(lxd_client, make_instance):
    me, other = SessionIdentity(), SessionIdentity()
    name = make_instance()
    lxdapi.set_config_key(lxd_client, name, OWNER_KEY, other.tag(lxdapi.where(lxd_client, name)))
    lxdapi.create_owned_snapshot(lxd_client, name, other.snapshot_name("base"), other, ttl=600)
    with pytest.raises(OwnershipError):
        lxdapi.delete_owned_snapshot(lxd_client, name, other.snapshot_name("base"), me)
    assert snapshot_names(lxd_client, name) == [other.snapshot_name("base")]
    lxdapi.delete_owned_snapshot(lxd_client, name, other.snapshot_name("base"), other)
    assert snapshot_names(lxd_client, name) == []


@pytest.mark.parametrize("snapshot", ["", "/", "user-snap", "lxdsnap-"])
def test_the_snapshot_path_cannot_delete_an_instance(lxd_client, make_instance, snapshot):
    me = SessionIdentity()
    name = make_instance(running=False, snapshot="user-snap")
    with pytest.raises(OwnershipError):
        lxdapi.delete_owned_snapshot(lxd_client, name, snapshot, me)
    assert lxdapi.instance_exists(lxd_client, name)
    assert snapshot_names(lxd_client, name) == ["user-snap"]


def test_an_instance_the_session_did_not_create_is_never_deleted(lxd_client, make_instance):
    me = SessionIdentity()
    name = make_instance(running=False)
    # used, but not created, by this session:
    lxdapi.set_config_key(lxd_client, name, OWNER_KEY, me.tag(lxdapi.where(lxd_client, name)))
    with pytest.raises(OwnershipError, match=f"refusing to delete instance '{name}': this session did not create"):
        lxdapi.delete_owned_instance(lxd_client, name, me)
    assert lxdapi.instance_exists(lxd_client, name)


def test_snapshots_expire(lxd_client, make_instance):
    me = SessionIdentity()
    name = make_instance()
    lxdapi.set_config_key(lxd_client, name, OWNER_KEY, me.tag(lxdapi.where(lxd_client, name)))
    lxdapi.create_owned_snapshot(lxd_client, name, me.snapshot_name("base"), me, ttl=3600)
    expires = lxc("query", f"/1.0/instances/{name}/snapshots/{me.snapshot_name('base')}")
    assert '"expires_at": "0001-01-01' not in expires and '"expires_at"' in expires
    lxdapi.delete_owned_snapshot(lxd_client, name, me.snapshot_name("base"), me)


def test_an_instance_in_use_by_another_session_is_refused(suite, make_instance, lxd_client):
    other = SessionIdentity()
    name = make_instance()
    lxdapi.set_config_key(lxd_client, name, OWNER_KEY, other.tag(lxdapi.where(lxd_client, name)))
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        def test_it(lxd):
            raise AssertionError("must not run")
    """)
    result = suite.runpytest("--lxd-lease-wait=1")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*instance '{name}' is in use by another lxdsnap session "
                                 f"(host *, pid {other.pid}, token {other.token}, started *; pid {other.pid} in this "
                                 "PID namespace still runs); waited 1 s. *"])
    assert lxdapi.get_instance(lxd_client, name)["config"][OWNER_KEY] == other.tag(lxdapi.where(lxd_client, name))
    assert snapshot_names(lxd_client, name) == []


def test_the_baseline_outlives_a_test_longer_than_its_ttl(lxd_client, make_instance):
    """The heartbeat pushes a baseline's expiry on while a test runs (a long test, --pdb), with no reset: watched on
    the server's clock until its first expiry is past, the snapshot is still there, pushed on a TTL at a time."""
    from pytest_lxdsnap.lxd.connection import Endpoint
    from pytest_lxdsnap.model import Request
    from pytest_lxdsnap.options import Options
    from pytest_lxdsnap.session.core import LxdSession

    ttl = 2.0

    def expiry(instance: str, snapshot: str) -> tuple[float, float]:
        """The snapshot's expiry, and the server's clock when it answered (both to a second)."""
        response = lxd_client.api.instances[instance].snapshots[snapshot].get()  # NotFound: LXD had it expire
        stamp = datetime.datetime.fromisoformat(response.json()["metadata"]["expires_at"]).timestamp()
        return stamp, lxdapi.response_time(response)

    name = make_instance()
    found = as_found(lxd_client, name)
    session = LxdSession(Endpoint(), {}, Options(lxd_snapshot_ttl=ttl))
    session.connect()
    try:
        session.plan([Request(name)])
        (checkout,) = session.acquire((name,))
        snapshot = checkout.tracked.snapshot
        first, now = expiry(name, snapshot)
        assert now < first <= now + ttl + 1, "the baseline's first expiry is not a TTL away"
        pushes = [(now, first)]
        deadline = time.monotonic() + 10 * ttl
        while now <= first + 1 or len(pushes) < 3:  # the first expiry well past, and pushed on twice
            assert time.monotonic() < deadline, f"the expiry was not pushed on (server time, expiry): {pushes}"
            time.sleep(0.1)
            until, now = expiry(name, snapshot)
            if until != pushes[-1][1]:
                pushes.append((now, until))
                assert until > pushes[-2][1] and now < until <= now + ttl + 1, f"a push, but not a TTL on: {pushes}"
        session.release([checkout])
    finally:
        leftovers = session.finish()  # also when an assertion failed: no lease or claim outlives the test
    assert leftovers == []
    assert_left_as_found(lxd_client, name, found)
