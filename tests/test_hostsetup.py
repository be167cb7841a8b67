"""lxdsnap setup against the real daemon: a running daemon is used as it is, and the record of changes and --undo
with real throwaway pools and images. What needs no daemon (Debian's archive for backports, the undo plan,
--fast-stop on a tmp hook) is in tests/unit/test_hostsetup.py."""

from __future__ import annotations

import json
import os
import secrets
import shutil

import pytest
from pylxd.exceptions import NotFound

from pytest_lxdsnap.host import hostsetup
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint

from .helpers import BACKEND, TEST_PREFIX, lxdsnap

# ---------------------------------------------------------------- finding 2: the running daemon first

def test_a_running_daemon_is_used_even_when_its_tools_are_not_on_path(lxd_client, tmp_path):
    """A snap host under sudo: `lxc`/`lxd` are not on PATH, but the daemon answers. Nothing is installed (here
    apt-get is not on PATH either: an attempt to install would fail)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mkfs.btrfs").symlink_to(shutil.which("mkfs.btrfs") or "/usr/sbin/mkfs.btrfs")
    state = tmp_path / "state.json"
    result = lxdsnap("setup", "--state-file", str(state), env=dict(os.environ, PATH=str(bin_dir)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BACKEND.name} " in result.stdout and "already runs, so setup installs nothing for it" in result.stdout
    assert "changed nothing" in result.stdout and not state.exists()  # nothing done, nothing recorded


# ---------------------------------------------------------------- finding 3: record and undo, for real


@pytest.fixture
def throwaway(lxd_client):
    """Names of a pool and an image alias only this test uses; whatever is left of them is removed after."""
    token = secrets.token_hex(3)
    names = {"pool": f"{TEST_PREFIX}pool-{token}", "image_alias": f"{TEST_PREFIX}img-{token}"}
    yield names
    for record in lxdapi.listing(lxd_client.api.instances):
        if record["name"].startswith(f"{TEST_PREFIX}on-{token}"):
            lxdapi.wait(lxd_client, lxd_client.api.instances[record["name"]].delete())
    for image in lxdapi.listing(lxd_client.api.images):
        if any(a["name"] == names["image_alias"] for a in image.get("aliases") or []):
            lxdapi.wait(lxd_client, lxd_client.api.images[image["fingerprint"]].delete())
    if any(p["name"] == names["pool"] for p in lxdapi.listing(lxd_client.api.storage_pools)):
        lxd_client.api.storage_pools[names["pool"]].delete()


def shared_things_intact(client) -> None:
    assert any(p["name"] == "default" for p in lxdapi.listing(client.api.storage_pools))
    client.api.images.aliases["lxdsnap/busybox"].get()


def test_setup_records_a_throwaway_pool_and_image_and_undo_removes_them(lxd_client, throwaway, tmp_path):
    state = tmp_path / "state.json"
    lines: list[str] = []
    made = hostsetup.setup(Endpoint(), log=lines.append, pool_driver="dir", backend=BACKEND, state_file=state,
                           **throwaway)
    assert [c.kind for c in made] == ["pool", "image"]
    assert f"  - created dir storage pool {throwaway['pool']!r} ({BACKEND.name})" in lines
    assert [r["kind"] for r in json.loads(state.read_text())["changes"]] == ["pool", "image"]
    assert hostsetup.setup(Endpoint(), log=lines.append, backend=BACKEND, state_file=state, **throwaway) == []
    assert len(json.loads(state.read_text())["changes"]) == 2  # a rerun records nothing it did not do

    result = lxdsnap("setup", "--undo", "--state-file", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.index(f"undone: imported image {throwaway['image_alias']}") < out.index(
        f"undone: created dir storage pool {throwaway['pool']!r}")  # newest first
    assert not any(p["name"] == throwaway["pool"] for p in lxdapi.listing(lxd_client.api.storage_pools))
    with pytest.raises(NotFound):
        lxd_client.api.images.aliases[throwaway["image_alias"]].get()
    assert not state.exists()
    shared_things_intact(lxd_client)


def test_undo_leaves_a_pool_and_image_still_in_use_and_says_why(lxd_client, throwaway, tmp_path):
    state = tmp_path / "state.json"
    hostsetup.setup(Endpoint(), log=lambda line: None, pool_driver="dir", backend=BACKEND, state_file=state,
                    **throwaway)
    instance = f"{TEST_PREFIX}on-{throwaway['pool'][-6:]}"
    body = {"name": instance, "source": {"type": "image", "alias": throwaway["image_alias"]},
            "devices": {"root": {"type": "disk", "path": "/", "pool": throwaway["pool"]}}}
    lxdapi.wait(lxd_client, lxd_client.api.instances.post(json=body))

    result = lxdsnap("setup", "--undo", "--state-file", str(state))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"left:   imported image {throwaway['image_alias']}" in result.stdout
    assert f"still in use by instance {instance}" in result.stdout
    assert f"left:   created dir storage pool {throwaway['pool']!r}" in result.stdout
    assert f"still in use by /1.0/instances/{instance}" in result.stdout
    assert len(json.loads(state.read_text())["changes"]) == 2  # kept for a later --undo

    lxdapi.wait(lxd_client, lxd_client.api.instances[instance].delete())
    result = lxdsnap("setup", "--undo", "--state-file", str(state))
    assert result.returncode == 0 and "every recorded change" in result.stdout, result.stdout + result.stderr
    assert not any(p["name"] == throwaway["pool"] for p in lxdapi.listing(lxd_client.api.storage_pools))
    shared_things_intact(lxd_client)


