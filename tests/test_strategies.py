"""Reset strategies (clone, inplace, recipe, readonly, auto), scopes, readiness, and the dir-pool notice."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pytest_lxdsnap.declarations import parse_container
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint
from pytest_lxdsnap.model import Request
from pytest_lxdsnap.options import Options
from pytest_lxdsnap.session.core import LxdSession

from .helpers import (
    COMMANDS,
    PYPROJECT,
    as_found,
    assert_left_as_found,
    assert_summary,
    declare,
    instance_names,
    lxc,
)

WEB = PYPROJECT + declare("web", provision=["echo provisioned > /root/provisioned"])


DIRTY_TESTS = """
    import pytest

    SEEN = []

    {marker}
    @pytest.mark.parametrize("attempt", range(4))
    def test_dirty(lxd, attempt):
        web = lxd["web"]
        assert web.read_text("/root/provisioned") == "provisioned\\n"
        assert not web.exists("/root/dirty"), "state leaked from an earlier test"
        web.write_text("/root/dirty", "x")
        web.exec(["rm", "-f", "/bin/ls"], check=True)
        SEEN.append(web.instance_name)

    def test_instances_seen():
        print()
        print("SEEN", " ".join(SEEN))
"""


@pytest.mark.parametrize(
    ("marker", "option", "expected"),
    [
        ('@pytest.mark.lxd("web")', None, "clone 4"),  # auto on the btrfs default pool
        ('@pytest.mark.lxd("web", strategy="clone")', None, "clone 4"),
        ('@pytest.mark.lxd("web")', "--lxd-strategy=inplace", "inplace 4"),
        ('@pytest.mark.lxd("web", strategy="recipe")', "--lxd-strategy=clone", "recipe 4"),  # marker wins
    ],
)
def test_every_strategy_gives_each_test_a_clean_state(pytester, lxd_client, marker, option, expected):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=WEB)
    pytester.makepyfile(DIRTY_TESTS.format(marker=marker))
    result = pytester.runpytest("-s", *([option] if option else []))
    result.assert_outcomes(passed=5)
    assert_summary(result, "web", instance="lxdsnap-web-*", resets="4", strategies=expected, leftovers="0")
    seen = next(line for line in result.outlines if line.startswith("SEEN")).split()[1:]
    if expected.startswith("clone"):
        assert len(set(seen)) == 4 and all(s.rsplit("-", 1)[1].isdigit() for s in seen)  # a fresh clone each
    else:
        assert len(set(seen)) == 1  # the one base instance, restored in place
    assert instance_names(lxd_client) == before
    # LXD 5.0 keeps a deleted instance's log folder: the plugin purged the exec output it left there
    assert [str(p) for s in seen for p in Path("/var/log/lxd", s).glob("exec_*")] == []


def test_readonly_skips_resets_but_the_session_still_leaves_the_container_as_found(suite, make_instance,
                                                                                    lxd_client):
    name = make_instance(snapshot="mine")
    found = as_found(lxd_client, name)
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}", strategy="readonly")
        def test_breaks_its_promise(lxd):
            lxd["{name}"].write_text("/root/leak", "x")

        @pytest.mark.lxd("{name}", strategy="readonly")
        def test_sees_the_leak(lxd):
            assert lxd["{name}"].exists("/root/leak")  # readonly means: no reset in between
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=2)
    assert_summary(result, name, kind="existing", resets="1", strategies="readonly 2", leftovers="0")  # final restore
    assert lxc("exec", name, "--", "ls", "/root").split() == []
    assert_left_as_found(lxd_client, name, found)


def test_recipe_keeps_a_stopped_container_stopped(suite, make_instance, lxd_client):
    name = make_instance(running=False)
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}", strategy="recipe")
        @pytest.mark.parametrize("attempt", range(2))
        def test_start_it(lxd, attempt):
            c = lxd["{name}"]
            assert c.status == "Stopped"
            c.instance.start(wait=True)
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=2)
    assert lxdapi.status(lxd_client, name) == lxdapi.STOPPED


SCOPED = """
    import pytest

    @pytest.mark.lxd("web", scope="class", strategy="{strategy}")
    class TestShared:
        def test_first(self, lxd):
            assert not lxd["web"].exists("/root/step")
            lxd["web"].write_text("/root/step", "1")

        def test_second_sees_the_first(self, lxd):
            assert lxd["web"].read_text("/root/step") == "1"
            lxd["web"].write_text("/root/step", "2")

    @pytest.mark.lxd("web", scope="class", strategy="{strategy}")
    class TestNextClass:
        def test_starts_clean(self, lxd):
            assert not lxd["web"].exists("/root/step")
            lxd["web"].write_text("/root/step", "3")

    @pytest.mark.lxd("web", strategy="{strategy}")
    def test_function_scope_after_it_is_clean(lxd):
        assert not lxd["web"].exists("/root/step")
"""


@pytest.mark.parametrize("strategy", ["clone", "inplace"])
def test_class_scope_shares_one_state_per_class(pytester, lxd_client, strategy):
    pytester.makefile(".toml", pyproject=WEB)
    pytester.makepyfile(SCOPED.format(strategy=strategy))
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert_summary(result, "web", resets="3", strategies=f"{strategy} 3", leftovers="0")


def test_module_scope_from_the_declaration(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=WEB + 'scope = "module"\nstrategy = "inplace"\n')
    pytester.makepyfile(test_one="""
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("n", range(3))
        def test_accumulates(lxd, n):
            assert lxd["web"].exec("ls /root/mark-* 2>/dev/null | wc -l").stdout.strip() == str(n)
            lxd["web"].write_text(f"/root/mark-{n}", "x")
    """, test_two="""
        import pytest

        @pytest.mark.lxd("web")
        def test_next_module_is_clean(lxd):
            assert lxd["web"].exec("ls /root/mark-* 2>/dev/null | wc -l").stdout.strip() == "0"
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert_summary(result, "web", resets="2", strategies="inplace 2", leftovers="0")


