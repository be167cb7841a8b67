"""--lxd-project: declared containers live in the chosen LXD project; an unknown project is a usage error."""

from __future__ import annotations

import secrets

import pytest

from .conftest import PYPROJECT, assert_summary, lxc


@pytest.fixture
def project(lxd_client):
    name = f"t-lxdsnap-{secrets.token_hex(3)}"
    lxc("project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false")
    yield name
    lxc("project", "delete", name)


def test_declared_container_in_a_project(pytester, project):
    pytester.makefile(".toml", pyproject=PYPROJECT + '[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\n')
    pytester.makepyfile(f"""
        import subprocess
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("attempt", range(2))
        def test_in_project(lxd, attempt):
            listed = subprocess.run(["lxc", "list", "--project", "{project}", "--format", "csv", "-c", "n"],
                                    check=True, capture_output=True, text=True).stdout.split()
            # the base instance and its clones all live in the project
            assert lxd["web"].instance_name in listed
            assert all(n.startswith("lxdsnap-web-") for n in listed)
            assert not lxd["web"].exists("/root/x")
            lxd["web"].write_text("/root/x", "x")
    """)
    result = pytester.runpytest("--lxd-project", project)
    result.assert_outcomes(passed=2)
    assert_summary(result, "web", kind="declared", resets="2", leftovers="0")
    assert lxc("list", "--project", project, "--format", "csv", "-c", "n").split() == []


def test_unknown_project_is_a_usage_error(suite):
    suite.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            pass
    """)
    result = suite.runpytest("--lxd-project", "no-such-project")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: LXD project 'no-such-project' does not exist at unix socket * "
                                 "(project 'no-such-project'); existing projects: *default*"])
