"""pluggy hooks, testcontainers wait strategies on LXD containers, pytest-xdist workers, --lxd-durations."""

from __future__ import annotations

import fnmatch
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lxdsnap.lxd import lxdapi

from .helpers import (
    DECLARED_WEB,
    as_found,
    assert_left_as_found,
    assert_summary,
    instance_names,
    lxc,
)

USES_WEB = """
import pytest


@pytest.mark.lxd("web")
def test_it(lxd):
    pass
"""


def test_hooks_provision_ready_strategy_and_reset_order(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    log = pytester.path / "hooks.log"
    pytester.makeconftest(f"""
        def note(line):
            with open({str(log)!r}, "a") as fh:
                fh.write(line + "\\n")

        def pytest_lxdsnap_provision(container, spec):
            container.write_text("/root/from-hook", spec.name)
            note(f"provision {{spec.name}}")

        def pytest_lxdsnap_container_ready(container, spec):
            assert container.exists("/root/from-hook")
            note(f"ready {{container.name}}")

        def pytest_lxdsnap_choose_strategy(item, name, declared, requested):
            return "inplace" if item.name.endswith("[1]") else None

        def pytest_lxdsnap_before_reset(item, container, strategy):
            note(f"before {{item.name}} {{strategy}} dirty={{container.exists('/root/dirty')}}")

        def pytest_lxdsnap_after_reset(item, name, strategy):
            note(f"after {{item.name}} {{strategy}}")
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("i", range(3))
        def test_it(lxd, i):
            assert lxd["web"].read_text("/root/from-hook") == "web"
            lxd["web"].write_text("/root/dirty", "x")
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", kind="declared", resets="3", strategies="clone 2, inplace 1", leftovers="0")
    lines = log.read_text().splitlines()
    assert lines[:2] == ["provision web", "ready web"]  # before the baseline snapshot
    resets = [line for line in lines if line.startswith(("before", "after"))]
    assert resets == ["before test_it[0] clone dirty=True", "after test_it[0] clone",
                      "before test_it[1] inplace dirty=True", "after test_it[1] inplace",
                      "before test_it[2] clone dirty=True", "after test_it[2] clone"]
    assert lines.count("ready web") >= 3  # the baseline, the clones and the restored base


@pytest.mark.parametrize(
    ("conftest", "message"),
    [
        ("def pytest_lxdsnap_choose_strategy(item, name, declared, requested):\n    return 'fastest'",
         "*hook pytest_lxdsnap_choose_strategy returned a bad strategy for container 'web' in "
         "test_it.py::test_it: unknown value 'fastest'; valid values: auto*"),
        ("def pytest_lxdsnap_provision(container, spec):\n    raise RuntimeError('no network')",
         "*hook pytest_lxdsnap_provision failed for container 'web' (instance lxdsnap-web-*): "
         "RuntimeError: no network*"),
    ],
)
def test_a_bad_hook_is_one_clear_error_and_leaves_nothing(pytester, lxd_client, conftest, message):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_it=USES_WEB)
    result = pytester.runpytest()
    assert result.ret != 0
    all_output = result.stdout.lines + result.stderr.lines
    assert any(fnmatch.fnmatch(line, message) for line in all_output), "\n".join(all_output)
    assert instance_names(lxd_client) == before


def test_cleanup_hook_keeps_a_declared_container(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makeconftest("""
        def pytest_lxdsnap_cleanup(config, containers):
            return ["web"]
    """)
    pytester.makepyfile(test_it=USES_WEB)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["KEPT kept declared container 'web' as instance lxdsnap-web-* (a cleanup hook "
                                 "asked; `lxdsnap gc` deletes it after *)"])
    kept = [n for n in instance_names(lxd_client) if n.startswith("lxdsnap-web-")]
    try:
        assert len(kept) == 1
        assert "user.lxdsnap.kept" in lxdapi.get_instance(lxd_client, kept[0])["config"]
    finally:
        for name in kept:
            lxc("delete", "--force", name)


def test_testcontainers_wait_strategies_on_an_lxd_container(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB + """provision = [
    "mkdir -p /www && echo hello > /www/index.html",
    "sed -i 's|^trap|(sleep 1; httpd -p 127.0.0.1:8080 -h /www; echo service-started) \\\\& \\\\ntrap|' /sbin/init",
    "httpd -p 127.0.0.1:8080 -h /www",
]
ready = { wait_strategy = "waits:http_ready", timeout = 30 }
""")
    pytester.makepyfile(waits="""
        from testcontainers.core.wait_strategies import HttpWaitStrategy

        def http_ready():
            return HttpWaitStrategy(8080).for_status_code(200)
    """)
    pytester.makepyfile(test_waits="""
        import urllib.request

        import pytest
        from testcontainers.core.wait_strategies import (
            ExecWaitStrategy, HttpWaitStrategy, LogMessageWaitStrategy, PortWaitStrategy)

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("i", range(2))
        def test_strategies(lxd, i):
            web = lxd["web"]
            HttpWaitStrategy(8080).for_status_code(200).with_startup_timeout(10).wait_until_ready(web)
            PortWaitStrategy(8080).with_startup_timeout(10).wait_until_ready(web)
            ExecWaitStrategy(["test", "-e", "/www/index.html"]).with_startup_timeout(10).wait_until_ready(web)
            port = web.get_exposed_port(8080)
            assert web.get_exposed_port(8080) == port  # one device per port
            url = f"http://{web.get_container_host_ip()}:{port}/"
            assert urllib.request.urlopen(url, timeout=5).read() == b"hello\\n"
            assert web.get_wrapped_container().status == "running"
            assert "lxdsnap-port-8080" in web.instance.devices
            with pytest.raises(TimeoutError):
                LogMessageWaitStrategy("never printed").with_startup_timeout(1).wait_until_ready(web)

        @pytest.mark.lxd("web", strategy="inplace")
        def test_devices_go_with_the_reset(lxd):
            web = lxd["web"]
            assert not any(d.startswith("lxdsnap-port-") for d in web.instance.devices)
            web.get_exposed_port(8080)
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", kind="declared", leftovers="0")


def test_a_wait_strategy_that_times_out_names_the_container(pytester, lxd_client):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=DECLARED_WEB + 'ready = { wait_strategy = "waits:never", timeout = 2 }\n')
    pytester.makepyfile(waits="""
        from testcontainers.core.wait_strategies import HttpWaitStrategy

        never = HttpWaitStrategy(9999)
    """)
    pytester.makepyfile(test_it=USES_WEB)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*container 'web' (instance lxdsnap-web-*) was not ready: HttpWaitStrategy failed "
                                 "within 2 s: *Fix [[]tool.lxdsnap.containers.web] ready.wait_strategy 'waits:never'*"])
    assert instance_names(lxd_client) == before


