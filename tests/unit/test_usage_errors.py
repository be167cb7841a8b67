"""Bad input is a usage error that says what to do, before any test runs and before LXD is reached: the
[tool.lxdsnap] table, markers, option values and combinations, names too long for LXD. In-process pytest runs
(one subprocess where a fresh interpreter is the point)."""

from __future__ import annotations

import pytest

from ..helpers import DECLARED_WEB, PYPROJECT, declare


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
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


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
    result = suite.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_lxd_fixture_without_marker_says_which_marker_to_add(suite):
    suite.makepyfile("""
        def test_it(lxd):
            raise AssertionError("must not run")
    """)
    result = suite.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_it uses the lxd fixture without declaring containers: "
                                 "add @pytest.mark.lxd(\"<name>\", ...) naming the containers it uses"])


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
    result = suite.runpytest_subprocess("--lxd-endpoint", str(tmp_path / "no-lxd-here.socket"))  # a fresh sys.modules
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("option", ["--lxd-snapshot-ttl=0", "--lxd-timeout=soon", "--lxd-timeout=nan",
                                    "--lxd-lease-wait=inf"])
def test_bad_option_values_are_usage_errors(suite, option):
    suite.makepyfile("def test_plain(): pass")
    result = suite.runpytest_inprocess(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: lxd_* (--lxd-*): expected a positive number of seconds, got *"])


def test_the_header_shows_the_runs_settings_and_no_switches_beat_the_ini_file(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT + "lxd_reuse = true\nlxd_keep_failed = true\n")
    pytester.makepyfile("def test_plain(): pass")
    on = pytester.runpytest_inprocess("--lxd-strategy=inplace")
    on.stdout.fnmatch_lines(["lxdsnap: unix socket *, strategy inplace, snapshot ttl 86400 s, prepare ahead 3, "
                             "max clones 12, lease wait 60 s, reuse, keep failed"])
    off = pytester.runpytest_inprocess("--no-lxd-reuse", "--no-lxd-keep-failed")
    off.stdout.fnmatch_lines(["lxdsnap: unix socket *, strategy auto, * lease wait 60 s"])
    assert "reuse" not in off.stdout.str() and "keep failed" not in off.stdout.str()
    help_text = pytester.runpytest_inprocess("--help").stdout.str()
    assert "--no-lxd-reuse" in help_text and "--no-lxd-insecure" in help_text and "--no-lxd-keep-failed" in help_text


def test_reuse_needs_a_named_project(suite):
    suite.makefile(".toml", pyproject=DECLARED_WEB)
    suite.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            pass
    """)
    result = suite.runpytest_inprocess("--lxd-project", "auto", "--lxd-reuse")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --lxd-reuse keeps declared containers between runs, but --lxd-project auto "
                                 "deletes the session's project at the end: name a project (--lxd-project NAME)*"])


def usage_error(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makefile(".toml", pyproject=PYPROJECT)
    pytester.makepyfile('''
        import pytest

        @pytest.mark.lxd("anything")
        def test_it(lxd):
            pass
    ''')
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    return " ".join(result.stderr.str().split())


@pytest.mark.parametrize(("args", "expected"), [
    (["--lxd-endpoint=https://127.0.0.1:8443", "--lxd-cert=/nonexistent.crt", "--lxd-key=/x.key"],
     "--lxd-cert /nonexistent.crt: no such readable file"),
    (["--lxd-endpoint=https://127.0.0.1:8443", "--lxd-cert=/etc/hostname"],
     "--lxd-cert and --lxd-key go together"),
    (["--lxd-server-cert=/etc/hostname"], "--lxd-server-cert only apply to an https:// --lxd-endpoint"),
    (["--lxd-endpoint=https://127.0.0.1:8443", "--lxd-insecure", "--lxd-server-cert=/etc/hostname"],
     "--lxd-insecure turns verification off, --lxd-server-cert pins the server: choose one"),
])
def test_tls_options_that_do_not_fit_together(pytester, args, expected):
    assert expected in usage_error(pytester, *args)


@pytest.mark.parametrize(("options", "at_most"), [
    (["--lxd-keep-failed"], 36),  # lxdsnap-<name>-<token>-failed-10
    (["--lxd-reuse"], 36),  # lxdsnap-keep-<name>-<hash>-10
    (["--lxd-reuse", "--lxd-keep-failed"], 29),
])
def test_a_declared_name_too_long_for_lxd_is_refused_at_collection(pytester, options, at_most):
    name = "a" * 40  # the declaration's name pattern allows it; not every name made from it fits
    pytester.makefile(".toml", pyproject=PYPROJECT + declare(name))
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("i", range(7))
        def test_it(lxd, i):
            pass
    """)
    result = pytester.runpytest_inprocess(*options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    message = " ".join(result.stderr.str().split())
    assert f"[tool.lxdsnap.containers.{name}]: instance names made for it reach" in message
    assert "past LXD's limit of 63; with 10 container uses in this run" in message  # 7 tests, 3 clones ahead
    assert f"may have at most {at_most} characters: give it a shorter name" in message
