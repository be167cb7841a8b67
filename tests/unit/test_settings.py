"""Pure parsing of [tool.lxdsnap] (no LXD needed)."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.declarations import ContainerSpec, load, parse_container, parse_table
from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.safety.ownership import SessionIdentity, read_tag


def test_full_declaration():
    specs = parse_table({"containers": {"web": {
        "image": "lxdsnap/busybox", "pool": "fast", "profiles": ["default", "extra"],
        "config": {"limits.cpu": 2, "security.nesting": True, "user.x": "y"}, "provision": ["a", "b"],
    }}})
    assert specs == {"web": ContainerSpec("web", "lxdsnap/busybox", "fast", ("default", "extra"),
                                          {"limits.cpu": "2", "security.nesting": "true", "user.x": "y"}, ("a", "b"))}
    assert specs["web"].image_remote is None
    assert parse_table({"containers": {"w": {"image": "images:debian/12"}}})["w"].image_remote == "images"


def test_plugin_keys_are_reserved():
    with pytest.raises(ConfigError, match=r"config.user.lxdsnap.owner: keys under user.lxdsnap. belong"):
        parse_table({"containers": {"w": {"image": "x", "config": {"user.lxdsnap.owner": "me"}}}})


def test_missing_file_or_table_declares_nothing(tmp_path):
    assert load(tmp_path / "pyproject.toml") == {}
    (tmp_path / "pyproject.toml").write_text("[tool.other]\nx = 1\n")
    assert load(tmp_path / "pyproject.toml") == {}


def test_broken_toml_names_the_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.lxdsnap\n")
    with pytest.raises(ConfigError, match=r"pyproject\.toml: not valid TOML"):
        load(tmp_path / "pyproject.toml")


def test_session_tag_round_trip_and_foreign_values():
    me = SessionIdentity()
    tag = read_tag(me.tag("default/web"))
    assert tag is not None and tag.holder == me and tag.where == "default/web"
    assert me.owns({"user.lxdsnap.owner": me.tag("default/web")}, "default/web")
    assert not me.owns({"user.lxdsnap.owner": me.tag("default/web")}, "default/copy-of-web")  # a copy's
    assert not me.owns({"user.lxdsnap.owner": SessionIdentity().tag("default/web")}, "default/web")
    for junk in (None, "", "yes", "{}", '{"token": 1}'):
        assert read_tag(junk) is None
    with pytest.raises(ValueError, match="invalid snapshot label"):
        me.snapshot_name("Bad Label")


def test_targets_spread_xdist_workers_over_the_members():
    spec = parse_container("web", {"image": "x", "target": ["m1", "m2", "m3"]})
    assert [spec.target_for(worker) for worker in range(5)] == ["m1", "m2", "m3", "m1", "m2"]
    assert parse_container("web", {"image": "x", "target": "m1"}).target_for(7) == "m1"
    assert parse_container("web", {"image": "x"}).target_for(0) is None


@pytest.mark.parametrize("bad", [[], "", ["m1", ""], 3, [3]])
def test_a_bad_target_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"\[tool.lxdsnap.containers.web\] target: expected"):
        parse_container("web", {"image": "x", "target": bad})
