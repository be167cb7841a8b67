"""``lxd["web"].host``: a pytest-testinfra Host whose commands go through the plugin's REST exec (never the lxc
CLI: the inner sessions run with no lxc on PATH), on declared and existing containers, over the unix socket and
over HTTPS; without testinfra it says which extra to install."""

from __future__ import annotations

from .helpers import DECLARED_WEB, NOT_INSTALLED, assert_summary

HOST_TESTS = """
import pytest


@pytest.mark.lxd("web", "{existing}")
def test_hosts(lxd):
    web, mine = lxd["web"].host, lxd["{existing}"].host
    assert web.backend.get_pytest_id() == "lxdsnap://web" and mine.backend.get_hostname() == "{existing}"
    assert web.file("/etc/passwd").exists and web.file("/etc/passwd").contains("^root:")
    assert not web.file("/root/testinfra").exists
    assert web.run("echo %s; exit 3", "a b").rc == 3 and web.run("echo %s", "a b").stdout == "a b\\n"
    assert web.check_output("printf %s", "out") == "out"
    web.run("touch /root/testinfra")
    assert lxd["web"].exists("/root/testinfra")  # the same instance as exec's
    assert mine.run("hostname").stdout.strip() == "{existing}"
    with pytest.raises(AssertionError):
        web.run_expect([0], "exit 2")


@pytest.mark.lxd("web")
def test_the_next_test_finds_a_clean_clone(lxd):
    assert not lxd["web"].host.file("/root/testinfra").exists


@pytest.mark.lxd("web")
def test_an_undeclared_container(lxd):
    with pytest.raises(KeyError, match="container 'db' is not declared for .*test_an_undeclared_container"):
        lxd["db"].host
"""


def test_host_runs_through_the_rest_exec(suite, make_instance, lxd_client, monkeypatch):
    existing = make_instance()
    suite.makefile(".toml", pyproject=DECLARED_WEB)
    suite.makepyfile(HOST_TESTS.format(existing=existing))
    with monkeypatch.context() as patched:
        patched.setenv("PATH", "/nonexistent")  # no lxc, no incus: only the REST API reaches the containers
        result = suite.runpytest()
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", kind="declared", resets="3", leftovers="0")
    assert_summary(result, existing, kind="existing", resets="1", leftovers="0")


def test_host_over_https(suite, https_lxd, lxd_client, make_instance):
    existing = make_instance()
    suite.makefile(".toml", pyproject=DECLARED_WEB)
    suite.makepyfile(HOST_TESTS.format(existing=existing))
    result = suite.runpytest(*https_lxd.options())
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", kind="declared", leftovers="0")


def test_without_testinfra_host_names_the_extra(suite, lxd_client):
    suite.makefile(".toml", pyproject=DECLARED_WEB)
    suite.makeconftest(NOT_INSTALLED.format(package="testinfra"))
    suite.makepyfile(test_host="""
        import pytest
        from pytest_lxdsnap import MissingExtra

        @pytest.mark.lxd("web")
        def test_host(lxd):
            with pytest.raises(MissingExtra) as caught:
                lxd["web"].host
            assert str(caught.value) == ("test_host.py::test_host: lxd['web'].host: Container.host needs "
                                         "pytest-testinfra, which is not installed: "
                                         "pip install 'pytest-lxdsnap[testinfra]'")
            assert lxd["web"].exec(["true"]).ok  # the container is fine without it
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=1)
    assert_summary(result, "web", kind="declared", leftovers="0")
