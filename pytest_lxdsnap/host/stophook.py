"""The lxcfs post-stop hook: where LXD's 0.6 s container stop goes, and the opt-in host fix.

Debian's lxcfs package adds ``lxc.hook.post-stop = /usr/share/lxcfs/lxc.reboot.hook`` to every
container (through ``/usr/share/lxc/config/common.conf.d/00-lxcfs.conf``), and that hook is
``sleep 0.5s``. It gives lxcfs time to catch up when a container *reboots*; liblxc runs it on every
stop too, and LXD's restore of a running instance is a stop, a restore and a start. Measured with
``lxc.log.level=trace``: 0.50 s of the 0.63 s forced stop of a busybox container is this sleep.

``lxdsnap setup --fast-stop`` diverts the hook the Debian way (``dpkg-divert``, so package upgrades
keep it) and installs a wrapper that runs the original only when ``LXC_TARGET`` is ``reboot``.
``--undo-fast-stop`` puts the original back.

Containers may stop while this runs, so the hook path never goes missing: the original is copied to
its diverted name first, the diversion is registered without moving anything (``--no-rename``), and
each file is written beside its target, fsynced and renamed over it. Both directions finish a
half-done state (a crash, a full disk, or the older rename-first version of this module), so rerunning
either option repairs the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LXCFS_HOOK = Path("/usr/share/lxcfs/lxc.reboot.hook")
ORIGINAL = Path("/usr/share/lxcfs/lxc.reboot.hook.distrib")
MARKER = "# lxdsnap fast-stop"
REINSTALL = "apt-get install --reinstall lxcfs"


@dataclass(frozen=True)
class Hook:
    """Where the hook and its diverted original live; tests point these into a tmp dir."""

    path: Path = LXCFS_HOOK
    original: Path = ORIGINAL
    admindir: str | None = None  # dpkg's database directory (None: the host's)

    @property
    def wrapper(self) -> str:
        return f"""#!/bin/sh
{MARKER}: installed by `lxdsnap setup --fast-stop`; undo with `lxdsnap setup --undo-fast-stop`.
# lxcfs pauses here to catch up when a container reboots. A stop (LXC_TARGET=stop) needs no pause.
[ "${{LXC_TARGET:-reboot}}" = reboot ] || exit 0
exec {self.original} "$@"
"""


HOST = Hook()


def _is_wrapper(path: Path) -> bool:
    return path.exists() and MARKER in path.read_text(errors="replace")


def state(hook: Hook = HOST) -> str:
    """``absent`` (no lxcfs hook), ``fast`` (the wrapper is installed), ``stock`` (sleeps on every stop) or
    ``broken`` (a half-done change: the hook or the original it runs is missing)."""
    if not hook.path.exists():
        return "broken" if hook.original.exists() else "absent"
    if _is_wrapper(hook.path):
        return "fast" if hook.original.exists() else "broken"
    return "stock"


def write_atomic(target: Path, data: bytes, mode: int) -> None:
    """Replace ``target`` with ``data``: readers see the old file or the new one, never a part or none."""
    tmp = target.with_name(f".{target.name}.lxdsnap-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _dpkg_divert(hook: Hook, *args: str) -> str:
    if not shutil.which("dpkg-divert"):
        raise RuntimeError("dpkg-divert is missing: --fast-stop supports Debian and Ubuntu hosts only")
    admin = ["--admindir", hook.admindir] if hook.admindir else []
    return subprocess.run(["dpkg-divert", *admin, *args, str(hook.path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def diverted(hook: Hook = HOST) -> bool:
    """Whether dpkg diverts the hook to our ``original`` (another diversion raises RuntimeError)."""
    true_name = _dpkg_divert(hook, "--truename")
    if true_name not in (str(hook.path), str(hook.original)):
        raise RuntimeError(f"{hook.path} is diverted to {true_name} by someone else: leave it, or undo that "
                           f"diversion (dpkg-divert --list {hook.path}) first")
    return true_name == str(hook.original)


def _missing_original(hook: Hook) -> RuntimeError:
    return RuntimeError(f"lxcfs's own hook {hook.original} is missing: `{REINSTALL}` puts it back, then rerun")


def enable(hook: Hook = HOST) -> bool:
    """Install the wrapper, finishing any half-done change; False when there was nothing to do."""
    if state(hook) in ("absent", "fast") and (state(hook) == "absent" or diverted(hook)):
        return False
    if _is_wrapper(hook.path) and not hook.original.exists():
        raise _missing_original(hook)
    if hook.path.exists() and not _is_wrapper(hook.path):  # keep lxcfs's hook under its diverted name first
        write_atomic(hook.original, hook.path.read_bytes(), _mode(hook.path))
    if not diverted(hook):
        _dpkg_divert(hook, "--local", "--no-rename", "--divert", str(hook.original), "--add")
    if not _is_wrapper(hook.path):
        write_atomic(hook.path, hook.wrapper.encode(), 0o755)
    return True


def disable(hook: Hook = HOST) -> bool:
    """Put the package's hook back, finishing any half-done change; False when there was nothing to do."""
    if state(hook) in ("absent", "stock") and not diverted(hook) and not hook.original.exists():
        return False
    if not hook.path.exists() or _is_wrapper(hook.path):
        if not hook.original.exists():
            raise _missing_original(hook)
        write_atomic(hook.path, hook.original.read_bytes(), _mode(hook.original))
    if diverted(hook):
        _dpkg_divert(hook, "--local", "--no-rename", "--remove")
    hook.original.unlink(missing_ok=True)  # the hook path holds the same bytes now
    return True
