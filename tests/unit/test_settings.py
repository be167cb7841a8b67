"""Pure parsing of [tool.lxdsnap] (no LXD needed)."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.declarations import ContainerSpec, ReadyCheck, is_instance_name, load, parse_container, parse_table
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


# -- edge cases of the [tool.lxdsnap] table ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["w", "web", "web-2", "a" * 40, "a1"])
def test_container_names_that_fit(name):
    assert parse_container(name, {"image": "x"}).name == name


@pytest.mark.parametrize("name", ["", "Web", "web_2", "2web", "web-", "-web", "a" * 41, "wéb"])
def test_container_names_that_do_not(name):
    with pytest.raises(ConfigError, match=r"container names use lowercase letters, digits and '-', start with a "
                                          r"letter, and are at most 40 characters"):
        parse_container(name, {"image": "x"})


@pytest.mark.parametrize(("table", "message"), [
    ("not a table", r"\[tool.lxdsnap.containers.web\]: expected a table, got str"),
    ({"image": ""}, r"image: expected a non-empty string, got ''"),
    ({"image": 3}, r"image: expected a non-empty string, got 3"),
    ({"image": "x", "pool": ""}, r"pool: expected a storage pool name \(string\), got ''"),
    ({"image": "x", "config": "limits.cpu=2"}, r"config: expected a table of LXD config keys, got str"),
    ({"image": "x", "config": {"limits.cpu": 1.5}}, r"config.limits.cpu: expected a string, integer or boolean"),
    ({"image": "x", "profiles": "default"}, r"profiles: expected a list of strings, got str 'default'"),
    ({"image": "x", "provision": ["ok", 3]}, r"provision: expected a list of strings"),
    ({"image": "x", "strategy": "fast"}, r"\[tool.lxdsnap.containers.web\] strategy: unknown value 'fast'"),
    ({"image": "x", "scope": "session"}, r"\[tool.lxdsnap.containers.web\] scope: unknown value 'session'"),
])
def test_each_bad_value_names_its_key(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_container("web", table)


def test_empty_lists_and_the_defaults():
    spec = parse_container("web", {"image": "x", "profiles": [], "provision": []})
    assert spec.profiles == () and spec.provision == ()
    plain = parse_container("web", {"image": "x"})
    assert (plain.pool, plain.profiles, plain.config, plain.strategy, plain.scope, plain.ready, plain.targets) == (
        None, ("default",), {}, None, None, None, ())
    assert parse_container("web", {"image": "x", "config": {"a": False, "b": 0}}).config == {"a": "false", "b": "0"}


@pytest.mark.parametrize(("ready", "expected"), [
    ("curl -f localhost", ReadyCheck("curl -f localhost")),
    (["test", "-e", "/run/ok"], ReadyCheck(("test", "-e", "/run/ok"))),
    ({"command": "true", "timeout": 5}, ReadyCheck("true", 5.0)),
    ({"command": ["true"], "timeout": 0.5}, ReadyCheck(("true",), 0.5)),
    ({"wait_strategy": "waits:http_ready", "timeout": 30}, ReadyCheck(None, 30.0, wait_strategy="waits:http_ready")),
])
def test_ready_forms(ready, expected):
    assert parse_container("web", {"image": "x", "ready": ready}).ready == expected


@pytest.mark.parametrize(("ready", "message"), [
    ("", r"ready command: expected a shell command \(string\) or an argv list, got ''"),
    ([], r"ready command: expected a shell command"),
    ([1], r"ready command: expected a list of strings"),
    ({"timeout": 5}, r"ready: give exactly one of command .*, wait_strategy .* and systemd = true"),
    ({"command": "true", "wait_strategy": "m:a"}, r"ready: give exactly one of command"),
    ({"wait_strategy": "no-colon"}, r"ready wait_strategy: expected \"module:attribute\", got 'no-colon'"),
    ({"command": "true", "timeout": 0}, r"ready timeout: expected a positive number of seconds, got 0"),
    ({"command": "true", "timeout": True}, r"ready timeout: expected a positive number of seconds, got True"),
    ({"command": "true", "timeout": float("inf")}, r"ready timeout: expected a positive number of seconds, got inf"),
    ({"command": "true", "timeout": "5"}, r"ready timeout: expected a positive number of seconds, got '5'"),
    ({"command": "true", "retries": 3},
     r"ready: unknown key 'retries'; valid keys: command, wait_strategy, systemd, allow_degraded, timeout"),
])
def test_bad_ready_checks_name_the_key(ready, message):
    with pytest.raises(ConfigError, match=r"\[tool.lxdsnap.containers.web\] " + message):
        parse_container("web", {"image": "x", "ready": ready})


@pytest.mark.parametrize(("text", "message"), [
    ("[tool]\nlxdsnap = 3\n", r"\[tool.lxdsnap\] in .*pyproject.toml: expected a table"),
    ("[tool.lxdsnap]\ncontainers = 3\n", r"\[tool.lxdsnap\] containers: expected a table of tables, got int"),
    ("[tool.lxdsnap]\ncontianers = {}\n", r"\[tool.lxdsnap\]: unknown key 'contianers'; valid keys: containers \("),
])
def test_a_malformed_table_in_the_file_is_named(tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(tmp_path / "pyproject.toml")


def test_an_empty_table_declares_nothing(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.lxdsnap]\n")
    assert load(tmp_path / "pyproject.toml") == {}
    (tmp_path / "pyproject.toml").write_text("[tool.lxdsnap.containers]\n")
    assert load(tmp_path / "pyproject.toml") == {}


@pytest.mark.parametrize(("name", "ok"), [("web", True), ("Web_1", False), ("a" * 63, True), ("a" * 64, False),
                                          ("9lives", False), ("my-box-2", True), ("", False)])
def test_existing_instance_names_are_lxds(name, ok):
    assert is_instance_name(name) is ok


# ---------------------------------------------------------------- ready, package_cache, [tool.lxdsnap.existing]


def test_ready_systemd_forms():
    from pytest_lxdsnap.declarations import READY_OFF, SYSTEMD_READY, ReadyCheck, parse_ready

    assert parse_ready("systemd", "r") == SYSTEMD_READY and SYSTEMD_READY.allow_degraded
    assert parse_ready({"systemd": True, "allow_degraded": False, "timeout": 90}, "r") == ReadyCheck(
        None, 90.0, systemd=True, allow_degraded=False)
    assert parse_ready(False, "r") == READY_OFF and READY_OFF.off
    assert parse_ready("systemctl is-active nginx", "r").command == "systemctl is-active nginx"
    assert not parse_ready(["true"], "r").off


@pytest.mark.parametrize(("value", "message"), [
    (True, r"^P: true is not a check; give \"systemd\", a command"),
    ({"systemd": "yes"}, r"^P systemd: expected true \(leave ready out, or ready = false, for no wait\), got 'yes'"),
    ({"systemd": True, "allow_degraded": "no"}, r"^P allow_degraded: expected true or false, got 'no'"),
    ({"command": "true", "allow_degraded": False}, r"^P allow_degraded: only with systemd = true"),
    ({"systemd": True, "command": "true"}, r"^P: give exactly one of command .*, wait_strategy .* and systemd = true"),
    ({"systemd": True, "timeout": 0}, r"^P timeout: expected a positive number of seconds, got 0"),
    ({"sytemd": True}, r"^P: unknown key 'sytemd'; valid keys: command, wait_strategy, systemd, allow_degraded, "),
])
def test_bad_ready_values_name_the_key(value, message):
    from pytest_lxdsnap.declarations import parse_ready

    with pytest.raises(ConfigError, match=message):
        parse_ready(value, "P")


def test_package_cache_values():
    def cache(value):
        return parse_table({"containers": {"w": {"image": "x", "package_cache": value}}})["w"].package_cache

    assert cache(True) == "127.0.0.1:3142"
    assert cache(False) is None
    assert cache("cache.example:3142") == "cache.example:3142"
    assert parse_table({"containers": {"w": {"image": "x"}}})["w"].package_cache is None
    for bad in ("3142", "host:", "host:99999", 3142, ["127.0.0.1:3142"]):
        with pytest.raises(ConfigError, match=r"\[tool.lxdsnap.containers.w\] package_cache: expected true \(the "
                           r"cache `lxdsnap setup --package-cache` starts on 127.0.0.1:3142\), false, or "):
            cache(bad)


def test_existing_containers_table():
    from pytest_lxdsnap.declarations import READY_OFF, SYSTEMD_READY, ExistingSpec, parse_all

    declared, existing = parse_all({"existing": {"ubuntu-test": {"ready": False}, "db": {"ready": "systemd"},
                                                 "plain": {}}})
    assert declared == {}
    assert existing == {"ubuntu-test": ExistingSpec("ubuntu-test", READY_OFF),
                        "db": ExistingSpec("db", SYSTEMD_READY), "plain": ExistingSpec("plain")}
    with pytest.raises(ConfigError, match=r"^\[tool.lxdsnap.existing.db\]: unknown key 'image'; valid keys: ready "):
        parse_all({"existing": {"db": {"image": "x"}}})
    with pytest.raises(ConfigError, match=r"^\[tool.lxdsnap.existing.db\] ready timeout: expected a positive"):
        parse_all({"existing": {"db": {"ready": {"systemd": True, "timeout": -1}}}})
    with pytest.raises(ConfigError, match=r"^\[tool.lxdsnap.existing.db_1\]: not an LXD instance name"):
        parse_all({"existing": {"db_1": {}}})
    with pytest.raises(ConfigError, match=r"^\[tool.lxdsnap.existing.web\]: 'web' is also declared in "
                       r"\[tool.lxdsnap.containers.web\]"):
        parse_all({"containers": {"web": {"image": "x"}}, "existing": {"web": {}}})
    with pytest.raises(ConfigError, match=r"^\[tool.lxdsnap\] existing: expected a table of tables, got list"):
        parse_all({"existing": []})
