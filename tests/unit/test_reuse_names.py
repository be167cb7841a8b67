"""--lxd-reuse and LXD's 63 characters, without a daemon: which kept build belongs to which declared name, and
the longest name a session may make for a declared container (pytest_lxdsnap.session.reuse)."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.declarations import parse_container
from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.safety.ownership import CREATED_KEY, INSTANCE_PREFIX, KEPT_KEY, REUSE_KEY, SessionIdentity
from pytest_lxdsnap.session import reuse
from pytest_lxdsnap.session.reuse import REUSE_NAME_KEY


def record(name: str, **config: str) -> dict[str, object]:
    return {"name": name, "config": config}


BUILD = "0123456789"


def test_a_kept_build_belongs_to_its_exact_declared_name_only():
    web = record(f"lxdsnap-keep-web-{BUILD}", **{REUSE_KEY: BUILD, REUSE_NAME_KEY: "web"})
    web_2 = record(f"lxdsnap-keep-web-2-{BUILD}", **{REUSE_KEY: BUILD, REUSE_NAME_KEY: "web-2"})
    assert reuse.belongs(web, "web") and not reuse.belongs(web, "web-2")
    assert reuse.belongs(web_2, "web-2") and not reuse.belongs(web_2, "web")
    assert reuse.belongs(record(f"lxdsnap-keep-web-{BUILD}", **{REUSE_KEY: BUILD}), "web")  # built before the name key
    not_web = [
        record(f"lxdsnap-keep-web-{BUILD}", **{REUSE_KEY: BUILD, REUSE_NAME_KEY: "web-2"}),  # the key decides
        record(f"lxdsnap-keep-web-{BUILD}", **{REUSE_KEY: "9876543210"}),  # not its own hash
        record(f"lxdsnap-keep-web-{BUILD}"),  # no reuse key: a user's instance
        record("lxdsnap-keep-web-0123ABCDEF", **{REUSE_KEY: "0123ABCDEF"}),  # not a hash of the right shape
        record("lxdsnap-keep-web-012345678", **{REUSE_KEY: "012345678"}),
        record("lxdsnap-keep-web-x", **{REUSE_KEY: "x"}),
        record(f"lxdsnap-keep-web-{BUILD}-3", **{REUSE_KEY: BUILD, CREATED_KEY: "{}"}),  # a session's clone of it
        record(f"lxdsnap-keep-web-{BUILD}-failed-1", **{REUSE_KEY: BUILD, KEPT_KEY: "1"}),  # a failed test's copy
        record(f"lxdsnap-keep-web-{BUILD}", **{REUSE_KEY: BUILD, KEPT_KEY: "1"}),
    ]
    assert [r["name"] for r in not_web if reuse.belongs(r, "web")] == []


def test_a_kept_build_is_made_with_its_hash_and_declared_name():
    assert reuse.kept_tags(parse_container("web-2", {"image": "x"}), BUILD) == {REUSE_KEY: BUILD,
                                                                                  REUSE_NAME_KEY: "web-2"}


def test_the_longest_generated_name_of_a_declared_container():
    assert reuse.longest_generated_name("web", uses=0) == "lxdsnap-web-00000000"
    assert reuse.longest_generated_name("web", uses=12) == "lxdsnap-web-00000000-12"  # its 12th clone
    assert reuse.longest_generated_name("web", uses=12, keep_failed=True) == "lxdsnap-web-00000000-failed-12"
    assert reuse.longest_generated_name("web", uses=12, token_length=10) == "lxdsnap-web-0000000000-12"  # gw12abcdef
    assert reuse.longest_generated_name("web", uses=12, reuse=True, keep_failed=True) == (
        "lxdsnap-keep-web-0000000000-failed-12")
    assert reuse.max_name_length(uses=9) == 63 - len("lxdsnap--00000000-9") == 44
    assert reuse.max_name_length(uses=9, keep_failed=True) == 63 - len("lxdsnap--00000000-failed-9") == 37
    assert reuse.max_name_length(uses=9, reuse=True, keep_failed=True) == 63 - len(
        "lxdsnap-keep--0000000000-failed-9") == 30


def test_the_stand_ins_have_the_length_of_the_real_names():
    spec = parse_container("web", {"image": "x"})
    assert len(f"{INSTANCE_PREFIX}web-{SessionIdentity().token}") == len(reuse.longest_generated_name("web", uses=0))
    assert len(reuse.kept_name(spec, "f" * reuse.DIGEST_LENGTH)) == len(
        reuse.longest_generated_name("web", uses=0, reuse=True))


def test_a_name_too_long_for_its_generated_names_is_refused_with_the_limit():
    longest = "a" * 40  # what the declaration's name pattern allows
    assert reuse.too_long_message(longest, uses=9) is None  # its clones fit
    assert reuse.too_long_message("a" * 37, uses=9, keep_failed=True) is None
    message = reuse.too_long_message(longest, uses=9, keep_failed=True)
    assert message == (
        f"[tool.lxdsnap.containers.{longest}]: instance names made for it reach 66 characters (like "
        f"'lxdsnap-{longest}-00000000-failed-9'), past LXD's limit of 63; with 9 container uses in this run and "
        "--lxd-keep-failed, a declared container's name may have at most 37 characters: give it a shorter name")
    assert "with 9 container uses in this run and --lxd-reuse, a declared container's name may have at most 37" in (
        reuse.too_long_message(longest, uses=9, reuse=True) or "")
    for uses in (1, 9, 10, 999):  # the limit it names is the one that fits exactly
        for shape in ({}, {"reuse": True}, {"keep_failed": True}, {"reuse": True, "keep_failed": True}):
            limit = reuse.max_name_length(uses=uses, **shape)
            assert reuse.too_long_message("a" * limit, uses=uses, **shape) is None
            assert f"at most {limit} characters" in (reuse.too_long_message("a" * (limit + 1), uses=uses, **shape)
                                                     or "")
    with pytest.raises(ConfigError, match="past LXD's limit of 63"):
        reuse.kept_name(parse_container(longest, {"image": "x"}), BUILD)
