"""The host's package cache (``lxdsnap setup --package-cache``): Debian's ``apt-cacher-ng`` on 127.0.0.1:3142.

Containers without a network reach it through a proxy device (``package_cache = true``, see
:mod:`pytest_lxdsnap.lxd.aptproxy`); networked ones stop downloading the same packages for every clone. It
fetches Debian packages from the mirror the host's own apt sources use (:func:`pytest_lxdsnap.host.aptsources.
debian_archive`), whatever Debian mirror a container asks for, and keeps them in /var/cache/apt-cacher-ng.

A cache that already answers there (a system service, an earlier setup) is used as it is. Otherwise the package
is installed and the daemon started detached, as the ``apt-cacher-ng`` user, bound to 127.0.0.1 only (no service
manager is needed, as for the LXD daemon, and it detaches itself); the process is recorded, so
``lxdsnap setup --undo`` stops it.
"""

from __future__ import annotations

import http.client
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from pytest_lxdsnap.declarations import PACKAGE_CACHE
from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.aptsources import debian_archive
from pytest_lxdsnap.host.packages import ensure_packages
from pytest_lxdsnap.host.setupchanges import ChangeLog, Log
from pytest_lxdsnap.lxd.backends import codename

PACKAGE = "apt-cacher-ng"
DAEMON = "/usr/sbin/apt-cacher-ng"
CONFIG_DIR = "/etc/apt-cacher-ng"
RUN_DIR = Path("/run/apt-cacher-ng")
LOG_FILE = "/var/log/apt-cacher-ng/lxdsnap-daemon.log"
START_WAIT = 15.0
MAX_PORT = 32767  # apt-cacher-ng 3.7 reads its port as a signed 16-bit number: higher ones never bind
SETUP_HINT = "lxdsnap setup --package-cache"


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def cache_answers(address: str = PACKAGE_CACHE, timeout: float = 2.0) -> str | None:
    """What answers at ``address`` ("host:port"): "apt-cacher-ng", "something else" (an HTTP server or any
    listener that is not a cache), or None when nothing accepts a connection."""
    host, port = split(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)  # no *_proxy: the cache itself is asked
    try:
        connection.request("GET", "/acng-report.html")
        response = connection.getresponse()
        body = response.read(65536).decode("utf-8", "replace")
    except ConnectionRefusedError:
        return None
    except (OSError, http.client.HTTPException):
        return "something else"
    finally:
        connection.close()
    server = response.getheader("Server") or ""
    return PACKAGE if "apt-cacher" in (server + body).lower() else "something else"


def describe_cache(address: str = PACKAGE_CACHE) -> tuple[bool, str]:
    """(whether a cache answers at ``address``, a line saying so) for ``lxdsnap doctor`` and session checks."""
    found = cache_answers(address)
    if found == PACKAGE:
        return True, f"apt-cacher-ng answers at {address}"
    if found is None:
        return False, f"nothing answers at {address}"
    return False, f"{address} answers, but not as apt-cacher-ng"


def ensure_package_cache(log: Log, changes: ChangeLog | None = None, address: str = PACKAGE_CACHE) -> int | None:
    """Install and start apt-cacher-ng on ``address`` unless a cache answers there; the pid started, or None."""
    found = cache_answers(address)
    if found == PACKAGE:
        log(f"package cache: apt-cacher-ng answers at {address}")
        return None
    if found is not None:
        raise LxdSnapError(f"{address} is taken by a service that is not apt-cacher-ng: stop it, then rerun "
                           f"`{SETUP_HINT}`")
    ensure_packages([PACKAGE], log, changes, why="the package cache")
    host, port = split(address)
    if port > MAX_PORT:
        raise LxdSnapError(f"apt-cacher-ng cannot listen on port {port} (it takes ports up to {MAX_PORT}): pick "
                           "a lower one")
    mirror = host_mirror()
    pid = start(host, port, mirror)
    deadline = time.monotonic() + START_WAIT
    while cache_answers(address) != PACKAGE:
        if time.monotonic() > deadline or not alive(pid):
            stop(pid, address)
            raise LxdSnapError(f"apt-cacher-ng was started but does not answer at {address} within {START_WAIT:g} s; "
                               f"see {LOG_FILE} and /var/log/apt-cacher-ng/apt-cacher.err")
        time.sleep(0.1)
    log(f"package cache: started apt-cacher-ng (pid {pid}) on {address}, detached, fetching Debian from "
        f"{mirror or 'its own default mirror'}; its cache is /var/cache/apt-cacher-ng")
    if changes:
        changes.add("package-cache", pid=pid, started=start_time(pid), address=address)
    return pid


def host_mirror() -> str | None:
    """The host's Debian mirror (what its apt sources use for Debian's archive), or None on a host without one."""
    try:
        return debian_archive(codename()).rstrip("/") + "/"
    except LxdSnapError:
        return None


def start(host: str, port: int, mirror: str | None) -> int:
    """Start apt-cacher-ng as its own user; it detaches itself (as its init script has it do) and writes its pid
    to a file of ours. Requests for any Debian mirror go to ``mirror`` (the package's default sends them to a
    mirror of its own choosing, which a host that reaches only its own mirror cannot resolve)."""
    user = pwd.getpwnam(PACKAGE)
    RUN_DIR.mkdir(mode=0o2755, exist_ok=True)  # its socket lives here; the init script makes it, we have none
    os.chown(RUN_DIR, user.pw_uid, user.pw_gid)
    pidfile, control = run_files(port)
    pidfile.unlink(missing_ok=True)
    options = [f"BindAddress={host}", f"Port={port}", f"PidFile={pidfile}"]
    if mirror:
        options.append(f"Remap-debrep=file:deb_mirror*.gz /debian ; {mirror}")
    if (host, port) != split(PACKAGE_CACHE):  # a second cache beside the usual one: its own control socket
        options.append(f"SocketPath={control}")
    with open(os.devnull, "rb") as devnull, open(LOG_FILE, "ab") as out:
        subprocess.run([DAEMON, "-c", CONFIG_DIR, "ForeGround=0", *options], stdin=devnull, stdout=out, stderr=out,
                       start_new_session=True, cwd="/", user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                       check=False, timeout=START_WAIT)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        text = pidfile.read_text().strip() if pidfile.is_file() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    raise LxdSnapError(f"apt-cacher-ng did not start (no {pidfile} within {START_WAIT:g} s); see {LOG_FILE} and "
                       "/var/log/apt-cacher-ng/apt-cacher.err")


def run_files(port: int) -> tuple[Path, Path]:
    """The pid file setup has apt-cacher-ng write, and the control socket of a second cache on ``port``."""
    return RUN_DIR / f"lxdsnap-{port}.pid", RUN_DIR / f"lxdsnap-{port}.socket"


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running apt-cacher-ng (a zombie or a reused pid is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and PACKAGE.encode() in cmdline


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat): a pid and its start
    time name one process, never a later one that reused the pid."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def is_recorded_process(pid: int, started: int) -> bool:
    try:
        return alive(pid) and start_time(pid) == started
    except (OSError, ValueError, IndexError):
        return False


def stop(pid: int, address: str | None = None, wait: float = 10.0) -> None:
    """SIGTERM the apt-cacher-ng setup started (by its pid, nothing else), wait for it to end, and remove the run
    files it leaves (those of ``address``'s port)."""
    if alive(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    if address is not None:
        pidfile, control = run_files(split(address)[1])
        pidfile.unlink(missing_ok=True)
        if address != PACKAGE_CACHE:
            control.unlink(missing_ok=True)
