"""The systemd tier: Debian 12 + systemd containers (``lxdsnap/debian-12``), systemd readiness for declared and
existing containers, each clone's own identity, and real packages through the host's package cache.

Needs ``lxdsnap setup --image debian --package-cache`` (``make setup-debian``). In CI (CI=true) a missing image
or cache fails these tests; elsewhere they are skipped with the command to run.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import hostsetup
from pytest_lxdsnap.lxd.connection import Endpoint

from .helpers import (
    NEVER_RUNS,
    PYPROJECT,
    assert_summary,
    free_port,
    instance_names,
    lxc,
    lxc_exec_status,
    lxdsnap,
    snapshot_names,
    user_config,
)

WEB = """
[tool.lxdsnap.containers.web]
image = "lxdsnap/debian-12"
ready = "systemd"
package_cache = true
provision = ["apt-get update -q"]
"""
"""A declared Debian container as the README's first example declares it (tests/test_readme.py runs that one)."""


def booted(instance: str) -> str:
    """What `systemctl is-system-running --wait` says in the instance (checked from outside the plugin)."""
    for _ in range(100):  # right after a start systemd may not answer on its bus yet
        state = subprocess_out("lxc", "exec", instance, "--", "systemctl", "is-system-running", "--wait")
        if state in ("running", "degraded", "maintenance"):
            return state
        time.sleep(0.1)
    return state


def subprocess_out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def one_line(text: str) -> str:
    """``text`` for printf inside a TOML string: newlines as ``\\n`` (TOML's escape for printf's ``\n``)."""
    return text.replace("\n", "\\\\n")


# ---------------------------------------------------------------- existing containers


def test_tutorial_scenario_on_an_existing_debian_container(suite, make_instance, lxd_client, debian):
    name = make_instance(image=debian, snapshot="before-tutorial")
    assert booted(name) == "running"
    before = user_config(lxd_client, name)
    passwd = lxc("exec", name, "--", "cat", "/etc/passwd")
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("attempt", range(2))
        def test_change_the_container(lxd, attempt):
            c = lxd["{name}"]
            assert c.exec(["systemctl", "is-system-running"]).stdout == "running\\n"
            assert not c.exists("/root/this_file.txt")
            assert c.exec(["id", "tutorial"]).exit_code != 0
            c.exec(["touch", "/root/this_file.txt"], check=True)
            c.exec(["useradd", "--create-home", "tutorial"], check=True)
    """)
    result = suite.runpytest("-v")
    result.assert_outcomes(passed=2)
    assert_summary(result, name, kind="existing", instance=name, resets="2", strategies="inplace 2", leftovers="0")
    assert lxd_client.instances.get(name).status == "Running"
    assert booted(name) == "running"
    assert lxc_exec_status(name, "test", "-e", "/root/this_file.txt") == 1
    assert lxc_exec_status(name, "test", "-e", "/home/tutorial") == 1
    assert lxc("exec", name, "--", "cat", "/etc/passwd") == passwd
    assert snapshot_names(lxd_client, name) == ["before-tutorial"]
    assert user_config(lxd_client, name) == before


SLOW_UNIT = """[Unit]
Description=A boot step that takes a while (lxdsnap test)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sleep 3
[Install]
WantedBy=multi-user.target
"""


@pytest.mark.parametrize("ready", ["detected", "false"])
def test_an_existing_systemd_container_is_fully_booted_after_each_in_place_restore(suite, make_instance, lxd_client,
                                                                                   debian, ready):
    """systemd as PID 1 is detected and waited for; `ready = false` in [tool.lxdsnap.existing.<name>] turns the
    wait off, and then the next test does see the half-booted system (what the wait is for)."""
    name = make_instance(image=debian)
    assert booted(name) == "running"
    lxc("exec", name, "--", "sh", "-c", f"printf '{SLOW_UNIT}' > /etc/systemd/system/slow-boot.service && "
        "systemctl enable slow-boot.service")
    if ready == "false":
        suite.makefile(".toml", pyproject=PYPROJECT + f"\n[tool.lxdsnap.existing.{name}]\nready = false\n")
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("attempt", range(3))
        def test_booted(lxd, attempt):
            c = lxd["{name}"]
            state = c.exec(["systemctl", "is-system-running"]).stdout.strip()
            slow = c.exec(["systemctl", "is-active", "slow-boot.service"]).stdout.strip()
            if attempt == 0:  # the container as it was found: booted before slow-boot was enabled
                assert state == "running"
            elif "{ready}" == "detected":  # restored in place: the plugin waited for the whole boot
                assert (state, slow) == ("running", "active")
            else:  # no wait: the test sees the boot still going
                assert state != "running" and slow != "active", (state, slow)
            assert not c.exists("/root/mark")
            c.write_text("/root/mark", "x")
    """)
    result = suite.runpytest("-v")
    result.assert_outcomes(passed=3)
    assert_summary(result, name, kind="existing", resets="3", leftovers="0")
    assert booted(name) == "running"


