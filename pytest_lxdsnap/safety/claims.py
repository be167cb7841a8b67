"""Claims on existing instances, and putting back what a dead session held (no pytest here).

A session claims an existing instance by writing its tag (``user.lxdsnap.owner``, bound to the instance)
and the instance's power state into the instance's config in one PUT with ``If-Match``: of two sessions
(or a session and ``lxdsnap gc``) that race, exactly one wins; the other sees the winner and waits. An
ephemeral instance loses the flag while it is held (LXD would delete it on the first stop) and gets it
back on release. A paused instance is refused before anything changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.errors import ConfigError, OwnershipError, ResetError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.safety import leases, zfs
from pytest_lxdsnap.safety.ownership import (
    BASELINE_LABEL,
    CREATED_KEY,
    EPHEMERAL_KEY,
    OWNER_KEY,
    POWER_KEY,
    RECOVERING_KEY,
    SESSION_KEYS,
    SessionIdentity,
    holder_at,
    holder_is_dead,
    kept_config,
)

FROZEN = "Frozen"
RECOVERY_SNAPSHOT_DAYS = 7
"""How long LXD keeps the state an instance had before recovery rolled it back."""


def _holding(identity: SessionIdentity, where: str, record: dict[str, Any], power: str | None, *,
             fresh: bool = False, recovering: str | None = None) -> dict[str, Any]:
    """The PUT fields that make ``identity`` the holder (the ephemeral flag parked in a key). ``fresh``: nobody
    held it, so session keys already there came with a copy and are dropped, not trusted."""
    config = {k: v for k, v in record["config"].items()
              if not (fresh and k in SESSION_KEYS) and k != RECOVERING_KEY}
    config.update({OWNER_KEY: identity.tag(where), POWER_KEY: power or record["status"]})
    if recovering:
        config[RECOVERING_KEY] = recovering  # whose baseline this claim is about to put back
    if record.get("ephemeral"):
        config[EPHEMERAL_KEY] = "true"
    return {"config": config, "ephemeral": False}


def _letting_go(record: dict[str, Any]) -> dict[str, Any]:
    """The PUT fields that drop a session's keys (and give an ephemeral instance its flag back)."""
    config = {k: v for k, v in record["config"].items() if k not in SESSION_KEYS}
    return {"config": config, "ephemeral": bool(record.get("ephemeral")) or EPHEMERAL_KEY in record["config"]}


def paused_error(name: str, cmd: Commands) -> ConfigError:
    return ConfigError(
        f"instance {name!r} is paused (Frozen): a reset restores it by restarting it, so its paused processes "
        f"would not survive. Nothing was changed. Resume it first (`{cmd(f'start {name}')}`) or stop it "
        f"(`{cmd(f'stop {name}')}`), then run the tests again")


