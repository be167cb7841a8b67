"""Containers the suite declares in pyproject.toml: launched, provisioned, reset to the baseline, deleted."""

from __future__ import annotations

import re

import pytest

from .helpers import DECLARED_WEB, PYPROJECT, assert_summary, declare, instance_names, traces_of

DECLARED = PYPROJECT + declare(
    "web", config={"user.role": "web", "limits.processes": 500},
    provision=["mkdir -p /srv/www && echo hello > /srv/www/index.html", "echo provisioned >> /etc/motd"],
) + declare("db", pool="default")


def test_declared_container_lifecycle(pytester, lxd_client):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=DECLARED)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("attempt", range(3))
        def test_web(lxd, attempt):
            web = lxd["web"]
            assert web.name == "web"
            assert web.instance_name.startswith("lxdsnap-web-")
            assert web.read_text("/srv/www/index.html") == "hello\\n"
            assert web.read_text("/etc/motd").count("provisioned") == 1
            assert web.instance.config["user.role"] == "web"
            assert web.instance.config["limits.processes"] == "500"
            assert not web.exists("/srv/www/changed")
            web.write_text("/srv/www/changed", "yes")
            web.exec("rm /srv/www/index.html", check=True)

        @pytest.mark.lxd("web", "db")
        def test_two(lxd):
            assert lxd["db"].instance.devices["root"]["pool"] == "default"
            assert lxd["web"].exists("/srv/www/index.html")
            lxd["db"].exec(["rm", "-rf", "/etc"], check=True)

        @pytest.mark.lxd("db")
        def test_db_again(lxd):
            assert lxd["db"].exists("/etc/passwd")

        def test_without_marker_pays_nothing():
            pass
    """)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=6)
    assert_summary(result, "web", kind="declared", instance="lxdsnap-web-*", resets="4", leftovers="0")
    assert_summary(result, "db", kind="declared", instance="lxdsnap-db-*", resets="2", leftovers="0")
    assert instance_names(lxd_client) == before


def test_provisioning_failure_is_reported_once_and_leaves_nothing(pytester, lxd_client):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + """
[tool.lxdsnap.containers.broken]
image = "lxdsnap/busybox"
provision = ["true", "echo about to fail; echo no such package >&2; exit 7"]
""")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("broken")
        @pytest.mark.parametrize("attempt", range(2))
        def test_uses_it(lxd, attempt):
            raise AssertionError("the body must not run")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*provisioning declared container 'broken' (instance lxdsnap-broken-*) failed: "
        "'echo about to fail; echo no such package >&2; exit 7' exited 7",
        "*stderr: no such package",
        "*Fix `provision` in [[]tool.lxdsnap.containers.broken]",
    ])
    result.stdout.no_fnmatch_line("*the body must not run*")
    assert instance_names(lxd_client) == before
    token = re.search(r"\(instance lxdsnap-broken-([0-9a-f]{8})\) failed", result.stdout.str())
    assert token, "the message names the instance, and so the session's token"
    assert traces_of(lxd_client, token.group(1)) == []  # no instance, tag, lease profile or project of that session


@pytest.mark.parametrize("option", ["--collect-only", "--setup-plan", "--fixtures", "--markers"])
def test_a_run_that_executes_no_test_touches_nothing(pytester, lxd_client, tmp_path, option):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            pass
    """)
    before = instance_names(lxd_client)
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert instance_names(lxd_client) == before  # nothing launched
    unreachable = pytester.runpytest(option, f"--lxd-endpoint={tmp_path / 'no-lxd-here.socket'}")
    assert unreachable.ret == pytest.ExitCode.OK, unreachable.stdout.str()  # never even connected
    assert "not reachable" not in unreachable.stdout.str() + unreachable.stderr.str()
