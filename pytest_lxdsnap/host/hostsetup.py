"""Make a Debian/Ubuntu host ready for the plugin and report what is missing (``lxdsnap setup``,
``lxdsnap doctor``): the steps in order, a storage pool, the default profile's root disk and the test image.

Every step checks first and changes only what is missing, so running setup twice is harmless. The parts live
beside this module:

- :mod:`pytest_lxdsnap.host.daemons`: a daemon that already answers is used (installing nothing for it), else the
  packages are installed and the daemon started;
- :mod:`pytest_lxdsnap.host.aptsources`: Debian's own archive among the apt sources, for Incus's backports;
- :mod:`pytest_lxdsnap.host.setupchanges`: every change is recorded in ``/var/lib/lxdsnap/setup-changes.json``;
- :mod:`pytest_lxdsnap.host.setupundo`: ``lxdsnap setup --undo`` reverses them newest first, leaving anything
  changed since or still in use;
- :mod:`pytest_lxdsnap.host.debian`: ``--image debian`` builds the Debian 12 systemd image from the host's mirror;
- :mod:`pytest_lxdsnap.host.packagecache`: ``--package-cache`` starts apt-cacher-ng on 127.0.0.1:3142.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from pylxd.exceptions import LXDAPIException, NotFound

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import stophook
from pytest_lxdsnap.host.daemons import have_tool, use_daemon
from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, ensure_debian_image
from pytest_lxdsnap.host.image import BUSYBOX, IMAGE_ALIAS, import_image
from pytest_lxdsnap.host.packagecache import SETUP_HINT, describe_cache, ensure_package_cache
from pytest_lxdsnap.host.setupchanges import STATE_FILE, Change, ChangeLog, Log
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import INCUS, LXD, Backend
from pytest_lxdsnap.lxd.connection import Endpoint, connect, default_socket

IMAGES = {"busybox": IMAGE_ALIAS, "debian": DEBIAN_ALIAS}
"""The images ``lxdsnap setup --image NAME`` makes, by name: busybox always, the others when asked."""
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


def kernel_has_btrfs() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii") as fh:
            return any(line.split()[-1] == "btrfs" for line in fh if line.strip())
    except OSError:
        return False


# ---------------------------------------------------------------- pool, profile, image


def ensure_pool(endpoint: Endpoint, log: Log, driver: str = "auto", name: str = DEFAULT_POOL,
                size: str = DEFAULT_POOL_SIZE, changes: ChangeLog | None = None) -> None:
    """A storage pool and a default profile whose root disk uses it (no network device: no bridges)."""
    client = connect(endpoint)
    socket = endpoint.url or default_socket()
    pools = [p["name"] for p in lxdapi.listing(client.api.storage_pools)]
    if name not in pools:
        if driver == "auto":
            driver = "btrfs" if kernel_has_btrfs() and have_tool("mkfs.btrfs") else "dir"
        config = {"size": size} if driver == "btrfs" else {}
        log(f"pool: creating {driver} pool {name!r}" + (f" ({size} loop file)" if config else ""))
        client.api.storage_pools.post(json={"name": name, "driver": driver, "config": config})
        if changes:
            changes.add("pool", socket=socket, name=name, driver=driver)
    else:
        log(f"pool: {name!r} exists")
    profile = client.api.profiles["default"].get().json()["metadata"]
    if "root" not in profile["devices"]:
        log(f"profile: default profile's root disk -> pool {name!r}")
        root = {"type": "disk", "path": "/", "pool": name}
        client.api.profiles["default"].patch(json={"devices": dict(profile["devices"], root=root)})
        if changes:
            changes.add("profile-root", socket=socket, project=endpoint.project, profile="default", device=root)


def ensure_image(endpoint: Endpoint, log: Log, changes: ChangeLog | None = None, alias: str = IMAGE_ALIAS) -> None:
    client = connect(endpoint)
    try:
        client.api.images.aliases[alias].get()
        log(f"image: {alias} present")
    except NotFound:
        fingerprint = import_image(client, alias)
        log(f"image: imported {alias} ({fingerprint[:12]}) from {BUSYBOX}")
        if changes:
            changes.add("image", socket=endpoint.url or default_socket(), project=endpoint.project,
                        fingerprint=fingerprint, alias=alias)


# ---------------------------------------------------------------- setup


def setup(endpoint: Endpoint, log: Log = print, pool_driver: str = "auto", fast_stop: bool | None = None,
          backend: Backend = LXD, state_file: Path = STATE_FILE, pool: str = DEFAULT_POOL,
          image_alias: str = IMAGE_ALIAS, images: tuple[str, ...] = (), package_cache: bool = False) -> list[Change]:
    """Install, start and initialise LXD (or Incus), and import the offline test image. Idempotent; each
    change is recorded in ``state_file`` and returned.

    ``images`` names more images to make (see :data:`IMAGES`: "debian" builds lxdsnap/debian-12);
    ``package_cache`` starts apt-cacher-ng on 127.0.0.1:3142 (see :mod:`pytest_lxdsnap.host.packagecache`).
    ``fast_stop`` True installs the lxcfs stop-hook wrapper (see :mod:`pytest_lxdsnap.host.stophook`), False
    removes it, None leaves the host's choice alone.
    """
    if endpoint.is_https:
        raise LxdSnapError("lxdsnap setup prepares the local host only: run it on the LXD host itself")
    unknown = [name for name in images if name not in IMAGES]
    if unknown:
        raise LxdSnapError(f"unknown image {unknown[0]!r}: setup makes {', '.join(IMAGES)}; import any other image "
                           f"yourself (`{backend.cli} image import FILE --alias NAME`, or `{backend.cli} image copy "
                           "images:debian/12 local: --alias NAME` where an image server is reachable)")
    changes = ChangeLog(state_file, backend.name)
    local = use_daemon(endpoint, backend, log, changes)
    ensure_pool(local, log, driver=pool_driver, name=pool, changes=changes)
    ensure_image(local, log, changes, alias=image_alias)
    if "debian" in images:
        ensure_debian_image(local, log, changes)
    if package_cache:
        ensure_package_cache(log, changes)
    if fast_stop is not None:
        set_fast_stop(fast_stop, log, changes)
    incus = " --incus" if backend is INCUS else ""
    if changes.added:
        log(f"changed (recorded in {state_file}; undo with `lxdsnap setup --undo{incus}`):")
        for change in changes.added:
            log(f"  - {change.describe()}")
    else:
        log("changed nothing: everything was already in place")
    log("ready: run `pytest` (or `make demo`)")
    return changes.added


def set_fast_stop(fast: bool, log: Log, changes: ChangeLog, hook: stophook.Hook = stophook.HOST) -> None:
    try:
        changed = stophook.enable(hook) if fast else stophook.disable(hook)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        raise LxdSnapError(f"changing the lxcfs stop hook failed: {exc}") from None
    if changed and fast:
        changes.add("fast-stop", hook=str(hook.path), original=str(hook.original), admindir=hook.admindir)
    elif changed:
        changes.drop("fast-stop")
    log(f"stop hook: {hook.path} is {stophook.state(hook)}" + ("" if changed else " (unchanged)"))


# ---------------------------------------------------------------- doctor


def doctor(endpoint: Endpoint, backend: Backend = LXD) -> list[Check]:
    """What is present, what is missing, and the fix for each."""
    setup_cmd = "lxdsnap setup --incus" if backend is not LXD else "lxdsnap setup"
    checks = [
        Check(f"tool {tool}", have_tool(tool), "found" if have_tool(tool) else "missing",
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
    from pytest_lxdsnap.host.clusterdoctor import cluster_checks

    checks += cluster_checks(client, backend.cli)
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
        "stop hook", hook not in ("stock", "broken"),
        {"stock": f"{stophook.LXCFS_HOOK} sleeps 0.5 s on every container stop: most of each in-place reset",
         "fast": "lxcfs's post-stop pause runs on reboots only (lxdsnap setup --fast-stop)",
         "absent": "no lxcfs post-stop hook",
         "broken": f"a half-done --fast-stop change: {stophook.LXCFS_HOOK} or {stophook.ORIGINAL} is missing"}[hook],
        "lxdsnap setup --fast-stop (keeps the pause for reboots; undo: lxdsnap setup --undo-fast-stop)"
        if hook == "stock" else "lxdsnap setup --fast-stop or --undo-fast-stop repairs it",
        advisory=hook == "stock"))
    profile = client.api.profiles["default"].get().json()["metadata"]
    root = profile["devices"].get("root")
    checks.append(Check("default profile root disk", root is not None,
                        f"pool {root['pool']}" if root else "missing", setup_cmd))
    for name, alias in IMAGES.items():
        try:
            client.api.images.aliases[alias].get()
            checks.append(Check(f"image {alias}", True, "present"))
        except LXDAPIException:
            checks.append(Check(f"image {alias}", False, "missing", setup_cmd + ("" if alias == IMAGE_ALIAS else
                                f" --image {name} (for image = \"{alias}\")"), advisory=alias != IMAGE_ALIAS))
    answers, detail = describe_cache()
    checks.append(Check("package cache", answers, detail, f"{SETUP_HINT} (for package_cache = true)",
                        advisory=True))
    checks.append(Check("socket", True, endpoint.url or default_socket()))
    return checks
