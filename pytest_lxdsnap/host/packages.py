"""Installing the host packages a setup step needs (debootstrap, apt-cacher-ng) with apt-get, recording each
package that was not there before so ``lxdsnap setup --undo`` removes only those."""

from __future__ import annotations

import os
import shutil
import subprocess

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host.daemons import dpkg_installed
from pytest_lxdsnap.host.setupchanges import ChangeLog, Log


def ensure_packages(packages: list[str], log: Log, changes: ChangeLog | None, *, why: str) -> None:
    """Install whichever of ``packages`` is missing (``why``: what needs them, for the log and errors)."""
    missing = [p for p in packages if not dpkg_installed(p)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise LxdSnapError(f"{why} needs {', '.join(missing)}, and there is no apt-get here: install them by hand")
    log(f"packages: installing {' '.join(missing)} with apt-get ({why})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    update = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False)
    if update.returncode:
        raise LxdSnapError(f"apt-get update failed, so {', '.join(missing)} could not be installed for {why}:\n"
                           f"{update.stderr.strip()}")
    install = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env,
                             capture_output=True, text=True, check=False)
    for package in missing:
        if changes and dpkg_installed(package):
            changes.add("package", name=package)
    if install.returncode:
        raise LxdSnapError(f"apt-get install {' '.join(missing)} (for {why}) failed:\n{install.stderr.strip()[-2000:]}")
