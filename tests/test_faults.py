"""Fault injection against the real daemon: a killed session, a second Ctrl-C, two sessions on one
container, a hung or restarted daemon, a full pool, kept failed states. Each ends with the host as found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import KEPT_KEY, OWNER_KEY, SESSION_PROFILE_PREFIX, read_tag

from .helpers import (
    BACKEND,
    COMMANDS,
    NEVER_RUNS,
    PYPROJECT,
    instance_names,
    lxc,
    lxc_exec_status,
    lxdsnap,
    recovery_snapshots,
    run_command,
    snapshot_names,
    user_config,
)

DECLARED_WEB = PYPROJECT + '\n[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\n'


def start_session(path: Path, *args: str) -> subprocess.Popen[str]:
    """A pytest session in ``path`` as its own process (Ctrl-C and kill -9 reach it alone)."""
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def session_profiles(client) -> list[str]:
    """The lease profiles of the sessions alive now."""
    return [p["name"] for p in lxdapi.listing(client.api.profiles) if p["name"].startswith(SESSION_PROFILE_PREFIX)]


def wait_for(flag: Path, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the inner session ended early:\n{proc.stdout.read() if proc.stdout else ''}")
        assert time.monotonic() < deadline, f"{flag.name} never appeared"
        time.sleep(0.05)


HOLD = """
import pathlib
import time

import pytest


