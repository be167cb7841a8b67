"""The daemons the plugin runs against, LXD and Incus: their packages, daemon, socket and CLI (no pytest).

Both speak the same REST API (Incus is a fork of LXD); what differs for the plugin is on the host:
where the daemon and its socket live, how it is installed, and the name of its command-line client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LxdSnapError
from .image import BUSYBOX

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


def host_debian_mirror(suite: str, root: Path = Path("/")) -> tuple[str, str | None]:
    """The Debian mirror this host's apt sources use for ``suite`` (nothing is hard-coded) and the keyring
    they sign it with (deb822 ``URIs:``/``Signed-By:`` stanzas, or one-line ``deb`` entries)."""
    for path in sorted((root / "etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.M))
            if suite in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0], fields.get("Signed-By")
    listing = root / "etc/apt/sources.list"
    if listing.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + suite + r"\s", listing.read_text(), re.M):
            return match.group(1), None
    raise LxdSnapError(f"no Debian mirror for {suite} in /etc/apt/sources*: add one, or install Incus by hand")


def has_backports(suite: str, root: Path = Path("/")) -> bool:
    texts = [p.read_text() for p in (root / "etc/apt/sources.list.d").glob("*.sources")]
    if (root / "etc/apt/sources.list").exists():
        texts.append((root / "etc/apt/sources.list").read_text())
    return any(re.search(rf"(^Suites:.*\s|^deb\s.*\s){suite}-backports(\s|$)", t, re.M) for t in texts)


def add_backports(root: Path = Path("/")) -> str | None:
    """Add ``<codename>-backports`` from the host's own Debian mirror to apt's sources, unless present;
    the file written, or None."""
    suite = codename(root)
    if has_backports(suite, root):
        return None
    uri, keyring = host_debian_mirror(suite, root)
    lines = ["Types: deb", f"URIs: {uri}", f"Suites: {suite}-backports", "Components: main"]
    if keyring:
        lines.append(f"Signed-By: {keyring}")
    (root / BACKPORTS_SOURCES).write_text("\n".join(lines) + "\n")
    return str(root / BACKPORTS_SOURCES)
