"""The plugin on a real 2-member LXD cluster (see conftest.py): existing containers on another member than the one
the session talks to, declared containers spread over members by pytest-xdist, a member killed mid-session, gc
across members."""

from __future__ import annotations

import fnmatch

import pytest

from pytest_lxdsnap.host import cluster
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import INCUS

from ..helpers import (
    BACKEND,
    COMMANDS,
    DECLARED_WEB,
    TEST_PREFIX,
    as_found,
    assert_left_as_found,
    assert_summary,
    holding_session,
    lxdsnap,
    make_certificate,
    suite_certificates,
    throwaway_name,
)


def make_on(client, member: str, *, snapshot: str | None = None) -> str:
    """A running busybox instance on cluster member ``member``: the user's own container."""
    name = throwaway_name()
    lxdapi.create_instance(client, {"name": name, "source": {"type": "image", "alias": IMAGE_ALIAS}}, target=member)
    lxdapi.set_power(client, name, "start")
    if snapshot:
        lxdapi.wait(client, client.api.instances[name].snapshots.post(json={"name": snapshot}))
    return name


def lxdsnap_gc(on_cluster):
    """`lxdsnap gc` through member 1, as a user runs it."""
    return lxdsnap("--endpoint", on_cluster.members[0].socket, "gc")


def delete(client, name: str) -> None:
    if lxdapi.instance_exists(client, name):
        lxdapi.stop_and_delete(client, name, lxdapi.status(client, name))


def changes(name: str, attempts: int) -> str:
    """The tutorial's suite: each test finds the running container clean, and changes it."""
    return f"""
import pytest

@pytest.mark.lxd("{name}")
@pytest.mark.parametrize("attempt", range({attempts}))
def test_change_the_container(lxd, attempt):
    c = lxd["{name}"]
    assert c.status == "Running"
    assert not c.exists("/root/this_file.txt")
    c.exec(["touch", "/root/this_file.txt"], check=True)
    assert c.exists("/root/this_file.txt")
"""


def test_the_tutorial_on_a_container_on_member_2_reached_through_member_1(suite, on_cluster):
    client = on_cluster.client(1)
    name = make_on(client, "m2", snapshot="ubuntu-test-1")
    try:
        found = as_found(client, name)
        suite.makepyfile(changes(name, 3))
        result = suite.runpytest("-v", on_cluster.endpoint(1))
        result.assert_outcomes(passed=3)
        assert_summary(result, name, kind="existing", instance=name, resets="3", strategies="inplace 3")
        record = lxdapi.get_instance(client, name)
        assert (record["location"], record["status"]) == ("m2", "Running")
        member2 = on_cluster.members[1]
        assert cluster.run(member2, "exec", name, "--", "test", "-e", "/root/this_file.txt",
                           check=False).returncode == 1
        assert_left_as_found(client, name, found)
    finally:
        delete(client, name)


XDIST_SUITE = """
import pathlib
import time

import fnmatch

import pytest

@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range({tests}))
def test_clean(lxd, i):
    c = lxd["web"]
    assert not c.exists("/root/dirty")
    c.write_text("/root/dirty", "x")
    time.sleep(0.2)  # long enough for every worker to get tests
    records = c.client.api.instances.get(params={"recursion": 1}).json()["metadata"]
    where = {r["name"]: r["location"] for r in records}
    bases = " ".join(f"{n}@{m}" for n, m in where.items()  # the bases (shared: -r<key>; a worker's own: <token>)
                     if n.startswith("lxdsnap-web-") and n.count("-") == 2)
    with open(pathlib.Path(__file__).parent / "placed.txt", "a") as out:
        out.write(f"{c.instance_name} {where[c.instance_name]} {bases}\\n")
"""


