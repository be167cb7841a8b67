"""The tutorial chapter's recipe (snapshot, change, stop, restore, start, delete the snapshot), as tests.

Each test changes the container; each finds it as it was before the run.
"""

import pytest

pytestmark = pytest.mark.lxd("demo-ubuntu-test")


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_create_this_file(lxd, attempt):
    container = lxd["demo-ubuntu-test"]
    assert not container.exists("/root/this_file.txt"), "a previous test's change survived the reset"
    container.exec(["touch", "/root/this_file.txt"], check=True)
    assert container.exists("/root/this_file.txt")


def test_break_etc(lxd):
    container = lxd["demo-ubuntu-test"]
    assert container.read_text("/etc/motd") == "Welcome to the tutorial container\n"
    container.exec("rm -rf /etc/motd /etc/passwd", check=True)
    assert container.exec(["cat", "/etc/motd"]).exit_code != 0


def test_stop_the_container(lxd):
    container = lxd["demo-ubuntu-test"]
    assert container.status == "Running"
    container.instance.stop(force=True, wait=True)
    assert container.status == "Stopped"  # the reset starts it again


def test_everything_is_back(lxd):
    container = lxd["demo-ubuntu-test"]
    assert container.status == "Running"
    assert container.read_text("/etc/motd") == "Welcome to the tutorial container\n"
    assert not container.exists("/root/this_file.txt")
