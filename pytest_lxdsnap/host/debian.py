"""Build the Debian 12 systemd image ``lxdsnap/debian-12`` offline, from the host's own Debian mirror
(``lxdsnap setup --image debian``).

``debootstrap --variant=minbase`` of bookworm with ``systemd-sysv`` and ``python3`` (for Ansible and testinfra),
from the mirror the host's apt sources use for Debian's archive (:func:`pytest_lxdsnap.host.aptsources.
debian_archive`; nothing is hard-coded), verified with Debian's keyring. The rootfs is then made generic: no
``/etc/hostname`` or ``/etc/resolv.conf`` copied from the host, an empty ``/etc/machine-id`` (every instance
launched from the image makes its own on first boot), no random seed, no apt cache or package lists, and
``systemd-binfmt.service`` masked (it cannot work in an unprivileged container), so it boots to ``running``.

The tarball is kept in ``/var/cache/lxdsnap/images`` so a second daemon (Incus beside LXD) imports it without
building again; an image that exists under the alias is never rebuilt. Building takes about 90 s.

Nothing is written through a link inside the rootfs (a link there may point into the host), and the build
directory is removed only once nothing is mounted under it (debootstrap mounts /proc, /sys and, on some
hosts, binds the host's /dev into the target).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pylxd.exceptions import NotFound

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.aptsources import DEBIAN_KEYRING, debian_archive
from pytest_lxdsnap.host.image import lxd_architecture
from pytest_lxdsnap.host.packages import ensure_packages
from pytest_lxdsnap.host.setupchanges import ChangeLog, Log, sha256
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import codename
from pytest_lxdsnap.lxd.connection import Endpoint, connect, default_socket

DEBIAN_ALIAS = "lxdsnap/debian-12"
SUITE = "bookworm"
INCLUDE = ("systemd-sysv", "python3")
CACHE = Path("/var/cache/lxdsnap/images")
DESCRIPTION = "lxdsnap Debian 12 minbase + systemd + python3 (built by lxdsnap setup --image debian)"
REMOVED = ("etc/hostname", "etc/resolv.conf", "var/lib/systemd/random-seed", "var/lib/dbus/machine-id")
"""Files the rootfs must not carry into every instance: the build host's name and resolver, a shared seed."""
MASKED = ("systemd-binfmt.service",)
"""Units masked in the image: binfmt_misc cannot be mounted in an unprivileged container, and this unit's
failure alone would leave every boot ``degraded`` (the image boots to ``running``, so ``allow_degraded = false``
is usable)."""


def tarball_path(cache: Path = CACHE) -> Path:
    return cache / f"debian-12-{lxd_architecture()}.tar.gz"


def alias_exists(client: Any, alias: str) -> bool:
    try:
        client.api.images.aliases[alias].get()
    except NotFound:
        return False
    return True


def ensure_debian_image(endpoint: Endpoint, log: Log, changes: ChangeLog | None = None, *,
                        alias: str = DEBIAN_ALIAS, cache: Path = CACHE) -> str | None:
    """Import the Debian image under ``alias`` unless it is there, building its tarball first unless cached;
    the fingerprint imported, or None when the alias already existed."""
    client = connect(endpoint)
    if alias_exists(client, alias):
        log(f"image: {alias} present")
        return None
    tarball = tarball_path(cache)
    if tarball.is_file():
        log(f"image: {alias}: importing the tarball built before ({tarball})")
    else:
        ensure_packages(["debootstrap"], log, changes, why=f"building {alias}")
        mirror = debian_archive(
            codename(), purpose=f"{alias} cannot be built from it",
            instead=f"import a Debian 12 image yourself under the alias {alias} (`lxc image copy images:debian/12 "
                    f"local: --alias {alias}` where an image server is reachable)")
        start = time.monotonic()
        log(f"image: building {alias}: debootstrap --variant=minbase {SUITE} from {mirror} (about 90 s)")
        build_tarball(tarball, mirror)
        log(f"image: built {tarball} ({tarball.stat().st_size >> 20} MiB) in {time.monotonic() - start:.0f} s")
        if changes:
            changes.add("cache-file", path=str(tarball), sha256=sha256(tarball))
    fingerprint = import_tarball(client, tarball, alias)
    log(f"image: imported {alias} ({fingerprint[:12]})")
    if changes:
        changes.add("image", socket=endpoint.url or default_socket(), project=endpoint.project,
                    fingerprint=fingerprint, alias=alias)
    return fingerprint


