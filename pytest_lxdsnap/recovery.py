"""Leases on existing instances, and recovery of what dead sessions left behind (no pytest here).

A session claims an existing instance by writing its tag (``user.lxdsnap.owner``) and the instance's
power state into the instance's config in one PUT with ``If-Match``: of two sessions that race, exactly
one wins, the other sees the winner and waits. A live session renews a lease kept in its own profile
(``lxdsnap-session-<token>``, used by no instance). A holder is dead when its process is gone on this host
(pid, process start time, boot id) or, for another host, when its lease ran out.
What a dead session left is put right: an existing instance is restored from the dead session's
baseline snapshot and powered as it was found; its snapshots, clones and declared instances are
deleted. ``lxdsnap gc`` does the same for the whole server, with ``--dry-run`` to only list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pylxd
from pylxd.exceptions import NotFound

from . import lxdapi, projects, reuse
from .errors import OwnershipError
from .ownership import (
    CREATED_KEY,
    KEPT_KEY,
    LEASE_KEY,
    LEASE_SECONDS,
    OWNER_KEY,
    POWER_KEY,
    SESSION_PROFILE_PREFIX,
    SessionIdentity,
    holder_is_dead,
    is_kept_snapshot_name,
    is_plugin_snapshot_name,
    parse_tag,
)

BASELINE_LABEL = "base"
SESSION_KEYS = (OWNER_KEY, POWER_KEY)




def lease_value(seconds: float = LEASE_SECONDS) -> str:
    return f"{time.time() + seconds:.0f}"


def session_profile(identity: SessionIdentity) -> str:
    return f"{SESSION_PROFILE_PREFIX}{identity.token}"


def open_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    """Create this session's lease profile."""
    client.api.profiles.post(json={
        "name": session_profile(identity),
        "description": f"lxdsnap session lease: host {identity.host}, pid {identity.pid} (used by no instance)",
        "config": {OWNER_KEY: identity.tag(), LEASE_KEY: lease_value()},
        "devices": {},
    })


def renew_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    node = client.api.profiles[session_profile(identity)]
    record = node.get().json()["metadata"]
    node.put(json={"description": record["description"], "devices": {},
                   "config": {OWNER_KEY: identity.tag(), LEASE_KEY: lease_value()}})


def close_lease(client: pylxd.Client, identity: SessionIdentity) -> None:
    """Delete the lease profile of ``identity`` (only if it carries that session's tag)."""
    node = client.api.profiles[session_profile(identity)]
    try:
        record = node.get().json()["metadata"]
    except NotFound:
        return
    if identity.owns(record.get("config") or {}):
        node.delete()


def lease_of(client: pylxd.Client, holder: SessionIdentity) -> str | None:
    """The lease expiry a session last wrote, or None when it has no lease profile."""
    try:
        record = client.api.profiles[session_profile(holder)].get().json()["metadata"]
    except NotFound:
        return None
    return (record.get("config") or {}).get(LEASE_KEY) if holder.owns(record.get("config") or {}) else None


def claim(client: pylxd.Client, name: str, identity: SessionIdentity, *, wait: float,
          log: Callable[[str], None] = lambda line: None) -> dict:
    """Take ``name`` for this session (waiting up to ``wait`` seconds for a live holder); its record.

    A dead holder's state is recovered first. Raises NotFound, or OwnershipError naming the holder.
    """
    deadline = time.monotonic() + wait
    while True:
        record, etag = lxdapi.read_instance(client, name)
        config = record["config"]
        holder = parse_tag(config.get(OWNER_KEY))
        if holder is None or holder == identity:
            changes = {OWNER_KEY: identity.tag(),
                       POWER_KEY: config.get(POWER_KEY) if holder == identity else record["status"]}
            if lxdapi.update_config(client, name, record, etag, changes):
                return record
            continue  # changed between our read and our write: look again
        dead, why = holder_is_dead(holder, lease_of(client, holder))
        if dead:
            log(f"instance {name}: session {holder.token} (host {holder.host}, pid {holder.pid}) is dead ({why}); "
                "restoring what it left")
            recover_instance(client, name, holder, identity)
            continue
        if time.monotonic() >= deadline:
            raise OwnershipError(
                f"instance {name!r} is in use by another lxdsnap session (host {holder.host}, pid {holder.pid}, "
                f"token {holder.token}, started {time.strftime('%H:%M:%S', time.localtime(holder.started))}; "
                f"{why}); waited {wait:g} s. Wait for it to finish, raise --lxd-lease-wait, or if it is stuck, "
                f"stop it: it restores the instance on exit (and `lxdsnap gc` recovers after a crash)"
            )
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))


