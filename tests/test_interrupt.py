"""Ctrl-C in the middle of a test: the container is still reset and the session cleans up."""

from __future__ import annotations

import signal

from .helpers import as_found, assert_left_as_found, assert_summary, lxc_exec_status, start_session, wait_for


def test_ctrl_c_mid_test_still_resets(suite, make_instance, lxd_client):
    name = make_instance(running=True, snapshot="user-snap")
    found = as_found(lxd_client, name)
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
    proc = start_session(suite.path)
    try:
        wait_for(started, proc, timeout=60)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert_summary(output, name, kind="existing", instance=name, resets="1", leftovers="0")
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
    assert_left_as_found(lxd_client, name, found)
