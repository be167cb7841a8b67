"""The tutorial's scenario (snapshot, change, restore), automated: an existing container is left as found."""

from __future__ import annotations

import pytest

from .helpers import as_found, assert_left_as_found, assert_summary, lxc, lxc_exec_status


def test_tutorial_scenario_on_a_running_container(suite, make_instance, lxd_client):
    name = make_instance(running=True, snapshot="ubuntu-test-1")
    found = as_found(lxd_client, name)
    passwd = lxc("exec", name, "--", "cat", "/etc/passwd")
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("attempt", range(3))
        def test_change_the_container(lxd, attempt):
            c = lxd["{name}"]
            assert c.status == "Running"
            assert not c.exists("/root/this_file.txt")
            assert "intruder" not in c.read_text("/etc/passwd")
            c.exec(["touch", "/root/this_file.txt"], check=True)
            c.exec("echo intruder:x:1000:1000::/:/bin/sh >> /etc/passwd", check=True)
            assert c.exists("/root/this_file.txt")
    """)
    result = suite.runpytest("-v")
    result.assert_outcomes(passed=3)
    assert_summary(result, name, kind="existing", instance=name, resets="3", strategies="inplace 3",
                   resetting="*.* s", median="*.* s", leftovers="0")
    assert lxd_client.instances.get(name).status == "Running"
    assert lxc_exec_status(name, "test", "-e", "/root/this_file.txt") == 1
    assert lxc("exec", name, "--", "cat", "/etc/passwd") == passwd
    assert_left_as_found(lxd_client, name, found)


def test_a_stopped_container_stays_stopped(suite, make_instance, lxd_client):
    name = make_instance(running=False)
    found = as_found(lxd_client, name)
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("attempt", range(2))
        def test_start_and_change(lxd, attempt):
            c = lxd["{name}"]
            assert c.status == "Stopped"
            c.instance.start(wait=True)
            assert not c.exists("/root/mark")
            c.write_text("/root/mark", "changed")
    """)
    suite.runpytest().assert_outcomes(passed=2)
    assert lxd_client.instances.get(name).status == "Stopped"
    assert_left_as_found(lxd_client, name, found)
    lxc("start", name)
    assert lxc_exec_status(name, "test", "-e", "/root/mark") == 1


def test_a_test_that_stops_a_running_container_gets_it_back_running(suite, make_instance, lxd_client):
    name = make_instance(running=True)
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        @pytest.mark.parametrize("attempt", range(2))
        def test_stop(lxd, attempt):
            c = lxd["{name}"]
            assert c.status == "Running"
            c.instance.stop(force=True, wait=True)
    """)
    suite.runpytest().assert_outcomes(passed=2)
    assert lxd_client.instances.get(name).status == "Running"


def test_config_and_devices_changed_by_a_test_are_restored(suite, make_instance, lxd_client):
    name = make_instance(running=True, config={"user.owner-note": "mine"})
    found = as_found(lxd_client, name)
    suite.makepyfile(f"""
        import pytest

        @pytest.mark.lxd("{name}")
        def test_reconfigure(lxd):
            inst = lxd["{name}"].instance
            inst.config["user.owner-note"] = "overwritten"
            inst.config["limits.memory"] = "128MiB"
            inst.devices["extra"] = {{"type": "disk", "source": "/tmp", "path": "/mnt/extra"}}
            inst.save(wait=True)
    """)
    suite.runpytest().assert_outcomes(passed=1)
    assert_left_as_found(lxd_client, name, found)


def test_class_and_module_markers_combine(suite, make_instance, lxd_client):
    first, second = make_instance(), make_instance()
    suite.makepyfile(f"""
        import pytest

        pytestmark = pytest.mark.lxd("{first}")

        def test_module_level(lxd):
            assert list(lxd) == ["{first}"]
            lxd["{first}"].write_text("/root/a", "x")

        @pytest.mark.lxd("{second}")
        class TestBoth:
            def test_one(self, lxd):
                assert sorted(lxd) == sorted(["{first}", "{second}"])
                for name in lxd:
                    assert not lxd[name].exists("/root/a")
                    lxd[name].write_text("/root/a", "x")

            def test_two(self, lxd):
                for name in lxd:
                    assert not lxd[name].exists("/root/a")
    """)
    result = suite.runpytest("--strict-markers")
    result.assert_outcomes(passed=3)
    assert_summary(result, first, kind="existing", resets="3", leftovers="0")
    assert_summary(result, second, kind="existing", resets="2", leftovers="0")


@pytest.mark.parametrize("where", ["body", "assertion", "fixture setup", "fixture teardown"])
def test_a_failing_test_still_resets(suite, make_instance, lxd_client, where):
    name = make_instance(running=True)
    suite.makepyfile(f"""
        import pytest

        @pytest.fixture
        def changer(lxd):
            lxd["{name}"].write_text("/root/dirty", "x")
            if "{where}" == "fixture setup":
                raise RuntimeError("fixture setup broke")
            yield
            if "{where}" == "fixture teardown":
                raise RuntimeError("fixture teardown broke")

        @pytest.mark.lxd("{name}")
        def test_breaks(lxd, changer):
            lxd["{name}"].exec(["touch", "/root/dirty2"], check=True)
            if "{where}" == "body":
                raise OSError("body broke")
            assert "{where}" != "assertion"

        @pytest.mark.lxd("{name}")
        def test_finds_it_clean(lxd):
            assert not lxd["{name}"].exists("/root/dirty")
            assert not lxd["{name}"].exists("/root/dirty2")
    """)
    result = suite.runpytest()
    outcome = {"fixture setup": {"errors": 1}, "fixture teardown": {"errors": 1, "passed": 1}}
    result.assert_outcomes(passed=1 + outcome.get(where, {}).get("passed", 0), failed=0 if "fixture" in where else 1,
                           errors=outcome.get(where, {}).get("errors", 0))
    assert_summary(result, name, kind="existing", resets="2", leftovers="0")
    assert lxc_exec_status(name, "test", "-e", "/root/dirty") == 1
