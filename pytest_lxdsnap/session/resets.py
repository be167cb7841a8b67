"""Bringing a base instance back to its baseline after a test, and giving a checkout back."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pylxd

from pytest_lxdsnap.errors import ResetError
from pytest_lxdsnap.lxd import lxdapi, members, ports
from pytest_lxdsnap.lxd.execution import purge_unread_logs
from pytest_lxdsnap.lxd.lxdapi import FAULTS
from pytest_lxdsnap.model import Checkout, Tracked
from pytest_lxdsnap.safety import claims, zfs

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


def power_base(s: LxdSession, tracked: Tracked) -> None:
    """Before an in-place test: bring the base instance back to its baseline power state if clones had it
    stopped, and to its baseline if a test used it as a clone (lent, see LxdSession._start_clones)."""
    if tracked.base_stopping is not None:
        tracked.base_stopping.result()
        tracked.base_stopping = None
    if tracked.lent:
        problem = restore(s, tracked)  # state and power both
        if problem:
            raise ResetError(problem)
        tracked.lent = False
    if tracked.running and not tracked.base_running:
        lxdapi.set_power(s.client_for(tracked.name), tracked.instance, "start")
        s.check_ready(tracked.name, tracked.instance)
    tracked.base_running = tracked.running


def stop_base(s: LxdSession, tracked: Tracked) -> None:
    """Only clones will run: stop the base instance in the background (its delete is then quick), without the
    ports a test may have exposed on it."""
    tracked.base_running = False
    tracked.base_stopping = s.executor.submit(_stop, s, tracked.instance)


def _stop(s: LxdSession, instance: str) -> None:
    ports.remove_all(s.own, instance)
    lxdapi.set_power(s.own, instance, "stop")


def release_one(s: LxdSession, checkout: Checkout) -> str | None:
    tracked = checkout.tracked
    if checkout.strategy == "clone":
        assert tracked.clones is not None
        if checkout.instance == tracked.instance:  # the base, lent to the first clone test: never used again
            stop_base(s, tracked)
            return None
        if checkout.kept:
            tracked.clones.let_go(checkout.instance)
        else:
            tracked.clones.retire(checkout.instance)
        return None
    problem = None
    if checkout.strategy != "readonly":  # readonly: finish() restores an existing container if needed
        problem = restore(s, tracked, recipe=checkout.strategy == "recipe")
    if s.turns(tracked) and not problem:
        claims.release(s.client, tracked.instance, s.identity)  # the next worker's turn
    return problem


def restore(s: LxdSession, tracked: Tracked, *, recipe: bool = False) -> str | None:
    """Restore the base instance to its baseline; None, or what failed (the container is then broken)."""
    if tracked.broken:
        return tracked.broken
    client, instance, snapshot = s.client_for(tracked.name), tracked.instance, tracked.snapshot
    start = time.perf_counter()
    try:
        running = lxdapi.status(client, instance) == lxdapi.RUNNING
        if running and (recipe or not tracked.running):
            lxdapi.set_power(client, instance, "stop")  # the tutorial's recipe stops first, explicitly
            running = False
        refusal = zfs_refusal(s, tracked, client)
        if refusal:
            tracked.broken = refusal
            return refusal
        lxdapi.restore_snapshot(client, instance, snapshot)  # LXD restarts a running instance itself
        if tracked.kept:  # the kept baseline has no session tag: take the instance again
            claims.claim(client, instance, s.identity, wait=s.lease_wait)
        if tracked.running and not running:
            lxdapi.set_power(client, instance, "start")
        tracked.base_running = tracked.running
        if tracked.running:
            s.check_ready(tracked.name, instance)
    except FAULTS as exc:
        tracked.broken = (
            f"resetting container {tracked.name!r} (instance {instance}) to snapshot {snapshot} failed: "
            f"{members.explain(client, exc)}\nThe snapshot is kept for recovery. "
            f"Inspect: `{s.commands(f'info {instance}')}`; "
            f"restore by hand: `{s.commands.restore(instance, snapshot)}`, or run `lxdsnap gc` once this "
            "session has ended"
        )
        return tracked.broken
    tracked.dirty = False
    tracked.reset_times.append(time.perf_counter() - start)
    purge_unread_logs(client, instance)
    return None


def zfs_refusal(s: LxdSession, tracked: Tracked, client: pylxd.Client) -> str | None:
    """On ZFS, why the baseline cannot be restored (newer snapshots), before LXD is asked; else None."""
    if not zfs.newer_snapshots_block_restore(tracked.pool_driver):
        return None
    snapshots = lxdapi.list_snapshots(client, tracked.instance)
    try:
        blockers = zfs.restore_blockers(snapshots, tracked.snapshot)
    except LookupError:
        return (f"resetting container {tracked.name!r} (instance {tracked.instance}) failed: its baseline "
                f"{tracked.snapshot} is gone (deleted, or expired while LXD could not be reached). The container "
                f"is as the last test left it; restore an older snapshot of yours by hand if you need to")
    if not blockers:
        return None
    return zfs.refusal_message(tracked.name, tracked.instance, tracked.snapshot, blockers, tracked.pool,
                               s.commands, snapshots=snapshots, declared=tracked.declared)
