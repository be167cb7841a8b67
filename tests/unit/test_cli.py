"""The lxdsnap command where it needs no daemon: help, --undo with nothing (or nothing readable) recorded, and
doctor's advice when nothing answers (a subprocess each, as a user runs it)."""

from __future__ import annotations

from ..helpers import lxdsnap


def test_setup_help_names_undo_and_the_state_file():
    result = lxdsnap("setup", "--help")
    assert result.returncode == 0, result.stderr
    assert "--undo" in result.stdout and "/var/lib/lxdsnap/setup-changes.json" in result.stdout


def test_undo_with_nothing_recorded_says_so(tmp_path):
    result = lxdsnap("setup", "--undo", "--state-file", str(tmp_path / "none.json"))
    assert result.returncode == 0, result.stderr
    assert "nothing to undo" in result.stdout


def test_undo_refuses_a_state_file_it_cannot_read(tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    result = lxdsnap("setup", "--undo", "--state-file", str(state))
    assert result.returncode == 1
    assert f"{state} is not a setup record" in result.stderr and "fix or remove it" in result.stderr


def test_doctor_names_the_fix_when_lxd_is_unreachable(tmp_path):
    result = lxdsnap("--endpoint", str(tmp_path / "none.socket"), "doctor")
    assert result.returncode == 1
    assert "FIX daemon" in result.stdout and "-> lxdsnap setup" in result.stdout
