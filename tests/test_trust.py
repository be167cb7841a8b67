"""Never touch what is not ours, never lose the user's work: ephemeral and paused containers, copies the
user makes, SIGTERM and SIGHUP, sessions in other PID namespaces, gc racing a claim, a lost lease.
Each runs against the real daemon and ends with the host as found."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety import claims, garbage, leases
from pytest_lxdsnap.safety.ownership import BASELINE_LABEL, OWNER_KEY, RECOVERING_KEY, SessionIdentity

from .helpers import (
    COMMANDS,
    DECLARED_WEB,
    NEVER_RUNS,
    PYPROJECT,
    as_found,
    assert_left_as_found,
    holding_session,
    instance_names,
    lxc,
    lxc_exec_status,
    lxdsnap,
    lxdsnap_argv,
    snapshot_names,
    throwaway_name,
    user_config,
)


@pytest.fixture
def instances(lxd_client):
    """Names of instances a test makes with `lxc` itself; deleted afterwards (a paused one is resumed first)."""
    made: list[str] = []
    yield made
    for name in made:
        if lxdapi.instance_exists(lxd_client, name):
            if lxdapi.status(lxd_client, name) == "Frozen":
                lxc("start", name)
            lxc("delete", "--force", name)


TWO_DIRTYING_TESTS = """
import pytest


@pytest.mark.lxd({name!r})
def test_dirties(lxd):
    c = lxd[{name!r}]
    if c.status == "Stopped":
        c.instance.start(wait=True)  # the plugin must stop it again: it was found stopped
    c.write_text("/root/dirty", "x")


@pytest.mark.lxd({name!r})
def test_finds_it_clean(lxd):
    assert lxd[{name!r}].status == {status!r}
    if lxd[{name!r}].status == "Running":
        assert not lxd[{name!r}].exists("/root/dirty")