def test_a_taken_host_port_is_a_clear_error(pytester, lxd_client, make_instance):
    import socket

    from pytest_lxdsnap.errors import PortError
    from pytest_lxdsnap.lxd.ports import expose

    name = make_instance()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortError, match=f"container 'box' \\(instance {name}\\): forwarding 127.0.0.1:{port} "
                                            "to port 80 failed: .*"):
            expose(lxd_client, name, "box", 80, host_port=port)
    assert "lxdsnap-port-80" not in lxdapi.get_instance(lxd_client, name)["devices"]


def test_xdist_workers_each_get_a_clean_state(pytester, lxd_client, make_instance):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}", "web")
        @pytest.mark.parametrize("i", range(20))
        def test_changes_both(lxd, i):
            for c in lxd.values():
                assert not c.exists("/root/dirty"), "another test's change leaked in"
                c.write_text("/root/dirty", str(i))
    """)
    result = pytester.runpytest("-n", "2", "-p", "xdist", "-v", "--lxd-durations=3")
    result.assert_outcomes(passed=20)
    lines = result.stdout.lines
    each = re.compile(rf"^ +lxdsnap: {name}, web: (\d+\.\d\d) s waiting for clean containers$")
    waits = sorted((float(m.group(1)) for m in map(each.match, lines) if m), reverse=True)
    assert len(waits) == 20, waits  # -v: every test's wait, relayed from its worker to the controller
    start = next(i for i, line in enumerate(lines)
                 if fnmatch.fnmatch(line, "-* slowest 3 lxd resets (time the test waited for clean containers) -*"))
    slowest = lines[start + 1:start + 5]  # the workers' waits: three, longest first, then the summary
    pattern = re.compile(rf"^(\d+\.\d\d)s {name}, web: (test_\w+\.py::test_changes_both\[\d+\])$")
    matched = [pattern.match(line) for line in slowest]
    assert all(matched[:3]) and not matched[3], slowest
    seconds = [float(m.group(1)) for m in matched[:3] if m]
    assert seconds == sorted(seconds, reverse=True), slowest
    assert all(abs(a - b) < 0.011 for a, b in zip(seconds, waits[:3], strict=True)), (slowest, waits[:3])  # the top 3
    assert len({m.group(2) for m in matched[:3] if m}) == 3, slowest  # three different tests
    assert instance_names(lxd_client) == before
    assert_left_as_found(lxd_client, name, found)
    assert lxc("exec", name, "--", "ls", "/root") == ""


def test_a_slow_launch_shows_its_progress_unless_quiet(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB + 'provision = ["sleep 3", "true"]\n')
    pytester.makepyfile(test_it=USES_WEB)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["lxdsnap: web: provisioning 1/2: sleep 3 (* s)", "lxdsnap: web: ready after * s"])
    quiet = pytester.runpytest("-q")
    quiet.assert_outcomes(passed=1)
    assert "lxdsnap: web:" not in quiet.stdout.str()


def test_on_a_terminal_a_slow_launch_is_one_line_rewritten_in_place(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB + 'provision = ["sleep 2", "sleep 2"]\n')
    pytester.makepyfile(test_it=USES_WEB)
    output = run_on_a_terminal([sys.executable, "-m", "pytest"], cwd=pytester.path)
    assert "1 passed" in output, output
    start, end = output.index("lxdsnap: web:"), output.index("lxdsnap: web: ready after")
    updates = re.findall(r"lxdsnap: web: ([^\r\n]*?) *(?=\r|\n)", output)
    assert "\n" not in output[start:end], f"the progress took more than one line:\n{output[start:end]!r}"
    assert len(updates) >= 4, updates  # the seconds tick on the same line
    assert any(u.startswith("provisioning 1/2: sleep 2") for u in updates), updates
    assert any(u.startswith("provisioning 2/2: sleep 2") for u in updates), updates
    assert output[end:].split("\n", 1)[0].startswith("lxdsnap: web: ready after")


def run_on_a_terminal(argv: list[str], cwd: Path) -> str:
    """Run a command with a pseudo-terminal as its stdout and stderr, as a user's shell would; its output."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**os.environ, "COLUMNS": "160"})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    proc.wait(timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace"))


def test_a_crashed_xdist_worker_leaves_nothing_behind(pytester, lxd_client, make_instance):
    name = make_instance()
    found = as_found(lxd_client, name)
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile(f"""
        import os
        import time

        import pytest

        @pytest.mark.lxd("{name}", "web")
        def test_crashes_its_worker(lxd):
            for c in lxd.values():
                c.write_text("/root/dirty", "x")
            os._exit(1)

        @pytest.mark.lxd("{name}", "web")
        @pytest.mark.parametrize("i", range(6))
        def test_others(lxd, i):
            time.sleep(0.3)
            for c in lxd.values():
                assert not c.exists("/root/dirty")
    """)
    result = pytester.runpytest("-n", "2", "-p", "xdist")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*test_crashes_its_worker*"])
    assert "crashed" in result.stdout.str()
    assert instance_names(lxd_client) == before
    assert_left_as_found(lxd_client, name, found, recovered=None)
    assert lxc("exec", name, "--", "ls", "/root") == ""


def test_verbose_shows_each_tests_wait_for_clean_containers(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile(test_it=USES_WEB)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["test_it.py::test_it PASSED*", "    lxdsnap: web: * s waiting for clean containers"])
    assert "waiting for clean containers" not in pytester.runpytest().stdout.str()
