"""Get a daemon to run against: use one that already answers on a known socket, else install and start one.

Before anything is installed, setup asks the daemons that may already run: ``$LXD_DIR``'s socket, the snap's
``/var/snap/lxd/common/lxd/unix.socket`` and ``/var/lib/lxd/unix.socket`` (Incus: ``$INCUS_DIR``'s,
``$LXD_DIR``'s, ``/var/lib/incus/unix.socket``). When one answers as the wanted server, setup uses it and
installs no daemon or client packages (only the helpers, btrfs-progs and busybox-static): on a snap host
Debian's own LXD would shadow the snap's ``lxc``. Otherwise the packages are installed with apt (Incus from
Debian's backports, see :mod:`pytest_lxdsnap.host.aptsources`) and the daemon is started through systemd, or
detached when there is no service manager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from pytest_lxdsnap.errors import LxdSnapError, LxdUnreachable
from pytest_lxdsnap.host.aptsources import add_backports
from pytest_lxdsnap.host.image import BUSYBOX
from pytest_lxdsnap.host.setupchanges import ChangeLog, Log, sha256
from pytest_lxdsnap.lxd.backends import INCUS, LXD, Backend, codename
from pytest_lxdsnap.lxd.connection import Endpoint, connect, default_socket

HELPERS = {"mkfs.btrfs": "btrfs-progs", BUSYBOX: "busybox-static"}  # needed beside any daemon
SNAP_LXD = "/var/snap/lxd/common/lxd"


def have_tool(tool: str) -> bool:
    return os.path.exists(tool) if tool.startswith("/") else shutil.which(tool) is not None


# ---------------------------------------------------------------- daemons


@dataclass(frozen=True)
class Daemon:
    socket: str
    server: str
    version: str

    def describe(self) -> str:
        return f"{self.server} {self.version} at {self.socket}"


def candidate_sockets(backend: Backend, env: dict[str, str] | None = None) -> list[str]:
    """Where a running LXD (or Incus) may already listen, most specific first."""
    env = dict(os.environ) if env is None else env
    dirs = ([env.get("INCUS_DIR"), env.get("LXD_DIR"), "/var/lib/incus"] if backend is INCUS else
            [env.get("LXD_DIR"), SNAP_LXD, "/var/lib/lxd"])
    return list(dict.fromkeys(os.path.join(d, "unix.socket") for d in dirs if d))


def ask_daemon(socket: str) -> Daemon | None:
    """The daemon answering at ``socket``, or None."""
    if not os.path.exists(socket):
        return None
    try:
        client = connect(Endpoint(url=socket, timeout=10))
    except LxdSnapError:
        return None
    env = client.host_info.get("environment", {})
    return Daemon(socket, env.get("server", "lxd"), env.get("server_version", "?"))


def find_daemon(backend: Backend, sockets: Iterable[str]) -> Daemon | None:
    """The first of ``sockets`` where ``backend``'s daemon answers."""
    for socket in sockets:
        daemon = ask_daemon(socket)
        if daemon and daemon.server == backend.name:
            return daemon
    return None


def daemon_reachable(endpoint: Endpoint) -> bool:
    try:
        connect(endpoint)
    except LxdUnreachable:
        return False
    return True


def start_daemon(endpoint: Endpoint, log: Log, backend: Backend = LXD, changes: ChangeLog | None = None) -> None:
    """Start the daemon through systemd when it runs, else as a detached process; then wait until ready."""
    if daemon_reachable(endpoint):
        log(f"daemon: reachable at {endpoint.describe()}")
        return
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        how = "systemctl"
        log(f"daemon: starting with systemctl start {backend.service}")
        subprocess.run(["systemctl", "start", backend.service], check=False)
    else:
        how = "detached"
        log(f"daemon: no service manager, starting `{' '.join(backend.daemon)}` detached (log {backend.log_file})")
        with open(os.devnull, "rb") as devnull_in, open(os.devnull, "wb") as devnull_out:
            subprocess.Popen(
                [*backend.daemon, "--logfile", backend.log_file],
                stdin=devnull_in, stdout=devnull_out, stderr=devnull_out, start_new_session=True,
                cwd="/",  # the daemon outlives this checkout; its tools (rsync) fail in a deleted cwd
            )
    subprocess.run(list(backend.waitready), check=True)
    deadline = time.monotonic() + 30
    while not daemon_reachable(endpoint):
        if time.monotonic() > deadline:
            raise LxdUnreachable(f"{backend.name} started but {endpoint.describe()} does not answer; "
                                 f"see {backend.log_file}")
        time.sleep(0.2)
    if changes:
        changes.add("daemon", socket=endpoint.url or default_socket(), how=how, service=backend.service)