@pytest.mark.parametrize("workers", [2, 4])
def test_declared_target_list_under_xdist_puts_each_workers_base_and_clones_on_its_own_member(suite, on_cluster,
                                                                                          workers):
    """Workers go round the members (gw0 m1, gw1 m2, gw2 m1 ...); the workers on one member share one base there
    (built by one of them), and every clone is a copy beside its base: on its worker's member, where the one base
    of that member is."""
    suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = ["m1", "m2"]\nstrategy = "clone"\n')
    suite.makepyfile(XDIST_SUITE.replace("{tests}", str(2 * workers)))
    result = suite.runpytest_subprocess("-n", str(workers), on_cluster.endpoint(1))
    result.assert_outcomes(passed=2 * workers)
    placed = [line.split() for line in (suite.path / "placed.txt").read_text().splitlines()]
    assert len(placed) == 2 * workers, placed
    seen: dict[str, set[str]] = {"m1": set(), "m2": set()}
    for clone, where, *bases in placed:
        worker = int(clone.removeprefix("lxdsnap-web-gw")[0])
        assert where == ("m1", "m2")[worker % 2], placed  # the worker's member
        if BACKEND is INCUS:  # each worker builds its own base there (see pytest_lxdsnap.session.shared)
            own = clone if clone.count("-") == 2 else clone.rsplit("-", 1)[0]  # the first test may get the base
            assert f"{own}@{where}" in bases, placed
            continue
        here = [b.split("@")[0] for b in bases if b.endswith(f"@{where}")]
        assert len(here) == 1, placed  # its base is there (the other member's may be gone already)
        seen[where].update(here)
    if BACKEND is INCUS:
        return
    assert [len(seen["m1"]), len(seen["m2"])] == [1, 1], seen  # one base per member for the whole run
    for worker in range(workers):
        assert_summary(result, f"gw{worker}/web", kind="declared", leftovers="0")


KILLS_M2 = """
import os
import signal

import fnmatch

import pytest


@pytest.mark.lxd("{m2}")
def test_a_kills_member_2(lxd):
    lxd["{m2}"].write_text("/root/dirty", "x")
    os.kill({pid}, signal.SIGKILL)  # member m2's daemon dies mid-session


@pytest.mark.lxd("{m1}")
def test_b_on_member_1(lxd):
    assert not lxd["{m1}"].exists("/root/dirty")
    lxd["{m1}"].write_text("/root/dirty", "x")


@pytest.mark.lxd("{m2}")
def test_c_on_member_2_again(lxd):
    raise AssertionError("the body must not run: its member is offline")


@pytest.mark.lxd("{m1}")
def test_d_on_member_1_again(lxd):
    assert not lxd["{m1}"].exists("/root/dirty")
"""


def test_a_member_killed_mid_session_fails_its_tests_by_name_the_others_pass_and_gc_finishes(suite, on_cluster):
    client = on_cluster.client(1)
    on_m1, on_m2 = make_on(client, "m1"), make_on(client, "m2")
    try:
        found = {name: as_found(client, name) for name in (on_m1, on_m2)}
        member2 = on_cluster.members[1]
        suite.makepyfile(KILLS_M2.format(m1=on_m1, m2=on_m2, pid=member2.pid()))
        result = suite.runpytest_subprocess("-v", on_cluster.endpoint(1))
        out = result.stdout.str()
        print(out)
        assert "Traceback" not in out and "INTERNALERROR" not in out
        result.assert_outcomes(passed=3, errors=2)
        result.stdout.fnmatch_lines(["*cluster member 'm2' * offline*"])
        assert_summary(result, on_m1, resets="2", leftovers="0")
        on_cluster.rejoin(member2)  # it comes back: what the session could not clean, gc does
        gc = lxdsnap_gc(on_cluster)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        for name in (on_m1, on_m2):
            assert_left_as_found(client, name, found[name], recovered=None if name == on_m2 else False)
    finally:
        on_cluster.rejoin(on_cluster.members[1])
        delete(client, on_m1)
        delete(client, on_m2)


ONE_TEST = """
import fnmatch

import pytest

@pytest.mark.lxd("web")
def test_it(lxd):
    raise AssertionError("the body must not run")
"""


def test_a_target_on_an_evacuated_member_is_a_usage_error_before_anything_is_created(suite, on_cluster):
    client, member2 = on_cluster.client(1), on_cluster.members[1]
    before = {r["name"] for r in lxdapi.listing(client.api.instances)}
    cluster.run(member2, "cluster", "evacuate", "m2", "--force")
    try:
        suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = ["m1", "m2"]\n')
        suite.makepyfile(ONE_TEST)
        result = suite.runpytest(on_cluster.endpoint(1))
    finally:
        cluster.run(member2, "cluster", "restore", "m2", "--force")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: [[]tool.lxdsnap.containers.web[]] target: cluster member 'm2' "
                                 "(127.0.0.3:8443) is evacuated: *. Remove it from `target`, or bring it back "
                                 f"(`{COMMANDS('cluster restore m2')}`). Nothing was created."])
    assert {r["name"] for r in lxdapi.listing(client.api.instances)} == before


