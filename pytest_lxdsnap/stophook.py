"""The lxcfs post-stop hook: where LXD's 0.6 s container stop goes, and the opt-in host fix.

Debian's lxcfs package adds ``lxc.hook.post-stop = /usr/share/lxcfs/lxc.reboot.hook`` to every
container (through ``/usr/share/lxc/config/common.conf.d/00-lxcfs.conf``), and that hook is
``sleep 0.5s``. It gives lxcfs time to catch up when a container *reboots*; liblxc runs it on every
stop too, and LXD's restore of a running instance is a stop, a restore and a start. Measured with
``lxc.log.level=trace``: 0.50 s of the 0.63 s forced stop of a busybox container is this sleep.

``lxdsnap setup --fast-stop`` diverts the hook the Debian way (``dpkg-divert``, so package upgrades
keep it) and installs a wrapper that runs the original only when ``LXC_TARGET`` is ``reboot``.
``--undo-fast-stop`` puts the original back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

LXCFS_HOOK = Path("/usr/share/lxcfs/lxc.reboot.hook")
ORIGINAL = Path("/usr/share/lxcfs/lxc.reboot.hook.distrib")
MARKER = "# lxdsnap fast-stop"
WRAPPER = f"""#!/bin/sh
{MARKER}: installed by `lxdsnap setup --fast-stop`; undo with `lxdsnap setup --undo-fast-stop`.
# lxcfs pauses here to catch up when a container reboots. A stop (LXC_TARGET=stop) needs no pause.
[ "${{LXC_TARGET:-reboot}}" = reboot ] || exit 0
exec {ORIGINAL} "$@"
"""


def state() -> str:
    """``absent`` (no lxcfs hook), ``fast`` (the wrapper is installed) or ``stock`` (sleeps on every stop)."""
    if not LXCFS_HOOK.exists():
        return "absent"
    return "fast" if MARKER in LXCFS_HOOK.read_text(errors="replace") else "stock"


def _divert(*args: str) -> None:
    if not shutil.which("dpkg-divert"):
        raise RuntimeError("dpkg-divert is missing: --fast-stop supports Debian and Ubuntu hosts only")
    subprocess.run(["dpkg-divert", "--local", "--rename", "--divert", str(ORIGINAL), *args, str(LXCFS_HOOK)],
                   check=True, stdout=subprocess.DEVNULL)


def enable() -> bool:
    """Install the wrapper; False when there was nothing to do."""
    if state() != "stock":
        return False
    _divert("--add")
    tmp = LXCFS_HOOK.with_name(LXCFS_HOOK.name + ".lxdsnap-tmp")
    tmp.write_text(WRAPPER)
    tmp.chmod(0o755)
    os.replace(tmp, LXCFS_HOOK)  # containers stopping right now see the old or the new file, never half of one
    return True


def disable() -> bool:
    """Put the package's hook back; False when the wrapper was not installed."""
    if state() != "fast":
        return False
    LXCFS_HOOK.unlink()
    _divert("--remove")
    return True