# ---------------------------------------------------------------- packages


def missing_packages(backend: Backend = LXD, *, daemon: bool = True) -> list[str]:
    """Packages of the tools not found; only the helpers (btrfs-progs, busybox-static) when ``daemon`` is False."""
    tools = backend.packages if daemon else {t: p for t, p in backend.packages.items() if t in HELPERS}
    return sorted({pkg for tool, pkg in tools.items() if not have_tool(tool)})


def dpkg_installed(package: str) -> bool:
    run = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package], capture_output=True, text=True,
                         check=False)
    return run.returncode == 0 and run.stdout.strip().endswith(" installed")


def install_packages(log: Log, backend: Backend = LXD, changes: ChangeLog | None = None, *,
                     daemon: bool = True) -> None:
    """Install what is missing (the daemon's packages too when ``daemon``), recording what was not there."""
    packages = missing_packages(backend, daemon=daemon)
    if not packages:
        wanted = backend.packages.values() if daemon else HELPERS.values()
        log(f"packages: {', '.join(sorted(set(wanted)))} already installed")
        return
    if not shutil.which("apt-get"):
        raise LxdSnapError(f"missing {', '.join(packages)} and no apt-get here: install {backend.name} by hand")
    new = [p for p in packages if not dpkg_installed(p)]
    release: list[str] = []
    written = None
    if backend.backports and daemon:
        written = add_backports()
        if written and changes:
            changes.add("apt-source", path=str(written), sha256=sha256(written))
        if written:
            log(f"apt: added {codename()}-backports from this host's Debian archive ({written})")
        release = ["-t", f"{codename()}-backports"]
    log(f"packages: installing {' '.join(packages)} with apt-get" + (f" {' '.join(release)}" if release else ""))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    update = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False)
    if update.returncode and written:
        written.unlink(missing_ok=True)
        if changes:
            changes.drop("apt-source")
        raise LxdSnapError(f"apt-get update failed with the backports source setup wrote, so it was removed again:"
                           f"\n{update.stderr.strip()}\nFix the host's Debian source or add backports yourself.")
    if update.returncode:
        raise LxdSnapError(f"apt-get update failed (before setup changed any source):\n{update.stderr.strip()}")
    subprocess.run(["apt-get", "install", "-y", "-q", *release, *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    for package in new:
        if changes and dpkg_installed(package):
            changes.add("package", name=package)


def use_daemon(endpoint: Endpoint, backend: Backend, log: Log, changes: ChangeLog) -> Endpoint:
    """Use the daemon that already answers (installing nothing for it), else install and start one."""
    sockets = [endpoint.url] if endpoint.url else candidate_sockets(backend)
    found = find_daemon(backend, sockets)
    if found:
        log(f"daemon: reachable: {found.describe()} already runs, so setup installs nothing for it")
        install_packages(log, backend, changes, daemon=False)
        return replace(endpoint, url=found.socket)
    other = ask_daemon(endpoint.url) if endpoint.url else None
    if other:
        raise LxdSnapError(f"{endpoint.url} is {other.server}, not {backend.name}: "
                           f"{'drop --incus' if backend is INCUS else 'add --incus'} or pick another --endpoint")
    if endpoint.url and endpoint.url != backend.socket:
        raise LxdSnapError(f"nothing answers at {endpoint.url}: start that daemon, or drop --endpoint to let setup "
                           f"install and start {backend.name} at {backend.socket}")
    if backend is LXD and os.path.exists(SNAP_LXD):
        raise LxdSnapError(f"the snap's LXD is installed ({SNAP_LXD}) but does not answer: `snap start lxd`, then "
                           "rerun (setup installs no second LXD beside the snap)")
    install_packages(log, backend, changes, daemon=True)
    started = replace(endpoint, url=backend.socket)
    start_daemon(started, log, backend, changes)
    return started