READY = PYPROJECT + """
[tool.lxdsnap.containers.web]
image = "lxdsnap/busybox"
# The service comes up 1.5 s after boot: every fresh clone or restart races it unless `ready` waits.
provision = [
    "sed -i 's|^trap|(sleep 1.5; echo up > /run/service) \\\\& \\\\ntrap|' /sbin/init",
    "echo up > /run/service",
]
ready = { command = "test -e /run/service", timeout = 20 }
"""


@pytest.mark.parametrize("strategy", ["clone", "inplace"])
def test_readiness_check_runs_before_every_test_sees_a_fresh_container(pytester, lxd_client, strategy):
    pytester.makefile(".toml", pyproject=READY)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("web", strategy="{strategy}")
        @pytest.mark.parametrize("attempt", range(3))
        def test_service_is_up(lxd, attempt):
            assert lxd["web"].read_text("/run/service") == "up\\n"
            assert "sleep 1.5" in lxd["web"].read_text("/sbin/init")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)
    assert_summary(result, "web", resets="3", strategies=f"{strategy} 3", leftovers="0")


def test_readiness_timeout_names_the_container_and_leaves_nothing(pytester, lxd_client):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=WEB + 'ready = { command = ["test", "-e", "/never"], timeout = 1 }\n')
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("attempt", range(2))
        def test_it(lxd, attempt):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*container 'web' (instance lxdsnap-web-*) was not ready within 1 s: `test -e /never` never exited 0 "
        "(last exit 1*Fix `ready` in [[]tool.lxdsnap.containers.web] or raise its timeout*",
    ])
    assert instance_names(lxd_client) == before


@pytest.fixture
def dir_pool(lxd_client):
    name = f"t-lxdsnap-dir-{secrets.token_hex(3)}"
    lxd_client.api.storage_pools.post(json={"name": name, "driver": "dir", "config": {}})
    yield name
    lxd_client.api.storage_pools[name].delete()


def test_auto_resets_in_place_on_a_dir_pool_and_says_why(pytester, lxd_client, dir_pool):
    pytester.makefile(".toml", pyproject=WEB + f'pool = "{dir_pool}"\n')
    pytester.makepyfile(DIRTY_TESTS.format(marker='@pytest.mark.lxd("web")'))
    result = pytester.runpytest()
    result.assert_outcomes(passed=5)
    assert_summary(result, "web", resets="4", strategies="inplace 4", leftovers="0")
    result.stdout.fnmatch_lines([
        f"NOTE pool '{dir_pool}' uses the dir driver: every snapshot and clone copies the whole rootfs (the "
        f"baseline of 'web' took * s)*`{COMMANDS.tool} storage create fast btrfs size=8GiB`*",
    ])
    assert result.stdout.str().count("NOTE pool") == 1


def test_unused_prepared_clones_are_deleted_when_the_run_stops_early(pytester, lxd_client):
    before = instance_names(lxd_client)
    pytester.makefile(".toml", pyproject=WEB)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        @pytest.mark.parametrize("attempt", range(8))
        def test_fails_first(lxd, attempt):
            assert attempt > 0
    """)
    result = pytester.runpytest("-x")
    result.assert_outcomes(failed=1)
    assert_summary(result, "web", resets="1", strategies="clone 1", leftovers="0")
    assert instance_names(lxd_client) == before


def test_a_timed_out_exec_leaves_no_output_logs_on_an_existing_container(suite, make_instance, lxd_client):
    name = make_instance()
    suite.makepyfile(f"""
        import pytest
        from pytest_lxdsnap.errors import ExecTimeout

        @pytest.mark.lxd("{name}")
        def test_hangs(lxd):
            with pytest.raises(ExecTimeout):
                lxd["{name}"].exec(["sleep", "60"], timeout=1)
    """)
    result = suite.runpytest()
    result.assert_outcomes(passed=1)
    assert lxdapi.exec_log_names(lxd_client, name) == []


def test_the_base_lent_to_the_first_test_is_restored_before_an_in_place_test(lxd_client):
    """Nothing provisions web: the first clone test gets the booted base itself. A later in-place request (a plan
    that did not foresee it, or a strategy hook answering differently at run time) must find it clean."""
    before = instance_names(lxd_client)
    spec = parse_container("web", {"image": "lxdsnap/busybox"})
    session = LxdSession(Endpoint(), {"web": spec}, Options())
    session.connect()
    try:
        session.plan([Request("web"), Request("web")])
        (lent,) = session.acquire([Request("web")])
        assert lent.strategy == "clone" and lent.instance == lent.tracked.instance  # the base, not a -<n> clone
        session.container("web", lent.instance).write_text("/root/dirty", "x")
        session.release([lent])
        (inplace,) = session.acquire([Request("web", strategy="inplace")])
        assert inplace.instance == lent.instance
        assert not session.container("web", inplace.instance).exists("/root/dirty")
        session.release([inplace])
    finally:
        assert session.finish() == []
    assert instance_names(lxd_client) == before
