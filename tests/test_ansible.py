"""Ansible against the test's containers: ``lxd.playbook`` (counts from the JSON callback, extra vars, limit, check
mode), ``lxd.idempotent``, ``lxd.inventory`` for an Ansible run by hand, the ``playbook`` declaration key (converged
once into the baseline; with --lxd-reuse keyed by the play's content), and every bad input with its one message.

Ansible needs python3 in the container: these run on the Debian image (``make setup-debian``). The inner sessions
run with no lxc on PATH: the connection plugin reaches containers through the REST API only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_lxdsnap.session import reuse

from .helpers import NEVER_RUNS, NOT_INSTALLED, PYPROJECT, assert_summary, declare, instance_names

GREETING = """
- hosts: lxdsnap
  gather_facts: false
  tasks:
    - name: write the greeting
      copy:
        dest: /etc/greeting
        content: "{{ greeting | default('hello') }}\\n"
    - name: read it back
      command: cat /etc/greeting
      changed_when: false
"""

ALWAYS_CHANGES = """
- hosts: all
  gather_facts: false
  tasks:
    - name: stamp the time
      shell: date +%s%N > /etc/stamp
    - name: leave the rest alone
      command: "true"
      changed_when: false
"""

FAILS = """
- hosts: all
  gather_facts: false
  tasks:
    - name: a task that fails
      command: sh -c "echo broken >&2; exit 3"
"""

BROKEN = """
- hosts: all
  tasks:
    - name: not a module
      no_such_module_anywhere: {}
"""

PLAYS = {"greeting": GREETING, "always_changes": ALWAYS_CHANGES, "fails": FAILS, "broken": BROKEN}


def two_debians(debian: str) -> str:
    return PYPROJECT + declare("web", debian) + declare("db", debian)


@pytest.fixture
def ansible_suite(suite, debian, monkeypatch):
    """An inner suite with the plays above, run with no lxc (nor incus) on PATH."""
    suite.makefile(".yml", **PLAYS)
    monkeypatch.setenv("PATH", "/nonexistent")
    return suite


PLAYBOOK_TESTS = """
import os
import subprocess
import sys

import pytest

from pytest_lxdsnap import NotIdempotent


@pytest.mark.lxd("web", "db")
def test_counts_vars_limit_and_check_mode(lxd):
    result = lxd.playbook("greeting.yml", extra_vars={"greeting": "hi there"})
    assert (result.rc, result.ok, result.changed, result.failed) == (0, {"web": 2, "db": 2}, {"web": 1, "db": 1},
                                                                     {"web": 0, "db": 0})
    assert result.changed_tasks == {"web": ["write the greeting"], "db": ["write the greeting"]}
    assert "PLAY RECAP" in result.stdout
    assert lxd["web"].read_text("/etc/greeting") == "hi there\\n"
    assert lxd.idempotent("greeting.yml", extra_vars={"greeting": "hi there"}).changed == {"web": 0, "db": 0}
    checked = lxd.playbook("greeting.yml", extra_vars={"greeting": "other"}, limit="db", check=True)
    assert checked.changed == {"db": 1}  # would change; --check changes nothing
    assert lxd["db"].read_text("/etc/greeting") == "hi there\\n"


@pytest.mark.lxd("web", "db")
def test_the_next_test_finds_clean_clones(lxd):
    assert not lxd["web"].exists("/etc/greeting") and not lxd["db"].exists("/etc/greeting")


@pytest.mark.lxd("web")
def test_not_idempotent_names_the_task(lxd):
    lxd.playbook("always_changes.yml")
    with pytest.raises(NotIdempotent) as caught:
        lxd.idempotent("always_changes.yml")
    message = str(caught.value)
    assert message.startswith("test_plays.py::test_not_idempotent_names_the_task (containers 'web'): "
                              "always_changes.yml is not idempotent")
    assert "\\n  web: stamp the time\\n" in message and "leave the rest alone" not in message


@pytest.mark.lxd("web")
def test_ansible_run_by_hand_on_the_inventory(lxd):
    inventory = lxd.inventory()
    adhoc = subprocess.run([sys.executable, "-m", "ansible.cli.adhoc", "-i", str(inventory), "lxdsnap", "-m",
                            "command", "-a", "cat /etc/hostname"], env={**os.environ, **lxd.ansible_env()},
                           capture_output=True, text=True)
    assert adhoc.returncode == 0, adhoc.stdout + adhoc.stderr
    hostname = lxd["web"].read_text("/etc/hostname")
    assert f"web | CHANGED | rc=0 >>\\n{hostname}" in adhoc.stdout
