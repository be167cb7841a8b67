"""Build the offline test image ``lxdsnap/busybox`` from the host's static busybox.

No image server is needed. The rootfs is written with plain file operations and the applet links
are created by us (never by ``busybox --install`` in a chroot), and nothing is ever written through a
link: ``sbin/init`` from ``--install`` would be an absolute link to /bin/busybox, and writing an init
script through it would overwrite the *host's* busybox.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
import time

IMAGE_ALIAS = "lxdsnap/busybox"
BUSYBOX = "/bin/busybox"

INIT_SCRIPT = """#!/bin/sh
# PID 1 of the lxdsnap/busybox test image: loopback up, exit promptly on LXD's stop signals.
mount -t tmpfs tmpfs /tmp 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
ip link set lo up 2>/dev/null
trap 'exit 0' PWR TERM INT HUP
while :; do sleep 3600 & wait $!; done
"""

FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "lxdsnap\n",
    "etc/os-release": 'NAME="lxdsnap busybox"\nID=busybox\n',
}
DIRS = ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "run", "var/log", "var/www",
        "dev", "proc", "sys", "home"]


def lxd_architecture() -> str:
    return {"x86_64": "x86_64", "aarch64": "aarch64", "armv7l": "armv7l"}.get(platform.machine(), platform.machine())


def applets(busybox: str = BUSYBOX) -> list[str]:
    """Relative paths of the applets busybox provides (``bin/sh``, ``sbin/ip`` ...)."""
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def build_image_tarball(busybox: str = BUSYBOX) -> bytes:
    """A unified LXD image tarball (metadata.yaml + rootfs/) as bytes, about 1 MB compressed."""
    buf = io.BytesIO()
    now = int(time.time())

    def add(name: str, *, data: bytes | None = None, mode: int = 0o644, link: str | None = None,
            directory: bool = False) -> None:
        info = tarfile.TarInfo(name)
        info.mtime, info.uid, info.gid, info.mode = now, 0, 0, mode
        if directory:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif link is not None:
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, link, 0o777
            tar.addfile(info)
        else:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))

    metadata = (
        f"architecture: {lxd_architecture()}\ncreation_date: {now}\n"
        "properties:\n  description: lxdsnap offline busybox test image\n  os: busybox\n  release: static\n"
    )
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        add("metadata.yaml", data=metadata.encode())
        add("rootfs", directory=True, mode=0o755)
        for d in DIRS:
            add(f"rootfs/{d}", directory=True, mode=0o1777 if d == "tmp" else 0o755)
        with open(busybox, "rb") as fh:
            add("rootfs/bin/busybox", data=fh.read(), mode=0o755)
        for rel in applets(busybox):
            if rel in ("sbin/init", "bin/busybox") or rel.split("/")[0] not in ("bin", "sbin", "usr"):
                continue
            add(f"rootfs/{rel}", link="/bin/busybox")
        add("rootfs/sbin/init", data=INIT_SCRIPT.encode(), mode=0o755)
        for rel, text in FILES.items():
            add(f"rootfs/{rel}", data=text.encode())
    return buf.getvalue()


def import_image(client: object, alias: str = IMAGE_ALIAS, busybox: str = BUSYBOX) -> str:
    """Import the busybox image under ``alias``; returns its fingerprint."""
    from pytest_lxdsnap.lxd.lxdapi import quiet_pylxd

    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} not found: install Debian's busybox-static package")
    with quiet_pylxd():
        image = client.images.create(build_image_tarball(busybox), public=False, wait=True)  # type: ignore[attr-defined]
        image.add_alias(alias, "lxdsnap offline busybox test image")
    return str(image.fingerprint)