"""


@pytest.mark.parametrize(("running", "strategy"), [(True, "recipe"), (True, "inplace"), (False, "inplace")])
def test_an_ephemeral_container_survives_and_stays_ephemeral(suite, lxd_client, instances, running, strategy):
    name = throwaway_name("eph")
    instances.append(name)
    lxc("launch" if running else "init", "--ephemeral", IMAGE_ALIAS, name)
    lxc(*COMMANDS.snapshot(name, "user-snap").split()[1:])
    found = as_found(lxd_client, name)
    suite.makepyfile(TWO_DIRTYING_TESTS.format(name=name, status="Running" if running else "Stopped"))
    result = suite.runpytest(f"--lxd-strategy={strategy}")
    result.assert_outcomes(passed=2)
    assert name in instance_names(lxd_client), "LXD deleted the ephemeral container when the plugin stopped it"
    record = lxdapi.get_instance(lxd_client, name)
    assert record["ephemeral"] is True
    assert record["status"] == ("Running" if running else "Stopped")
    assert_left_as_found(lxd_client, name, found)


def test_a_paused_container_is_refused_and_left_paused(suite, make_instance, lxd_client):
    name = make_instance()
    lxc("pause", name)
    found = as_found(lxd_client, name)
    suite.makepyfile(NEVER_RUNS.format(name=name))
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*instance '{name}' is paused (Frozen): a reset restores it by restarting it*"
                                 f"Nothing was changed. Resume it first (`{COMMANDS.tool} start {name}`)*"])
    assert lxdapi.status(lxd_client, name) == "Frozen"
    assert_left_as_found(lxd_client, name, found)
    lxc("start", name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_mid_test_reset_and_clean_up_like_ctrl_c(pytester, make_instance, lxd_client, signum):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    before = instance_names(lxd_client)
    with holding_session(pytester.path, [name, "web"]) as holding:
        holding.proc.send_signal(signum)
        output = holding.finish(timeout=60)
    assert holding.returncode == pytest.ExitCode.INTERRUPTED, output
    assert f"lxdsnap: {signal.Signals(signum).name}: stopping; resetting the containers and cleaning up" in output
    assert_left_as_found(lxd_client, name, found)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert instance_names(lxd_client) == before  # the declared container and its clones are gone


def test_two_quick_ctrl_c_exit_cleanly_with_the_recovery_command(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    with holding_session(pytester.path, [name]) as holding:
        holding.proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # the kernel merges a second pending SIGINT into the first: let it land, barely
        holding.proc.send_signal(signal.SIGINT)
        output = holding.finish(timeout=30)
    assert holding.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output, output
    assert "lxdsnap: second Ctrl-C: cleanup stopped. To finish it, run:" in output and "  lxdsnap gc" in output
    done = lxdsnap("gc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_left_as_found(lxd_client, name, found, recovered=None)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1


def state(client, name: str) -> tuple[object, list[str], int]:
    """What a user sees of an instance: config (lxdsnap keys included), snapshots, and whether /root/mine is there."""
    return user_config(client, name), snapshot_names(client, name), lxc_exec_status(name, "test", "-e", "/root/mine")


def test_copies_of_a_held_container_and_of_a_clone_are_never_the_plugins(pytester, make_instance, lxd_client,
                                                                         instances):
    name = make_instance(snapshot="user-snap")
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    backup, debug = throwaway_name("backup"), throwaway_name("debug-web")
    instances.extend([backup, debug])
    # the booted base serves the first test (test_a_first): the holding test gets a clone
    pytester.makepyfile(test_a_first="import pytest\n\n@pytest.mark.lxd('web')\ndef test_first(lxd):\n    pass\n")
    with holding_session(pytester.path, [name, "web"]) as holding:
        clone = next(n for n in instance_names(lxd_client) if n.startswith("lxdsnap-web-") and n.endswith("-1"))
        lxc("copy", name, backup)  # carries the session's tags and its baseline snapshot
        lxc("copy", clone, debug)  # carries the clone's tags
        for copy in (backup, debug):
            lxc("start", copy)
            lxc("exec", copy, "--", "touch", "/root/mine")  # the user's work in the copy
        copied = {copy: state(lxd_client, copy) for copy in (backup, debug)}
        assert any(s.startswith("lxdsnap-") for s in copied[backup][1])
        output = holding.release()
    assert holding.returncode == 0, output
    assert {copy: state(lxd_client, copy) for copy in copied} == copied  # the session's end left them alone

    (pytester.path / "test_hold.py").unlink()
    (pytester.path / "test_a_first.py").unlink()
    pytester.makepyfile(test_next="""
        import pytest

        @pytest.mark.lxd("web")
        def test_next(lxd):
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=1)  # the next session's sweep
    assert {copy: state(lxd_client, copy) for copy in copied} == copied

    report = lxdsnap("gc")
    assert report.returncode == 0, report.stdout + report.stderr
    for copy in copied:
        assert f"foreign instance {copy}: it carries lxdsnap's key " in report.stdout
        assert f"{COMMANDS.tool} config unset {copy} {OWNER_KEY}" in report.stdout
    assert {copy: state(lxd_client, copy) for copy in copied} == copied  # gc only reports them

    cleaned = lxdsnap("gc", "--foreign")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    for copy in copied:
        config, snapshots, mine = state(lxd_client, copy)
        assert not any(k.startswith("user.lxdsnap.") for k in config["config"])  # type: ignore[index]
        assert mine == 0 and copy in instance_names(lxd_client)  # the copy and the user's work stay
        assert not any(s.startswith("lxdsnap-") for s in snapshots)
    assert "user-snap" in snapshot_names(lxd_client, backup)


