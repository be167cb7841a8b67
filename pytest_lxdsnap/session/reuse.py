"""Keeping a provisioned declared container between runs (``--lxd-reuse``), no pytest here.

The kept instance is ``lxdsnap-keep-<name>-<hash>``, where the hash covers everything that shapes it
(the image's fingerprint, pool, profiles, config, provision commands, readiness check): any change
builds a new one and the old one is deleted. It carries ``user.lxdsnap.reuse=<hash>`` and
``user.lxdsnap.reuse.name=<name>`` (so "web" never takes a build of "web-2"), and no session tag between
runs; its baseline is the snapshot ``lxdsnap-reuse-base``. A session claims it like an existing container
(compare-and-swap), takes clones from its baseline or restores it in place, and at the end leaves it
stopped at its baseline. ``lxdsnap gc`` deletes kept instances no live session holds.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.declarations import TABLE, ContainerSpec
from pytest_lxdsnap.errors import ConfigError, LxdSnapError, OwnershipError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.safety import leases, sharing
from pytest_lxdsnap.safety.ownership import (
    BUILDING_KEY,
    CREATED_KEY,
    INSTANCE_PREFIX,
    KEPT_KEY,
    REUSE_KEY,
    REUSE_PREFIX,
    REUSE_SNAPSHOT,
    SessionIdentity,
    holder_at,
    holder_is_dead,
)

REUSE_NAME_KEY = "user.lxdsnap.reuse.name"
"""Config key on a kept declared container: the name it is declared under (matching never parses names alone)."""

MAX_INSTANCE_NAME = 63  # LXD's and Incus's limit on instance names (as clones.MAX_INSTANCE_NAME)
DIGEST_LENGTH = 10
_DIGEST = re.compile(f"[0-9a-f]{{{DIGEST_LENGTH}}}")


def image_fingerprint(client: pylxd.Client, image: str) -> str:
    """The fingerprint behind a local alias (remote images are hashed by name: their content may move)."""
    if ":" in image:
        return image
    try:
        return str(client.api.images.aliases[image].get().json()["metadata"]["target"])
    except NotFound:
        return image  # a fingerprint (prefix) already


def declaration_hash(client: pylxd.Client, spec: ContainerSpec) -> str:
    shape = {"image": image_fingerprint(client, spec.image), "pool": spec.pool, "profiles": list(spec.profiles),
             "config": spec.config, "provision": list(spec.provision), "ready": repr(spec.ready)}
    if spec.package_cache:  # only when set: hashes of declarations without it stay what they were
        shape["package_cache"] = spec.package_cache
    if spec.playbook:  # the play's content, not its path: a changed role builds anew
        from pytest_lxdsnap.ansible.converge import content_digest

        shape["playbook"] = content_digest(spec.playbook)
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:DIGEST_LENGTH]


TOKEN_LENGTH = 8  # a session's token (4 random bytes in hex); under pytest-xdist "gw<N>" and 6 hex digits


def longest_generated_name(name: str, *, uses: int, reuse: bool = False, keep_failed: bool = False,
                           token_length: int = TOKEN_LENGTH) -> str:
    """The longest instance name a session may make for the declared container ``name`` (placeholders of the
    right length): the base ``lxdsnap-<name>-<token>``, or ``lxdsnap-keep-<name>-<hash>`` with --lxd-reuse; with
    ``uses`` > 0 its clones ``<base>-<n>``, and with --lxd-keep-failed failed tests' copies ``<base>-failed-<n>``,
    ``n`` up to ``uses``."""
    if reuse:
        base = f"{REUSE_PREFIX}{name}-{'0' * DIGEST_LENGTH}"
    else:
        base = f"{INSTANCE_PREFIX}{name}-{'0' * token_length}"
    if uses <= 0:
        return base
    return f"{base}-failed-{uses}" if keep_failed else f"{base}-{uses}"


def max_name_length(*, uses: int, reuse: bool = False, keep_failed: bool = False,
                    token_length: int = TOKEN_LENGTH) -> int:
    """The longest declared container name whose generated names all fit LXD's limit."""
    stand_in = longest_generated_name("", uses=uses, reuse=reuse, keep_failed=keep_failed, token_length=token_length)
    return MAX_INSTANCE_NAME - len(stand_in)


def too_long_message(name: str, *, uses: int, reuse: bool = False, keep_failed: bool = False,
                     token_length: int = TOKEN_LENGTH) -> str | None:
    """Why the declared container ``name`` cannot be used (a name made for it would pass LXD's limit), or None."""
    longest = longest_generated_name(name, uses=uses, reuse=reuse, keep_failed=keep_failed, token_length=token_length)
    if len(longest) <= MAX_INSTANCE_NAME:
        return None
    limit = MAX_INSTANCE_NAME - (len(longest) - len(name))  # what the name may take of the generated one
    given = "".join(f" and {option}" for option, on in (("--lxd-reuse", reuse), ("--lxd-keep-failed", keep_failed))
                    if on)
    return (f"[{TABLE}.containers.{name}]: instance names made for it reach {len(longest)} characters (like "
            f"{longest!r}), past LXD's limit of {MAX_INSTANCE_NAME}; with {uses} container uses in this run{given}, "
            f"a declared container's name may have at most {limit} characters: give it a shorter name")


def kept_name(spec: ContainerSpec, digest: str) -> str:
    """``lxdsnap-keep-<name>-<hash>``; ConfigError when LXD would refuse the name."""
    name = f"{REUSE_PREFIX}{spec.name}-{digest}"
    if len(name) > MAX_INSTANCE_NAME:
        raise ConfigError(too_long_message(spec.name, uses=0, reuse=True) or f"{name!r} is too long")
    return name


