"""Shared helpers of the test suite, in one module: constants, the pyproject.toml variants, the lxdsnap command,
checks from outside (lxc, listings), "left as found", the summary table, a live session in a subprocess holding
containers, and what a test leaves on the daemon.

Plain functions only: fixtures and hooks live in conftest.py, which pytest loads by itself (a conftest is not
meant to be imported, and tests/unit must be able to import these without a daemon). Nothing here connects to
LXD at import.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pylxd

from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import BACKENDS, INCUS
from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.safety.ownership import (
    BUILDING_KEY,
    CREATED_KEY,
    OWNER_KEY,
    SESSION_PROFILE_PREFIX,
    SessionIdentity,
    holder_at,
)

HTTPS_ADDRESS = "127.0.0.1:8443"  # loopback only; set for the TLS tests when the daemon has no address
TEST_PREFIX = "t-lxdsnap-"  # instances the self-tests create; never the plugin's "lxdsnap-" prefix
BACKEND = BACKENDS[os.environ.get("LXDSNAP_BACKEND", "lxd")]  # the daemon the suite runs against: lxd or incus
COMMANDS = Commands(incus=BACKEND is INCUS)  # the command lines the plugin prints for it

# ---------------------------------------------------------------------------------------------- pyproject.toml

PYPROJECT = """
[tool.pytest.ini_options]
filterwarnings = ["error"]
addopts = "--strict-markers -p no:cacheprovider"
"""
"""The strict settings a real project uses (an inner suite's pyproject.toml starts with it)."""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def declare(name: str = "web", image: str = IMAGE_ALIAS, **keys: object) -> str:
    """A ``[tool.lxdsnap.containers.<name>]`` table (keys in the order given); append it to PYPROJECT.
    Keys a test appends after it (``DECLARED_WEB + 'provision = [...]\\n'``) land in the same table."""
    lines = [f"\n[tool.lxdsnap.containers.{name}]", f"image = {_toml(image)}"]
    lines += [f"{key} = {_toml(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


DECLARED_WEB = PYPROJECT + declare("web")
"""An inner suite declaring one container, "web", from the busybox image; nothing else."""

NEVER_RUNS = """
import pytest


@pytest.mark.lxd("{name}")
def test_it(lxd):
    raise AssertionError("the body must not run")
"""
"""A suite whose one test must error before its body runs (bad input, a refused container)."""

NOT_INSTALLED = """
import sys

for module in [m for m in sys.modules if m == "{package}" or m.startswith("{package}.")] + ["{package}"]:
    sys.modules[module] = None  # imports of it fail, as if it were not installed
"""
"""An inner suite's conftest.py that hides an installed ``{package}`` from the session (an optional extra)."""

# ----------------------------------------------------------------------------------------- commands from outside


def lxdsnap_argv(*args: str) -> list[str]:
    """The lxdsnap command line, as a user runs it, for the suite's daemon (`--incus` for Incus where it takes it)."""
    takes = ("setup", "doctor", "gc", "cluster")
    if BACKEND is INCUS and args and args[0] in takes:
        args = (args[0], "--incus", *args[1:])
    elif BACKEND is INCUS and len(args) > 2 and args[2] in takes:  # after --endpoint PATH
        args = (*args[:3], "--incus", *args[3:])
    return [sys.executable, "-m", "pytest_lxdsnap.host.cli", *args]


def lxdsnap(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the lxdsnap command against the suite's daemon (in ``env``, by default this process's)."""
    return subprocess.run(lxdsnap_argv(*args), capture_output=True, text=True, timeout=timeout, env=env)


def run_command(line: str) -> str:
    """Run a command line the plugin printed (for lxc or incus), as a user would copy it."""
    return subprocess.run(shlex.split(line), check=True, capture_output=True, text=True).stdout


def lxc(*args: str) -> str:
    """Run the lxc client, as a user would, to check the plugin from outside."""
    return subprocess.run(["lxc", *args], check=True, capture_output=True, text=True).stdout


def lxc_exec_status(instance: str, *cmd: str) -> int:
    """Exit status of ``lxc exec instance -- cmd``: checks a container from outside the plugin."""
    return subprocess.run(["lxc", "exec", instance, "--", *cmd], check=False).returncode


_MADE: set[str] = set()  # names throwaway_name() gave out in this process: the per-test check knows them as ours


def throwaway_name(kind: str = "") -> str:
    """A fresh name for an object a test makes itself (``t-lxdsnap-[kind-]<hex>``), remembered as this run's."""
    name = f"{TEST_PREFIX}{kind + '-' if kind else ''}{secrets.token_hex(3)}"
    _MADE.add(name)
    return name

# ------------------------------------------------------------------------------------------------ listings


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


def session_profiles(client: pylxd.Client) -> list[str]:
    """The lease profiles of the sessions alive now."""
    return [p["name"] for p in lxdapi.listing(client.api.profiles) if p["name"].startswith(SESSION_PROFILE_PREFIX)]


# ----------------------------------------------------------------------------------------------- left as found


@dataclass(frozen=True)
class AsFound:
    """What a user sees of an existing instance before a run: its config, devices and profiles, and its snapshots."""

    config: dict[str, object]
    snapshots: tuple[str, ...]


def as_found(client: pylxd.Client, instance: str) -> AsFound:
    """Remember ``instance`` as the test found it (compare with :func:`assert_left_as_found` afterwards)."""
    return AsFound(user_config(client, instance), tuple(snapshot_names(client, instance)))


def assert_left_as_found(client: pylxd.Client, instance: str, found: AsFound, *, recovered: bool | None = False,
                         context: object = "") -> None:
    """``instance`` has the config, devices, profiles and snapshots it was found with: no lxdsnap key, no plugin
    snapshot. ``recovered``: True when a dead session's state was rolled back (recovery keeps the state it
    replaced as ``before-lxdsnap-recovery-*`` snapshots, after the user's, and at least one is there), None when
    that may have happened, False when it must not have."""
    __tracebackhide__ = True
    now, snapshots = user_config(client, instance), snapshot_names(client, instance)
    assert now == found.config, f"{instance}'s config, devices or profiles changed: {now} != {found.config}\n{context}"
    kept = [s for s in snapshots if s.startswith("before-lxdsnap-recovery-")]
    expected = [*found.snapshots, *kept] if recovered is not False else list(found.snapshots)
    assert snapshots == expected, f"{instance}'s snapshots are {snapshots}, expected {expected}\n{context}"
    if recovered:
        assert kept, f"{instance} was not recovered: no before-lxdsnap-recovery-* snapshot\n{context}"


# ------------------------------------------------------------------------------------------------- the summary


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
    __tracebackhide__ = True
    rows = summary(output)
    assert container in rows, f"no summary row for {container!r} in {sorted(rows)}"
    row = rows[container]
    wrong = {column: row.get(column) for column, pattern in cells.items()
             if not fnmatch.fnmatchcase(row.get(column, ""), pattern)}
    assert not wrong, f"summary row {row} does not match {cells}"


# ----------------------------------------------------------------------- a live session in its own process


def _default_signals() -> None:
    """In the child: Ctrl-C, SIGTERM and SIGHUP as a user's shell leaves them, whatever this run inherited (a
    suite started under nohup, or by a CI runner, ignores SIGHUP, and the plugin leaves ignored signals alone)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start_session(path: Path, *args: str) -> subprocess.Popen[str]:
    """A pytest session in ``path`` as its own process (Ctrl-C and kill -9 reach it alone); its output (stdout
    and stderr) comes from ``communicate()``."""
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_default_signals)


def wait_for(flag: Path, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    """Wait until the session ``proc`` creates ``flag``; fail with its output if it ends first."""
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the inner session ended early:\n{proc.stdout.read() if proc.stdout else ''}")
        assert time.monotonic() < deadline, f"{flag.name} never appeared"
        time.sleep(0.05)


HOLD = """
import pathlib
import time

import pytest


@pytest.mark.lxd({names})
def test_holds(lxd):
    for name in lxd:
        lxd[name].write_text("/root/dirty", "x")
        if lxd[name].status == "Stopped":
            lxd[name].instance.start(wait=True)  # the crash leaves it running
    pathlib.Path({flag!r}).touch()
    deadline = time.monotonic() + 120
    while not pathlib.Path({release!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def holding_suite(path: Path, names: list[str], tag: str = "") -> tuple[Path, Path]:
    """Write ``test_hold<tag>.py``: one test that dirties each container (``/root/dirty``), starts a stopped one,
    creates the first flag and holds them until the second flag appears (or 120 s pass); the two flags."""
    flag, release = path / f"holding{tag}", path / f"release{tag}"
    (path / f"test_hold{tag}.py").write_text(HOLD.format(names=", ".join(repr(n) for n in names), flag=str(flag),
                                                         release=str(release)))
    return flag, release


def stop_session(proc: subprocess.Popen[str], grace: float = 60) -> str:
    """End a session started with :func:`start_session` that may still run: SIGTERM first (the plugin resets and
    cleans up as on Ctrl-C), SIGKILL after ``grace`` seconds; what it printed that was not read yet."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    if proc.stdout is None or proc.stdout.closed:
        proc.wait()
        return ""
    return proc.communicate(timeout=grace)[0] or ""


@dataclass
class Holding:
    """A session holding containers in its test (see :func:`holding_session`)."""

    proc: subprocess.Popen[str]
    release_flag: Path
    output: str = field(default="", repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def finish(self, timeout: float = 60) -> str:
        """Wait for the session to end; its output."""
        self.output, _ = self.proc.communicate(timeout=timeout)
        return self.output

    def release(self, timeout: float = 60) -> str:
        """Let the holding test end, then wait for the session's end (reset and cleanup); its output."""
        self.release_flag.touch()
        return self.finish(timeout)


@contextlib.contextmanager
def holding_session(path: Path, names: list[str], *args: str, tag: str = "") -> Iterator[Holding]:
    """A live pytest session in ``path`` (its own process) whose test holds ``names`` dirty: entered once the
    test holds them; ``release()`` lets it end. A session still running on the way out (a failed assertion) is
    stopped with SIGTERM, so it cleans up, and killed only if it does not."""
    flag, release = holding_suite(path, names, tag)
    proc = start_session(path, *args)
    try:
        wait_for(flag, proc)
        yield Holding(proc, release)
    finally:
        stop_session(proc)


# -------------------------------------------------------------------------------------------------- leftovers


def suite_certificates(client: pylxd.Client) -> list[dict[str, object]]:
    """Client certificates this suite made the server trust."""
    return [c for c in lxdapi.listing(client.api.certificates) if str(c.get("name", "")).startswith(TEST_PREFIX)]


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


def traces_of(client: pylxd.Client, token: str) -> list[str]:
    """Whatever in LXD still carries a session's token: instances named for it or tagged by it (any lxdsnap key),
    its lease profile, its projects (a session names what it makes, and tags what it holds, with its token)."""
    found = []
    for record in lxdapi.listing(client.api.instances):
        keys = [k for k, v in (record.get("config") or {}).items() if k.startswith("user.lxdsnap.") and token in v]
        if token in record["name"] or keys:
            found.append(f"instance {record['name']}" + (f" ({', '.join(keys)})" if keys else ""))
    found += [f"profile {p['name']}" for p in lxdapi.listing(client.api.profiles) if token in p["name"]]
    found += [f"project {p['name']}" for p in lxdapi.listing(client.api.projects)
              if token in p["name"] or any(token in str(v) for v in (p.get("config") or {}).values())]
    return found


Footprint = dict[str, "SessionIdentity | None"]
"""What a test could leave, by description ("instance lxdsnap-web-ab12"), with the session whose tag it carries."""


def _tagged(config: Mapping[str, Any], where: str) -> SessionIdentity | None:
    for key in (CREATED_KEY, OWNER_KEY, BUILDING_KEY):
        holder = holder_at(dict(config), where, key)
        if holder is not None:
            return holder
    return None


def footprint(client: pylxd.Client) -> Footprint:
    """The plugin's and the tests' objects in the default project, in three listings (instances, profiles,
    projects): instances named ``lxdsnap-*`` or ``t-lxdsnap-*``, lxdsnap keys on any other instance, lease
    profiles, and ``lxdsnap-*`` or ``t-lxdsnap-*`` projects."""
    found: Footprint = {}
    for record in lxdapi.listing(client.api.instances):
        name, config = record["name"], record.get("config") or {}
        tag = _tagged(config, lxdapi.where(client, name))
        if name.startswith(("lxdsnap-", TEST_PREFIX)):
            found[f"instance {name}"] = tag
        elif any(k.startswith("user.lxdsnap.") for k in config):
            found[f"config user.lxdsnap.* on {name}"] = tag
    for profile in lxdapi.listing(client.api.profiles):
        if profile["name"].startswith(SESSION_PROFILE_PREFIX):
            found[f"profile {profile['name']}"] = _tagged(profile.get("config") or {}, f"profile:{profile['name']}")
    for project in lxdapi.listing(client.api.projects):
        if project["name"].startswith(("lxdsnap-", TEST_PREFIX)):
            found[f"project {project['name']}"] = _tagged(project.get("config") or {}, f"project:{project['name']}")
    return found


def _ours(what: str, holder: SessionIdentity | None) -> bool:
    """Whether this run (this process or a process it started) made ``what``: the daemon is shared, and another
    run's live sessions and throwaway instances come and go while a test runs."""
    name = what.rsplit(" ", 1)[-1]
    if name.startswith(TEST_PREFIX):
        return name in _MADE  # the tests' own objects: only those throwaway_name() named in this process
    if holder is None or holder.local_evidence() is not True:
        return True  # untagged, or its session is gone: nobody else will clean it up
    pid = holder.pid
    while pid > 1:  # a live session: ours when it is this process or one it started
        if pid == os.getpid():
            return True
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def left_since(client: pylxd.Client, before: Footprint) -> list[str]:
    """What this run made since ``before`` that is still there (also a snapshot listing for each instance)."""
    after = footprint(client)
    left = []
    for what in sorted(set(after) - set(before)):
        if not _ours(what, after[what]):
            continue
        if what.startswith("instance "):
            name = what.split(" ", 1)[1]
            with contextlib.suppress(lxdapi.LXD_FAULTS):
                snapshots = snapshot_names(client, name)
                what += f" (snapshots: {', '.join(snapshots)})" if snapshots else ""
        left.append(what)
    return left


# ---------------------------------------------------------------------------------------------- protocols


def protocol_members(protocol: type) -> dict[str, Any]:
    """Every member a Protocol class declares (its own and its protocol bases'): methods, properties and annotated
    attributes (None), by name."""
    members: dict[str, Any] = {}
    for klass in reversed(protocol.__mro__):
        if not getattr(klass, "_is_protocol", False) or klass.__name__ in ("Protocol", "Generic"):
            continue
        for name in getattr(klass, "__annotations__", {}):
            members.setdefault(name, None)  # an attribute: any value will do
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members[name] = value
    return members


# ------------------------------------------------------------------------------------------ TLS certificates


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
