"""Bases shared by several sessions (the pytest-xdist workers of one run): who uses one, and who may delete it.

A shared base is ``lxdsnap-<name>-r<key>`` (the key hashes the run's id and the declaration), marked with
``user.lxdsnap.shared`` bound to it; a ``--lxd-reuse`` build that workers share is marked as a kept build.
Each session that uses one writes its tag under ``user.lxdsnap.shared.user.<token>``; the builder holds
``user.lxdsnap.building`` until the baseline exists. Every change is a compare-and-swap on the instance's
config (If-Match), so of a session joining and the last user leaving, exactly one wins:

* the last live user to leave removes its key, drops dead users' keys and writes ``user.lxdsnap.shared.closing``
  (its tag) in one write, then deletes the instance; a session that finds the closing key waits until the
  instance is gone (or, if the closer died, finishes the deletion) and builds a new one;
* nobody deletes a base while a session whose tag is on it (user, builder or closer) is alive, judged as
  everywhere else by :func:`~pytest_lxdsnap.safety.ownership.holder_is_dead` (a live session is never judged
  dead); ``lxdsnap gc`` and every session's sweep delete one whose sessions are all dead.

No pytest here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.errors import OwnershipError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety import leases
from pytest_lxdsnap.safety.ownership import (
    BUILDING_KEY,
    CLOSING_KEY,
    CREATED_KEY,
    INSTANCE_PREFIX,
    REUSE_KEY,
    SHARED_USER_PREFIX,
    SessionIdentity,
    holder_at,
    holder_is_dead,
    shared_run,
)

Verdict = Callable[[SessionIdentity], tuple[bool, str]]
"""Whether a session is dead, and why (see holder_is_dead)."""


def user_key(identity: SessionIdentity) -> str:
    """The config key under which ``identity`` says it uses a shared base."""
    return f"{SHARED_USER_PREFIX}{identity.token}"


def users(config: dict[str, str], where: str) -> dict[str, SessionIdentity]:
    """The sessions using the shared base ``where`` (their keys bound to it; a copy's keys are not)."""
    found = {}
    for key in config:
        if key.startswith(SHARED_USER_PREFIX):
            holder = holder_at(config, where, key)
            if holder is not None and key == user_key(holder):
                found[key] = holder
    return found


def holders(config: dict[str, str], where: str) -> list[SessionIdentity]:
    """Every session with a say on the shared base: its users, its builder and its closer."""
    found = list(users(config, where).values())
    for key in (BUILDING_KEY, CLOSING_KEY):
        holder = holder_at(config, where, key)
        if holder is not None:
            found.append(holder)
    return found


def by_leases(client: pylxd.Client) -> Verdict:
    """Judge sessions afresh (each call looks again): by proof from this machine where there is one, else by
    their leases on ``client``'s server."""
    def verdict(holder: SessionIdentity) -> tuple[bool, str]:
        if holder.local_evidence() is not None:  # the lease would not change the verdict: spare the request
            return holder_is_dead(holder, None, 0.0)
        lease, now = leases.lease_of(client, holder)
        return holder_is_dead(holder, lease, now)
    return verdict


def live(config: dict[str, str], where: str, verdict: Verdict, besides: SessionIdentity | None = None
         ) -> list[SessionIdentity]:
    """The sessions other than ``besides`` that have a say on the shared base and are alive."""
    return [h for h in holders(config, where) if h != besides and not verdict(h)[0]]


def is_shared_base(record: dict[str, Any], where: str) -> bool:
    """A base the workers of one run share: the plugin's prefix, the shared key bound here, no session's
    created tag (a clone or a worker's own copy carries one)."""
    config = record.get("config") or {}
    return (record["name"].startswith(INSTANCE_PREFIX) and shared_run(config, where) is not None
            and CREATED_KEY not in config)


def close(client: pylxd.Client, name: str, identity: SessionIdentity, verdict: Verdict, *,
          unused: bool = True, still: Callable[[dict[str, Any]], bool] | None = None, leaving: bool = True) -> bool:
    """Write ``identity`` as the closer of ``name`` (dropping the users' keys) if no other live session has a
    say on it (with ``unused=False`` its users do not count: a build cut short is of no use to them) and
    ``still(record)`` holds; whether it did. Nobody joins it afterwards. ``leaving``: ``identity`` itself is
    done with it; else (a sweep or gc) its own tags on the base count like anyone's."""
    where = lxdapi.where(client, name)
    lxdapi.settle(client, name)  # a dead builder's create may still run: a write meanwhile breaks it (Incus 6.0)
    while True:
        try:
            record, etag = lxdapi.read_instance(client, name)
        except NotFound:
            return False
        config = record["config"]
        if still is not None and not still(record):
            return False
        others = live(config, where, verdict, besides=identity if leaving else None)
        if unused and others:
            return False
        if not unused and any(holder_at(config, where, key) in others for key in (BUILDING_KEY, CLOSING_KEY)):
            return False
        drop: dict[str, str | None] = {**dict.fromkeys(users(config, where)), BUILDING_KEY: None}
        if lxdapi.update_config(client, name, record, etag, {**drop, CLOSING_KEY: identity.tag(where)}):
            return True


def delete_closed(client: pylxd.Client, name: str, identity: SessionIdentity) -> None:
    """Delete a shared base (or a kept build) that ``identity`` closed; refuses any other instance."""
    record = lxdapi.get_instance(client, name)
    config, where = record["config"], lxdapi.where(client, name)
    shared = shared_run(config, where) is not None or REUSE_KEY in config
    if (not name.startswith(INSTANCE_PREFIX) or not shared or CREATED_KEY in config
            or holder_at(config, where, CLOSING_KEY) != identity):
        raise OwnershipError(f"refusing to delete instance {name!r}: it is not a shared lxdsnap base this "
                             "session closed")
    lxdapi.purge_exec_logs(client, name)
    lxdapi.stop_and_delete(client, name, record["status"])


def delete_abandoned(client: pylxd.Client, name: str, identity: SessionIdentity) -> list[str]:
    """Delete a shared base whose sessions are all dead (gc, a session's sweep); what was done. A session that
    joined it since it was found keeps it."""
    if not close(client, name, identity, by_leases(client), leaving=False):  # the sweeping session may use it
        return []
    delete_closed(client, name, identity)
    return [f"deleted instance {name}"]
