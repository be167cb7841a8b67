"""--lxd-keep-failed: keep a failed test's state (a clone, a copy or a snapshot that expires) to inspect."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.lxdapi import FAULTS, describe
from pytest_lxdsnap.model import Checkout
from pytest_lxdsnap.safety import claims, zfs
from pytest_lxdsnap.safety.ownership import KEPT_LABEL

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


def keep_failed(s: LxdSession, checkouts: list[Checkout], test: str) -> list[str]:
    """Keep the state of each container before its reset (a clone, a copy or a snapshot that expires
    after the snapshot TTL); the ``lxc`` commands to inspect each, or why it could not be kept."""
    lines = []
    for checkout in checkouts:
        try:
            lines.append(keep_one(s, checkout, test))
        except FAULTS as exc:
            lines.append(f"could not keep {checkout.tracked.name!r} for {test}: {describe(exc)}")
    s.kept.extend(lines)
    return lines


def keep_one(s: LxdSession, checkout: Checkout, test: str) -> str:
    tracked, client, cmd = checkout.tracked, s.client_for(checkout.tracked.name), s.commands
    s.kept_count += 1
    expires = time.time() + s.snapshot_ttl
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    if not tracked.declared:  # the user's instance keeps its identity: a snapshot that LXD expires
        if zfs.newer_snapshots_block_restore(tracked.pool_driver):
            return zfs.snapshot_refusal_message(tracked.name, tracked.instance, tracked.pool, cmd,
                                                purpose="keep-failed", blocking=[tracked.snapshot])
        snapshot = s.identity.snapshot_name(f"{KEPT_LABEL}-{s.kept_count}")
        lxdapi.create_owned_snapshot(client, tracked.instance, snapshot, s.identity, s.snapshot_ttl)
        copy = f"{tracked.instance}-failed-{s.kept_count}"
        return (f"kept {tracked.name!r} of {test} as snapshot {tracked.instance}/{snapshot} (LXD deletes it "
                f"{until}). Inspect: {cmd(f'copy {tracked.instance}/{snapshot} {copy}')} && "
                f"{cmd(f'start {copy}')} && {cmd(f'exec {copy} -- sh')}; then {cmd(f'delete --force {copy}')}")
    if checkout.strategy == "clone":
        kept, checkout.kept = checkout.instance, True
    else:  # the base goes at the end of the session: keep a copy of it
        kept = f"{tracked.instance}-failed-{s.kept_count}"
        # on ZFS an instance-only copy is a clone that leaves a hidden snapshot on the base, newer than the
        # baseline: every later reset would be refused. A full copy (snapshots too) leaves none.
        full = zfs.newer_snapshots_block_restore(tracked.pool_driver)
        body = {"name": kept, "source": {"type": "copy", "source": tracked.instance, "instance_only": not full},
                "profiles": list(s.specs[tracked.name].profiles)}
        lxdapi.wait(client, client.api.instances.post(json=body))
        for copied in lxdapi.list_snapshots(client, kept) if full else []:
            lxdapi.wait(client, client.api.instances[kept].snapshots[copied["name"]].delete())
    claims.mark_kept(client, kept, expires)
    start = "" if checkout.strategy == "clone" else f"{cmd(f'start {kept}')} && "
    return (f"kept {tracked.name!r} of {test} as instance {kept} (`lxdsnap gc` deletes it after {until}). "
            f"Inspect: {start}{cmd(f'exec {kept} -- sh')}; {cmd(f'delete --force {kept}')} when done")
