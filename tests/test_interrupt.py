"""Ctrl-C in the middle of a test: the container is still reset and the session cleans up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from .helpers import assert_summary, lxc_exec_status, snapshot_names, user_config


def test_ctrl_c_mid_test_still_resets(suite, make_instance, lxd_client):
    name = make_instance(running=True, snapshot="user-snap")
    before = user_config(lxd_client, name)
    started = suite.path / "started"
    suite.makepyfile(f"""
        import pathlib
        import time

        import pytest

        @pytest.mark.lxd("{name}")
        def test_slow(lxd):
            lxd["{name}"].write_text("/root/dirty", "x")
            pathlib.Path({str(started)!r}).touch()
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=suite.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the inner test never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert_summary(output, name, kind="existing", instance=name, resets="1", leftovers="0")
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert snapshot_names(lxd_client, name) == ["user-snap"]
    assert user_config(lxd_client, name) == before
