"""A realistic image for the benchmark: Debian 12 minbase with systemd and python3 (about 240 MB).

Built with debootstrap from the host's own apt source of Debian's archive (signed by Debian's keyring, see
:func:`pytest_lxdsnap.host.aptsources.debian_archive`; nothing is hard-coded),
imported as ``lxdsnap-bench/debian``. Takes about a minute the first time; reused afterwards.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.host.aptsources import debian_archive
from pytest_lxdsnap.host.image import lxd_architecture

ALIAS = "lxdsnap-bench/debian"
SUITE = "bookworm"
READY = ('{ command = ["sh", "-c", "s=$(systemctl is-system-running); [ \\"$s\\" = running ] || '
         '[ \\"$s\\" = degraded ]"], timeout = 120 }')
"""The readiness check of a systemd container, as a TOML value for [tool.lxdsnap.containers.<name>]."""


def ensure_debian_image(client: pylxd.Client, log: Callable[[str], object] = print) -> str:
    try:
        client.api.images.aliases[ALIAS].get()
        return ALIAS
    except NotFound:
        pass
    if not shutil.which("debootstrap"):
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True, stdout=subprocess.DEVNULL)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lxdsnap-debian-") as tmp:
        rootfs = Path(tmp, "rootfs")
        log(f"debian image: debootstrap --variant=minbase {SUITE} (about a minute)")
        subprocess.run(["debootstrap", "--variant=minbase", "--include=systemd-sysv,python3", SUITE, str(rootfs),
                        debian_archive(SUITE)], check=True, stdout=subprocess.DEVNULL)
        hostname = rootfs / "etc/hostname"
        hostname.unlink(missing_ok=True)  # never write into a rootfs through a link
        hostname.write_text("debian\n")
        subprocess.run(["apt-get", "clean"], check=False)
        metadata = (f"architecture: {lxd_architecture()}\ncreation_date: {int(time.time())}\n"
                    "properties:\n  description: lxdsnap benchmark Debian 12 minbase + systemd\n  os: debian\n")
        tarball = Path(tmp, "image.tar.gz")
        with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
            info = tarfile.TarInfo("metadata.yaml")
            info.size = len(metadata)
            tar.addfile(info, io.BytesIO(metadata.encode()))
            tar.add(rootfs, arcname="rootfs")
        subprocess.run(["lxc", "image", "import", str(tarball), "--alias", ALIAS], check=True,
                       stdout=subprocess.DEVNULL)
    log(f"debian image: imported {ALIAS} in {time.monotonic() - start:.0f} s")
    return ALIAS
