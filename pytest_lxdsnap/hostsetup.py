"""Make a Debian/Ubuntu host ready for the plugin, and report what is missing (``lxdsnap setup``/``doctor``).

Every step checks first and changes only what is missing, so running setup twice is harmless.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from pylxd.exceptions import LXDAPIException, NotFound

from . import lxdapi, stophook
from .backends import LXD, Backend, add_backports, codename
from .connection import Endpoint, connect, default_socket
from .errors import LxdSnapError, LxdUnreachable
from .image import BUSYBOX, IMAGE_ALIAS, import_image

DEFAULT_POOL = "default"
DEFAULT_POOL_SIZE = "8GiB"


@dataclass
class Check:
    """One line of ``lxdsnap doctor``: what was looked at, whether it is fine, and the fix."""

    what: str
    ok: bool
    detail: str
    fix: str = ""
    advisory: bool = False  # worth fixing, but the plugin works without it


def _have(tool: str) -> bool:
    return os.path.exists(tool) if tool.startswith("/") else shutil.which(tool) is not None


def kernel_has_btrfs() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            return any(line.split()[-1] == "btrfs" for line in fh if line.strip())
    except OSError:
        return False


def missing_packages(backend: Backend = LXD) -> list[str]:
    return sorted({pkg for tool, pkg in backend.packages.items() if not _have(tool)})


def install_packages(log: Callable[[str], None], backend: Backend = LXD) -> None:
    packages = missing_packages(backend)
    if not packages:
        log(f"packages: {', '.join(sorted(set(backend.packages.values())))} already installed")
        return
    if not shutil.which("apt-get"):
        raise LxdSnapError(f"missing {', '.join(packages)} and no apt-get here: install {backend.name} by hand")
    release: list[str] = []
    if backend.backports:
        written = add_backports()
        if written:
            log(f"apt: added {codename()}-backports from this host's own Debian mirror ({written})")
        release = ["-t", f"{codename()}-backports"]
    log(f"packages: installing {' '.join(packages)} with apt-get" + (f" {' '.join(release)}" if release else ""))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *release, *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def daemon_reachable(endpoint: Endpoint) -> bool:
    try:
        connect(endpoint)
    except LxdUnreachable:
        return False
    return True


def start_daemon(endpoint: Endpoint, log: Callable[[str], None], backend: Backend = LXD) -> None:
    """Start the daemon through systemd when it runs, else as a detached process; then wait until ready."""
    if daemon_reachable(endpoint):
        log(f"daemon: reachable at {endpoint.describe()}")
        return
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        log(f"daemon: starting with systemctl start {backend.service}")
        subprocess.run(["systemctl", "start", backend.service], check=False)
    else:
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


def ensure_pool(endpoint: Endpoint, log: Callable[[str], None], driver: str = "auto",
                name: str = DEFAULT_POOL, size: str = DEFAULT_POOL_SIZE) -> None:
    """A storage pool and a default profile whose root disk uses it (no network device: no bridges)."""
    client = connect(endpoint)
    pools = [p["name"] for p in lxdapi.listing(client.api.storage_pools)]
    if name not in pools:
        if driver == "auto":
            driver = "btrfs" if kernel_has_btrfs() and _have("mkfs.btrfs") else "dir"
        config = {"size": size} if driver == "btrfs" else {}
        log(f"pool: creating {driver} pool {name!r}" + (f" ({size} loop file)" if config else ""))
        client.api.storage_pools.post(json={"name": name, "driver": driver, "config": config})
    else:
        log(f"pool: {name!r} exists")
    profile = client.api.profiles["default"].get().json()["metadata"]
    if "root" not in profile["devices"]:
        log(f"profile: default profile's root disk -> pool {name!r}")
        devices = dict(profile["devices"], root={"type": "disk", "path": "/", "pool": name})
        client.api.profiles["default"].patch(json={"devices": devices})


def ensure_image(endpoint: Endpoint, log: Callable[[str], None]) -> None:
    client = connect(endpoint)
    try:
        client.api.images.aliases[IMAGE_ALIAS].get()
        log(f"image: {IMAGE_ALIAS} present")
    except NotFound:
        fingerprint = import_image(client)
        log(f"image: imported {IMAGE_ALIAS} ({fingerprint[:12]}) from {BUSYBOX}")


def setup(endpoint: Endpoint, log: Callable[[str], None] = print, pool_driver: str = "auto",
          fast_stop: bool | None = None, backend: Backend = LXD) -> None:
    """Install, start and initialise LXD (or Incus), and import the offline test image. Idempotent.

    ``fast_stop`` True installs the lxcfs stop-hook wrapper (see :mod:`pytest_lxdsnap.stophook`), False
    removes it, None leaves the host's choice alone.
    """
    if endpoint.url and endpoint.url.startswith("https://"):
        raise LxdSnapError("lxdsnap setup prepares the local host only: run it on the LXD host itself")
    install_packages(log, backend)
    start_daemon(endpoint, log, backend)
    ensure_pool(endpoint, log, driver=pool_driver)
    ensure_image(endpoint, log)
    if fast_stop is not None:
        try:
            changed = stophook.enable() if fast_stop else stophook.disable()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            raise LxdSnapError(f"changing the lxcfs stop hook failed: {exc}") from None
        log(f"stop hook: {stophook.LXCFS_HOOK} is {stophook.state()}" + ("" if changed else " (unchanged)"))
    log("ready: run `pytest` (or `make demo`)")


def doctor(endpoint: Endpoint, backend: Backend = LXD) -> list[Check]:
    """What is present, what is missing, and the fix for each."""
    setup_cmd = "lxdsnap setup --incus" if backend is not LXD else "lxdsnap setup"
    checks = [
        Check(f"tool {tool}", _have(tool), "found" if _have(tool) else "missing",
              setup_cmd if backend.backports else f"apt-get install {pkg}")  # backports: setup adds the source
        for tool, pkg in backend.packages.items()
    ]
    checks.append(Check("kernel btrfs", kernel_has_btrfs(), "available" if kernel_has_btrfs() else "not in "
                        "/proc/filesystems", "without btrfs the pool is dir: snapshots copy the whole rootfs",
                        advisory=True))
    try:
        client = connect(endpoint)
    except LxdSnapError as exc:
        checks.append(Check("daemon", False, str(exc).splitlines()[0], setup_cmd))
        return checks
    info = client.api.get().json()["metadata"]
    checks.append(Check("daemon", True, f"{endpoint.describe()}: {info['environment'].get('server_name', '')} "
                        f"{info['environment'].get('server', 'lxd')} {info['environment'].get('server_version')}"))
    pools = lxdapi.listing(client.api.storage_pools)
    checks.append(Check("storage pools", bool(pools), ", ".join(f"{p['name']} ({p['driver']})" for p in pools)
                        or "none", setup_cmd))
    for p in pools:
        if p["driver"] == "dir":
            checks.append(Check(
                f"pool {p['name']}", False, "dir driver: every snapshot and clone copies the whole rootfs (2.7 s "
                "for a 240 MB rootfs, against 0.16 s on btrfs), so the 'auto' strategy resets in place",
                f"a copy-on-write pool is much faster: {backend.cli} storage create fast btrfs size=8GiB, then "
                "pool = \"fast\" in [tool.lxdsnap.containers.<name>]", advisory=True))
    hook = stophook.state()
    checks.append(Check(
        "stop hook", hook != "stock",
        {"stock": f"{stophook.LXCFS_HOOK} sleeps 0.5 s on every container stop: most of each in-place reset",
         "fast": "lxcfs's post-stop pause runs on reboots only (lxdsnap setup --fast-stop)",
         "absent": "no lxcfs post-stop hook"}[hook],
        "lxdsnap setup --fast-stop (keeps the pause for reboots; undo: lxdsnap setup --undo-fast-stop)",
        advisory=True))
    profile = client.api.profiles["default"].get().json()["metadata"]
    root = profile["devices"].get("root")
    checks.append(Check("default profile root disk", root is not None,
                        f"pool {root['pool']}" if root else "missing", setup_cmd))
    try:
        client.api.images.aliases[IMAGE_ALIAS].get()
        checks.append(Check(f"image {IMAGE_ALIAS}", True, "present"))
    except LXDAPIException:
        checks.append(Check(f"image {IMAGE_ALIAS}", False, "missing", setup_cmd))
    checks.append(Check("socket", True, endpoint.url or default_socket()))
    return checks
