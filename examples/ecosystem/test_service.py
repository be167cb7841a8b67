"""A web service reached through a proxy device, and a test that uses two containers."""

import urllib.request

import pytest
from testcontainers.core.wait_strategies import HttpWaitStrategy


@pytest.mark.lxd("web")
def test_page_through_a_proxy_device(lxd):
    web = lxd["web"]
    port = web.get_exposed_port(8080)  # host 127.0.0.1:<free port> -> the container's 127.0.0.1:8080
    HttpWaitStrategy(8080).for_status_code(200).wait_until_ready(web)
    page = urllib.request.urlopen(f"http://{web.get_container_host_ip()}:{port}/", timeout=5).read()
    assert b"hello from lxdsnap" in page


@pytest.mark.lxd("web", "db")
@pytest.mark.parametrize("user", ["bob", "carol", "dave", "erin"])
def test_two_containers(lxd, user):
    web, db = lxd["web"], lxd["db"]
    assert db.read_text("/var/lib/db/users") == "alice\n"  # nobody else's user leaked in
    db.exec(["sh", "-c", f"echo {user} >> /var/lib/db/users"], check=True)
    web.write_text("/var/www/index.html", db.read_text("/var/lib/db/users"))
    assert user in web.exec(["wget", "-qO-", "http://127.0.0.1:8080/"]).stdout
    assert web.read_text("/etc/provisioned-by") == "pytest_lxdsnap_provision\n"
