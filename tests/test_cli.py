"""The lxdsnap command on the real host (the suite ran `lxdsnap setup` through `make test`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .helpers import lxdsnap


def test_doctor_reports_a_ready_host(lxd_client):
    result = lxdsnap("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok  daemon" in result.stdout
    assert "ok  image lxdsnap/busybox" in result.stdout
    assert "FIX" not in result.stdout  # advisory findings print as TIP


def test_setup_is_idempotent(lxd_client, tmp_path):
    state = tmp_path / "state.json"
    result = lxdsnap("setup", "--state-file", str(state))
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
    assert "daemon: reachable" in result.stdout
    assert "image: lxdsnap/busybox present" in result.stdout
    assert "changed nothing" in result.stdout and not state.exists()


def test_fast_stop_skips_lxcfs_pause_on_stop_only_and_undoes_cleanly(make_instance, tmp_path):
    from pytest_lxdsnap.host import stophook

    state = str(tmp_path / "state.json")
    before = stophook.state()
    assert before in ("stock", "fast"), "these hosts have lxcfs (a dependency of Debian's lxd)"
    original = (stophook.ORIGINAL if before == "fast" else stophook.LXCFS_HOOK).read_bytes()
    try:
        result = lxdsnap("setup", "--fast-stop", "--state-file", state)
        assert result.returncode == 0, result.stderr
        assert "stop hook: /usr/share/lxcfs/lxc.reboot.hook is fast" in result.stdout
        assert stophook.ORIGINAL.read_bytes() == original
        if before == "stock":  # recorded for `setup --undo`
            assert '"kind": "fast-stop"' in Path(state).read_text()

        def trace(target: str) -> str:
            env = {"PATH": "/usr/bin:/bin", "LXC_TARGET": target}
            run = subprocess.run(["sh", "-x", str(stophook.LXCFS_HOOK)], env=env, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            return run.stderr

        assert str(stophook.ORIGINAL) not in trace("stop")  # a stop skips the pause
        assert f"exec {stophook.ORIGINAL}" in trace("reboot")  # a reboot still runs lxcfs's hook
        name = make_instance()  # LXD's own stop hook still runs: the stop completes
        subprocess.run(["lxc", "stop", "--force", name], check=True)
        assert "STOPPED" in subprocess.run(["lxc", "list", name, "-c", "s", "--format", "csv"], check=True,
                                           capture_output=True, text=True).stdout

        result = lxdsnap("setup", "--undo-fast-stop", "--state-file", state)
        assert result.returncode == 0, result.stderr
        assert stophook.state() == "stock"
        assert stophook.LXCFS_HOOK.read_bytes() == original and not stophook.ORIGINAL.exists()
        assert "lxcfs" not in subprocess.run(["dpkg-divert", "--list"], capture_output=True, text=True).stdout
        assert not Path(state).exists()  # undone by hand: nothing left for --undo
    finally:
        lxdsnap("setup", "--fast-stop" if before == "fast" else "--undo-fast-stop", "--state-file", state)
    assert stophook.state() == before
