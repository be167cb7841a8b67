"""Fault injection against the real daemon: a killed session, a second Ctrl-C, two sessions on one
container, a hung or restarted daemon, a full pool, kept failed states. Each ends with the host as found."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import default_socket
from pytest_lxdsnap.safety.ownership import (
    KEPT_KEY,
    LEASE_KEY,
    LEASE_SECONDS,
    OWNER_KEY,
    SESSION_PROFILE_PREFIX,
    holder_at,
    read_tag,
)

from .helpers import (
    BACKEND,
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
    recovery_snapshots,
    run_command,
    snapshot_names,
    start_session,
    stop_session,
    throwaway_name,
    wait_for,
)


def crashed_session(pytester: pytest.Pytester, name: str) -> int:
    """A session that changed ``name`` and a declared container, killed with -9 mid-test; its pid."""
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    with holding_session(pytester.path, [name, "web"]) as holding:
        os.kill(holding.pid, signal.SIGKILL)
        holding.finish(timeout=30)
    return holding.pid


def test_sigkill_mid_test_next_session_restores_and_sweeps(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    pid = crashed_session(pytester, name)
    # the crash left: the dirty container with our tag and baseline, and the declared container's instances
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0
    assert OWNER_KEY in lxdapi.get_instance(lxd_client, name)["config"]
    assert len(snapshot_names(lxd_client, name)) == 2
    orphans = {n for n in instance_names(lxd_client) if n.startswith("lxdsnap-web-")}
    assert orphans

    (pytester.path / "test_hold.py").unlink()
    pytester.makepyfile(test_next=f"""
        import pytest

        @pytest.mark.lxd("{name}")
        def test_finds_it_clean(lxd):
            assert not lxd["{name}"].exists("/root/dirty")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"NOTE instance {name}: session * is dead (pid {pid} in this PID namespace is gone*",
                                 "NOTE deleted instance lxdsnap-web-* (created by session *, which is dead*"])
    assert "NOTE deleted profile lxdsnap-session-" in result.stdout.str()  # the dead session's lease
    assert_left_as_found(lxd_client, name, found, recovered=True)
    (kept,) = recovery_snapshots(lxd_client, name)  # the state before the rollback, for the user
    result.stdout.fnmatch_lines([f"NOTE kept the state {name} had before recovery as snapshot {name}/{kept} (LXD "
                                 f"deletes it in 7 days); to get it back: `{COMMANDS.restore(name, kept)}`"])
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert not orphans & instance_names(lxd_client)
    run_command(COMMANDS.restore(name, kept))  # the undo it printed brings the work back
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0


