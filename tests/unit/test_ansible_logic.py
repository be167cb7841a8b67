"""The Ansible side's pure logic: the inventory's host variables, limits, what a run's results say, the
idempotence verdict, the content digest a kept build is keyed by, and the ``playbook`` key's validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_lxdsnap.ansible.converge import content_digest
from pytest_lxdsnap.ansible.inventory import Target, inventory
from pytest_lxdsnap.ansible.runner import PlaybookResult, _problem, check_idempotent, check_limit
from pytest_lxdsnap.declarations import parse_table
from pytest_lxdsnap.errors import ConfigError, NotIdempotent, PlaybookError
from pytest_lxdsnap.lxd.connection import Endpoint

WHERE = "test_x.py::test_y (containers 'web')"


def test_inventory_carries_the_session_endpoint_tls_project_and_pin():
    endpoint = Endpoint(url="https://127.0.0.1:8443", cert="c.crt", key="c.key", insecure=True)
    found = inventory([Target("web", "lxdsnap-web-1", endpoint, project="p", fingerprint="ab" * 32)])
    assert found == {"lxdsnap": {"hosts": {"web": {
        "ansible_connection": "lxdsnap", "ansible_python_interpreter": "/usr/bin/python3",
        "lxdsnap_instance": "lxdsnap-web-1", "lxdsnap_endpoint": "https://127.0.0.1:8443", "lxdsnap_timeout": 120.0,
        "lxdsnap_disposable": False, "lxdsnap_project": "p", "lxdsnap_cert": "c.crt", "lxdsnap_key": "c.key",
        "lxdsnap_fingerprint": "ab" * 32}}}}


def test_a_pin_is_passed_only_under_insecure():
    hosts = inventory([Target("web", "i", Endpoint(url="/run/lxd.socket"), fingerprint="ff")])["lxdsnap"]["hosts"]
    host = hosts["web"]
    assert "lxdsnap_fingerprint" not in host and host["lxdsnap_endpoint"] == "/run/lxd.socket"


@pytest.mark.parametrize(("limit", "expected"), [(None, None), ("web", "web"), (["web", "db"], "web,db"),
                                                  ("lxdsnap:!db", "lxdsnap,!db"), ("we*", "we*")])
def test_limits_that_name_declared_containers_or_patterns(limit, expected):
    assert check_limit(limit, ["web", "db"], WHERE) == expected


def test_a_limit_naming_an_undeclared_container_is_refused():
    with pytest.raises(PlaybookError, match=r"^test_x.py::test_y \(containers 'web'\): limit names container 'db', "
                       r"which the test does not declare \(declared: \"web\"\); add it to the marker"):
        check_limit("web,db", ["web"], WHERE)


def result(**fields: object) -> PlaybookResult:
    return PlaybookResult(Path("/p/site.yml"), **fields)  # type: ignore[arg-type]


def test_problems_from_the_callback_data():
    data = {"messages": {"web": ["a task: boom"]}}
    instances = {"web": "lxdsnap-web-1"}
    assert _problem(result(rc=4, stdout=""), None, instances).startswith("ansible-playbook could not run /p/site.yml")
    assert _problem(result(rc=4, stdout="", unreachable={"web": 1}), data, instances).startswith(
        "Ansible could not reach container 'web' (instance lxdsnap-web-1): a task: boom.")
    assert _problem(result(rc=2, stdout="", failed_tasks={"web": ["a task"]}), data, instances) == (
        "the play failed on container 'web' (instance lxdsnap-web-1):\n  task a task: boom")
    assert _problem(result(rc=0, stdout=""), {"messages": {}}, instances).startswith(
        "the play ran on none of the test's containers (\"web\")")
    assert _problem(result(rc=0, stdout="", ok={"web": 1}), {"messages": {}}, instances) is None


def test_idempotence_names_each_changed_task():
    clean = result(rc=0, stdout="", changed={"web": 0})
    assert check_idempotent(clean, WHERE) is clean
    with pytest.raises(NotIdempotent) as caught:
        check_idempotent(result(rc=0, stdout="", changed={"web": 2},
                                changed_tasks={"web": ["site : one", "site : two"]}), WHERE)
    assert "site.yml is not idempotent" in str(caught.value)
    assert "\n  web: site : one\n  web: site : two\n" in str(caught.value)
    assert isinstance(caught.value, AssertionError)


def test_the_digest_follows_the_play_and_its_roles_not_the_tests(tmp_path):
    playbook = tmp_path / "converge.yml"
    playbook.write_text("- hosts: all\n")
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- debug: {}\n")
    first = content_digest(str(playbook))
    (tmp_path / "test_role.py").write_text("def test(): pass\n")
    assert content_digest(str(playbook)) == first
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- debug: {msg: x}\n")
    assert content_digest(str(playbook)) != first


def test_the_playbook_key(tmp_path, monkeypatch):
    (tmp_path / "converge.yml").write_text("- hosts: all\n")
    monkeypatch.chdir(tmp_path)
    spec = parse_table({"containers": {"web": {"image": "i", "playbook": "converge.yml"}}})["web"]
    assert spec.playbook == str(tmp_path / "converge.yml")
    with pytest.raises(ConfigError, match=r"playbook: .*/missing.yml does not exist \(the path starts at the folder"):
        parse_table({"containers": {"web": {"image": "i", "playbook": "missing.yml"}}})
    with pytest.raises(ConfigError, match="expected the path of an Ansible playbook"):
        parse_table({"containers": {"web": {"image": "i", "playbook": 3}}})
