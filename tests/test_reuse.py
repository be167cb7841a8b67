"""--lxd-reuse: a provisioned declared container and its baseline survive between runs, keyed by the
declaration; `lxdsnap gc` removes kept ones; `lxdsnap publish` makes an image of a kept baseline."""

from __future__ import annotations

import re
import secrets
import subprocess

import pytest
from pylxd.exceptions import LXDAPIException

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import (
    OWNER_KEY,
    REUSE_KEY,
)
from pytest_lxdsnap.session import reuse
from pytest_lxdsnap.session.reuse import REUSE_NAME_KEY

from .helpers import PYPROJECT, TEST_PREFIX, declare, instance_names, lxc, lxdsnap

BUILD_ID = r"head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' > /root/build-id"
DECLARATION = PYPROJECT + declare("web", provision=[BUILD_ID])

TESTS = """
import pytest

@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range(2))
def test_clean(lxd, i):
    web = lxd["web"]
    assert not web.exists("/root/dirty")
    web.write_text("/root/dirty", "x")
    print("BUILD", web.read_text("/root/build-id"))

@pytest.mark.lxd("web", strategy="inplace")
def test_in_place_too(lxd):
    assert not lxd["web"].exists("/root/dirty")
    lxd["web"].write_text("/root/dirty", "x")
"""


def kept(client) -> list[str]:
    return sorted(n for n in instance_names(client) if n.startswith("lxdsnap-keep-web-") and n.count("-") == 3)


def builds(result) -> set[str]:
    return set(re.findall(r"BUILD ([0-9a-f]+)", result.stdout.str()))


def test_reuse_keeps_the_build_until_the_declaration_changes(pytester, lxd_client):
    pytester.makefile(".toml", pyproject=DECLARATION)
    pytester.makepyfile(TESTS)
    try:
        first = pytester.runpytest("--lxd-reuse", "-s", "-p", "no:randomly")
        first.assert_outcomes(passed=3)
        (name,) = kept(lxd_client)
        record = lxdapi.get_instance(lxd_client, name)
        assert record["status"] == lxdapi.STOPPED and OWNER_KEY not in record["config"]

        second = pytester.runpytest("--lxd-reuse", "-s", "-p", "no:randomly")
        second.assert_outcomes(passed=3)
        second.stdout.fnmatch_lines([f"NOTE reusing {name} for 'web' (its declaration is unchanged)"])
        assert builds(first) == builds(second) and len(builds(first)) == 1  # provisioned once
        assert kept(lxd_client) == [name]

        pytester.makefile(".toml", pyproject=DECLARATION + 'config = { "user.changed" = "yes" }\n')
        third = pytester.runpytest("--lxd-reuse", "-s", "-p", "no:randomly")
        third.assert_outcomes(passed=3)
        third.stdout.fnmatch_lines([f"NOTE deleted {name}: the declaration of 'web' changed since it was built"])
        assert builds(third) != builds(first)
        (rebuilt,) = kept(lxd_client)
        assert rebuilt != name

        published = lxdsnap("publish", "web", "--alias", "t-lxdsnap/web")
        assert published.returncode == 0, published.stderr
        assert "as t-lxdsnap/web" in published.stdout
        again = lxdsnap("publish", "web", "--alias", "t-lxdsnap/web")
        assert again.returncode == 1 and "image alias 't-lxdsnap/web' exists" in again.stderr

        dry = lxdsnap("gc", "--dry-run")
        assert f"would clean instance {rebuilt}: a declared container kept for reuse" in dry.stdout
        assert kept(lxd_client) == [rebuilt]
        done = lxdsnap("gc")
        assert f"deleted kept instance {rebuilt}" in done.stdout
        assert kept(lxd_client) == []
    finally:
        for leftover in kept(lxd_client):
            lxc("delete", "--force", leftover)
        subprocess.run(["lxc", "image", "delete", "t-lxdsnap/web"], capture_output=True, check=False)


def two_declarations(name: str, changed: bool = False) -> str:
    """``name`` and ``name``-2 declared side by side (unique names: other sessions may share the daemon)."""
    extra = 'config = { "user.changed" = "yes" }\n' if changed else ""
    return PYPROJECT + f"""
[tool.lxdsnap.containers.{name}]
image = "lxdsnap/busybox"
{extra}
[tool.lxdsnap.containers.{name}-2]
image = "lxdsnap/busybox"
"""