def test_gc_dry_run_lists_then_gc_recovers_a_killed_session(pytester, make_instance, lxd_client):
    name = make_instance(running=False)
    found = as_found(lxd_client, name)
    crashed_session(pytester, name)
    assert lxdapi.status(lxd_client, name) == lxdapi.RUNNING

    dry = lxdsnap("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would clean instance {name}: held by session " in dry.stdout and "restore its baseline" in dry.stdout
    assert "would clean instance lxdsnap-web-" in dry.stdout
    assert OWNER_KEY in lxdapi.get_instance(lxd_client, name)["config"]  # a dry run changes nothing

    done = lxdsnap("gc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"restored {name} from lxdsnap-" in done.stdout
    assert_left_as_found(lxd_client, name, found, recovered=True)
    assert lxdapi.status(lxd_client, name) == lxdapi.STOPPED  # as it was found; the crash left it running
    assert not any(n.startswith("lxdsnap-web-") for n in instance_names(lxd_client))
    assert lxdsnap("gc").stdout.strip() == "lxdsnap gc: nothing left by dead sessions"


def test_gc_never_touches_a_live_session(pytester, make_instance, lxd_client):
    name = make_instance()
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    with holding_session(pytester.path, [name, "web"]) as holding:
        before = instance_names(lxd_client)
        result = lxdsnap("gc")
        assert result.stdout.strip() == "lxdsnap gc: nothing left by dead sessions", result.stdout
        assert instance_names(lxd_client) == before
        assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0  # the live session's state, untouched
        output = holding.release()
    assert holding.returncode == 0, output
    assert_left_as_found(lxd_client, name, found)


VERDICTS = """
import time

from pytest_lxdsnap.safety import claims

judge = claims.holder_is_dead


def holder_is_dead(holder, lease, now):
    dead, why = judge(holder, lease, now)
    with open({log!r}, "a") as fh:
        fh.write(f"{{time.time()}} {{holder.pid}} {{'dead' if dead else 'alive'}} {{why}}\\n")
    return dead, why


claims.holder_is_dead = holder_is_dead  # the claim's verdict on the holder, each round it waits: to a file
"""
"""An inner suite's conftest that records what its claims do while another session holds the container (the
plugin prints nothing while it waits): one line per verdict on the holder, "<time> <pid> alive|dead <why>"."""


def verdicts(log: Path) -> list[tuple[float, int, str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [(float(t), int(pid), verdict) for t, pid, verdict, _ in (line.split(" ", 3) for line in lines)]


def test_two_sessions_take_turns_on_one_container(pytester, make_instance, lxd_client):
    name = make_instance()
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    second, log, body = pytester.mkdir("second"), pytester.path / "verdicts.log", pytester.path / "body"
    (second / "pyproject.toml").write_text(PYPROJECT)
    (second / "conftest.py").write_text(VERDICTS.format(log=str(log)))
    tests = f"""
import pathlib
import time

import pytest


@pytest.mark.lxd("{name}")
def test_gets_it_clean_after_the_first(lxd):
    pathlib.Path({str(body)!r}).write_text(str(time.time()))
    assert not lxd["{name}"].exists("/root/dirty")
"""
    (second / "test_second.py").write_text(tests)
    impatient = pytester.mkdir("impatient")
    (impatient / "pyproject.toml").write_text(PYPROJECT)
    (impatient / "test_impatient.py").write_text(tests)
    with holding_session(pytester.path, [name], "test_hold_a.py", tag="_a") as first:
        gave_up = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--lxd-lease-wait=1"],
                                 cwd=impatient, capture_output=True, text=True, timeout=120)
        assert gave_up.returncode == 1, gave_up.stdout
        assert f"instance '{name}' is in use by another lxdsnap session (host " in gave_up.stdout
        assert f"pid {first.pid} in this PID namespace still runs); waited 1 s" in gave_up.stdout
        waiting = start_session(second, "--lxd-lease-wait=120")
        try:
            deadline = time.monotonic() + 60
            while len(verdicts(log)) < 2:  # it is waiting: it found the first alive, slept, and looked again
                assert waiting.poll() is None, f"the second session ended:\n{stop_session(waiting)}"
                assert time.monotonic() < deadline, f"the second session never waited for it: {verdicts(log)}"
                time.sleep(0.05)
            holder = read_tag(lxdapi.get_instance(lxd_client, name)["config"][OWNER_KEY])
            assert holder is not None and holder.holder.pid == first.pid, "the second session took it from the first"
            released = time.time()
            out_first = first.release()
            out_second, _ = waiting.communicate(timeout=120)
        finally:
            stop_session(waiting)
    assert first.returncode == 0, out_first
    assert waiting.returncode == 0, out_second
    seen = verdicts(log)
    assert {(pid, verdict) for _, pid, verdict in seen} == {(first.pid, "alive")}, seen  # never judged it dead
    assert seen[0][0] < released <= float(body.read_text()), "its test ran before the first let go"
    assert_left_as_found(lxd_client, name, found)


def test_second_ctrl_c_exits_at_once_with_the_recovery_command(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    with holding_session(pytester.path, [name]) as holding:
        holding.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # the reset (a forced stop, a restore, a start) is under way
        holding.proc.send_signal(signal.SIGINT)
        output = holding.finish(timeout=30)
    assert holding.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "lxdsnap: second Ctrl-C: cleanup stopped. To finish it, run:" in output
    assert "  lxdsnap gc" in output and f"{COMMANDS.restore(name, 'lxdsnap-')}" in output
    done = lxdsnap("gc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_left_as_found(lxd_client, name, found, recovered=None, context=done.stdout)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1


def lxd_daemon_pid() -> int:
    """The daemon's pid, as its own socket reports it (SO_PEERCRED): not its helpers, nor a container's
    "[lxc monitor]", which carries the daemon's name and outlives a daemon restart."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(default_socket())
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    assert comm == Path(BACKEND.daemon[0]).name, f"{default_socket()} is served by {comm} (pid {pid})"
    return pid


DAEMON_FAULT = """
import pathlib
import time

import pytest


@pytest.mark.lxd({name!r})
def test_daemon_fault(lxd):
    lxd[{name!r}].write_text("/root/dirty", "x")
    pathlib.Path({ready!r}).touch()
    while not pathlib.Path({fault!r}).exists():
        time.sleep(0.05)
    lxd[{name!r}].exec(["true"])
"""


def daemon_fault_suite(pytester: pytest.Pytester, name: str) -> tuple[Path, Path]:
    """A test that dirties ``name``, says "ready", waits until the daemon fault is in place, then execs."""
    ready, fault = pytester.path / "ready", pytester.path / "fault"
    pytester.makefile(".toml", pyproject=PYPROJECT)
    (pytester.path / "test_daemon_fault.py").write_text(DAEMON_FAULT.format(name=name, ready=str(ready),
                                                                            fault=str(fault)))
    return ready, fault


def lease_renewed(client, pid: int) -> float:
    """When the session ``pid`` last opened or renewed its lease (the server's clock, to a second)."""
    for profile in lxdapi.listing(client.api.profiles):
        holder = holder_at(profile.get("config") or {}, f"profile:{profile['name']}")
        if profile["name"].startswith(SESSION_PROFILE_PREFIX) and holder is not None and holder.pid == pid:
            return float(profile["config"][LEASE_KEY]) - LEASE_SECONDS
    raise AssertionError(f"session {pid} holds no lease")


def quiet_for(client, proc: subprocess.Popen[str], seconds: float) -> None:
    """Return at a moment when the session's lease renewal (every LEASE_SECONDS / 6, on its own thread, with its
    own request timeout) will not fall due within ``seconds``: at once, or right after the next renewal."""
    renewed = lease_renewed(client, proc.pid)
    if time.time() + seconds + 2 < renewed + LEASE_SECONDS / 6:
        return
    deadline = time.monotonic() + LEASE_SECONDS / 3
    while lease_renewed(client, proc.pid) == renewed:
        assert proc.poll() is None and time.monotonic() < deadline, "the session's lease was never renewed"
        time.sleep(0.2)


def test_a_hung_daemon_errors_the_test_and_nothing_hangs(pytester, make_instance, lxd_client):
    name = make_instance()
    found = as_found(lxd_client, name)
    ready, flag = daemon_fault_suite(pytester, name)
    timeout = 3.0
    proc = start_session(pytester.path, f"--lxd-timeout={timeout:g}")
    daemon = lxd_daemon_pid()
    gave_up = 3  # calls that must give up: the test's exec, the reset, the check for leftovers
    try:
        wait_for(ready, proc)
        quiet_for(lxd_client, proc, gave_up * timeout)  # a renewal in flight would add its own timeout (see below)
        os.kill(daemon, signal.SIGSTOP)
        flag.touch()
        started = time.monotonic()
        output, _ = proc.communicate(timeout=90)
        took = time.monotonic() - started
    finally:
        os.kill(daemon, signal.SIGCONT)
        proc.kill()
        proc.communicate()
    assert proc.returncode == 1, output
    timed_out = f"Read timed out. (read timeout={timeout})"
    pytest.LineMatcher(output.splitlines()).fnmatch_lines([
        f"*LXD stopped answering while running true in {name}: *{timed_out}*",
        f"*resetting container '{name}' (instance {name}) to snapshot lxdsnap-*-base failed: *{timed_out}",
        f"*PROBLEM could not check LXD for leftovers: *{timed_out}*",
    ])
    # the session exits once each of those calls has waited out --lxd-timeout, and no longer: a wait on anything
    # else (a lease, LXD's 120 s default, an operation, a lease renewal in flight) would show here
    assert gave_up * timeout - 0.5 <= took < gave_up * timeout + 3, (
        f"the session took {took:.1f} s to give up, not {gave_up} x {timeout:g} s:\n{output}")
    done = lxdsnap("gc")  # the daemon is back and the session is gone: gc puts it right
    assert done.returncode == 0, done.stdout + done.stderr
    assert_left_as_found(lxd_client, name, found, recovered=None)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1


@pytest.fixture
def small_pool(lxd_client):
    """A dir pool on a 64 MiB tmpfs: once a container fills it, a snapshot (a copy on dir) does not fit."""
    mount = Path(f"/tmp/lxdsnap-small-{os.getpid()}")
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    (mount / "pool").mkdir()
    pool = throwaway_name("small")
    lxd_client.api.storage_pools.post(json={"name": pool, "driver": "dir", "config": {"source": str(mount / "pool")}})
    yield pool
    lxd_client.api.storage_pools[pool].delete()
    subprocess.run(["umount", str(mount)], check=True)
    mount.rmdir()


def test_a_full_pool_is_a_clear_error_and_the_container_stays_as_it_was(suite, lxd_client, small_pool):
    name = throwaway_name("full")
    lxc("launch", "lxdsnap/busybox", name, "--storage", small_pool)
    try:
        lxc("exec", name, "--", "dd", "if=/dev/zero", "of=/root/big", "bs=1M", "count=61")
        found = as_found(lxd_client, name)
        suite.makepyfile(NEVER_RUNS.format(name=name))
        result = suite.runpytest()
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*preparing container '{name}' failed: *No space left on device*",
                                     f"*storage pool '{small_pool}' is full*"])
        assert_left_as_found(lxd_client, name, found)
        assert lxc_exec_status(name, "test", "-s", "/root/big") == 0
    finally:
        lxc("delete", "--force", name)


def test_keep_failed_keeps_each_state_with_the_commands_to_inspect_it(pytester, make_instance, lxd_client):
    name = make_instance()
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}", "web")
        def test_fails(lxd):
            lxd["{name}"].write_text("/root/evidence", "existing")
            lxd["web"].write_text("/root/evidence", "declared")
            assert False, "broken"

        @pytest.mark.lxd("{name}", "web")
        def test_next_is_clean(lxd):
            assert not lxd["{name}"].exists("/root/evidence")
            assert not lxd["web"].exists("/root/evidence")
    """)
    result = pytester.runpytest("--lxd-keep-failed")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"KEPT kept '{name}' of *test_fails as snapshot {name}/lxdsnap-*-failed-1 (LXD "
                                 f"deletes it *). Inspect: {COMMANDS.tool} copy {name}/lxdsnap-*-failed-1 *",
                                 "KEPT kept 'web' of *test_fails as instance lxdsnap-web-* (`lxdsnap gc` deletes it "
                                 f"after *). Inspect: {COMMANDS.tool} exec lxdsnap-web-* -- sh*"])
    kept_snapshot = next(s for s in snapshot_names(lxd_client, name) if "-failed-" in s)
    kept = next(n for n in instance_names(lxd_client) if n.startswith("lxdsnap-web-"))
    try:
        assert lxc("exec", kept, "--", "cat", "/root/evidence") == "declared"
        assert "lxdsnap gc: nothing left by dead sessions" in lxdsnap("gc").stdout  # not expired yet
        # expired long ago:
        lxdapi.set_config_key(lxd_client, kept, KEPT_KEY, "1")
        assert f"deleted kept instance {kept}" in lxdsnap("gc").stdout
        assert kept not in instance_names(lxd_client)
    finally:
        if kept in instance_names(lxd_client):
            lxc("delete", "--force", kept)
        run_command(COMMANDS.delete_snapshot(name, kept_snapshot))


def test_user_objects_named_like_the_plugins_are_never_touched(pytester, lxd_client):
    lookalike = "lxdsnap-web-deadbeef-1"  # the shape of a plugin clone, but the user's
    lxc("init", "lxdsnap/busybox", lookalike)
    try:
        run_command(COMMANDS.snapshot(lookalike, "lxdsnap-deadbeef-base"))  # the shape of a plugin baseline
        assert "nothing left by dead sessions" in lxdsnap("gc").stdout
        pytester.makefile(".toml", pyproject=DECLARED_WEB)
        pytester.makepyfile("""
            import pytest

            @pytest.mark.lxd("web")
            def test_it(lxd):
                pass
        """)
        pytester.runpytest().assert_outcomes(passed=1)
        assert lookalike in instance_names(lxd_client)
        assert snapshot_names(lxd_client, lookalike) == ["lxdsnap-deadbeef-base"]
    finally:
        lxc("delete", "--force", lookalike)


def test_a_daemon_killed_and_restarted_mid_run(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    ready, killed = daemon_fault_suite(pytester, name)
    proc = start_session(pytester.path, "--lxd-timeout=5")
    try:
        wait_for(ready, proc)
        os.kill(lxd_daemon_pid(), signal.SIGKILL)
        killed.touch()
        output, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
        proc.communicate()
        restarted = lxdsnap("setup")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert proc.returncode == 1, output
    assert "Connection refused" in output or "No such file" in output, output
    assert f"resetting container '{name}'" in output
    assert "`lxdsnap gc` restores and removes what this session left" in output
    done = lxdsnap("gc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_left_as_found(lxd_client, name, found, recovered=None)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
