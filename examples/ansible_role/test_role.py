"""Molecule's converge / idempotence / verify, with a clean clone of the converged container per test."""

import urllib.request

import pytest


def page(container, port=8080):
    """The site as a browser on this host sees it (an LXD proxy device on 127.0.0.1, no bridge)."""
    url = f"http://127.0.0.1:{container.get_exposed_port(port)}/"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.lxd("web")
def test_converged_site_is_served(lxd):
    host = lxd["web"].host  # testinfra, through the plugin's REST exec
    assert host.package("nginx-light").is_installed
    assert host.service("nginx").is_enabled and host.service("nginx").is_running
    assert host.file("/var/www/site/index.html").contains("Hello from lxdsnap")
    assert "Hello from lxdsnap" in page(lxd["web"])


@pytest.mark.lxd("web")
def test_idempotence(lxd):
    result = lxd.idempotent("converge.yml")  # fails naming each task that changed
    assert result.changed == {"web": 0} and result.ok["web"] >= 6


@pytest.mark.lxd("web")
def test_break_the_site(lxd):
    web = lxd["web"]
    web.exec("rm /var/www/site/index.html && systemctl stop nginx", check=True)
    assert not web.host.service("nginx").is_running


@pytest.mark.lxd("web")
def test_the_next_test_finds_a_clean_clone(lxd):
    assert lxd["web"].host.service("nginx").is_running
    assert "Hello from lxdsnap" in page(lxd["web"])


@pytest.mark.lxd("web")
def test_a_role_variable_per_test(lxd):
    result = lxd.playbook("converge.yml", extra_vars={"site_message": "Changed for one test", "site_port": 8081})
    assert result.changed == {"web": 3}  # the page, the site, and the handler that restarts nginx
    assert [task.split(" : ")[-1] for task in result.changed_tasks["web"]] == [
        "Template the page", "Template the site, listening on its port", "Restart nginx"]
    assert "Changed for one test" in page(lxd["web"], 8081)
