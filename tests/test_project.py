"""--lxd-project NAME / auto: where the session creates its instances; existing containers stay in their own."""

from __future__ import annotations

import json
import secrets

import pytest

from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi, projects
from pytest_lxdsnap.safety.ownership import CREATED_KEY, KEPT_KEY, SessionIdentity

from .helpers import (
    DECLARED_WEB,
    as_found,
    assert_left_as_found,
    assert_summary,
    lxc,
    lxdsnap,
)


@pytest.fixture
def project(lxd_client):
    name = f"t-lxdsnap-{secrets.token_hex(3)}"
    lxc("project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false")
    yield name
    lxc("project", "delete", name)


def test_declared_container_in_a_project(pytester, project):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
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


def session_projects() -> list[str]:
    listed = json.loads(lxc("project", "list", "--format", "json"))
    return [p["name"] for p in listed if p["name"].startswith("lxdsnap-")]


def test_auto_project_holds_the_session_instances_and_goes_at_the_end(pytester, lxd_client, make_instance):
    name = make_instance(snapshot="user-snap")
    found = as_found(lxd_client, name)
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile(f"""
        import json
        import subprocess
        import pytest

        def names(project):
            return subprocess.run(["lxc", "list", "--project", project, "--format", "csv", "-c", "n"],
                                  check=True, capture_output=True, text=True).stdout.split()

        @pytest.mark.lxd("web", "{name}")
        @pytest.mark.parametrize("attempt", range(3))
        def test_it(lxd, attempt):
            listed = subprocess.run(["lxc", "project", "list", "--format", "json"], check=True, capture_output=True,
                                    text=True).stdout
            projects = [p["name"] for p in json.loads(listed) if p["name"].startswith("lxdsnap-")]
            assert len(projects) == 1
            assert lxd["web"].instance_name in names(projects[0])  # the session's own instances
            assert "{name}" in names("default")  # the existing container stays where it is
            for c in lxd.values():
                assert not c.exists("/root/x")
                c.write_text("/root/x", "x")
    """)
    result = pytester.runpytest("--lxd-project", "auto", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", kind="declared", resets="3", leftovers="0")
    assert_summary(result, name, kind="existing", resets="3", leftovers="0")
    assert session_projects() == []
    assert_left_as_found(lxd_client, name, found)


def test_gc_deletes_the_project_of_a_dead_session(lxd_client):
    dead = SessionIdentity(pid=2**22 + 1)  # no such process: a session that died without cleaning up
    project = projects.create(lxd_client, dead)
    inside = projects.in_project(lxd_client, project)
    body = {"name": "lxdsnap-web-dead", "source": {"type": "image", "alias": IMAGE_ALIAS},
            "config": {CREATED_KEY: dead.tag(lxdapi.where(inside, "lxdsnap-web-dead"))}}
    lxdapi.wait(inside, inside.api.instances.post(json=body))
    try:
        dry = lxdsnap("gc", "--dry-run").stdout
        assert f"would clean project {project}: of session {dead.token}, dead" in dry
        assert session_projects() == [project]
        done = lxdsnap("gc").stdout
        assert f"deleted instance lxdsnap-web-dead (project {project})" in done
        assert f"deleted project {project}" in done
    finally:
        if project in session_projects():
            projects.delete(lxd_client, project, dead)
    assert session_projects() == []



def test_an_auto_project_kept_for_failed_states_goes_once_they_expire(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARED_WEB)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_fails(lxd):
            assert False
    """)
    pytester.runpytest("--lxd-project", "auto", "--lxd-keep-failed").assert_outcomes(failed=1)
    (project,) = session_projects()
    inside = projects.in_project(lxd_client, project)
    (kept,) = [r["name"] for r in lxdapi.listing(inside.api.instances)]
    try:
        assert f"kept project {project}: it still holds {kept}" in lxdsnap("gc").stdout  # not expired yet
        lxdapi.set_config_key(inside, kept, KEPT_KEY, "1")  # expired long ago
        done = lxdsnap("gc").stdout
        assert f"deleted kept instance {kept} (project {project})" in done and f"deleted project {project}" in done
    finally:
        if project in session_projects():
            lxc("delete", "--force", "--project", project, kept)
            lxc("project", "delete", project)
    assert session_projects() == []
