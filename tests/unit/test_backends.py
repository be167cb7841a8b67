"""What the backends table reads from the host: the Debian release's codename (pure logic, fake /etc).

Where `lxdsnap setup --incus` finds Debian's backports is tested in test_hostsetup.py (pytest_lxdsnap.host.aptsources).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.lxd.backends import codename


def fake_root(tmp_path: Path, os_release: str) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text(os_release)
    return tmp_path


@pytest.mark.parametrize("line", ["VERSION_CODENAME=bookworm", 'VERSION_CODENAME="bookworm"'])
def test_codename_comes_from_os_release(tmp_path, line):
    assert codename(fake_root(tmp_path, f'PRETTY_NAME="Debian GNU/Linux 12"\n{line}\n')) == "bookworm"


def test_no_codename_says_to_install_by_hand(tmp_path):
    with pytest.raises(LxdSnapError, match="no VERSION_CODENAME in /etc/os-release: install Incus by hand"):
        codename(fake_root(tmp_path, 'PRETTY_NAME="Some Linux"\n'))
