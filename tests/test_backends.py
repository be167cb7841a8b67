"""Where `lxdsnap setup --incus` finds Debian's backports: the host's own apt sources (pure logic, fake /etc)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_lxdsnap.backends import add_backports, has_backports, host_debian_mirror
from pytest_lxdsnap.errors import LxdSnapError

DEB822 = """Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def fake_root(tmp_path: Path, *, sources: str | None = None, listing: str | None = None) -> Path:
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12"\nVERSION_CODENAME=bookworm\n')
    if sources is not None:
        (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(sources)
    if listing is not None:
        (tmp_path / "etc/apt/sources.list").write_text(listing)
    return tmp_path


def test_backports_come_from_the_mirror_and_keyring_the_host_already_uses(tmp_path):
    root = fake_root(tmp_path, sources=DEB822)
    assert host_debian_mirror("bookworm", root) == ("http://mirror.invalid/debian",
                                                    "/usr/share/keyrings/debian-archive-keyring.gpg")
    written = add_backports(root)
    assert written == str(root / "etc/apt/sources.list.d/lxdsnap-backports.sources")
    assert Path(written).read_text().splitlines() == [
        "Types: deb", "URIs: http://mirror.invalid/debian", "Suites: bookworm-backports", "Components: main",
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"]
    assert has_backports("bookworm", root)
    assert add_backports(root) is None  # idempotent


def test_one_line_sources_work_and_existing_backports_are_left_alone(tmp_path):
    root = fake_root(tmp_path, listing="deb http://mirror.invalid/debian bookworm main\n")
    assert host_debian_mirror("bookworm", root) == ("http://mirror.invalid/debian", None)
    (root / "etc/apt/sources.list").write_text("deb http://mirror.invalid/debian bookworm main\n"
                                               "deb http://mirror.invalid/debian bookworm-backports main\n")
    assert add_backports(root) is None
    assert not (root / "etc/apt/sources.list.d/lxdsnap-backports.sources").exists()


def test_no_debian_mirror_says_what_to_do(tmp_path):
    root = fake_root(tmp_path, listing="deb http://mirror.invalid/ubuntu noble main\n")
    with pytest.raises(LxdSnapError, match=r"no Debian mirror for bookworm in /etc/apt/sources.*install Incus by hand"):
        add_backports(root)