def kept_tags(spec: ContainerSpec, digest: str) -> dict[str, str]:
    """The config keys a kept build is created with: its declaration's hash and name."""
    return {REUSE_KEY: digest, REUSE_NAME_KEY: spec.name}


def is_kept(record: dict[str, Any]) -> bool:
    """A kept declared container (not a clone taken from it, which carries a session's tag, nor a failed test's
    kept copy of it, which carries an expiry instead)."""
    config = record.get("config") or {}
    return (record["name"].startswith(REUSE_PREFIX) and REUSE_KEY in config and CREATED_KEY not in config
            and KEPT_KEY not in config)


def belongs(record: dict[str, Any], name: str) -> bool:
    """A kept build of the container declared as exactly ``name``: named ``lxdsnap-keep-<name>-<hash>`` with a
    hash of the right shape that is also its reuse key, and ``name`` as its reuse name (builds made before
    that key existed have none)."""
    config = record.get("config") or {}
    prefix = f"{REUSE_PREFIX}{name}-"
    digest = record["name"][len(prefix):] if record["name"].startswith(prefix) else ""
    return (is_kept(record) and _DIGEST.fullmatch(digest) is not None and config.get(REUSE_KEY) == digest
            and config.get(REUSE_NAME_KEY, name) == name)


def has_baseline(client: pylxd.Client, name: str, snapshot: str = REUSE_SNAPSHOT) -> bool:
    return any(s["name"] == snapshot for s in lxdapi.list_snapshots(client, name))


def stale(client: pylxd.Client, spec: ContainerSpec, current: str) -> list[str]:
    """Kept builds of ``spec`` other than ``current`` (its declaration changed since), not held or used by
    anyone alive (pytest-xdist workers of a run share one: see safety.sharing)."""
    records = lxdapi.listing(client.api.instances)
    verdict = sharing.by_leases(client)
    return [r["name"] for r in records if belongs(r, spec.name) and r["name"] != current
            and holder_at(r["config"], lxdapi.where(client, r["name"])) is None and builder(client, r) is None
            and not sharing.live(r["config"], lxdapi.where(client, r["name"]), verdict)]


def builder(client: pylxd.Client, record: dict[str, Any]) -> SessionIdentity | None:
    """The session building this kept build right now, if it is alive."""
    holder = holder_at(record.get("config") or {}, lxdapi.where(client, record["name"]), BUILDING_KEY)
    if holder is None:
        return None
    lease, now = leases.lease_of(client, holder)
    return None if holder_is_dead(holder, lease, now)[0] else holder


def wait_for_builder(client: pylxd.Client, name: str, wait: float) -> bool:
    """Wait (up to ``wait`` s) while a live session builds ``name``; whether it has its baseline now.
    Raises OwnershipError if the builder is still at it."""
    deadline = time.monotonic() + wait
    while not has_baseline(client, name):
        building = builder(client, lxdapi.get_instance(client, name))
        if building is None:
            return False  # a build cut short: no baseline, nobody at it
        if time.monotonic() >= deadline:
            raise OwnershipError(f"kept build {name!r} is being built by another lxdsnap session (host "
                                 f"{building.host}, pid {building.pid}); waited {wait:g} s. Raise --lxd-lease-wait")
        time.sleep(1.0)
    return True


def delete_kept(client: pylxd.Client, name: str) -> None:
    """Delete a kept declared container (its name and key checked; never a user's instance)."""
    record = lxdapi.get_instance(client, name)
    if not is_kept(record):
        raise OwnershipError(f"refusing to delete instance {name!r}: it is not a kept lxdsnap container")
    lxdapi.purge_exec_logs(client, name)
    lxdapi.stop_and_delete(client, name, record["status"])


def take_baseline(client: pylxd.Client, name: str, ttl: float, snapshot: str = REUSE_SNAPSHOT) -> None:
    """Snapshot a kept container's baseline (no session tag in it: any later session may use it); a shared
    base's too, under its own snapshot name."""
    body = {"name": snapshot, "stateful": False, "expires_at": lxdapi.expiry(ttl, lxdapi.server_now(client))}
    lxdapi.when_idle(lambda: lxdapi.wait(client, client.api.instances[name].snapshots.post(json=body)))


def publish(endpoint: Endpoint, name: str, alias: str | None = None) -> tuple[str, str]:
    """Publish the baseline of the kept container declared as ``name`` as a local image; (fingerprint, alias)."""
    client = connect(endpoint)
    alias = alias or f"lxdsnap/{name}"
    records = sorted((r for r in lxdapi.listing(client.api.instances) if belongs(r, name)),
                     key=lambda r: r["created_at"], reverse=True)
    builds = [r["name"] for r in records]
    kept = next((n for n in builds if has_baseline(client, n)), None)  # the newest with its baseline
    if kept is None:
        why = "none has its baseline yet (a run was cut short)" if builds else "there is none"
        raise LxdSnapError(f"no kept build of declared container {name!r} to publish ({why}): run the suite "
                           "with --lxd-reuse first")
    try:
        client.api.images.aliases[alias].get()
        raise LxdSnapError(f"image alias {alias!r} exists: delete it (`lxc image alias delete {alias}`) or pass "
                           "--alias")
    except NotFound:
        pass
    source = f"{kept}/{REUSE_SNAPSHOT}"
    body = {"source": {"type": "snapshot", "name": source}, "aliases": [{"name": alias}],
            "properties": {"description": f"lxdsnap baseline of {name} ({kept})"}}
    metadata = lxdapi.wait(client, client.api.images.post(json=body))
    return metadata["fingerprint"], alias
