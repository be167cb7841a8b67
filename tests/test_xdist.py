"""pytest-xdist shares one baseline per run: one worker builds a declared container's base, the others wait
for it, every worker clones from it, the last one deletes it; a killed worker neither leaves it behind nor
takes it from the living. Against the real daemon (existing containers' turns: test_ecosystem.py)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from pytest_lxdsnap.declarations import parse_container
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint
from pytest_lxdsnap.model import Request
from pytest_lxdsnap.options import Options
from pytest_lxdsnap.safety import garbage, sharing
from pytest_lxdsnap.safety.ownership import (
    BUILDING_KEY,
    CLOSING_KEY,
    CREATED_KEY,
    OWNER_KEY,
    SHARED_KEY,
    SHARED_SNAPSHOT,
    SessionIdentity,
    foreign_keys,
    place,
    shared_marker,
    shared_run,
)
from pytest_lxdsnap.session import reuse, shared
from pytest_lxdsnap.session.core import LxdSession

from .helpers import PYPROJECT, instance_names, lxc, lxdsnap, lxdsnap_argv, snapshot_names, summary

XDIST = ("-n", "2", "-p", "xdist")


def declared(name: str, extra: str = "") -> str:
    return PYPROJECT + f'\n[tool.lxdsnap.containers.{name}]\nimage = "lxdsnap/busybox"\n{extra}'


def unique() -> str:
    """A declared name of this test's own: instance names made for it tell its run from anyone else's."""
    return f"x{secrets.token_hex(3)}"


def ours(client, name: str) -> list[str]:
    """The instances made for the declared container ``name`` (base, clones, kept builds) that still exist."""
    return sorted(n for n in instance_names(client) if n.startswith((f"lxdsnap-{name}-", f"lxdsnap-keep-{name}-")))


def base_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^lxdsnap-{name}-r[0-9a-f]{{{shared.RUN_KEY_LENGTH}}}$")


class Lifecycle:
    """`lxc monitor --type=lifecycle`: the instances LXD created while it ran."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["lxc", "monitor", "--type=lifecycle", "--format=json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1.0)  # connected before anything happens

    def created(self) -> list[str]:
        """Stop watching; the names of the instances created meanwhile, in order."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        decoder, pos, names = json.JSONDecoder(), 0, []
        while True:
            while pos < len(out) and out[pos].isspace():
                pos += 1
            if pos >= len(out):
                return names
            event, pos = decoder.raw_decode(out, pos)
            metadata = event.get("metadata") or {}
            if metadata.get("action") == "instance-created":
                names.append(metadata["source"].split("?")[0].rsplit("/", 1)[-1])


@pytest.fixture
def lifecycle() -> Iterator[Callable[[], Lifecycle]]:
    started: list[Lifecycle] = []

    def start() -> Lifecycle:
        started.append(Lifecycle())
        return started[-1]

    yield start
    for watch in started:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()


CLEAN_CLONES = """
import pathlib

import pytest


@pytest.mark.lxd("{name}")
@pytest.mark.parametrize("i", range(20))
def test_clean(lxd, i):
    c = lxd["{name}"]
    assert c.read_text("/root/provisioned") == "once\\n"
    assert not c.exists("/root/dirty"), "another test's change leaked in"
    c.write_text("/root/dirty", str(i))
    pathlib.Path({log!r}, c.instance_name).touch()