# ---------------------------------------------------------------- declared containers


def test_declared_debian_container_installs_real_packages_through_the_cache(pytester, lxd_client, debian,
                                                                            package_cache):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + WEB)
    pytester.makepyfile(test_nginx="""
        import urllib.request

        import pytest

        @pytest.mark.lxd("web")
        def test_nginx_answers_through_a_proxy_device(lxd):
            web = lxd["web"]
            assert web.read_text("/etc/apt/apt.conf.d/01lxdsnap-package-cache").count("127.0.0.1:3142") == 1
            web.exec(["apt-get", "install", "-y", "-q", "nginx-light"], check=True,
                     env={"DEBIAN_FRONTEND": "noninteractive"})
            assert web.exec(["systemctl", "is-active", "nginx"]).stdout == "active\\n"
            port = web.get_exposed_port(80)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                assert b"Welcome to nginx" in page.read()

        @pytest.mark.lxd("web")
        def test_the_next_test_finds_nginx_absent(lxd):
            web = lxd["web"]
            assert web.exec(["dpkg", "-s", "nginx-light"]).exit_code != 0
            assert web.exec(["dpkg", "-s", "nginx"]).exit_code != 0
            assert not web.exists("/usr/sbin/nginx")
            assert web.exec(["systemctl", "is-system-running"]).stdout == "running\\n"
    """)
    result = pytester.runpytest("-v", "test_nginx.py")
    result.assert_outcomes(passed=2)
    assert_summary(result, "web", kind="declared", resets="2", strategies="clone 2", leftovers="0")
    assert instance_names(lxd_client) == before


def test_every_clone_has_its_own_machine_id_and_hostname(pytester, lxd_client, debian):
    pytester.makefile(".toml", pyproject=PYPROJECT + """
[tool.lxdsnap.containers.web]
image = "lxdsnap/debian-12"
ready = "systemd"
provision = ["head -c 512 /dev/urandom > /var/lib/systemd/random-seed"]

[tool.lxdsnap.containers.tiny]
image = "lxdsnap/busybox"
""")
    pytester.makepyfile("""
        import json
        from pathlib import Path

        import pytest

        from pytest_lxdsnap.lxd.execution import read_file

        @pytest.mark.lxd("web", "tiny")
        @pytest.mark.parametrize("attempt", range(2))
        def test_identity(lxd, attempt):
            web = lxd["web"]
            base = web.instance_name.rsplit("-", 1)[0]
            Path(f"clone-{attempt}.json").write_text(json.dumps({
                "instance": web.instance_name,
                "machine_id": web.read_text("/etc/machine-id").strip(),
                "base_machine_id": read_file(web.client, base, "/etc/machine-id").decode().strip(),
                "hostname_file": web.read_text("/etc/hostname").strip(),
                "hostname": web.exec(["hostname"]).stdout.strip(),
                "seed": web.read_text("/var/lib/systemd/random-seed"),
                "base_seed": len(read_file(web.client, base, "/var/lib/systemd/random-seed")),
                "journal_id": web.exec(["journalctl", "--header", "--no-pager"]).stdout,
            }))
            tiny = lxd["tiny"]  # the busybox image has no machine-id: its clones are left as they are
            assert tiny.read_text("/etc/hostname") == "lxdsnap\\n"
            assert not tiny.exists("/etc/machine-id")
    """)
    pytester.runpytest("-v").assert_outcomes(passed=2)
    first, second = (json.loads((pytester.path / f"clone-{n}.json").read_text()) for n in range(2))
    assert first["instance"] != second["instance"]
    assert first["base_machine_id"] == second["base_machine_id"]  # the baseline keeps its identity
    ids = {first["machine_id"], second["machine_id"], first["base_machine_id"]}
    assert len(ids) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    for clone in (first, second):
        assert clone["hostname_file"] == clone["hostname"] == clone["instance"]
        assert clone["seed"] == "" and clone["base_seed"] == 512
        assert clone["machine_id"] in clone["journal_id"].replace("-", "")