def release(client: pylxd.Client, name: str, identity: SessionIdentity) -> None:
    """Remove this session's keys from ``name`` (no-op when another session holds it)."""
    while True:
        record, etag = lxdapi.read_instance(client, name)
        if not identity.owns(record["config"]):
            return
        if lxdapi.update_config(client, name, record, etag, dict.fromkeys(SESSION_KEYS)):
            return


def recover_instance(client: pylxd.Client, name: str, holder: SessionIdentity,
                     identity: SessionIdentity | None = None) -> list[str]:
    """Put an existing instance a dead session held back as that session found it; what was done.

    ``identity`` (the recovering session) claims it first, so two sessions never recover it at once.
    """
    done = []
    record, etag = lxdapi.read_instance(client, name)
    if parse_tag(record["config"].get(OWNER_KEY)) != holder:
        return done  # someone else recovered or claimed it meanwhile
    if identity is not None and not lxdapi.update_config(client, name, record, etag, {OWNER_KEY: identity.tag()}):
        return done
    baseline = holder.snapshot_name(BASELINE_LABEL)
    power = record["config"].get(POWER_KEY)
    if lxdapi.snapshot_is_owned(client, name, baseline, holder):
        snap = client.api.instances[name].snapshots[baseline].get().json()["metadata"]
        power = snap["config"].get(POWER_KEY) or power
        lxdapi.restore_snapshot(client, name, baseline)
        done.append(f"restored {name} from {baseline}")
    else:
        done.append(f"{name}: the dead session's baseline {baseline} is gone (expired?): not restored")
    for snapshot in lxdapi.owned_snapshots(client, name, holder):
        try:
            lxdapi.delete_owned_snapshot(client, name, snapshot, holder)
        except (NotFound, OwnershipError):
            continue  # another session recovering at the same moment got there first
        done.append(f"deleted snapshot {name}/{snapshot}")
    record, etag = lxdapi.read_instance(client, name)
    if power in (lxdapi.RUNNING, lxdapi.STOPPED) and record["status"] != power:
        lxdapi.set_power(client, name, "start" if power == lxdapi.RUNNING else "stop")
        done.append(f"{'started' if power == lxdapi.RUNNING else 'stopped'} {name} as it was found")
        record, etag = lxdapi.read_instance(client, name)
    keep_mine = identity is not None
    changes: dict[str, str | None] = dict.fromkeys(SESSION_KEYS)
    if keep_mine:
        changes = {OWNER_KEY: identity.tag(), POWER_KEY: power}  # type: ignore[union-attr]
    lxdapi.update_config(client, name, record, etag, changes)
    if not keep_mine:
        done.append(f"removed the lxdsnap keys from {name}")
    return done


def mark_kept(client: pylxd.Client, name: str, until: float) -> None:
    """Turn one of this session's instances into a kept state: no session owns it, gc deletes it after
    ``until``."""
    while True:
        record, etag = lxdapi.read_instance(client, name)
        changes: dict[str, str | None] = {KEPT_KEY: f"{until:.0f}", CREATED_KEY: None, **dict.fromkeys(SESSION_KEYS)}
        if lxdapi.update_config(client, name, record, etag, changes):
            return


GARBAGE_NOUNS = {"snapshot": "snapshot", "project": "project", "lease": "profile"}  # the rest are instances


@dataclass
class Garbage:
    """One thing a dead session left: what it is, why it is garbage, and how to clean it."""

    kind: str  # created, held, kept, reuse (instances), snapshot, project or lease (a profile)
    name: str  # the instance, instance/snapshot, project or profile
    why: str
    clean: Callable[[], list[str]]

    @property
    def what(self) -> str:
        return f"{GARBAGE_NOUNS.get(self.kind, 'instance')} {self.name}"