"""


def test_playbook_idempotent_and_inventory(ansible_suite, debian):
    ansible_suite.makefile(".toml", pyproject=two_debians(debian))
    ansible_suite.makepyfile(test_plays=PLAYBOOK_TESTS)
    result = ansible_suite.runpytest()
    result.assert_outcomes(passed=4)
    assert_summary(result, "web", kind="declared", leftovers="0")
    assert_summary(result, "db", kind="declared", leftovers="0")



BAD_INPUT_TESTS = """
import pytest

from pytest_lxdsnap import PlaybookError, UndeclaredContainer

WHERE = "test_bad.py::{test} (containers 'web'): "


@pytest.mark.lxd("web")
def test_missing(lxd):
    with pytest.raises(PlaybookError) as caught:
        lxd.playbook("nowhere/site.yml")
    assert str(caught.value).startswith(WHERE.format(test="test_missing") + "the playbook ")
    assert "nowhere/site.yml does not exist (relative paths start at the project's root" in str(caught.value)


@pytest.mark.lxd("web")
def test_syntax_error(lxd):
    with pytest.raises(PlaybookError) as caught:
        lxd.playbook("broken.yml")
    message = str(caught.value)
    assert message.startswith(WHERE.format(test="test_syntax_error") + "ansible-playbook could not run ")
    assert "no_such_module_anywhere" in message  # Ansible's own ERROR, shown
    assert caught.value.result.rc != 0


@pytest.mark.lxd("web")
def test_task_fails(lxd):
    with pytest.raises(PlaybookError) as caught:
        lxd.playbook("fails.yml")
    message = str(caught.value)
    instance = lxd["web"].instance_name
    assert message.startswith(WHERE.format(test="test_task_fails") + f"the play failed on container 'web' "
                              f"(instance {instance}):\\n  task a task that fails: ")
    assert "broken" in message and "PLAY RECAP" in message
    assert caught.value.result.failed == {"web": 1}


@pytest.mark.lxd("web")
def test_unreachable(lxd):
    lxd["web"].instance.stop(force=True, wait=True)
    with pytest.raises(PlaybookError) as caught:
        lxd.playbook("greeting.yml")
    message = str(caught.value)
    assert message.startswith(WHERE.format(test="test_unreachable") + "Ansible could not reach container 'web' "
                              f"(instance {lxd['web'].instance_name}): ")
    assert "is not running" in message.lower() and "Is it running?" in message


@pytest.mark.lxd("web")
def test_undeclared_container(lxd):
    with pytest.raises(PlaybookError, match=r"limit names container 'db', which the test does not declare "
                       r"\\(declared: \\"web\\"\\); add it to the marker: @pytest.mark.lxd\\(\\"web\\", \\"db\\"\\)"):
        lxd.playbook("greeting.yml", limit="db")
    with pytest.raises(UndeclaredContainer, match="container 'db' is not declared for test_bad.py::"):
        lxd["db"]
    assert not lxd["web"].exists("/etc/greeting")  # nothing ran
"""


def test_bad_input_gives_one_message_and_leaves_nothing(ansible_suite, debian):
    ansible_suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian))
    ansible_suite.makepyfile(test_bad=BAD_INPUT_TESTS)
    before = ansible_files()
    result = ansible_suite.runpytest()
    result.assert_outcomes(passed=5)
    assert_summary(result, "web", kind="declared", resets="5", leftovers="0")
    assert ansible_files() == before  # every test's inventory and Ansible's local files are gone


def ansible_files() -> set[str]:
    """The per-test Ansible folders in the temp directory (lxdsnap-ansible-*)."""
    import tempfile
    from pathlib import Path

    return {p.name for p in Path(tempfile.gettempdir()).glob("lxdsnap-ansible-*")}


def test_without_ansible_the_message_names_the_extra(suite, debian):
    suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian))
    suite.makeconftest(NOT_INSTALLED.format(package="ansible"))
    suite.makepyfile(test_plays="""
        import pytest
        from pytest_lxdsnap import MissingExtra

        @pytest.mark.lxd("web")
        def test_play(lxd):
            with pytest.raises(MissingExtra) as caught:
                lxd.playbook("site.yml")
            assert str(caught.value) == ("test_plays.py::test_play (containers 'web'): lxd.playbook needs Ansible "
                                         "(ansible-core), which is not installed: "
                                         "pip install 'pytest-lxdsnap[ansible]'")
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=1)
    assert_summary(result, "web", kind="declared", leftovers="0")

    suite.makefile(".yml", converge=GREETING)
    suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian, playbook="converge.yml"))
    refused = suite.runpytest()
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert refused.stderr.str().strip() == ("ERROR: [tool.lxdsnap.containers.web] playbook: a playbook needs Ansible "
                                            "(ansible-core), which is not installed: "
                                            "pip install 'pytest-lxdsnap[ansible]'")


CONVERGE = """
- hosts: web
  gather_facts: false
  roles:
    - stamp
"""

