"""The lxdsnap command on the real host (the suite ran `lxdsnap setup` through `make test`)."""

from __future__ import annotations

import subprocess
import sys


def lxdsnap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_lxdsnap.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_doctor_reports_a_ready_host(lxd_client):
    result = lxdsnap("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok  daemon" in result.stdout
    assert "ok  image lxdsnap/busybox" in result.stdout
    assert "FIX" not in result.stdout.replace("FIX pool", "")


def test_setup_is_idempotent(lxd_client):
    result = lxdsnap("setup")
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
    assert "daemon: reachable" in result.stdout
    assert "image: lxdsnap/busybox present" in result.stdout


def test_doctor_names_the_fix_when_lxd_is_unreachable(tmp_path):
    result = lxdsnap("--endpoint", str(tmp_path / "none.socket"), "doctor")
    assert result.returncode == 1
    assert "FIX daemon" in result.stdout and "-> lxdsnap setup" in result.stdout
