"""A declared, provisioned container: every test starts from the provisioned baseline."""

import pytest

pytestmark = pytest.mark.lxd("web")


def test_provisioned_page(lxd):
    web = lxd["web"]
    assert web.read_text("/var/www/index.html") == "<h1>hello from lxdsnap</h1>\n"
    assert web.exec(["id", "-u", "www"]).ok


def test_serve_it(lxd):
    web = lxd["web"]
    web.exec(["httpd", "-p", "127.0.0.1:8080", "-h", "/var/www", "-u", "www"], check=True)
    page = web.exec(["wget", "-qO-", "http://127.0.0.1:8080/"], check=True)
    assert "hello from lxdsnap" in page.stdout


def test_deface_it(lxd):
    web = lxd["web"]
    web.write_text("/var/www/index.html", "defaced")
    web.exec(["sed", "-i", "/^www:/d", "/etc/passwd"], check=True)


def test_baseline_is_back(lxd):
    web = lxd["web"]
    assert web.read_text("/var/www/index.html") == "<h1>hello from lxdsnap</h1>\n"
    assert web.exec(["id", "-u", "www"]).ok
    assert "httpd" not in web.exec(["ps"]).stdout, "the restore restarts the container: no httpd left running"
