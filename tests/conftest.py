"""Fixtures and hooks of the suite against the real daemon: the LXD connection (a missing LXD fails, never skips),
throwaway instances, TLS, and the leftover checks (after each test, naming it, and after the whole run).

The helpers the tests import live in :mod:`tests.helpers`; tests/unit (no daemon) turns the per-test check off.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pylxd
import pytest

from pytest_lxdsnap.declarations import PACKAGE_CACHE
from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, alias_exists
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.host.packagecache import describe_cache
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import INCUS
from pytest_lxdsnap.lxd.connection import Endpoint, connect, default_socket

from .helpers import (
    BACKEND,
    HTTPS_ADDRESS,
    PYPROJECT,
    TEST_PREFIX,
    Https,
    footprint,
    left_since,
    lxc,
    make_certificate,
    plugin_leftovers,
    suite_certificates,
    throwaway_name,
)

CHECKING: pytest.StashKey[pylxd.Client | None] = pytest.StashKey()  # the leftover checks' client (None: no daemon)


def pytest_configure(config: pytest.Config) -> None:
    """Against Incus: its socket for the plugin and pylxd ($LXD_DIR), and `lxc` on PATH runs `incus`, so the
    checks from outside (here and in the pytester suites) read the same for both daemons."""
    if BACKEND is INCUS and not hasattr(config, "workerinput"):
        os.environ["LXD_DIR"] = os.path.dirname(INCUS.socket)
        shim = Path(tempfile.mkdtemp(prefix="lxdsnap-incus-cli-"))
        (shim / "lxc").write_text(f"#!/bin/sh\nexec {INCUS.cli} \"$@\"\n")
        (shim / "lxc").chmod(0o755)
        os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session")
def lxd_client() -> pylxd.Client:
    """The real daemon. Tests that need it fail here when it is missing: run `make setup` (`make setup-incus`)."""
    setup = "lxdsnap setup --incus" if BACKEND is INCUS else "lxdsnap setup"
    try:
        client = connect(Endpoint())
    except LxdSnapError as exc:
        pytest.fail(f"these tests need a real {BACKEND.name} daemon; run `{setup}` first.\n{exc}", pytrace=False)
    server = client.host_info["environment"].get("server", "lxd")
    if server != BACKEND.name:
        pytest.fail(f"LXDSNAP_BACKEND={BACKEND.name}, but the daemon at {default_socket()} is {server}", pytrace=False)
    return client


def need(what: str, fix: str) -> NoReturn:
    """Fail in CI (CI=true), skip elsewhere, for what the systemd tier needs beyond the daemon."""
    message = f"these tests need {what}: run `{fix}` (as root), or `make setup-debian`"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian(lxd_client: pylxd.Client) -> str:
    """The Debian 12 systemd image (`lxdsnap setup --image debian`) on the suite's daemon."""
    if not alias_exists(lxd_client, DEBIAN_ALIAS):
        need(f"the image {DEBIAN_ALIAS} on {BACKEND.name}",
             "lxdsnap setup --incus --image debian" if BACKEND is INCUS else "lxdsnap setup --image debian")
    return DEBIAN_ALIAS


@pytest.fixture(scope="session")
def package_cache() -> str:
    """The host's package cache (`lxdsnap setup --package-cache`), answering."""
    answers, detail = describe_cache()
    if not answers:
        need(f"the host's package cache ({detail})", "lxdsnap setup --package-cache")
    return PACKAGE_CACHE


@pytest.fixture
def make_instance(lxd_client: pylxd.Client) -> Iterator[Callable[..., str]]:
    """Create an instance (busybox unless ``image`` names another) that plays the user's own container; deleted
    after the test."""
    made: list[str] = []

    def make(*, running: bool = True, snapshot: str | None = None, config: dict[str, str] | None = None,
             image: str = IMAGE_ALIAS) -> str:
        name = throwaway_name()
        body = {"name": name, "source": {"type": "image", "alias": image}, "config": config or {}}
        lxdapi.wait(lxd_client, lxd_client.api.instances.post(json=body))
        made.append(name)
        if running:
            lxdapi.set_power(lxd_client, name, "start")
        if snapshot:
            lxdapi.wait(lxd_client, lxd_client.api.instances[name].snapshots.post(json={"name": snapshot}))
        return name

    yield make
    for name in made:
        if lxdapi.instance_exists(lxd_client, name):
            lxc("delete", "--force", name)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory with the strict settings a real project uses."""
    pytester.makefile(".toml", pyproject=PYPROJECT)
    return pytester


@pytest.fixture(scope="session")
def https_lxd(lxd_client: pylxd.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Https]:
    """The local daemon listening on loopback (core.https_address) with a client certificate this suite made
    and trusted; the address and the trust are removed again afterwards."""
    folder = tmp_path_factory.mktemp("tls")
    address = lxd_client.host_info["config"].get("core.https_address", "")
    if not address:
        address = HTTPS_ADDRESS
        lxdapi.wait(lxd_client, lxd_client.api.patch(json={"config": {"core.https_address": address}}))
    cert, key = make_certificate(folder, "trusted")
    socket_dir = os.path.dirname(default_socket())
    try:
        with open(cert, "rb") as fh, lxdapi.quiet_pylxd():
            lxd_client.certificates.create(password="", cert_data=fh.read(), name=f"{TEST_PREFIX}trusted")
        yield Https(f"https://{address}", cert, key, os.path.join(socket_dir, "server.crt"), folder)
    finally:
        for record in suite_certificates(lxd_client):
            lxd_client.api.certificates[record["fingerprint"]].delete()
        if address == HTTPS_ADDRESS:
            lxdapi.wait(lxd_client, lxd_client.api.patch(json={"config": {"core.https_address": ""}}))


# ------------------------------------------------------------------------------------------- leftover checks


def checking_client(config: pytest.Config) -> pylxd.Client | None:
    """One connection for the leftover checks, made on first use; None when no daemon answers (the tests that
    need one fail with the reason, and the ones that do not need one have nothing to leave)."""
    if CHECKING not in config.stash:
        try:
            config.stash[CHECKING] = connect(Endpoint())
        except LxdSnapError:
            config.stash[CHECKING] = None
    return config.stash[CHECKING]


@pytest.fixture(autouse=True)
def _left_by_this_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test (and every fixture's teardown: this one is set up first), what it made on the daemon and
    left there fails it by name: instances, lxdsnap keys, lease profiles and projects that were not there before.
    Only this run's count (names throwaway_name() gave out here; tags of this process, of one it started, or of a
    session that is gone): other runs may share the daemon. Three listings before and three after the test."""
    client = checking_client(request.config)
    before = footprint(client) if client is not None else None
    yield
    if client is None or before is None:
        return
    left = left_since(client, before)
    if left:
        pytest.fail(f"{request.node.nodeid} left: " + "; ".join(left), pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The whole suite must leave nothing behind: fail the run otherwise (not for a run of tests/unit alone,
    which never touches a daemon)."""
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return
    unit = Path(__file__).parent / "unit"
    if session.items and all(Path(item.path).is_relative_to(unit) for item in session.items):
        return
    client = checking_client(session.config)
    if client is None:
        return  # every LXD test has already failed with the reason
    leftovers = plugin_leftovers(client)
    if leftovers:
        print("\nLEFTOVERS after the test suite:\n  " + "\n  ".join(leftovers))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