def uses(*names: str, fail: bool = False) -> str:
    tests = "import pytest\n"
    for i, name in enumerate(names):
        tests += f"""
@pytest.mark.lxd("{name}")
def test_{i}(lxd):
    lxd["{name}"].write_text("/root/dirty", "x")
    assert not {fail}
"""
    return tests


def kept_builds(client, name: str) -> list[str]:
    """Kept builds of exactly ``name`` (lxdsnap-keep-<name>-<10 hex>), by their names."""
    return sorted(n for n in instance_names(client) if re.fullmatch(rf"lxdsnap-keep-{name}-[0-9a-f]{{10}}", n))


def test_a_declared_name_matches_its_own_kept_builds_only(pytester, lxd_client):
    name = f"w{secrets.token_hex(3)}"
    alias = f"t-lxdsnap/{name}"
    pytester.makefile(".toml", pyproject=two_declarations(name))
    try:
        # web's build, then a failed test's kept copy of it, then web-2's: web-2's build is the newest
        pytester.makepyfile(uses(name, fail=True))
        pytester.runpytest("--lxd-reuse", "--lxd-keep-failed").assert_outcomes(failed=1)
        pytester.makepyfile(uses(f"{name}-2"))
        pytester.runpytest("--lxd-reuse").assert_outcomes(passed=1)
        (own,), (other,) = kept_builds(lxd_client, name), kept_builds(lxd_client, f"{name}-2")

        published = lxdsnap("publish", name, "--alias", alias)
        assert published.returncode == 0, published.stderr
        target = lxd_client.api.images.aliases[alias].get().json()["metadata"]["target"]
        description = lxd_client.api.images[target].get().json()["metadata"]["properties"]["description"]
        assert description == f"lxdsnap baseline of {name} ({own})"

        pytester.makefile(".toml", pyproject=two_declarations(name, changed=True))
        pytester.makepyfile(uses(name, f"{name}-2"))
        result = pytester.runpytest("--lxd-reuse")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"NOTE deleted {own}: the declaration of '{name}' changed since it was built"])
        assert other in kept_builds(lxd_client, f"{name}-2")
        assert f"deleted {other}" not in result.stdout.str()
    finally:
        for leftover in sorted(n for n in instance_names(lxd_client) if n.startswith(f"lxdsnap-keep-{name}-")):
            lxc("delete", "--force", leftover)
        subprocess.run(["lxc", "image", "delete", alias], capture_output=True, check=False)


# -- which kept builds a declared name owns (records as LXD lists them) --------------------------------------------

# -- names made for a declared container fit LXD's 63 characters -----------------------------------------------

def test_the_limit_is_the_daemons(lxd_client):
    fits, too_long = f"{TEST_PREFIX}{'a' * (reuse.MAX_INSTANCE_NAME - len(TEST_PREFIX))}", f"{TEST_PREFIX}{'a' * 60}"
    with pytest.raises(LXDAPIException, match="1-63 characters"):
        lxd_client.api.instances.post(json={"name": too_long, "source": {"type": "none"}})
    lxdapi.wait(lxd_client, lxd_client.api.instances.post(json={"name": fits, "source": {"type": "none"}}))
    lxdapi.wait(lxd_client, lxd_client.api.instances[fits].delete())


def test_a_kept_build_records_its_declared_name(pytester, lxd_client):
    name = f"w{secrets.token_hex(3)}"
    pytester.makefile(".toml", pyproject=two_declarations(name))
    pytester.makepyfile(uses(f"{name}-2"))
    try:
        pytester.runpytest("--lxd-reuse").assert_outcomes(passed=1)
        (build,) = kept_builds(lxd_client, f"{name}-2")
        config = lxdapi.get_instance(lxd_client, build)["config"]
        assert config[REUSE_NAME_KEY] == f"{name}-2" and build.endswith(f"-{config[REUSE_KEY]}")
    finally:
        for leftover in sorted(n for n in instance_names(lxd_client) if n.startswith(f"lxdsnap-keep-{name}-")):
            lxc("delete", "--force", leftover)

