"""Shared fixtures: a real LXD connection (a missing LXD fails, never skips) and throwaway instances."""

from __future__ import annotations

import datetime
import fnmatch
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
from pytest_lxdsnap.lxd.backends import BACKENDS, INCUS
from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.lxd.connection import Endpoint, connect, default_socket

HTTPS_ADDRESS = "127.0.0.1:8443"  # loopback only; set for the TLS tests when the daemon has no address
TEST_PREFIX = "t-lxdsnap-"  # instances the self-tests create; never the plugin's "lxdsnap-" prefix

PYPROJECT = """
[tool.pytest.ini_options]
filterwarnings = ["error"]
addopts = "--strict-markers -p no:cacheprovider"
"""


BACKEND = BACKENDS[os.environ.get("LXDSNAP_BACKEND", "lxd")]  # the daemon the suite runs against: lxd or incus
COMMANDS = Commands(incus=BACKEND is INCUS)  # the command lines the plugin prints for it


def pytest_configure(config: pytest.Config) -> None:
    """Against Incus: its socket for the plugin and pylxd ($LXD_DIR), and `lxc` on PATH runs `incus`, so the
    checks from outside (here and in the pytester suites) read the same for both daemons."""
    if BACKEND is INCUS and not hasattr(config, "workerinput"):
        os.environ["LXD_DIR"] = os.path.dirname(INCUS.socket)
        shim = Path(tempfile.mkdtemp(prefix="lxdsnap-incus-cli-"))
        (shim / "lxc").write_text(f"#!/bin/sh\nexec {INCUS.cli} \"$@\"\n")
        (shim / "lxc").chmod(0o755)
        os.environ["PATH"] = f"{shim}{os.pathsep}{os.environ['PATH']}"


NEVER_RUNS = """
import pytest


@pytest.mark.lxd("{name}")
def test_it(lxd):
    raise AssertionError("the body must not run")
"""
"""A suite whose one test must error before its body runs (bad input, a refused container)."""


def lxdsnap_argv(*args: str) -> list[str]:
    """The lxdsnap command line, as a user runs it, for the suite's daemon (`--incus` for Incus where it takes it)."""
    if BACKEND is INCUS and args and args[0] in ("setup", "doctor", "gc"):
        args = (args[0], "--incus", *args[1:])
    elif BACKEND is INCUS and len(args) > 2 and args[2] in ("setup", "doctor", "gc"):  # after --endpoint PATH
        args = (*args[:3], "--incus", *args[3:])
    return [sys.executable, "-m", "pytest_lxdsnap.host.cli", *args]


