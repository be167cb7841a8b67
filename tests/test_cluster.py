"""Cluster targets against the suite's standalone daemon: the request carries the target and a standalone server's
refusal is explained. The plugin on a real cluster: tests/cluster (the cluster tier)."""

from __future__ import annotations

import pytest

from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi

from .helpers import DECLARED_WEB, TEST_PREFIX, instance_names


def test_a_target_on_a_standalone_server_is_refused_before_anything_is_created(suite, lxd_client):
    before = instance_names(lxd_client)
    suite.makefile(".toml", pyproject=DECLARED_WEB + 'target = ["member1", "member2"]\n')
    suite.makepyfile("""
        import pytest

        @pytest.mark.lxd("web")
        def test_it(lxd):
            pass
    """)
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: [[]tool.lxdsnap.containers.web[]] target: 'member1' names a cluster member, "
                                 "but LXD at unix socket * is a standalone server, not a cluster. Remove `target`*"])
    assert instance_names(lxd_client) == before


def test_the_create_request_carries_the_target_and_the_refusal_is_explained(lxd_client):
    before = instance_names(lxd_client)
    body = {"name": f"{TEST_PREFIX}target", "source": {"type": "image", "alias": IMAGE_ALIAS}}
    with pytest.raises(ConfigError) as refused:
        lxdapi.create_instance(lxd_client, body, target="member1")
    # LXD's own answer to ?target=member1: the parameter reached the server
    assert "cluster member 'member1', but the server refused: Target only allowed when clustered" in str(refused.value)
    assert "remove `target`" in str(refused.value)
    assert instance_names(lxd_client) == before
