"""The daemons the plugin runs against, LXD and Incus: their packages, daemon, socket and CLI (no pytest).

Both speak the same REST API (Incus is a fork of LXD); what differs for the plugin is on the host:
where the daemon and its socket live, how it is installed, and the name of its command-line client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.image import BUSYBOX

BACKPORTS_SOURCES = "etc/apt/sources.list.d/lxdsnap-backports.sources"  # under the root (/)


@dataclass(frozen=True)
class Backend:
    name: str  # what GET /1.0 reports as environment.server
    packages: dict[str, str]  # tool (name on PATH or absolute path) -> Debian package
    daemon: tuple[str, ...]  # started detached when there is no service manager
    waitready: tuple[str, ...]
    socket: str
    cli: str
    service: str  # systemd unit
    backports: bool = False  # Debian 12 has it in bookworm-backports only

    @property
    def log_file(self) -> str:
        return f"/var/log/{self.name}-lxdsnap.log"


LXD = Backend("lxd", {"lxd": "lxd", "lxc": "lxd-client", "mkfs.btrfs": "btrfs-progs", BUSYBOX: "busybox-static"},
              ("lxd", "--group", "root"), ("lxd", "waitready", "--timeout", "60"), "/var/lib/lxd/unix.socket",
              "lxc", "lxd")
INCUS = Backend("incus", {"/usr/libexec/incus/incusd": "incus", "incus": "incus-client", "mkfs.btrfs": "btrfs-progs",
                          BUSYBOX: "busybox-static"},
                ("/usr/libexec/incus/incusd", "--group", "root"), ("incus", "admin", "waitready", "--timeout", "60"),
                "/var/lib/incus/unix.socket", "incus", "incus", backports=True)
BACKENDS = {b.name: b for b in (LXD, INCUS)}


def codename(root: Path = Path("/")) -> str:
    """The Debian release's codename (``bookworm``) from /etc/os-release."""
    text = (root / "etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not match:
        raise LxdSnapError("no VERSION_CODENAME in /etc/os-release: install Incus by hand on this system")
    return match.group(1)

