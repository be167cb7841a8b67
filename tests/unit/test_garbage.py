"""What ``lxdsnap gc`` and each session's sweep decide to clean (pytest_lxdsnap.safety.garbage.find_garbage), on
made-up records shaped like LXD's listings: instances a dead session created or held, kept states, reuse builds,
foreign copies, stray snapshots, lease profiles and session projects; and everything a live session holds is left
alone. The decisions are read without a daemon: LXD's listings are served from these records (find_garbage lists
and decides in one function; see the report of this change for the split that would make this a plain call), and
the cleaning steps are never run."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from pytest_lxdsnap.lxd import lxdapi, projects
from pytest_lxdsnap.safety import garbage, leases
from pytest_lxdsnap.safety.ownership import (
    BUILDING_KEY,
    CREATED_KEY,
    KEPT_KEY,
    LEASE_KEY,
    OWNER_KEY,
    RECOVERING_KEY,
    REUSE_KEY,
    SessionIdentity,
    kept_config,
    place,
)
from pytest_lxdsnap.session.reuse import REUSE_NAME_KEY

NOW = 2_000_000_000.0  # the server's clock
SERVER = "f00dfeedc0ffee00" * 4  # the server's certificate fingerprint: tags are bound to it

ME = SessionIdentity()  # this process: alive by proof from this machine
DEAD = replace(SessionIdentity(), pid=2**22 + 1)  # no such process here: dead, whatever its lease says
REMOTE = replace(SessionIdentity(), host="ci-runner-7", machine_id="7" * 32)  # elsewhere: its lease decides
REMOTE_LEASED = replace(REMOTE, token="ee11ee11")
GC = SessionIdentity()  # the caller


def where(name: str) -> str:
    return place(None, name, SERVER)


def instance(name: str, **config: str) -> dict[str, Any]:
    return {"name": name, "config": config, "status": "Running", "created_at": "2026-06-01T10:00:00Z"}


def tag(holder: SessionIdentity, name: str) -> str:
    return holder.tag(where(name))


def snapshot(name: str, holder: SessionIdentity | None, bound_to: str) -> dict[str, Any]:
    return {"name": name, "config": {OWNER_KEY: holder.tag(where(bound_to))} if holder else {}}


def lease_profile(holder: SessionIdentity, until: float) -> dict[str, Any]:
    name = leases.profile_name(holder)
    return {"name": name, "config": {OWNER_KEY: holder.tag(f"profile:{name}"), LEASE_KEY: f"{until:.0f}"}}


def project(creator: SessionIdentity) -> dict[str, Any]:
    name = projects.project_name(creator)
    return {"name": name, "config": {CREATED_KEY: creator.tag(f"project:{name}")}}


class FakeClient:
    """A client whose listings come from records: find_garbage reads these, and nothing is ever changed."""

    project = None

    def __init__(self, instances: list[dict[str, Any]], snapshots: dict[str, list[dict[str, Any]]],
                 profiles: list[dict[str, Any]], session_projects: list[dict[str, Any]]) -> None:
        self.host_info = {"environment": {"server": "lxd", "certificate_fingerprint": SERVER}}
        self.records = {"instances": instances, "profiles": [*profiles, {"name": "default", "config": {}}],
                        "projects": [*session_projects, {"name": "default", "config": {}}]}
        self.snapshots = snapshots

        class Api:
            instances, profiles, projects = "instances", "profiles", "projects"

        self.api = Api()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch):
    """Serve LXD's listings from a FakeClient's records; fail on anything else find_garbage might ask LXD."""
    monkeypatch.setattr(lxdapi, "listing", lambda node, **kw: FakeClient.current.records[node])
    monkeypatch.setattr(lxdapi, "server_now", lambda client: NOW)
    monkeypatch.setattr(lxdapi, "list_snapshots", lambda client, name: client.snapshots.get(name, []))

    def decide(instances: list[dict[str, Any]], *, snapshots: dict[str, list[dict[str, Any]]] | None = None,
               profiles: list[dict[str, Any]] = (), session_projects: list[dict[str, Any]] = ()) -> dict[str, str]:
        client = FakeClient(instances, snapshots or {}, list(profiles), list(session_projects))
        FakeClient.current = client
        found = garbage.find_garbage(client, GC)  # type: ignore[arg-type]
        assert all(callable(g.clean) for g in found)
        return {g.name: f"{g.kind}: {g.why}" for g in found}

    return decide


def test_what_a_dead_session_created_is_deleted_and_a_live_ones_is_not(served):
    found = served([instance("lxdsnap-web-dead-1", **{CREATED_KEY: tag(DEAD, "lxdsnap-web-dead-1"),
                                                      OWNER_KEY: tag(DEAD, "lxdsnap-web-dead-1")}),
                    instance("lxdsnap-web-live-1", **{CREATED_KEY: tag(ME, "lxdsnap-web-live-1"),
                                                      OWNER_KEY: tag(ME, "lxdsnap-web-live-1")})])
    assert found == {"lxdsnap-web-dead-1": f"created: created by session {DEAD.token} on {DEAD.host}, which is dead "
                                           f"(pid {DEAD.pid} in this PID namespace is gone)"}


def test_an_existing_instance_a_dead_session_held_is_recovered(served):
    found = served([instance("mine", **{OWNER_KEY: tag(DEAD, "mine")}),
                    instance("ours", **{OWNER_KEY: tag(ME, "ours")}), instance("plain")])
    assert list(found) == ["mine"]
    assert found["mine"].startswith(f"held: held by session {DEAD.token} on {DEAD.host}, which is dead (pid ")
    assert found["mine"].endswith("): restore its baseline")


def test_a_session_elsewhere_is_judged_by_its_lease_on_the_servers_clock(served):
    found = served([instance("a", **{OWNER_KEY: tag(REMOTE, "a")}),
                    instance("b", **{OWNER_KEY: tag(REMOTE_LEASED, "b")})],
                   profiles=[lease_profile(REMOTE, NOW - 1), lease_profile(REMOTE_LEASED, NOW + 30)])
    assert found == {"a": f"held: held by session {REMOTE.token} on ci-runner-7, which is dead (its lease ran out): "
                          "restore its baseline",
                     leases.profile_name(REMOTE): f"lease: the lease of session {REMOTE.token}, dead (its lease ran "
                                                  "out)"}


def test_a_session_elsewhere_without_a_lease_is_dead(served):
    found = served([instance("a", **{OWNER_KEY: tag(REMOTE, "a")})])
    assert found == {"a": f"held: held by session {REMOTE.token} on ci-runner-7, which is dead (it holds no lease): "
                          "restore its baseline"}


def test_a_live_sessions_lease_stays_even_when_it_ran_out(served):
    found = served([], profiles=[lease_profile(ME, NOW - 600), lease_profile(DEAD, NOW + 600)])
    assert found == {leases.profile_name(DEAD): f"lease: the lease of session {DEAD.token}, dead (pid {DEAD.pid} in "
                                                "this PID namespace is gone)"}


def test_a_copy_is_foreign_listed_with_its_commands_and_nothing_else_on_it_is_touched(served):
    found = served([instance("backup", **{OWNER_KEY: tag(DEAD, "mine"), "user.lxdsnap.power": "Running"})],
                   snapshots={"backup": [snapshot("lxdsnap-dead0001-base", DEAD, "mine")]})
    assert list(found) == ["backup"]
    assert found["backup"].startswith("foreign: it carries lxdsnap's key user.lxdsnap.owner, key user.lxdsnap.power, "
                                      "snapshot lxdsnap-dead0001-base, written for another instance (a copy): left "
                                      "alone. Clean it with `lxdsnap gc --foreign`, or by hand: ")
    assert "`lxc config unset backup user.lxdsnap.owner`" in found["backup"]


def test_a_plugin_snapshot_that_came_with_a_copy_is_foreign_too(served):
    found = served([instance("copy")], snapshots={"copy": [snapshot("lxdsnap-dead0001-base", ME, "original")]})
    assert list(found) == ["copy"] and found["copy"].startswith("foreign: it carries lxdsnap's snapshot ")


def test_a_dead_sessions_snapshot_on_an_instance_nobody_holds_is_deleted_and_others_stay(served):
    snaps = [snapshot("lxdsnap-dead0001-base", DEAD, "mine"),  # a dead session's baseline: garbage
             snapshot("lxdsnap-dead0001-failed-1", DEAD, "mine"),  # kept on purpose: LXD expires it
             snapshot("lxdsnap-live0001-base", ME, "mine"),  # a live session's
             snapshot("lxdsnap-user0001-base", None, "mine"),  # the plugin's shape, no tag: the user's
             snapshot("daily", DEAD, "mine")]  # a tag, but not the plugin's name shape
    found = served([instance("mine")], snapshots={"mine": snaps})
    assert found == {"mine/lxdsnap-dead0001-base": f"snapshot: of session {DEAD.token}, dead (pid {DEAD.pid} in this "
                                                   "PID namespace is gone)"}


def test_the_holders_own_baseline_and_the_one_a_recovery_puts_back_stay(served):
    other_dead = replace(DEAD, token="dead0002", pid=2**22 + 2)
    snaps = [snapshot("lxdsnap-dead0001-base", DEAD, "mine"), snapshot("lxdsnap-dead0002-base", other_dead, "mine")]
    found = served([instance("mine", **{OWNER_KEY: tag(ME, "mine"), RECOVERING_KEY: tag(DEAD, "mine")})],
                   snapshots={"mine": snaps})
    assert found == {"mine/lxdsnap-dead0002-base": f"snapshot: of session dead0002, dead (pid {other_dead.pid} in this "
                                                   "PID namespace is gone)"}


def test_a_kept_failed_state_goes_once_past_its_expiry(served):
    found = served([instance("lxdsnap-web-a-failed-1", **kept_config(NOW - 1, where("lxdsnap-web-a-failed-1"))),
                    instance("lxdsnap-web-b-failed-1", **kept_config(NOW + 60, where("lxdsnap-web-b-failed-1")))])
    assert found == {"lxdsnap-web-a-failed-1": "kept: a kept failed-test state past its expiry"}


def test_a_kept_state_copied_elsewhere_is_foreign(served):
    found = served([instance("debug-web", **kept_config(NOW - 1, where("lxdsnap-web-a-failed-1")))])
    assert list(found) == ["debug-web"]
    assert found["debug-web"].startswith(f"foreign: it carries lxdsnap's key {KEPT_KEY}")


def test_a_reuse_build_goes_unless_a_live_session_holds_or_builds_it(served):
    def build(name: str, **config: str) -> dict[str, Any]:
        return instance(name, **{REUSE_KEY: name[-10:], REUSE_NAME_KEY: "web", **config})

    found = served([build("lxdsnap-keep-web-0000000001"),
                    build("lxdsnap-keep-web-0000000002", **{OWNER_KEY: tag(ME, "lxdsnap-keep-web-0000000002")}),
                    build("lxdsnap-keep-web-0000000003", **{BUILDING_KEY: tag(ME, "lxdsnap-keep-web-0000000003")}),
                    build("lxdsnap-keep-web-0000000004", **{OWNER_KEY: tag(DEAD, "lxdsnap-keep-web-0000000004")})])
    assert found == {"lxdsnap-keep-web-0000000001": "reuse: a declared container kept for reuse (--lxd-reuse)",
                     "lxdsnap-keep-web-0000000004": "reuse: a declared container kept for reuse (--lxd-reuse)"}


def test_a_dead_sessions_project_goes_and_a_live_ones_stays(served):
    found = served([], session_projects=[project(DEAD), project(ME)])
    assert found == {projects.project_name(DEAD): f"project: of session {DEAD.token}, dead (pid {DEAD.pid} in this "
                                                  "PID namespace is gone): delete its instances and the project"}


def test_a_live_session_leaves_nothing_to_collect(served):
    name = "lxdsnap-web-live-1"
    found = served([instance(name, **{CREATED_KEY: tag(ME, name), OWNER_KEY: tag(ME, name)}),
                    instance("mine", **{OWNER_KEY: tag(ME, "mine")})],
                   snapshots={"mine": [snapshot("lxdsnap-live0001-base", ME, "mine")]},
                   profiles=[lease_profile(ME, time.time() + 60)], session_projects=[project(ME)])
    assert found == {}


def test_an_instance_on_an_offline_cluster_member_is_reported_not_read(served):
    offline = {"name": "far", "config": None, "status": "Error", "location": "m2", "devices": None}
    found = served([offline, instance("lxdsnap-web-dead-1", **{CREATED_KEY: tag(DEAD, "lxdsnap-web-dead-1")})],
                   snapshots={"far": [{"name": "must-not-be-read", "config": None}]})
    assert found["far"] == ("offline: on cluster member 'm2', which is offline: not looked at. Run `lxdsnap gc` "
                            "again once it is back")
    assert found["lxdsnap-web-dead-1"].startswith("created: ")