"""


def test_one_base_per_run_every_worker_clones_it_and_nothing_is_left(pytester, lxd_client, lifecycle):
    name, log = unique(), pytester.path / "used"
    log.mkdir()
    pytester.makefile(".toml", pyproject=declared(name, 'strategy = "clone"\nprovision = ["echo once > '
                                                  '/root/provisioned"]\n'))
    pytester.makeconftest(f"""
        def pytest_lxdsnap_provision(container, spec):
            with open({str(pytester.path / "provisions")!r}, "a") as fh:
                fh.write(container.instance_name + "\\n")
    """)
    pytester.makepyfile(CLEAN_CLONES.format(name=name, log=str(log)))
    watch = lifecycle()
    result = pytester.runpytest(*XDIST)
    created = watch.created()
    result.assert_outcomes(passed=20)
    bases = [n for n in created if base_pattern(name).match(n)]
    assert len(bases) == 1, created  # one base for the run, provisioned once
    assert (pytester.path / "provisions").read_text().split() == bases
    made = [n for n in created if n.startswith(f"lxdsnap-{name}-")]
    clones = [n for n in made if n not in bases]
    assert all(re.fullmatch(rf"lxdsnap-{name}-gw[01][0-9a-f]{{6}}-\d+", n) for n in clones), made  # no own bases
    used = sorted(p.name for p in log.iterdir())
    assert len(used) == 20 and set(used) <= set(clones)  # a fresh clone each
    rows = summary(result)
    assert {f"gw0/{name}", f"gw1/{name}"} <= set(rows), rows  # both workers ran tests on it
    assert {rows[f"gw{i}/{name}"]["instance"] for i in (0, 1)} == set(bases)
    assert ours(lxd_client, name) == []  # the base and every clone are gone


def test_in_place_tests_get_a_copy_of_the_shared_baseline_of_their_workers_own(pytester, lxd_client, lifecycle):
    name = unique()
    pytester.makefile(".toml", pyproject=declared(name, 'provision = ["echo once > /root/provisioned"]\n'))
    pytester.makeconftest(f"""
        def pytest_lxdsnap_provision(container, spec):
            with open({str(pytester.path / "provisions")!r}, "a") as fh:
                fh.write(container.instance_name + "\\n")
    """)
    pytester.makepyfile(f"""
        import json
        import subprocess

        import pytest

        def shared_snapshots():
            listing = subprocess.run(["lxc", "list", "--format=csv", "-c", "n"], capture_output=True, text=True)
            (base,) = [n for n in listing.stdout.split() if n.startswith("lxdsnap-{name}-r")]
            out = subprocess.run(["lxc", "query", f"/1.0/instances/{{base}}/snapshots"], capture_output=True,
                                 text=True)
            return [u.rsplit("/", 1)[-1] for u in json.loads(out.stdout)]

        @pytest.mark.lxd("{name}", strategy="inplace")
        @pytest.mark.parametrize("i", range(6))
        def test_in_place(lxd, i):
            c = lxd["{name}"]
            assert c.read_text("/root/provisioned") == "once\\n"
            assert not c.exists("/root/dirty")
            c.write_text("/root/dirty", str(i))
            assert shared_snapshots() == ["{SHARED_SNAPSHOT}"]  # never restored, never snapshotted again

        @pytest.mark.lxd("{name}", strategy="clone")
        @pytest.mark.parametrize("i", range(6))
        def test_clone(lxd, i):
            assert not lxd["{name}"].exists("/root/dirty")
            lxd["{name}"].write_text("/root/dirty", str(i))
    """)
    watch = lifecycle()
    result = pytester.runpytest(*XDIST, "-p", "no:randomly")
    created = watch.created()
    result.assert_outcomes(passed=12)
    bases = [n for n in created if base_pattern(name).match(n)]
    assert len(bases) == 1 and (pytester.path / "provisions").read_text().split() == bases
    own = [n for n in created if re.fullmatch(rf"lxdsnap-{name}-gw[01][0-9a-f]{{6}}", n)]
    rows = summary(result)
    for row in (rows[f"gw{i}/{name}"] for i in (0, 1) if f"gw{i}/{name}" in rows):
        if "inplace" in row["strategies"]:
            assert row["instance"] in own  # the in-place tests' base is the worker's copy
    assert len(own) == 2, created  # each worker's, made as it joined (both planned in-place tests)
    assert ours(lxd_client, name) == []


def test_a_killed_worker_leaves_the_base_to_the_living_and_nothing_behind(pytester, lxd_client, lifecycle):
    name, flag = unique(), pytester.path / "killed"
    pytester.makefile(".toml", pyproject=declared(name, 'strategy = "clone"\n'))
    pytester.makepyfile(f"""
        import os
        import pathlib
        import signal
        import time

        import pytest

        @pytest.mark.lxd("{name}")
        def test_dies(lxd):
            lxd["{name}"].write_text("/root/dirty", "x")
            pathlib.Path({str(flag)!r}).write_text(os.environ["PYTEST_XDIST_WORKER"])
            os.kill(os.getpid(), signal.SIGKILL)

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("i", range(12))
        def test_others(lxd, i):
            time.sleep(0.3)
            assert not lxd["{name}"].exists("/root/dirty")
            lxd["{name}"].write_text("/root/dirty", "x")
    """)
    watch = lifecycle()
    result = pytester.runpytest(*XDIST, "-p", "no:randomly")
    created = watch.created()
    result.assert_outcomes(passed=12, failed=1)  # every other test ran, on the living or a replacement worker
    result.stdout.fnmatch_lines(["*test_dies*"])
    assert "crashed" in result.stdout.str()
    assert flag.read_text() in ("gw0", "gw1")
    assert [n for n in created if base_pattern(name).match(n)], created
    assert ours(lxd_client, name) == []  # the dead worker's key dropped, the base and clones deleted
    assert "LEFTOVER" not in result.stdout.str()


def test_a_run_killed_whole_is_cleaned_by_gc_and_a_live_run_is_not(pytester, lxd_client):
    name, flag = unique(), pytester.path / "running"
    pytester.makefile(".toml", pyproject=declared(name, 'strategy = "clone"\n'))
    gc = lxdsnap_argv("gc")
    pytester.makepyfile(f"""
        import pathlib
        import subprocess
        import time

        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("i", range(6))
        def test_waits(lxd, i):
            if i == 0:  # gc while the run lives: the shared base is in use, gc must not touch it
                done = subprocess.run({gc!r}, capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
                assert "lxdsnap-{name}-r" not in done.stdout, done.stdout
            assert not lxd["{name}"].exists("/root/dirty")
            lxd["{name}"].write_text("/root/dirty", "x")
            pathlib.Path({str(flag)!r}, str(i)).touch()
            time.sleep(60 if i >= 2 else 0)
    """)
    flag.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                             *XDIST], cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(flag.iterdir())) < 3:  # both workers hold clones of the base now
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and both workers, at once
        proc.communicate(timeout=30)
    (base,) = [n for n in instance_names(lxd_client) if base_pattern(name).match(n)]
    config = lxdapi.get_instance(lxd_client, base)["config"]
    assert len(sharing.users(config, lxdapi.where(lxd_client, base))) == 2  # both dead users recorded
    dry = lxdsnap("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would clean instance {base}: a declared container's base shared by pytest-xdist workers" in dry.stdout
    done = lxdsnap("gc")
    assert done.returncode == 0, done.stderr
    assert f"deleted instance {base}" in done.stdout
    assert ours(lxd_client, name) == []  # the clones too


# -- the protocol, with two sessions in this process standing for two workers of one run ---------------------

def two_workers(name: str, provision: tuple[str, ...] = ()) -> tuple[LxdSession, LxdSession]:
    spec = parse_container(name, {"image": "lxdsnap/busybox", "strategy": "clone", "provision": list(provision)})
    run = secrets.token_hex(16)
    sessions = []
    for worker in ("gw0", "gw1"):
        s = LxdSession(Endpoint(), {name: spec}, Options(), identity=SessionIdentity(token=f"{worker}"
                       f"{secrets.token_hex(3)}"), worker=worker, run=run, workers=2)
        s.connect()
        sessions.append(s)
    return sessions[0], sessions[1]


def test_a_waiting_worker_shows_whose_build_it_waits_for_and_the_base_outlives_the_first_to_leave(lxd_client):
    name = unique()
    first, second = two_workers(name, provision=("sleep 3",))
    seen: list[tuple[str, str | None]] = []
    second.on_progress = lambda container, stage, seconds: seen.append((container, stage))
    left = False
    try:
        first.plan([Request(name)])
        time.sleep(0.5)  # the first is building
        second.plan([Request(name)])
        (checkout,) = second.acquire([name])
        assert (name, f"waiting for worker {first.identity.token[:3]} to build it") in seen
        assert seen[-1] == (name, None)  # ready
        base = checkout.tracked.shared.instance
        assert base_pattern(name).match(base)
        second.release([checkout])
        left = True
        assert first.finish() == []  # the first leaves while the second still uses the base
        assert base in instance_names(lxd_client)
        users = sharing.users(lxdapi.get_instance(lxd_client, base)["config"], lxdapi.where(lxd_client, base))
        assert list(users.values()) == [second.identity]
        (again,) = second.acquire([name])  # a fresh clone of it, after the first left
        assert again.instance != checkout.instance and lxdapi.status(lxd_client, again.instance) == "Running"
        assert not [g for g in garbage.find_garbage(lxd_client, SessionIdentity()) if g.name == base]
        assert sharing.delete_abandoned(lxd_client, base, second.identity) == []  # its own sweep, too
        assert base in instance_names(lxd_client)
        second.release([again])
    finally:
        if not left:
            first.finish()
        assert second.finish() == []  # the last one deletes it
    assert ours(lxd_client, name) == []


def test_a_failed_build_fails_every_worker_with_its_error_and_leaves_nothing(lxd_client):
    name = unique()
    first, second = two_workers(name, provision=("sleep 1", "echo broken >&2; exit 3"))
    try:
        first.plan([Request(name)])
        time.sleep(0.3)
        second.plan([Request(name)])
        with pytest.raises(Exception, match="exited 3") as built:
            first.acquire([name])
        with pytest.raises(Exception, match=rf"building declared container '{name}' \(instance lxdsnap-{name}-r"
                                            r"[0-9a-f]+\) failed in another pytest-xdist worker: .*exited 3"):
            second.acquire([name])
        assert "broken" in str(built.value)
    finally:
        first.finish()
        second.finish()
    assert ours(lxd_client, name) == []


def test_a_dead_builder_is_replaced_and_its_remains_deleted(lxd_client):
    name = unique()
    first, second = two_workers(name)
    client = first.own
    spec = first.specs[name]
    instance, key = shared.base_name(spec, first.run or "", reuse.declaration_hash(client, spec))
    dead = SessionIdentity(token="gw7abcdef", pid=2**22 + 7)  # no such process here: dead for certain
    where = lxdapi.where(client, instance)
    tags = {SHARED_KEY: shared_marker(key, where), BUILDING_KEY: dead.tag(where),
            sharing.user_key(dead): dead.tag(where)}
    lxdapi.create_instance(client, {"name": instance, "source": {"type": "image", "alias": "lxdsnap/busybox"},
                                    "profiles": ["default"], "config": tags})  # a build cut short by a crash
    try:
        second.plan([Request(name)])
        (checkout,) = second.acquire([name])
        assert checkout.tracked.shared.instance == instance
        removed = [n for n in second.notices if f"deleted instance {instance}" in n or f"deleted {instance}" in n]
        assert removed, second.notices  # by the joining worker, or by the sweep that runs as a session starts
        assert any(f"deleted {instance}: its build was cut short (worker gw7 is gone)" in n or
                   "base shared by pytest-xdist workers that are all gone" in n for n in removed), removed
        config = lxdapi.get_instance(client, instance)["config"]
        assert BUILDING_KEY not in config and sharing.user_key(dead) not in config
        assert snapshot_names(client, instance) == [SHARED_SNAPSHOT]
        second.release([checkout])
    finally:
        first.finish()
        second.finish()
        if lxdapi.instance_exists(client, instance):
            lxc("delete", "--force", instance)
    assert ours(lxd_client, name) == []


def test_reuse_with_xdist_builds_the_kept_build_once_and_shares_it(pytester, lxd_client, lifecycle):
    name, log = unique(), pytester.path / "used"
    log.mkdir()
    pytester.makefile(".toml", pyproject=declared(name, 'strategy = "clone"\nprovision = ["echo once > '
                                                  '/root/provisioned"]\n'))
    pytester.makepyfile(CLEAN_CLONES.format(name=name, log=str(log)))
    try:
        watch = lifecycle()
        result = pytester.runpytest(*XDIST, "--lxd-reuse")
        created = watch.created()
        result.assert_outcomes(passed=20)
        kept = [n for n in created if n.startswith(f"lxdsnap-keep-{name}-")]
        assert len(kept) == 1, created
        (build,) = kept
        record = lxdapi.get_instance(lxd_client, build)
        assert record["status"] == "Stopped"
        assert not [k for k in record["config"] if k.startswith("user.lxdsnap.shared") or k in (OWNER_KEY,
                                                                                                BUILDING_KEY)]
        assert {r["instance"] for r in summary(result).values()} == {build}
        watch = lifecycle()
        again = pytester.runpytest(*XDIST, "--lxd-reuse")
        again.assert_outcomes(passed=20)
        assert not [n for n in watch.created() if n.startswith(f"lxdsnap-keep-{name}-")]  # reused, not rebuilt
        assert f"reusing {build} for '{name}'" in again.stdout.str()
        assert ours(lxd_client, name) == [build]
    finally:
        for leftover in [n for n in instance_names(lxd_client) if n.startswith(f"lxdsnap-keep-{name}-")]:
            lxc("delete", "--force", leftover)


# -- names and tags (no daemon) -----------------------------------------------------------------------------

def test_the_base_name_is_the_runs_and_the_declarations_and_never_longer_than_a_workers_names():
    spec = parse_container("web", {"image": "x"})
    name, key = shared.base_name(spec, "run-1", "0123456789")
    assert name == f"lxdsnap-web-r{key}" and re.fullmatch(r"[0-9a-f]{8}", key)
    assert shared.base_name(spec, "run-1", "0123456789") == (name, key)
    assert shared.base_name(spec, "run-2", "0123456789")[0] != name
    assert shared.base_name(spec, "run-1", "9876543210")[0] != name  # a changed declaration: another base
    assert len(name) <= len(f"lxdsnap-web-gw0{secrets.token_hex(3)}")  # so the name checks still hold


def test_users_and_markers_are_bound_to_their_instance():
    here, there = place("default", "lxdsnap-web-r12345678"), place("default", "copy")
    a, b = SessionIdentity(token="gw0aaaaaa"), SessionIdentity(token="gw1bbbbbb")
    config = {SHARED_KEY: shared_marker("12345678", here), sharing.user_key(a): a.tag(here),
              sharing.user_key(b): b.tag(here), BUILDING_KEY: a.tag(here), CLOSING_KEY: b.tag(here),
              sharing.user_key(b)[:-1] + "x": b.tag(here)}  # a key not named after its tag's session: ignored
    assert shared_run(config, here) == "12345678" and shared_run(config, there) is None
    assert sharing.users(config, here) == {sharing.user_key(a): a, sharing.user_key(b): b}
    assert sharing.users(config, there) == {}  # a copy's keys are nobody's
    assert sorted(h.token for h in sharing.holders(config, here)) == ["gw0aaaaaa", "gw0aaaaaa", "gw1bbbbbb",
                                                                      "gw1bbbbbb"]
    assert sharing.live(config, here, lambda h: (h == a, "")) == [b, b]
    assert sharing.is_shared_base({"name": "lxdsnap-web-r12345678", "config": config}, here)
    assert not sharing.is_shared_base({"name": "lxdsnap-web-r12345678", "config": {**config, CREATED_KEY: "x"}},
                                      here)
    assert not sharing.is_shared_base({"name": "web", "config": config}, place("default", "web"))
    assert foreign_keys(config, there) == sorted(config)  # `lxc copy` of a shared base: left alone by gc
    assert foreign_keys(config, here) == []


def test_an_empty_value_keeps_the_daemon_from_copying_a_key(lxd_client, make_instance):
    """What clones of a shared base rely on to carry none of its keys (LXD 5.0 and Incus 6.0 alike)."""
    source = make_instance(running=False, config={"user.lxdsnap.shared": "x", "user.kept": "y"})
    lxdapi.wait(lxd_client, lxd_client.api.instances[source].snapshots.post(json={"name": "s"}))
    copy = f"{source}-c"
    lxdapi.create_instance(lxd_client, {"name": copy, "profiles": ["default"], "config": {"user.lxdsnap.shared": ""},
                                        "source": {"type": "copy", "source": f"{source}/s", "instance_only": True}})
    try:
        config = lxdapi.get_instance(lxd_client, copy)["config"]
        assert "user.lxdsnap.shared" not in config and config["user.kept"] == "y"
    finally:
        lxc("delete", "--force", copy)