def find_garbage(client: pylxd.Client, *, now: float | None = None) -> list[Garbage]:
    """Everything on the server that belongs to dead sessions (or kept states past their expiry)."""
    now = time.time() if now is None else now
    records = lxdapi.listing(client.api.instances)
    profiles = lxdapi.listing(client.api.profiles)
    leases = {p["name"]: p.get("config") or {} for p in profiles if p["name"].startswith(SESSION_PROFILE_PREFIX)}
    verdicts: dict[SessionIdentity, tuple[bool, str]] = {}

    def verdict(holder: SessionIdentity) -> tuple[bool, str]:
        if holder not in verdicts:
            config = leases.get(session_profile(holder), {})
            lease = config.get(LEASE_KEY) if holder.owns(config) else None
            verdicts[holder] = holder_is_dead(holder, lease, now)
        return verdicts[holder]

    found: list[Garbage] = []
    for record in records:
        name, config = record["name"], record["config"]
        kept = config.get(KEPT_KEY)
        if kept is not None:
            if float(kept or 0) < now:
                found.append(Garbage("kept", name, "a kept failed-test state past its expiry",
                                     _then(partial(lxdapi.delete_kept_instance, client, name),
                                           f"deleted kept instance {name}")))
            continue
        created = parse_tag(config.get(CREATED_KEY))
        if created is not None:
            dead, why = verdict(created)
            if dead:
                delete = partial(lxdapi.delete_owned_instance, client, name, created)
                found.append(Garbage("created", name, f"created by session {created.token} on {created.host}, "
                                     f"which is dead ({why})", _then(delete, f"deleted instance {name}")))
            continue
        owner = parse_tag(config.get(OWNER_KEY))
        if reuse.is_kept(record):
            if owner is None or verdict(owner)[0]:
                found.append(Garbage("reuse", name, "a declared container kept for reuse (--lxd-reuse)",
                                     _then(partial(reuse.delete_kept, client, name), f"deleted kept instance {name}")))
            continue
        if owner is not None:
            dead, why = verdict(owner)
            if dead:
                found.append(Garbage("held", name, f"held by session {owner.token} on {owner.host}, which is "
                                     f"dead ({why}): restore its baseline", lambda n=name, o=owner:
                                     recover_instance(client, n, o)))
                continue
        for snapshot in lxdapi.list_snapshots(client, name):
            tag = parse_tag((snapshot.get("config") or {}).get(OWNER_KEY))
            kept = is_kept_snapshot_name(snapshot["name"])  # LXD deletes those when they expire
            if tag is None or not is_plugin_snapshot_name(snapshot["name"]) or kept or tag == owner:
                continue
            dead, why = verdict(tag)
            if dead:
                found.append(Garbage("snapshot", f"{name}/{snapshot['name']}", f"of session {tag.token}, dead ({why})",
                                     _delete_snapshot(client, name, snapshot["name"], tag)))
    for project in projects.session_projects(client):
        creator = parse_tag(project["config"][CREATED_KEY])
        assert creator is not None
        dead, why = verdict(creator)
        if dead:
            found.append(Garbage("project", project["name"], f"of session {creator.token}, dead ({why}): delete "
                                 "its instances and the project", partial(projects.delete, client, project["name"],
                                                                         creator)))
    for profile, config in leases.items():
        holder = parse_tag(config.get(OWNER_KEY))
        if holder is not None and verdict(holder)[0]:
            found.append(Garbage("lease", profile, f"the lease of session {holder.token}, dead "
                                 f"({verdict(holder)[1]})", _then(partial(close_lease, client, holder),
                                                                  f"deleted profile {profile}")))
    return found



def _then(action: Callable[[], object], done: str) -> Callable[[], list[str]]:
    """A cleaning step: run ``action``, report ``done``."""
    def clean() -> list[str]:
        action()
        return [done]
    return clean


def _delete_snapshot(client: pylxd.Client, name: str, snapshot: str,
                     holder: SessionIdentity) -> Callable[[], list[str]]:
    def clean() -> list[str]:
        try:
            lxdapi.delete_owned_snapshot(client, name, snapshot, holder)
        except NotFound:
            return []
        return [f"deleted snapshot {name}/{snapshot}"]
    return clean