def in_other_pid_namespace(*argv: str, cwd: object = None) -> subprocess.CompletedProcess[str]:
    """Run a command the way a CI runner in a container would: its own PID namespace, same host and boot."""
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_a_session_and_gc_in_another_pid_namespace_leave_a_live_session_alone(pytester, make_instance, lxd_client):
    name = make_instance()
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    other = pytester.mkdir("other")
    (other / "pyproject.toml").write_text(DECLARED_WEB)
    (other / "test_other.py").write_text("import pytest\n\n\n@pytest.mark.lxd('web')\ndef test_it(lxd):\n    pass\n")
    before = instance_names(lxd_client)
    with holding_session(pytester.path, [name, "web"], "test_hold.py") as holding:
        first = instance_names(lxd_client) - before  # the live session's declared container and clones
        second = in_other_pid_namespace(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", cwd=other)
        assert second.returncode == 0, second.stdout + second.stderr
        assert first <= instance_names(lxd_client), second.stdout
        gc = in_other_pid_namespace(*lxdsnap_argv("gc"))
        assert gc.returncode == 0, gc.stdout + gc.stderr
        assert "lxdsnap gc: nothing left by dead sessions" in gc.stdout, gc.stdout
        assert first <= instance_names(lxd_client), (second.stdout, gc.stdout)
        assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0  # its state, untouched
        assert OWNER_KEY in lxdapi.get_instance(lxd_client, name)["config"]
        output = holding.release()
    assert holding.returncode == 0, output
    assert "PROBLEM" not in output and "LEFTOVER" not in output, output
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert_left_as_found(lxd_client, name, found)


def test_gc_never_recovers_what_a_live_session_claimed_after_gc_looked(lxd_client, make_instance, monkeypatch):
    name = make_instance()
    dead = SessionIdentity(pid=2**22 + 1)  # no such process: a session that died holding the container
    claims.claim(lxd_client, name, dead, wait=0)
    lxdapi.create_owned_snapshot(lxd_client, name, dead.snapshot_name(BASELINE_LABEL), dead, ttl=600)
    gc, live = SessionIdentity(), SessionIdentity()
    (held,) = [g for g in garbage.find_garbage(lxd_client, gc) if g.kind == "held" and g.name == name]

    read = lxdapi.read_instance
    raced: list[bool] = []

    def read_then_a_live_session_claims(client, instance):  # gc reads, then a live session wins the race
        record = read(client, instance)
        if not raced:
            raced.append(True)
            claims.claim(client, instance, live, wait=5)
            lxc("exec", instance, "--", "touch", "/root/live-work")
        return record

    monkeypatch.setattr(lxdapi, "read_instance", read_then_a_live_session_claims)
    assert held.clean() == []
    monkeypatch.undo()
    assert raced and lxc_exec_status(name, "test", "-e", "/root/live-work") == 0  # not rolled back under it
    assert live.owns(lxdapi.get_instance(lxd_client, name)["config"], lxdapi.where(lxd_client, name))
    claims.release(lxd_client, name, live)


def test_a_lost_lease_is_recreated_by_the_next_renewal(lxd_client):
    me = SessionIdentity()
    leases.open_lease(lxd_client, me)
    try:
        lxd_client.api.profiles[leases.profile_name(me)].delete()  # someone deleted it
        assert leases.lease_of(lxd_client, me)[0] is None
        leases.renew_lease(lxd_client, me)
        lease, now = leases.lease_of(lxd_client, me)
        assert lease is not None and float(lease) > now
    finally:
        leases.close_lease(lxd_client, me)
    assert leases.lease_of(lxd_client, me)[0] is None


def test_on_zfs_a_reset_lxd_would_refuse_is_never_asked_for(lxd_client, make_instance):
    """ZFS restores only the latest snapshot. ZFS cannot run here: the pool driver is reported as zfs to the
    session (everything else is the real daemon), and a user snapshot newer than the baseline must stop the
    reset before LXD is asked, with the container left as the test left it."""
    from pytest_lxdsnap.errors import ResetError
    from pytest_lxdsnap.lxd.connection import Endpoint
    from pytest_lxdsnap.model import Checkout, Request
    from pytest_lxdsnap.session.core import LxdSession

    name = make_instance()
    session = LxdSession(Endpoint(), {})
    session.connect()
    session.plan([Request(name)])
    (checkout,) = session.acquire((name,))
    tracked = checkout.tracked
    tracked.pool_driver = "zfs"
    lxc("exec", name, "--", "touch", "/root/dirty")
    lxc(*COMMANDS.snapshot(name, "newer-user-snap").split()[1:])
    with pytest.raises(ResetError, match=r"(?s)newer-user-snap.*Nothing was changed"):
        session.release([checkout])
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0  # not restored: LXD was never asked
    keep = session.keep_failed([Checkout(tracked, "inplace", "", name)], "test_x")
    assert "did not keep the state" in keep[0] and tracked.snapshot in keep[0]
    assert snapshot_names(lxd_client, name) == [tracked.snapshot, "newer-user-snap"]
    session.finish()
    lxdapi.wait(lxd_client, lxd_client.api.instances[name].snapshots[tracked.snapshot].delete())
    claims.release(lxd_client, name, session.identity)


def test_max_clones_caps_the_clones_that_exist_at_once(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile("""
        import subprocess

        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("i", range(5))
        def test_counts_clones(lxd, i):
            listed = subprocess.run(["lxc", "list", "--format", "csv", "-c", "n"], check=True, capture_output=True,
                                    text=True).stdout.split()
            used = lxd["web"].instance_name
            base = min((n for n in listed if n.startswith("lxdsnap-web-")), key=len)  # lent to the first test
            clones = [n for n in listed if n.startswith(base + "-")]
            # at most one clone at once: the one in use, or (while the base serves the first test) one prepared
            assert len(clones) <= 1 and (used == base or clones == [used]), clones
    """)
    before = instance_names(lxd_client)
    result = pytester.runpytest("--lxd-max-clones=1", "--lxd-prepare-ahead=3")
    result.assert_outcomes(passed=5)
    assert instance_names(lxd_client) == before


def test_a_copy_of_a_held_ephemeral_container_does_not_become_ephemeral(lxd_client, instances):
    name, copy = throwaway_name("eph"), throwaway_name("eph-copy")
    instances.extend([name, copy])
    lxc("launch", "--ephemeral", IMAGE_ALIAS, name)
    holder, later = SessionIdentity(), SessionIdentity()
    claims.claim(lxd_client, name, holder, wait=0)  # the flag is parked in a key while held
    lxc("copy", name, copy)  # the copy carries the parked key, written for another instance
    claims.claim(lxd_client, copy, later, wait=0)
    claims.release(lxd_client, copy, later)
    assert lxdapi.get_instance(lxd_client, copy)["ephemeral"] is False  # LXD would delete it on its next stop
    claims.release(lxd_client, name, holder)
    assert lxdapi.get_instance(lxd_client, name)["ephemeral"] is True


def test_a_recovery_that_died_half_way_is_finished_from_the_first_baseline(lxd_client, make_instance):
    name = make_instance()
    found = as_found(lxd_client, name)
    where = lxdapi.where(lxd_client, name)
    first, recoverer = SessionIdentity(pid=2**22 + 1), SessionIdentity(pid=2**22 + 2)  # both dead
    claims.claim(lxd_client, name, first, wait=0)
    lxdapi.create_owned_snapshot(lxd_client, name, first.snapshot_name(BASELINE_LABEL), first, ttl=600)
    lxc("exec", name, "--", "touch", "/root/dirty")  # the first session's test
    # the recoverer claimed it (its tag, and whose baseline it meant to restore), then died before restoring
    lxdapi.set_config_key(lxd_client, name, RECOVERING_KEY, first.tag(where))
    lxdapi.set_config_key(lxd_client, name, OWNER_KEY, recoverer.tag(where))
    (held,) = [g for g in garbage.find_garbage(lxd_client, SessionIdentity()) if g.name == name]
    assert not [g for g in garbage.find_garbage(lxd_client, SessionIdentity()) if g.kind == "snapshot"]
    done = held.clean()
    assert f"restored {name} from {first.snapshot_name(BASELINE_LABEL)}" in done, done
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert not any(k.startswith("user.lxdsnap.") for k in lxdapi.get_instance(lxd_client, name)["config"])
    assert_left_as_found(lxd_client, name, found, recovered=None)