@pytest.mark.lxd({names})
def test_holds(lxd):
    for name in lxd:
        lxd[name].write_text("/root/dirty", "x")
        if lxd[name].status == "Stopped":
            lxd[name].instance.start(wait=True)  # the crash leaves it running
    pathlib.Path({flag!r}).touch()
    deadline = time.monotonic() + 120
    while not pathlib.Path({release!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def holding_suite(path: Path, names: list[str], tag: str = "") -> tuple[Path, Path]:
    flag, release = path / f"holding{tag}", path / f"release{tag}"
    (path / f"test_hold{tag}.py").write_text(HOLD.format(names=", ".join(repr(n) for n in names), flag=str(flag),
                                                         release=str(release)))
    return flag, release


def crashed_session(pytester: pytest.Pytester, name: str) -> int:
    """A session that changed ``name`` and a declared container, killed with -9 mid-test; its pid."""
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    flag, _ = holding_suite(pytester.path, [name, "web"])
    proc = start_session(pytester.path)
    wait_for(flag, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return proc.pid


def test_sigkill_mid_test_next_session_restores_and_sweeps(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = user_config(lxd_client, name)
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
    assert user_config(lxd_client, name) == found
    (kept,) = recovery_snapshots(lxd_client, name)  # the state before the rollback, for the user
    result.stdout.fnmatch_lines([f"NOTE kept the state {name} had before recovery as snapshot {name}/{kept} (LXD "
                                 f"deletes it in 7 days); to get it back: `{COMMANDS.restore(name, kept)}`"])
    assert snapshot_names(lxd_client, name) == ["user-snap", kept]
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert not orphans & instance_names(lxd_client)
    run_command(COMMANDS.restore(name, kept))  # the undo it printed brings the work back
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0


def test_gc_dry_run_lists_then_gc_recovers_a_killed_session(pytester, make_instance, lxd_client):
    name = make_instance(running=False)
    found = user_config(lxd_client, name)
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
    assert user_config(lxd_client, name) == found
    assert snapshot_names(lxd_client, name) == recovery_snapshots(lxd_client, name) != []
    assert lxdapi.status(lxd_client, name) == lxdapi.STOPPED  # as it was found; the crash left it running
    assert not any(n.startswith("lxdsnap-web-") for n in instance_names(lxd_client))
    assert lxdsnap("gc").stdout.strip() == "lxdsnap gc: nothing left by dead sessions"


def test_gc_never_touches_a_live_session(pytester, make_instance, lxd_client):
    name = make_instance()
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    flag, release = holding_suite(pytester.path, [name, "web"])
    proc = start_session(pytester.path)
    try:
        wait_for(flag, proc)
        before = instance_names(lxd_client)
        result = lxdsnap("gc")
        assert result.stdout.strip() == "lxdsnap gc: nothing left by dead sessions", result.stdout
        assert instance_names(lxd_client) == before
        assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 0  # the live session's state, untouched
        release.touch()
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, output
    assert snapshot_names(lxd_client, name) == []


def test_two_sessions_take_turns_on_one_container(pytester, make_instance, lxd_client):
    name = make_instance()
    pytester.makefile(".toml", pyproject=PYPROJECT)
    first_flag, first_release = holding_suite(pytester.path, [name], tag="_a")
    second = pytester.mkdir("second")
    (second / "pyproject.toml").write_text(PYPROJECT)
    (second / "test_second.py").write_text(f"""
import pytest


@pytest.mark.lxd("{name}")
def test_gets_it_clean_after_the_first(lxd):
    assert not lxd["{name}"].exists("/root/dirty")
""")
    impatient = pytester.mkdir("impatient")
    (impatient / "pyproject.toml").write_text(PYPROJECT)
    (impatient / "test_impatient.py").write_text((second / "test_second.py").read_text())
    first = start_session(pytester.path)
    try:
        wait_for(first_flag, first)
        gave_up = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--lxd-lease-wait=1"],
                                 cwd=impatient, capture_output=True, text=True, timeout=120)
        assert gave_up.returncode == 1, gave_up.stdout
        assert f"instance '{name}' is in use by another lxdsnap session (host " in gave_up.stdout
        assert f"pid {first.pid}" in gave_up.stdout and "waited 1 s" in gave_up.stdout
        leases = set(session_profiles(lxd_client))
        waiting = start_session(second, "--lxd-lease-wait=120")
        deadline = time.monotonic() + 60
        while set(session_profiles(lxd_client)) <= leases:  # the second session is up: it holds a lease
            assert waiting.poll() is None and time.monotonic() < deadline, "the second session never started"
            time.sleep(0.05)
        time.sleep(1)  # a second session that did not wait would have claimed it within this
        holder = read_tag(lxdapi.get_instance(lxd_client, name)["config"][OWNER_KEY])
        assert holder is not None and holder.holder.pid == first.pid, "the second session took it from the first"
        assert waiting.poll() is None, "the second session must wait for the first"
        first_release.touch()
        out_first, _ = first.communicate(timeout=60)
        out_second, _ = waiting.communicate(timeout=120)
    finally:
        first.kill()
        first.communicate()
    assert first.returncode == 0, out_first
    assert waiting.returncode == 0, out_second
    assert snapshot_names(lxd_client, name) == []
    assert OWNER_KEY not in lxdapi.get_instance(lxd_client, name)["config"]


def test_second_ctrl_c_exits_at_once_with_the_recovery_command(pytester, make_instance, lxd_client):
    name = make_instance(snapshot="user-snap")
    found = user_config(lxd_client, name)
    pytester.makefile(".toml", pyproject=PYPROJECT)
    flag, _ = holding_suite(pytester.path, [name])
    proc = start_session(pytester.path)
    try:
        wait_for(flag, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)  # the reset (a forced stop, a restore, a start) is under way
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "lxdsnap: second Ctrl-C: cleanup stopped. To finish it, run:" in output
    assert "  lxdsnap gc" in output and f"{COMMANDS.restore(name, 'lxdsnap-')}" in output
    done = lxdsnap("gc")
    assert done.returncode == 0, done.stdout + done.stderr
    assert user_config(lxd_client, name) == found, done.stdout
    assert snapshot_names(lxd_client, name) == ["user-snap", *recovery_snapshots(lxd_client, name)]
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1


def lxd_daemon_pid() -> int:
    """The daemon: the oldest process named lxd or incusd (its helpers, forkstart and callhook, come and go)."""
    comm = Path(BACKEND.daemon[0]).name
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == comm:
                found.append((int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19]), int(entry.name)))
        except OSError:
            continue
    assert found, f"no {comm} process: is the daemon running?"
    return min(found)[1]


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


def test_a_hung_daemon_errors_the_test_and_nothing_hangs(pytester, make_instance, lxd_client):
    name = make_instance()
    found = user_config(lxd_client, name)
    ready, flag = daemon_fault_suite(pytester, name)
    proc = start_session(pytester.path, "--lxd-timeout=3")
    daemon = lxd_daemon_pid()
    try:
        wait_for(ready, proc)
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
    assert "Read timed out" in output or "timed out" in output, output
    assert f"resetting container '{name}'" in output  # the reset could not run either: it says so
    # every call gave up after --lxd-timeout=3 (about 9 s here: the test's exec, the reset, the cleanup); a wait
    # on anything without a limit (a 60 s lease wait, LXD's 120 s default, an operation) would pass 30 s
    assert took < 30, f"the session took {took:.1f} s to give up"
    done = lxdsnap("gc")  # the daemon is back and the session is gone: gc puts it right
    assert done.returncode == 0, done.stdout + done.stderr
    assert user_config(lxd_client, name) == found
    assert snapshot_names(lxd_client, name) == recovery_snapshots(lxd_client, name)
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1


@pytest.fixture
def small_pool(lxd_client):
    """A dir pool on a 64 MiB tmpfs: once a container fills it, a snapshot (a copy on dir) does not fit."""
    mount = Path(f"/tmp/lxdsnap-small-{os.getpid()}")
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    (mount / "pool").mkdir()
    pool = f"t-lxdsnap-small-{os.getpid()}"
    lxd_client.api.storage_pools.post(json={"name": pool, "driver": "dir", "config": {"source": str(mount / "pool")}})
    yield pool
    lxd_client.api.storage_pools[pool].delete()
    subprocess.run(["umount", str(mount)], check=True)
    mount.rmdir()


def test_a_full_pool_is_a_clear_error_and_the_container_stays_as_it_was(suite, lxd_client, small_pool):
    name = f"t-lxdsnap-full-{os.getpid()}"
    lxc("launch", "lxdsnap/busybox", name, "--storage", small_pool)
    try:
        lxc("exec", name, "--", "dd", "if=/dev/zero", "of=/root/big", "bs=1M", "count=61")
        found = user_config(lxd_client, name)
        suite.makepyfile(NEVER_RUNS.format(name=name))
        result = suite.runpytest()
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*preparing container '{name}' failed: *No space left on device*",
                                     f"*storage pool '{small_pool}' is full*"])
        assert user_config(lxd_client, name) == found
        assert snapshot_names(lxd_client, name) == []
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
    found = user_config(lxd_client, name)
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
    assert user_config(lxd_client, name) == found
    assert snapshot_names(lxd_client, name) == ["user-snap", *recovery_snapshots(lxd_client, name)]
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