def lxdsnap(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the lxdsnap command against the suite's daemon."""
    return subprocess.run(lxdsnap_argv(*args), capture_output=True, text=True, timeout=300)


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


def free_port() -> int:
    """A loopback port nothing listens on (now), below 32768 (apt-cacher-ng takes no higher one)."""
    for _ in range(100):
        port = 20000 + secrets.randbelow(12000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


def run_command(line: str) -> str:
    """Run a command line the plugin printed (for lxc or incus), as a user would copy it."""
    return subprocess.run(shlex.split(line), check=True, capture_output=True, text=True).stdout


def lxc(*args: str) -> str:
    """Run the lxc client, as a user would, to check the plugin from outside."""
    return subprocess.run(["lxc", *args], check=True, capture_output=True, text=True).stdout


def lxc_exec_status(instance: str, *cmd: str) -> int:
    """Exit status of ``lxc exec instance -- cmd``: checks a container from outside the plugin."""
    return subprocess.run(["lxc", "exec", instance, "--", *cmd], check=False).returncode


@pytest.fixture
def make_instance(lxd_client: pylxd.Client) -> Iterator[Callable[..., str]]:
    """Create an instance (busybox unless ``image`` names another) that plays the user's own container; deleted
    after the test."""
    made: list[str] = []

    def make(*, running: bool = True, snapshot: str | None = None, config: dict[str, str] | None = None,
             image: str = IMAGE_ALIAS) -> str:
        name = f"{TEST_PREFIX}{secrets.token_hex(3)}"
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


def instance_names(client: pylxd.Client) -> set[str]:
    return {i["name"] for i in lxdapi.listing(client.api.instances)}


def snapshot_names(client: pylxd.Client, instance: str) -> list[str]:
    return [s["name"] for s in lxdapi.list_snapshots(client, instance)]


def recovery_snapshots(client: pylxd.Client, instance: str) -> list[str]:
    """The snapshots recovery took of a dead session's container before rolling it back (kept for the user)."""
    return [s for s in snapshot_names(client, instance) if s.startswith("before-lxdsnap-recovery-")]


def user_config(client: pylxd.Client, instance: str) -> dict[str, object]:
    """Config (without LXD's volatile keys), devices and profiles: what 'exactly as found' compares."""
    record = lxdapi.get_instance(client, instance)
    config = {k: v for k, v in record["config"].items() if not k.startswith("volatile.")}
    return {"config": config, "devices": record["devices"], "profiles": record["profiles"]}


def summary(output: object) -> dict[str, dict[str, str]]:
    """The lxdsnap summary table in pytest's output (text or a pytester result), by container name
    ("gw0/web" under pytest-xdist): each row's cells by column header."""
    text = output if isinstance(output, str) else output.stdout.str()  # type: ignore[attr-defined]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip("- ") == "lxdsnap" and line.startswith("-"))
    header = lines[start + 1]
    names = header.split()
    offsets = [header.index(f"{name}") if i == 0 else header.index(f"  {name}") + 2 for i, name in enumerate(names)]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith(("=", "-", "LEFTOVER", "PROBLEM", "NOTE", "KEPT", "[")):
            break
        cells = [line[a:b].strip() for a, b in zip(offsets, [*offsets[1:], None], strict=True)]
        row = dict(zip(names, cells, strict=True))
        rows[f"{row['worker']}/{row['container']}" if "worker" in row else row["container"]] = row
    return rows


def assert_summary(output: object, container: str, **cells: str) -> None:
    """The summary has a row for the container whose cells match these (fnmatch patterns)."""
    rows = summary(output)
    assert container in rows, f"no summary row for {container!r} in {sorted(rows)}"
    row = rows[container]
    wrong = {column: row.get(column) for column, pattern in cells.items()
             if not fnmatch.fnmatchcase(row.get(column, ""), pattern)}
    assert not wrong, f"summary row {row} does not match {cells}"


def plugin_leftovers(client: pylxd.Client) -> list[str]:
    """Every instance, snapshot or config key in LXD that a plugin session or these tests left behind."""
    found = []
    for record in lxdapi.listing(client.api.instances):
        name = record["name"]
        if name.startswith(("lxdsnap-", TEST_PREFIX)):
            found.append(f"instance {name}")
            continue
        if any(k.startswith("user.lxdsnap.") for k in record["config"]):
            found.append(f"config user.lxdsnap.* on {name}")
        found += [f"snapshot {name}/{s}" for s in snapshot_names(client, name) if s.startswith("lxdsnap-")]
    found += [f"profile {p['name']}" for p in lxdapi.listing(client.api.profiles)
              if p["name"].startswith("lxdsnap-session-")]
    found += [f"project {p['name']}" for p in lxdapi.listing(client.api.projects)
              if p["name"].startswith(("lxdsnap-", TEST_PREFIX))]
    found += [f"trusted certificate {c['name']}" for c in suite_certificates(client)]
    return found


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The whole suite must leave nothing behind: fail the run otherwise."""
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):
        return
    try:
        client = connect(Endpoint())
    except LxdSnapError:
        return  # every LXD test has already failed with the reason
    leftovers = plugin_leftovers(client)
    if leftovers:
        print("\nLEFTOVERS after the test suite:\n  " + "\n  ".join(leftovers))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def make_certificate(folder: Path, name: str, *, days: int = 365) -> tuple[str, str]:
    """A self-signed certificate and key (PEM files in folder); negative days make an expired one."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    start = min(now, end) - datetime.timedelta(days=2)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA384()))
    crt_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(crt_path), str(key_path)


@dataclass(frozen=True)
class Https:
    """The local daemon over HTTPS: its URL, a trusted client certificate and the server's certificate."""

    url: str
    cert: str
    key: str
    server_cert: str
    folder: Path

    def options(self) -> list[str]:
        # --opt=PATH: pytest looks for its rootdir and ini file along path-like arguments it does not know yet
        return [f"--lxd-endpoint={self.url}", f"--lxd-cert={self.cert}", f"--lxd-key={self.key}",
                f"--lxd-server-cert={self.server_cert}"]


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


def suite_certificates(client: pylxd.Client) -> list[dict[str, object]]:
    """Client certificates this suite made the server trust."""
    return [c for c in lxdapi.listing(client.api.certificates) if str(c.get("name", "")).startswith(TEST_PREFIX)]
