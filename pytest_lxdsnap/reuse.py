"""Keeping a provisioned declared container between runs (``--lxd-reuse``), no pytest here.

The kept instance is ``lxdsnap-keep-<name>-<hash>``, where the hash covers everything that shapes it
(the image's fingerprint, pool, profiles, config, provision commands, readiness check): any change
builds a new one and the old one is deleted. It carries ``user.lxdsnap.reuse=<hash>`` and no session
tag between runs, and its baseline is the snapshot ``lxdsnap-reuse-base``. A session claims it like an
existing container (compare-and-swap), takes clones from its baseline or restores it in place, and at
the end leaves it stopped at its baseline. ``lxdsnap gc`` deletes kept instances no live session holds.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from . import lxdapi
from .connection import Endpoint, connect
from .errors import LxdSnapError, OwnershipError
from .ownership import CREATED_KEY, REUSE_KEY, REUSE_PREFIX, REUSE_SNAPSHOT, holder_at
from .settings import ContainerSpec


def image_fingerprint(client: pylxd.Client, image: str) -> str:
    """The fingerprint behind a local alias (remote images are hashed by name: their content may move)."""
    if ":" in image:
        return image
    try:
        return client.api.images.aliases[image].get().json()["metadata"]["target"]
    except NotFound:
        return image  # a fingerprint (prefix) already


def declaration_hash(client: pylxd.Client, spec: ContainerSpec) -> str:
    shape = {"image": image_fingerprint(client, spec.image), "pool": spec.pool, "profiles": list(spec.profiles),
             "config": spec.config, "provision": list(spec.provision), "ready": repr(spec.ready)}
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:10]


def kept_name(spec: ContainerSpec, digest: str) -> str:
    return f"{REUSE_PREFIX}{spec.name}-{digest}"


def is_kept(record: dict[str, Any]) -> bool:
    """A kept declared container (not one of the clones taken from it, which carry a session's tag)."""
    config = record.get("config") or {}
    return record["name"].startswith(REUSE_PREFIX) and REUSE_KEY in config and CREATED_KEY not in config


def has_baseline(client: pylxd.Client, name: str) -> bool:
    return any(s["name"] == REUSE_SNAPSHOT for s in lxdapi.list_snapshots(client, name))


def stale(client: pylxd.Client, spec: ContainerSpec, current: str) -> list[str]:
    """Kept builds of ``spec`` other than ``current`` (its declaration changed since), not held by anyone."""
    records = lxdapi.listing(client.api.instances)
    return [r["name"] for r in records if is_kept(r) and r["name"] != current
            and r["name"].startswith(f"{REUSE_PREFIX}{spec.name}-")
            and r["name"][len(REUSE_PREFIX) + len(spec.name) + 1:].isalnum()
            and holder_at(r["config"], lxdapi.where(client, r["name"])) is None]


def delete_kept(client: pylxd.Client, name: str) -> None:
    """Delete a kept declared container (its name and key checked; never a user's instance)."""
    record = lxdapi.get_instance(client, name)
    if not is_kept(record):
        raise OwnershipError(f"refusing to delete instance {name!r}: it is not a kept lxdsnap container")
    lxdapi.purge_exec_logs(client, name)
    lxdapi.stop_and_delete(client, name, record["status"])


def take_baseline(client: pylxd.Client, name: str, ttl: float) -> None:
    """Snapshot a kept container's baseline (no session tag in it: any later session may use it)."""
    body = {"name": REUSE_SNAPSHOT, "stateful": False, "expires_at": lxdapi.expiry(ttl, lxdapi.server_now(client))}
    lxdapi.when_idle(lambda: lxdapi.wait(client, client.api.instances[name].snapshots.post(json=body)))


def publish(endpoint: Endpoint, name: str, alias: str | None = None) -> tuple[str, str]:
    """Publish the baseline of the kept container declared as ``name`` as a local image; (fingerprint, alias)."""
    client = connect(endpoint)
    alias = alias or f"lxdsnap/{name}"
    records = lxdapi.listing(client.api.instances)
    kept = sorted((r for r in records if is_kept(r) and r["name"].startswith(f"{REUSE_PREFIX}{name}-")),
                  key=lambda r: r["created_at"])
    if not kept:
        raise LxdSnapError(f"no kept build of declared container {name!r}: run the suite with --lxd-reuse first")
    try:
        client.api.images.aliases[alias].get()
        raise LxdSnapError(f"image alias {alias!r} exists: delete it (`lxc image alias delete {alias}`) or pass "
                           "--alias")
    except NotFound:
        pass
    source = f"{kept[-1]['name']}/{REUSE_SNAPSHOT}"
    body = {"source": {"type": "snapshot", "name": source}, "aliases": [{"name": alias}],
            "properties": {"description": f"lxdsnap baseline of {name} ({kept[-1]['name']})"}}
    metadata = lxdapi.wait(client, client.api.images.post(json=body))
    return metadata["fingerprint"], alias