# ---------------------------------------------------------------- building


def build_tarball(target: Path, mirror: str) -> None:
    """debootstrap, make the rootfs generic, and write the unified image tarball to ``target`` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        run = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", f"--keyring={DEBIAN_KEYRING}",
             SUITE, str(rootfs), mirror], capture_output=True, text=True, check=False,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        unmount_under(work)
        if run.returncode:
            detail = (rootfs / "debootstrap/debootstrap.log")
            tail = detail.read_text(errors="replace")[-1500:] if detail.is_file() else run.stderr[-1500:]
            raise LxdSnapError(f"debootstrap of {SUITE} from {mirror} failed (exit {run.returncode}):\n{tail}\n"
                               "Check that the mirror serves it (`apt-get update` on the host), then rerun")
        make_generic(rootfs)
        (work / "metadata.yaml").write_text(
            f"architecture: {lxd_architecture()}\ncreation_date: {int(time.time())}\nproperties:\n"
            f"  description: {DESCRIPTION}\n  os: debian\n  release: {SUITE}\n  variant: minbase\n")
        partial = target.with_name(target.name + ".partial")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--exclude=rootfs/dev/*",
                        "--exclude=rootfs/proc/*", "--exclude=rootfs/sys/*", "-C", str(work), "-czf", str(partial),
                        "metadata.yaml", "rootfs"], check=True, capture_output=True)
        os.replace(partial, target)
    finally:
        remove_build_dir(work)


def make_generic(rootfs: Path) -> None:
    """No host identity, an empty machine-id (made on each instance's first boot), no apt cache or lists."""
    for rel in REMOVED:
        remove_inside(rootfs, rel)
    write_inside(rootfs, "etc/machine-id", b"", 0o444)
    for unit in MASKED:
        link = inside(rootfs, f"etc/systemd/system/{unit}")
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")  # what `systemctl mask` writes; made here, never followed
    for rel, keep in (("var/cache/apt/archives", ("lock", "partial")), ("var/cache/apt", ("archives",)),
                      ("var/lib/apt/lists", ("lock", "partial")), ("debootstrap", ())):
        folder = inside(rootfs, rel)
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in folder.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def inside(rootfs: Path, rel: str) -> Path:
    """``rootfs/rel``, refusing a path whose directories include a link (writing through it could leave the
    rootfs: the trap of ``busybox --install``'s absolute links)."""
    path = rootfs
    for part in Path(rel).parent.parts:
        path = path / part
        if path.is_symlink():
            raise LxdSnapError(f"{path} is a link: refusing to write through it into the rootfs")
    return rootfs / rel


def remove_inside(rootfs: Path, rel: str) -> None:
    inside(rootfs, rel).unlink(missing_ok=True)  # unlink removes a link itself, never its target


def write_inside(rootfs: Path, rel: str, data: bytes, mode: int) -> None:
    path = inside(rootfs, rel)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount what debootstrap left mounted in the target (a failed run leaves /proc, /sys, maybe /dev)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)


def remove_build_dir(work: Path) -> None:
    """Delete the build directory, but never while something is mounted under it (rm -rf through a bound
    /dev would delete the host's device nodes)."""
    unmount_under(work)
    left = mounts_under(work)
    if left:
        raise LxdSnapError(f"{work} still has mounts ({', '.join(left)}): unmount them, then delete it by hand")
    shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- importing


def import_tarball(client: Any, tarball: Path, alias: str) -> str:
    """Import a unified image tarball (streamed from disk) and give it ``alias``; its fingerprint."""
    with tarball.open("rb") as fh:
        response = client.api.images.post(data=fh, headers={"Content-Type": "application/octet-stream"})
    metadata = lxdapi.wait(client, response, timeout=600)
    fingerprint = str(metadata["fingerprint"])
    client.api.images.aliases.post(json={"name": alias, "target": fingerprint, "description": DESCRIPTION})
    return fingerprint
