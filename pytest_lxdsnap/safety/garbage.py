"""What dead sessions left, found on the whole server: ``lxdsnap gc`` and each session's start-up sweep.

A dead session's created instances and projects are deleted, its lease profile too, and an existing
instance it held is recovered (claimed first, its current state kept as a snapshot, then restored from
the dead session's baseline). A *foreign copy* — an instance that carries lxdsnap keys or snapshots
written for another instance (``lxc copy`` of a held container or a clone) — is never the plugin's: gc
lists it with the commands that clean it, and cleans it only when asked (``lxdsnap gc --foreign``).
No pytest here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.errors import OwnershipError
from pytest_lxdsnap.lxd import lxdapi, members, projects
from pytest_lxdsnap.safety import claims, leases, sharing
from pytest_lxdsnap.safety.ownership import (
    CLOSING_KEY,
    CREATED_KEY,
    KEPT_KEY,
    LEGACY,
    OWNER_KEY,
    RECOVERING_KEY,
    SessionIdentity,
    foreign_keys,
    holder_at,
    holder_is_dead,
    is_kept_snapshot_name,
    is_plugin_snapshot_name,
    kept_until,
    read_tag,
)
from pytest_lxdsnap.session import reuse

GARBAGE_NOUNS = {"snapshot": "snapshot", "project": "project", "lease": "profile"}  # the rest are instances


@dataclass
class Garbage:
    """One thing a dead session left: what it is, why it is garbage, and how to clean it."""

    kind: str  # created, held, kept, reuse, shared, foreign, offline (instances), snapshot, project or lease
    name: str  # the instance, instance/snapshot, project or profile
    why: str
    clean: Callable[[], list[str]]

    @property
    def what(self) -> str:
        return f"{GARBAGE_NOUNS.get(self.kind, 'instance')} {self.name}"


def find_garbage(client: pylxd.Client, identity: SessionIdentity) -> list[Garbage]:
    """Everything on the server that belongs to dead sessions (or kept states past their expiry), and the
    foreign copies; ``identity`` (the caller, holding a lease) claims what it recovers."""
    now = lxdapi.server_now(client)
    records = lxdapi.listing(client.api.instances)
    profiles = lxdapi.listing(client.api.profiles)
    lease_by_holder = leases.leases_in(profiles)
    verdicts: dict[SessionIdentity, tuple[bool, str]] = {}

    def verdict(holder: SessionIdentity) -> tuple[bool, str]:
        if holder not in verdicts:
            verdicts[holder] = holder_is_dead(holder, lease_by_holder.get(holder), now)
        return verdicts[holder]

    found: list[Garbage] = []
    for record in records:
        if members.on_offline_member(record):
            found.append(Garbage("offline", record["name"], f"on cluster member {record.get('location')!r}, which "
                                 "is offline: not looked at. Run `lxdsnap gc` again once it is back", lambda: []))
            continue
        found.extend(_instance_garbage(client, identity, record, verdict, now))
    for project in projects.session_projects(client):
        creator = projects.creator(project)
        assert creator is not None  # session_projects() lists only those
        dead, why = verdict(creator)
        if dead:
            found.append(Garbage("project", project["name"], f"of session {creator.token}, dead ({why}): delete "
                                 "its instances and the project", partial(projects.delete, client, project["name"],
                                                                         creator)))
    for holder in lease_by_holder:
        dead, why = verdict(holder)
        if dead:
            profile = leases.profile_name(holder)
            found.append(Garbage("lease", profile, f"the lease of session {holder.token}, dead ({why})",
                                 _then(partial(leases.close_lease, client, holder), f"deleted profile {profile}")))
    return found


def _instance_garbage(client: pylxd.Client, identity: SessionIdentity, record: dict[str, Any],
                      verdict: Callable[[SessionIdentity], tuple[bool, str]], now: float) -> list[Garbage]:
    name, config = record["name"], record["config"] or {}
    where = lxdapi.where(client, name)
    foreign = foreign_keys(config, where)
    try:
        snapshots = lxdapi.list_snapshots(client, name)  # once: an instance's snapshots are read for both checks
    except NotFound:  # deleted since the listing (a live session retiring a clone): nothing left to collect
        return []
    stale = [s["name"] for s in snapshots if _is_foreign_snapshot(s, where)]
    copies = []
    if foreign or stale:
        what = ", ".join([*(f"key {k}" for k in foreign), *(f"snapshot {s}" for s in stale)])
        copies.append(Garbage("foreign", name, f"it carries lxdsnap's {what}, written for another instance (a "
                              "copy): left alone. Clean it with `lxdsnap gc --foreign`, or by hand: "
                              + _foreign_commands(client, name, foreign, stale), partial(clean_foreign, client, name)))
    if foreign:
        return copies  # nothing on it is any session's
    return copies + _owned_garbage(client, identity, record, snapshots, verdict, now)


def _owned_garbage(client: pylxd.Client, identity: SessionIdentity, record: dict[str, Any],
                   snapshots: list[dict[str, Any]], verdict: Callable[[SessionIdentity], tuple[bool, str]],
                   now: float) -> list[Garbage]:
    name, config = record["name"], record["config"] or {}
    where = lxdapi.where(client, name)
    kept = config.get(KEPT_KEY)
    if kept is not None:
        until = kept_until(config, where)
        if until is not None and until < now:
            return [Garbage("kept", name, "a kept failed-test state past its expiry",
                            _then(partial(lxdapi.delete_kept_instance, client, name), f"deleted kept instance {name}"))]
        return []
    created = holder_at(config, where, CREATED_KEY)
    if created is not None:
        dead, why = verdict(created)
        if not dead:
            return []
        return [Garbage("created", name, f"created by session {created.token} on {created.host}, which is dead "
                        f"({why})", _then(partial(lxdapi.delete_owned_instance, client, name, created),
                                          f"deleted instance {name}"))]
    if sharing.is_shared_base(record, where):
        if any(not verdict(holder)[0] for holder in sharing.holders(config, where)):
            return []  # a live worker still uses it (or is building or deleting it)
        return [Garbage("shared", name, "a declared container's base shared by pytest-xdist workers that are all "
                        "gone", partial(sharing.delete_abandoned, client, name, identity))]
    owner = holder_at(config, where)
    if reuse.is_kept(record):
        if all(verdict(holder)[0] for holder in [*sharing.holders(config, where), *([owner] if owner else [])]):
            return [Garbage("reuse", name, "a declared container kept for reuse (--lxd-reuse)",
                            partial(_delete_kept_build, client, name, owner, identity))]
        return []
    if owner is not None and verdict(owner)[0]:
        return [Garbage("held", name, f"held by session {owner.token} on {owner.host}, which is dead "
                        f"({verdict(owner)[1]}): restore its baseline",
                        partial(claims.recover_instance, client, name, owner, identity, keep=False))]
    found = []
    for snapshot in snapshots:
        tag = holder_at(snapshot.get("config") or {}, where)
        if tag is None or not is_plugin_snapshot_name(snapshot["name"]) or is_kept_snapshot_name(snapshot["name"]):
            continue  # LXD deletes kept ones when they expire
        if tag == owner or tag == holder_at(config, where, RECOVERING_KEY):
            continue  # the holder's own, or the baseline a live recovery is putting back
        dead, why = verdict(tag)
        if dead:
            found.append(Garbage("snapshot", f"{name}/{snapshot['name']}", f"of session {tag.token}, dead ({why})",
                                 _delete_snapshot(client, name, snapshot["name"], tag)))
    return found


def _is_foreign_snapshot(snapshot: dict[str, Any], where: str) -> bool:
    """A plugin snapshot whose tag was written for another instance (it came with a copy)."""
    tag = read_tag((snapshot.get("config") or {}).get(OWNER_KEY))
    return is_plugin_snapshot_name(snapshot["name"]) and tag is not None and tag.where not in (where, LEGACY)


def _foreign_commands(client: pylxd.Client, name: str, keys: list[str], snapshots: list[str]) -> str:
    cmd = claims.commands_for(client)
    lines = [cmd(f"config unset {name} {key}") for key in keys]
    lines += [cmd.delete_snapshot(name, snapshot) for snapshot in snapshots]
    return "; ".join(f"`{line}`" for line in lines)


def clean_foreign(client: pylxd.Client, name: str) -> list[str]:
    """Remove from a foreign copy the lxdsnap keys and plugin snapshots written for another instance."""
    where = lxdapi.where(client, name)
    done = []
    while True:
        record, etag = lxdapi.read_instance(client, name)
        keys = foreign_keys(record["config"], where)
        if not keys or lxdapi.update_config(client, name, record, etag, dict.fromkeys(keys)):
            break
    done += [f"removed {key} from {name}" for key in keys]
    for snapshot in lxdapi.list_snapshots(client, name):
        if _is_foreign_snapshot(snapshot, where):
            node: Any = client.api.instances[name].snapshots[snapshot["name"]]
            lxdapi.when_idle(partial(_delete_node, client, node))
            done.append(f"deleted snapshot {name}/{snapshot['name']} (written for another instance)")
    return done


def _delete_kept_build(client: pylxd.Client, name: str, owner: SessionIdentity | None,
                       identity: SessionIdentity) -> list[str]:
    """Take a kept build (If-Match, from the dead holder or nobody, as gc found it, and closing it to the
    pytest-xdist workers that share kept builds), then delete it: a session that claimed or joined it since gc
    looked keeps it."""
    where = lxdapi.where(client, name)
    record, etag = lxdapi.read_instance(client, name)
    if holder_at(record["config"], where) != owner or sharing.live(record["config"], where, sharing.by_leases(client)):
        return []
    config = {k: v for k, v in record["config"].items() if k not in sharing.users(record["config"], where)}
    config.update({OWNER_KEY: identity.tag(where), CLOSING_KEY: identity.tag(where)})
    if not lxdapi.put_instance(client, name, record, etag, config=config):
        return []
    reuse.delete_kept(client, name)
    return [f"deleted kept instance {name}"]


def _delete_node(client: pylxd.Client, node: Any) -> None:
    lxdapi.wait(client, node.delete())


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
        except (NotFound, OwnershipError):
            return []
        return [f"deleted snapshot {name}/{snapshot}"]
    return clean
