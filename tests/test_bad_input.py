"""Bad input: a clear error that says what to do, before anything in LXD is changed."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.lxd import lxdapi

from .helpers import (
    BACKEND,
    COMMANDS,
    INCUS,
    NEVER_RUNS,
    PYPROJECT,
    as_found,
    assert_left_as_found,
    declare,
    instance_names,
    lxdsnap,
)


def instances(client) -> list[dict]:
    return lxdapi.listing(client.api.instances)


def test_marker_naming_an_unknown_container_errors_before_the_body(suite, lxd_client):
    before = instances(lxd_client)
    suite.makepyfile(NEVER_RUNS.format(name="no-such-container"))
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*container 'no-such-container' is neither declared nor an existing instance at unix socket *",
        "*[[]tool.lxdsnap.containers.no-such-container]*",
        f"*{COMMANDS.tool} launch <image> no-such-container*",
    ])
    result.stdout.no_fnmatch_line("*the body must not run*")
    assert instances(lxd_client) == before


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\npool = "no-such-pool"',
         "ERROR: [[]tool.lxdsnap.containers.web] pool: no storage pool 'no-such-pool' at unix socket *; "
         "valid choices: *default*"),
        ('[tool.lxdsnap.containers.web]\nimage = "no-such-image"',
         "ERROR: [[]tool.lxdsnap.containers.web] image: no local image 'no-such-image'; valid choices: "
         "*lxdsnap/busybox*"),
        ('[tool.lxdsnap.containers.web]\nimage = "images:debian/12"\nprofiles = ["no-such-profile"]',
         "ERROR: [[]tool.lxdsnap.containers.web] profiles: no profile 'no-such-profile'; valid choices: *default*"),
        ('[tool.lxdsnap.containers.web]\nimage = "nowhere:debian/12"',
         "ERROR: [[]tool.lxdsnap.containers.web] image: unknown remote 'nowhere'; valid remotes: images, *"),
    ],
    ids=["unknown-pool", "unknown-image", "unknown-profile", "unknown-remote"],
)
def test_table_checked_against_the_server_before_any_test(pytester, lxd_client, table, message):
    before = instances(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + table)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            raise AssertionError("must not run")
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert instances(lxd_client) == before


def test_asking_for_an_undeclared_container_says_how_to_declare_it(suite, make_instance):
    name = make_instance()
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        def test_mapping(lxd):
            assert "db" not in lxd and lxd.get("db") is None and list(lxd) == ["{name}"]
            with pytest.raises(KeyError):
                lxd["db"]

        @pytest.mark.lxd("{name}")
        def test_it(lxd):
            lxd["db"]
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*UndeclaredContainer: container 'db' is not declared for *::test_it "
                                 f"(declared: \"{name}\"); add it to the marker: @pytest.mark.lxd(\"{name}\", \"db\")"])


def test_reset_failure_names_instance_and_snapshot_and_keeps_the_snapshot(suite, make_instance, lxd_client):
    from .helpers import lxc

    name = make_instance(running=True, snapshot="user-snap")
    moved = f"{name}-moved"
    found = as_found(lxd_client, name)
    suite.makepyfile(f"""
        import subprocess
        import pytest

        @pytest.mark.lxd("{name}")
        def test_moves_the_container_away(lxd):
            subprocess.run(["lxc", "stop", "--force", "{name}"], check=True)
            subprocess.run(["lxc", "move", "{name}", "{moved}"], check=True)
    """)
    try:
        result = suite.runpytest()
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines([
            f"*resetting container '{name}' (instance {name}) to snapshot lxdsnap-*-base failed: *",
            f"*The snapshot is kept for recovery. Inspect: `{COMMANDS.tool} info {name}`; restore by hand: "
            f"`{COMMANDS.restore(name, 'lxdsnap-*-base')}`, or run `lxdsnap gc` once this session has ended",
            "PROBLEM resetting container*",
        ])
        assert result.ret != 0
        kept = lxc("query", f"/1.0/instances/{moved}/snapshots")
        assert "lxdsnap-" in kept and "user-snap" in kept
        # Recovery as the message says it: the plugin's snapshot brings back the pre-test state.
        lxc("move", moved, name)
        done = lxdsnap("gc")
        assert done.returncode == 0, done.stdout + done.stderr
        recovered = done.stdout
        assert f"restored {name} from lxdsnap-" in recovered
        assert_left_as_found(lxd_client, name, found, recovered=None)
    finally:
        if name not in lxc("list", "--format", "csv", "-c", "n").split():
            lxc("delete", "--force", moved)


def test_a_config_key_only_the_other_daemon_knows_is_named_with_this_ones_name(pytester, lxd_client):
    # LXD's security.devlxd is Incus's security.guestapi; each daemon refuses the other's name
    lxd_name, incus_name = "security.devlxd", "security.guestapi"
    key, ours = (lxd_name, incus_name) if BACKEND is INCUS else (incus_name, lxd_name)
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + declare("web", config={key: "false"}))
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*launching declared container 'web' from image 'lxdsnap/busybox' failed: *Unknown configuration key: {key}*",
        f"{BACKEND.name} * at unix socket * does not know config key '{key}' ([[]tool.lxdsnap.containers.web] config): "
        f"it is *'s name, {BACKEND.name} calls it '{ours}'. Remove or rename it; nothing was created.",
    ])
    assert instance_names(lxd_client) == before

