"""The host's package cache (`lxdsnap setup --package-cache`): a cache that answers is used as it is, a port
taken by something else is refused, a cache setup started is recorded and `--undo` stops it (a second, real
apt-cacher-ng on a free loopback port, so the usual one on 127.0.0.1:3142 is never touched)."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator

import pytest

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import packagecache, setupundo
from pytest_lxdsnap.host.setupchanges import Change, ChangeLog
from pytest_lxdsnap.host.setupundo import Decision, Seen, decide
from pytest_lxdsnap.lxd.backends import LXD

from .conftest import free_port, lxdsnap


def test_a_cache_that_answers_is_used_as_it_is(package_cache, tmp_path):
    log: list[str] = []
    changes = ChangeLog(tmp_path / "state.json")
    assert packagecache.ensure_package_cache(log.append, changes, package_cache) is None
    assert log == [f"package cache: apt-cacher-ng answers at {package_cache}"]
    assert changes.added == [] and not (tmp_path / "state.json").exists()


@pytest.fixture
def other_service() -> Iterator[str]:
    """An HTTP server on a free loopback port that is not a package cache."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_port_taken_by_another_service_is_refused(other_service, tmp_path):
    assert packagecache.cache_answers(other_service) == "something else"
    assert packagecache.describe_cache(other_service) == (False, f"{other_service} answers, but not as apt-cacher-ng")
    with pytest.raises(LxdSnapError, match=rf"^{other_service} is taken by a service that is not apt-cacher-ng: "
                       r"stop it, then rerun `lxdsnap setup --package-cache`"):
        packagecache.ensure_package_cache(lambda line: None, ChangeLog(tmp_path / "state.json"), other_service)
    assert not (tmp_path / "state.json").exists()


def test_nothing_listening_is_reported_as_such():
    address = f"127.0.0.1:{free_port()}"
    assert packagecache.cache_answers(address) is None
    assert packagecache.describe_cache(address) == (False, f"nothing answers at {address}")


def test_a_cache_setup_started_is_recorded_and_undo_stops_it(package_cache, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    state = tmp_path / "state.json"
    log: list[str] = []
    pid = packagecache.ensure_package_cache(log.append, ChangeLog(state, LXD.name), address)
    try:
        assert pid is not None and packagecache.alive(pid)
        assert packagecache.cache_answers(address) == "apt-cacher-ng"
        assert f"package cache: started apt-cacher-ng (pid {pid}) on {address}" in log[-1]
        (recorded,) = ChangeLog(state).load()
        assert (recorded.kind, recorded.data["pid"], recorded.data["address"]) == ("package-cache", pid, address)
        assert packagecache.ensure_package_cache(log.append, ChangeLog(state, LXD.name), address) is None  # idempotent
        undone: list[str] = []
        assert setupundo.undo(LXD, state, undone.append)
        assert f"undone: started apt-cacher-ng (pid {pid}) on {address}" in undone
        assert not packagecache.alive(pid) and packagecache.cache_answers(address) is None
        assert not state.exists()
        assert not any(path.exists() for path in packagecache.run_files(int(address.rsplit(":", 1)[1])))
    finally:
        if pid:
            packagecache.stop(pid, address)
    assert packagecache.cache_answers(package_cache) == "apt-cacher-ng"  # the usual one was never touched


def test_undo_leaves_a_process_that_is_not_the_one_recorded(tmp_path):
    seen = setupundo.observe(Change("package-cache", "lxd", {"pid": 1, "started": -1, "address": "x"}), [])
    assert seen == Seen(gone=True)  # pid 1 is not apt-cacher-ng: never signalled


@pytest.mark.parametrize(("left", "expected"), [
    ([Change("package-cache", "lxd", {})], Decision(False, "the apt-cacher-ng setup started was left running")),
    ([], Decision(True)),
])
def test_the_package_stays_while_the_cache_setup_started_does(left, expected):
    assert decide(Change("package", "lxd", {"name": "apt-cacher-ng"}), Seen(), left) == expected


def test_doctor_reports_the_package_cache_and_the_debian_image(package_cache, debian):
    result = lxdsnap("doctor")
    assert re.search(rf"^ok  package cache +apt-cacher-ng answers at {package_cache}$", result.stdout, re.M), \
        result.stdout
    assert re.search(rf"^ok  image {debian} +present$", result.stdout, re.M), result.stdout
    assert lxdsnap("doctor").stdout == result.stdout  # doctor changes nothing