STAMP_TASKS = """
- name: stamp the build
  shell: head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /etc/build-id
  args:
    creates: /etc/build-id
- name: set the role variable
  copy:
    dest: /etc/role-var
    content: "{{ stamp_value }}"
"""

CONVERGED_TESTS = """
import pytest


@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range(2))
def test_converged(lxd, i):
    web = lxd["web"]
    assert web.read_text("/etc/role-var") == "{value}"
    assert not web.exists("/root/dirty")
    web.write_text("/root/dirty", "x")
    print("BUILD", web.read_text("/etc/build-id"))
    lxd.idempotent("converge.yml")
"""


def role_suite(suite: pytest.Pytester, debian: str, value: str = "one") -> None:
    suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian, playbook="converge.yml"))
    suite.makefile(".yml", converge=CONVERGE)
    role = Path(suite.path, "roles", "stamp")
    for folder, text in (("tasks", STAMP_TASKS), ("defaults", f"stamp_value: {value}\n")):
        (role / folder).mkdir(parents=True, exist_ok=True)
        (role / folder / "main.yml").write_text(text)
    suite.makepyfile(test_role=CONVERGED_TESTS.format(value=value))


def builds(result: pytest.RunResult) -> set[str]:
    return set(re.findall(r"BUILD ([0-9a-f]+)", result.stdout.str()))


def kept(client) -> list[str]:
    return sorted(n for n in instance_names(client) if re.fullmatch(r"lxdsnap-keep-web-[0-9a-f]+", n))


def test_a_declared_playbook_converges_once_and_reuse_keys_it_by_content(ansible_suite, debian, lxd_client):
    role_suite(ansible_suite, debian)
    once = ansible_suite.runpytest("-s")
    once.assert_outcomes(passed=2)
    assert len(builds(once)) == 1  # converged once, into the baseline both tests start from
    try:
        first = ansible_suite.runpytest("--lxd-reuse", "-s")
        first.assert_outcomes(passed=2)
        (name,) = kept(lxd_client)
        ansible_suite.makepyfile(test_role=CONVERGED_TESTS.format(value="one") + "\n# a test changed\n")
        second = ansible_suite.runpytest("--lxd-reuse", "-s")
        second.assert_outcomes(passed=2)
        second.stdout.fnmatch_lines([f"NOTE reusing {name} for 'web' (its declaration is unchanged)"])
        assert builds(second) == builds(first) and len(builds(first)) == 1
        role_suite(ansible_suite, debian, value="two")  # a role variable changed: a new build
        third = ansible_suite.runpytest("--lxd-reuse", "-s")
        third.assert_outcomes(passed=2)
        third.stdout.fnmatch_lines([f"NOTE deleted {name}: the declaration of 'web' changed since it was built"])
        assert builds(third) != builds(first) and kept(lxd_client) != [name]
    finally:
        for leftover in kept(lxd_client):
            reuse.delete_kept(lxd_client, leftover)  # by the REST API: lxc is off PATH here


def test_a_failing_declared_playbook_shows_its_output(suite, debian, lxd_client):
    suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian, playbook="fails.yml"))
    suite.makefile(".yml", fails=FAILS)
    suite.makepyfile(test_never=NEVER_RUNS.format(name="web"))
    before = instance_names(lxd_client)
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*provisioning declared container 'web' (instance lxdsnap-web-*) with its playbook: the play failed on "
        "container 'web' (instance lxdsnap-web-*):",
        "*task a task that fails: *",
        "*PLAY RECAP*",
        "*Fix the playbook, or `playbook` in ?tool.lxdsnap.containers.web?",
    ])
    assert instance_names(lxd_client) == before

    suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian, playbook="missing.yml"))
    refused = suite.runpytest()
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    assert refused.stderr.str().strip() == (f"ERROR: [tool.lxdsnap.containers.web] playbook: {suite.path}/missing.yml "
                                            "does not exist (the path starts at the folder of pyproject.toml)")


def test_plays_over_https_in_a_project_of_the_session(ansible_suite, debian, https_lxd):
    ansible_suite.makefile(".toml", pyproject=PYPROJECT + declare("web", debian))
    ansible_suite.makepyfile(test_https="""
        import pytest

        @pytest.mark.lxd("web")
        def test_play(lxd):
            assert lxd["web"].client.project.startswith("lxdsnap-")  # --lxd-project auto
            assert lxd.playbook("greeting.yml").changed == {"web": 1}
            assert lxd["web"].host.file("/etc/greeting").content_string == "hello\\n"
            assert lxd.idempotent("greeting.yml").ok == {"web": 2}
    """)
    result = ansible_suite.runpytest(*https_lxd.options(), "--lxd-project=auto")
    result.assert_outcomes(passed=1)
    assert_summary(result, "web", kind="declared", leftovers="0")