def test_a_member_down_at_the_start_is_a_usage_error_for_its_target_and_reported_otherwise(suite, on_cluster):
    client, member2 = on_cluster.client(1), on_cluster.members[1]
    before = {r["name"] for r in lxdapi.listing(client.api.instances)}
    cluster.stop(member2, log=lambda line: None)  # its daemon is down; LXD still lists it Online for a while
    try:
        suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = ["m1", "m2"]\n')
        suite.makepyfile(ONE_TEST)
        refused = suite.runpytest(on_cluster.endpoint(1))
        assert refused.ret == pytest.ExitCode.USAGE_ERROR
        refused.stderr.fnmatch_lines(["ERROR: [[]tool.lxdsnap.containers.web[]] target: cluster member 'm2' "
                                      "(127.0.0.3:8443) is offline: its daemon does not answer*Remove it from "
                                      "`target`, or start its daemon again. Nothing was created."])
        assert {r["name"] for r in lxdapi.listing(client.api.instances)} == before
        suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = "m1"\n')
        suite.makepyfile("""
            import pytest

            @pytest.mark.lxd("web")
            def test_it(lxd):
                assert lxd["web"].status == "Running"
        """)
        reported = suite.runpytest(on_cluster.endpoint(1))
        reported.assert_outcomes(passed=1)
        reported.stdout.fnmatch_lines(["NOTE cluster member 'm2' (127.0.0.3:8443) was offline at the session's "
                                       "start *: tests on containers there fail, naming it"])
    finally:
        on_cluster.rejoin(member2)


def test_gc_through_member_2_cleans_a_killed_session_on_both_members(suite, on_cluster):
    client = on_cluster.client(2)
    on_m1, on_m2 = make_on(client, "m1"), make_on(client, "m2")
    try:
        found = {name: as_found(client, name) for name in (on_m1, on_m2)}
        suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = "m2"\nstrategy = "clone"\n')
        with holding_session(suite.path, [on_m1, on_m2, "web"], on_cluster.endpoint(1)) as held:
            held.proc.kill()  # the whole session dies: nothing of its cleanup runs
            held.proc.wait()
        left = on_cluster.leftovers()
        assert any(item.startswith("instance lxdsnap-web-") for item in left), left  # its base and clone, on m2
        gc = lxdsnap("--endpoint", on_cluster.members[1].socket, "gc")
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert "cleaning instance lxdsnap-web-" in gc.stdout
        for name in (on_m1, on_m2):
            assert_left_as_found(client, name, found[name], recovered=True)
        own = sorted([f"instance {on_m1}", f"instance {on_m2}"])
        assert sorted(on_cluster.leftovers()) == own  # the test's own, deleted next
    finally:
        delete(client, on_m1)
        delete(client, on_m2)


def test_cluster_up_again_changes_nothing_and_doctor_through_member_2_lists_every_member(on_cluster):
    again = lxdsnap("cluster", "up", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bootstrapping" not in again.stdout and "joining" not in again.stdout
    assert "member m2: up at 127.0.0.3:8443" in again.stdout and "image: lxdsnap/busybox present" in again.stdout
    doctor = lxdsnap("--endpoint", on_cluster.members[1].socket, "doctor")
    lines = doctor.stdout.splitlines()
    for expected in ("ok  cluster * 2 members: m1, m2",
                     "ok  member m1 * Online at 127.0.0.2:8443 (database-leader, database)*; pools: local (dir)",
                     "ok  member m2 * Online at 127.0.0.3:8443 *; pools: local (dir)",
                     "ok  cluster images * lxdsnap/busybox: *"):
        assert any(fnmatch.fnmatchcase(line, expected) for line in lines), (expected, doctor.stdout)


def test_a_session_over_https_through_member_2_resets_a_container_on_member_1(suite, on_cluster, tmp_path):
    client = on_cluster.client(1)
    cert, key = make_certificate(tmp_path, f"{TEST_PREFIX}cluster")
    with open(cert, "rb") as fh, lxdapi.quiet_pylxd():
        client.certificates.create(password="", cert_data=fh.read(), name=f"{TEST_PREFIX}cluster")
    name = make_on(client, "m1")
    try:
        found = as_found(client, name)
        suite.makepyfile(changes(name, 2))
        member2 = on_cluster.members[1]
        server_cert = member2.dir / "cluster.crt"  # every member serves the cluster's certificate
        result = suite.runpytest(f"--lxd-endpoint=https://{member2.address}", f"--lxd-cert={cert}",
                                 f"--lxd-key={key}", f"--lxd-server-cert={server_cert}")
        result.assert_outcomes(passed=2)
        assert_summary(result, name, kind="existing", resets="2", leftovers="0")
        assert lxdapi.get_instance(client, name)["location"] == "m1"
        assert_left_as_found(client, name, found)
    finally:
        delete(client, name)
        for record in suite_certificates(client):
            client.api.certificates[record["fingerprint"]].delete()
