"""Bad input: a clear error that says what to do, before anything in LXD is changed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_lxdsnap.lxd import lxdapi

from .helpers import (
    BACKEND,
    COMMANDS,
    INCUS,
    NEVER_RUNS,
    PYPROJECT,
    instance_names,
    recovery_snapshots,
    snapshot_names,
    user_config,
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
        ('[tool.lxdsnap]\ncontainer = {}', "*[[]tool.lxdsnap]: unknown key 'container'; valid keys: containers*"),
        ('[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\nprovison = ["true"]',
         "*[[]tool.lxdsnap.containers.web]: unknown key 'provison'; valid keys: image (*provision (*"),
        ('[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\nprovision = "apt-get install nginx"',
         "*[[]tool.lxdsnap.containers.web] provision: expected a list of strings, got str*"),
        ('[tool.lxdsnap.containers.web]\npool = "default"',
         "*[[]tool.lxdsnap.containers.web]: missing required key 'image'*"),
        ('[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\nconfig = { "limits.cpu" = [1] }',
         "*[[]tool.lxdsnap.containers.web] config.limits.cpu: expected a string, integer or boolean, got list*"),
        ('[tool.lxdsnap.containers.Web_1]\nimage = "lxdsnap/busybox"',
         "*[[]tool.lxdsnap.containers.Web_1]: container names use lowercase letters*"),
    ],
    ids=["unknown-top-key", "unknown-container-key", "wrong-type", "missing-image", "wrong-config-type", "bad-name"],
)
def test_invalid_table_is_a_usage_error(pytester, table, message):
    pytester.makefile(".toml", pyproject=PYPROJECT + table)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


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


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("@pytest.mark.lxd()", "*test_it: @pytest.mark.lxd needs at least one container name*"),
        ("@pytest.mark.lxd('web', strategy='fast')",
         "*test_it: @pytest.mark.lxd strategy: unknown value 'fast'; valid values: auto (*); inplace (*); recipe (*"),
        ("@pytest.mark.lxd('web', scope='session')",
         "*test_it: @pytest.mark.lxd scope: unknown value 'session'; valid values: function (*); class (*); module*"),
        ("@pytest.mark.lxd('web', speed='fast')",
         "*test_it: @pytest.mark.lxd: unknown option 'speed'; valid options: strategy (*); scope (*"),
        ("@pytest.mark.lxd('web', strategy='clone')",
         "*test_it: strategy 'clone' needs declared containers, and 'web' is an existing instance*"),
        ("@pytest.mark.lxd('web/snap')", "*test_it: @pytest.mark.lxd: 'web/snap' is not a container name*"),
        ("@pytest.mark.lxd(['web'])", "*test_it: @pytest.mark.lxd: [[]'web'] is not a container name*"),
    ],
)
def test_bad_marker_is_a_usage_error(suite, marker, message):
    suite.makepyfile(f"""
        import pytest

        {marker}
        def test_it(lxd):
            pass
    """)
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_lxd_fixture_without_marker_says_which_marker_to_add(suite):
    suite.makepyfile("""
        def test_it(lxd):
            raise AssertionError("must not run")
    """)
    result = suite.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_it uses the lxd fixture without declaring containers: "
                                 "add @pytest.mark.lxd(\"<name>\", ...) naming the containers it uses"])


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


def test_unreachable_lxd_is_one_message_and_a_non_zero_exit(suite, tmp_path):
    socket = tmp_path / "no-lxd-here.socket"
    suite.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            pass

        def test_plain():
            pass
    """)
    result = suite.runpytest_subprocess("--lxd-endpoint", str(socket))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: LXD is not reachable at unix socket {socket}: the socket file does not exist.",
        "Start it, or install and start it with `lxdsnap setup` (as root), then check with `lxdsnap doctor`.",
    ])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_suite_without_marked_tests_does_not_touch_lxd(suite, tmp_path):
    suite.makepyfile("""
        import sys

        def test_plain():
            assert "pylxd" not in sys.modules
    """)
    result = suite.runpytest("--lxd-endpoint", str(tmp_path / "no-lxd-here.socket"))
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("option", ["--lxd-snapshot-ttl=0", "--lxd-timeout=soon", "--lxd-timeout=nan",
                                    "--lxd-lease-wait=inf"])
def test_bad_option_values_are_usage_errors(suite, option):
    suite.makepyfile("def test_plain(): pass")
    result = suite.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: lxd_* (--lxd-*): expected a positive number of seconds, got *"])


def test_reset_failure_names_instance_and_snapshot_and_keeps_the_snapshot(suite, make_instance, lxd_client):
    from .helpers import lxc

    name = make_instance(running=True, snapshot="user-snap")
    moved = f"{name}-moved"
    before = user_config(lxd_client, name)
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
        recovered = subprocess.run([sys.executable, "-m", "pytest_lxdsnap.host.cli", "gc"], capture_output=True,
                                   text=True, check=True).stdout
        assert f"restored {name} from lxdsnap-" in recovered
        assert user_config(lxd_client, name) == before
        assert snapshot_names(lxd_client, name) == ["user-snap", *recovery_snapshots(lxd_client, name)]
    finally:
        if name not in lxc("list", "--format", "csv", "-c", "n").split():
            lxc("delete", "--force", moved)


def test_a_config_key_only_the_other_daemon_knows_is_named_with_this_ones_name(pytester, lxd_client):
    # LXD's security.devlxd is Incus's security.guestapi; each daemon refuses the other's name
    lxd_name, incus_name = "security.devlxd", "security.guestapi"
    key, ours = (lxd_name, incus_name) if BACKEND is INCUS else (incus_name, lxd_name)
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=PYPROJECT + f"""
[tool.lxdsnap.containers.web]
image = "lxdsnap/busybox"
config = {{ "{key}" = "false" }}
""")
    pytester.makepyfile(NEVER_RUNS.format(name="web"))
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        f"*launching declared container 'web' from image 'lxdsnap/busybox' failed: *Unknown configuration key: {key}*",
        f"{BACKEND.name} * at unix socket * does not know config key '{key}' ([[]tool.lxdsnap.containers.web] config): "
        f"it is *'s name, {BACKEND.name} calls it '{ours}'. Remove or rename it; nothing was created.",
    ])
    assert instance_names(lxd_client) == before


def test_the_header_shows_the_runs_settings_and_no_switches_beat_the_ini_file(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT + "lxd_reuse = true\nlxd_keep_failed = true\n")
    pytester.makepyfile("def test_plain(): pass")
    on = pytester.runpytest("--lxd-strategy=inplace")
    on.stdout.fnmatch_lines(["lxdsnap: unix socket *, strategy inplace, snapshot ttl 86400 s, prepare ahead 3, "
                             "max clones 12, lease wait 60 s, reuse, keep failed"])
    off = pytester.runpytest("--no-lxd-reuse", "--no-lxd-keep-failed")
    off.stdout.fnmatch_lines(["lxdsnap: unix socket *, strategy auto, * lease wait 60 s"])
    assert "reuse" not in off.stdout.str() and "keep failed" not in off.stdout.str()
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--no-lxd-reuse" in help_text and "--no-lxd-insecure" in help_text and "--no-lxd-keep-failed" in help_text