def claim(client: pylxd.Client, name: str, identity: SessionIdentity, *, wait: float,
          log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Take ``name`` for this session (waiting up to ``wait`` seconds for a live holder); its record.

    A dead holder's state is recovered first. Raises NotFound, ConfigError for a paused instance, or
    OwnershipError naming the holder.
    """
    deadline = time.monotonic() + wait
    where = lxdapi.where(client, name)
    while True:
        record, etag = lxdapi.read_instance(client, name)
        holder = holder_at(record["config"], where)
        if holder != identity and record["status"] == FROZEN:
            raise paused_error(name, commands_for(client))
        if holder is None or holder == identity:
            power = record["config"].get(POWER_KEY) if holder == identity else None
            fields = _holding(identity, where, record, power, fresh=holder is None)
            if lxdapi.put_instance(client, name, record, etag, **fields):
                return record  # as read: its status and devices are what callers use
            continue  # changed between our read and our write: look again
        lease, now = leases.lease_of(client, holder)
        dead, why = holder_is_dead(holder, lease, now)
        if dead:
            log(f"instance {name}: {holder.describe()} is dead ({why}); restoring what it left")
            for line in recover_instance(client, name, holder, identity, keep=True):
                log(line)
            continue
        if time.monotonic() >= deadline:
            raise OwnershipError(
                f"instance {name!r} is in use by another lxdsnap session (host {holder.host}, pid {holder.pid}, "
                f"token {holder.token}, started {time.strftime('%H:%M:%S', time.localtime(holder.started))}; "
                f"{why}); waited {wait:g} s. "
                "Wait for it to finish, raise --lxd-lease-wait, or if it is stuck, stop it: it restores the "
                "instance on exit (and `lxdsnap gc` recovers after a crash)"
            )
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))


def release(client: pylxd.Client, name: str, identity: SessionIdentity) -> None:
    """Remove this session's keys from ``name`` (no-op when another session holds it)."""
    where = lxdapi.where(client, name)
    while True:
        record, etag = lxdapi.read_instance(client, name)
        if not identity.owns(record["config"], where):
            return
        if lxdapi.put_instance(client, name, record, etag, **_letting_go(record)):
            return


def recover_instance(client: pylxd.Client, name: str, holder: SessionIdentity, identity: SessionIdentity, *,
                     keep: bool) -> list[str]:
    """Put an existing instance a dead session held back as that session found it; what was done.

    ``identity`` (the recovering session or gc) claims it first (If-Match), so nobody recovers an instance
    that someone else claimed meanwhile. The state the instance has now is kept as a snapshot first: the
    user may have worked in it since the crash. ``keep``: hold it afterwards (a session), else let go (gc).
    """
    where = lxdapi.where(client, name)
    lxdapi.settle(client, name)  # the dead session's last operation may still be running in LXD
    while True:  # claim it, unless someone else recovered or claimed it meanwhile
        record, etag = lxdapi.read_instance(client, name)
        if holder_at(record["config"], where) != holder:
            return []
        origin = holder_at(record["config"], where, RECOVERING_KEY) or holder  # a recovery that died half-way
        baseline = origin.snapshot_name(BASELINE_LABEL)
        _refuse_on_zfs(client, name, record, origin, baseline)
        power = record["config"].get(POWER_KEY)
        fields = _holding(identity, where, record, power, recovering=origin.tag(where))
        if lxdapi.put_instance(client, name, record, etag, **fields):
            break
    done = []
    if lxdapi.snapshot_is_owned(client, name, baseline, origin):
        snap = client.api.instances[name].snapshots[baseline].get().json()["metadata"]
        power = snap["config"].get(POWER_KEY) or power
        done.append(keep_current_state(client, name, identity))
        lxdapi.restore_snapshot(client, name, baseline)
        done.append(f"restored {name} from {baseline}")
    else:
        done.append(f"{name}: the dead session's baseline {baseline} is gone (expired?): not restored")
    for dead in {origin, holder}:
        for snapshot in lxdapi.owned_snapshots(client, name, dead):
            try:
                lxdapi.delete_owned_snapshot(client, name, snapshot, dead)
            except (NotFound, OwnershipError):
                continue  # another session recovering at the same moment got there first
            done.append(f"deleted snapshot {name}/{snapshot}")
    if power in (lxdapi.RUNNING, lxdapi.STOPPED) and lxdapi.status(client, name) != power:
        lxdapi.set_power(client, name, "start" if power == lxdapi.RUNNING else "stop")  # not ephemeral now
        done.append(f"{'started' if power == lxdapi.RUNNING else 'stopped'} {name} as it was found")
    while True:  # the restore brought back the dead session's keys: make them ours, or drop them
        record, etag = lxdapi.read_instance(client, name)
        fields = _holding(identity, where, record, power) if keep else _letting_go(record)
        if lxdapi.put_instance(client, name, record, etag, **fields):
            break
    if not keep:
        done.append(f"removed the lxdsnap keys from {name}")
    return done


def _refuse_on_zfs(client: pylxd.Client, name: str, record: dict[str, Any], holder: SessionIdentity,
                   baseline: str) -> None:
    """On ZFS the state cannot be kept as a snapshot and the baseline still restored: refuse, changing nothing."""
    pool, driver = lxdapi.root_pool(client, record)
    if zfs.newer_snapshots_block_restore(driver) and lxdapi.snapshot_is_owned(client, name, baseline, holder):
        raise ResetError(  # keeping the current state first would be a newer snapshot: LXD refuses then
            f"instance {name!r} was held by a dead {holder.describe()}; on ZFS pool {pool!r} lxdsnap cannot keep "
            f"the state it has now and still restore the baseline (only the latest snapshot restores), so it did "
            f"not roll it back. Keep what you need (`{commands_for(client)(f'copy {name} <name>')}`), then "
            f"`{commands_for(client).restore(name, baseline)}` and "
            f"`{commands_for(client).delete_snapshot(name, baseline)}`; `lxdsnap gc` then removes the lxdsnap keys")


def keep_current_state(client: pylxd.Client, name: str, identity: SessionIdentity) -> str:
    """Snapshot ``name`` as it is now, kept for RECOVERY_SNAPSHOT_DAYS, before recovery rolls it back;
    what was done and how to get the state back."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    snapshot = f"before-lxdsnap-recovery-{stamp}-{identity.token[:6]}"  # not a plugin name: never swept
    ttl = RECOVERY_SNAPSHOT_DAYS * 86400
    body = {"name": snapshot, "stateful": False, "expires_at": lxdapi.expiry(ttl, lxdapi.server_now(client))}
    lxdapi.when_idle(lambda: lxdapi.wait(client, client.api.instances[name].snapshots.post(json=body)))
    return (f"kept the state {name} had before recovery as snapshot {name}/{snapshot} (LXD deletes it in "
            f"{RECOVERY_SNAPSHOT_DAYS} days); to get it back: `{commands_for(client).restore(name, snapshot)}`")


def commands_for(client: pylxd.Client) -> Commands:
    return Commands(incus=lxdapi.is_incus(client))


def mark_kept(client: pylxd.Client, name: str, until: float) -> None:
    """Turn one of this session's instances into a kept state: no session owns it, gc deletes it after
    ``until``."""
    changes: dict[str, str | None] = {**kept_config(until, lxdapi.where(client, name)), CREATED_KEY: None,
                                      **dict.fromkeys(SESSION_KEYS)}
    while not lxdapi.update_config(client, name, *lxdapi.read_instance(client, name), changes):
        pass