# ---------------------------------------------------------------- bad input


def test_setup_refuses_an_unknown_image_name(tmp_path):
    run = lxdsnap("setup", "--image", "fedora", "--state-file", str(tmp_path / "state.json"))
    assert run.returncode == 2
    assert "argument --image: invalid choice: 'fedora' (choose from 'busybox', 'debian')" in run.stderr
    with pytest.raises(LxdSnapError, match=r"unknown image 'fedora': setup makes busybox, debian; import any other"):
        hostsetup.setup(Endpoint(), images=("fedora",), state_file=tmp_path / "state.json")
    assert not (tmp_path / "state.json").exists()


def test_a_declared_image_that_is_not_there_says_how_to_make_it(pytester, lxd_client, debian):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + WEB.replace("debian-12", "debian-13"))
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: [[]tool.lxdsnap.containers.web] image: no local image 'lxdsnap/debian-13'; valid choices: "
        "*lxdsnap/debian-12*. `lxdsnap setup` imports lxdsnap/busybox, `lxdsnap setup --image debian` builds "
        "lxdsnap/debian-12*"])
    assert instance_names(lxd_client) == before


def test_a_package_cache_that_does_not_answer_is_refused_before_anything_is_created(pytester, lxd_client, debian):
    before = instance_names(lxd_client)
    port = free_port()
    pytester.makefile(".toml", pyproject=PYPROJECT + WEB.replace("package_cache = true",
                                                                 f'package_cache = "127.0.0.1:{port}"'))
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: [[]tool.lxdsnap.containers.web] package_cache: the host's package cache is not running (nothing "
        f"answers at 127.0.0.1:{port}): start your apt cache at 127.0.0.1:{port}, or use package_cache = true for "
        "the one `lxdsnap setup --package-cache` starts, or remove package_cache. Nothing was created."])
    assert instance_names(lxd_client) == before


BROKEN_UNIT = """[Unit]
Description=A unit that fails (lxdsnap test)
[Service]
Type=oneshot
ExecStart=/bin/false
[Install]
WantedBy=multi-user.target
"""


def test_a_degraded_boot_is_refused_when_not_allowed_and_the_failed_units_are_listed(pytester, lxd_client, debian):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + f"""
[tool.lxdsnap.containers.web]
image = "lxdsnap/debian-12"
ready = {{ systemd = true, allow_degraded = false, timeout = 30 }}
provision = [
    "printf '{one_line(BROKEN_UNIT)}' > /etc/systemd/system/broken.service",
    "systemctl enable --now broken.service || true",
]
""")
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*container 'web' (instance lxdsnap-web-*) did not finish booting within 30 s: `systemctl is-system-running "
        "--wait` says 'degraded' (allow_degraded = false).",
        "*Failed units (systemctl --failed):",
        "*broken.service loaded failed failed A unit that fails (lxdsnap test)",
        "*To go on: fix or remove the units in `provision` (or the image), or accept a degraded boot: "
        "ready = {systemd = true, allow_degraded = true} in [[]tool.lxdsnap.containers.web]",
    ])
    result.stdout.no_fnmatch_line("*the body must not run*")
    assert instance_names(lxd_client) == before


HANGING_UNIT = """[Unit]
Description=A boot step that never ends (lxdsnap test)
[Service]
Type=oneshot
ExecStart=/bin/sleep 600
[Install]
WantedBy=multi-user.target
"""


def test_a_boot_that_never_finishes_times_out_and_says_what_it_waits_for(pytester, lxd_client, debian):
    """The unit is enabled, not started: the baseline is ready, and every clone's boot hangs on it."""
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + f"""
[tool.lxdsnap.containers.web]
image = "lxdsnap/debian-12"
ready = {{ systemd = true, timeout = 3 }}
provision = [
    "printf '{one_line(HANGING_UNIT)}' > /etc/systemd/system/hang.service",
    "systemctl enable hang.service",
]
""")
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest("--lxd-strategy=clone")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*container 'web' (instance lxdsnap-web-*-1) did not finish booting within 3 s: `systemctl "
        "is-system-running --wait` says 'still starting'.",
        "*Jobs still waiting (systemctl list-jobs):",
        "*hang.service*start*running*",
        "*To go on: fix the units in `provision` (or the image), or raise the timeout: ready = {systemd = true, "
        "timeout = 120} in [[]tool.lxdsnap.containers.web]",
    ])
    assert instance_names(lxd_client) == before
