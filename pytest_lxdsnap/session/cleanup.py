"""The end of a session: reset what is checked out, delete what it made, sweep what dead sessions left,
and look LXD over afresh for anything of its own that is still there."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pylxd.exceptions import NotFound

from pytest_lxdsnap.lxd import lxdapi, members, projects
from pytest_lxdsnap.lxd.lxdapi import FAULTS, describe
from pytest_lxdsnap.model import Leftover, Tracked
from pytest_lxdsnap.safety import claims, garbage, leases
from pytest_lxdsnap.safety.ownership import OWNER_KEY, POWER_KEY
from pytest_lxdsnap.session import resets
from pytest_lxdsnap.session import shared as sharedbases

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


def sweep_dead_sessions(s: LxdSession, also_held: list[str] | None = None) -> None:
    """Delete the instances (clones, declared containers, bases shared by workers now all gone) and leases of
    sessions that died without cleaning up; with ``also_held``, restore those existing instances if a dead
    session holds them."""
    try:
        found = garbage.find_garbage(s.client, s.identity)
    except FAULTS as exc:
        s.notices.append(f"looking for instances of dead sessions failed: {members.explain(s.client, exc)}; "
                         "run `lxdsnap gc`")
        return
    for item in found:
        held = item.kind == "held" and item.name in (also_held or [])
        if not (held or item.kind in ("created", "shared", "project", "lease")):
            continue
        try:
            s.notices.extend(f"{line} ({item.why})" for line in item.clean())
        except FAULTS as exc:
            s.notices.append(f"deleting {item.what} ({item.why}) failed: {describe(exc)}; run `lxdsnap gc`")


def finish(s: LxdSession, keep: Iterable[str] = ()) -> list[Leftover]:
    """Reset what is still checked out, delete what this session made (keeping broken ones for
    recovery), wait for the background work; what is left over."""
    if not s.connected:
        s.heartbeat.stopping.set()
        s.executor.shutdown(wait=True, cancel_futures=True)
        return []
    s.heartbeat.finishing = True  # baselines go now: the heartbeat only renews the lease
    s.closing.set()  # a background launch waiting for another worker's build gives up
    for future in s.launches.values():
        future.cancel()
    _give_back_checkouts(s)
    for tracked in s.tracked.values():
        if tracked.clones is not None:
            s.problems.extend(tracked.clones.close())
        if tracked.base_stopping is not None:
            tracked.base_stopping.exception()  # wait; a failed stop shows up in the delete below
    for tracked in s.tracked.values():
        try:
            problem = _settle(s, tracked, keep)
        except FAULTS as exc:
            problem = f"cleaning up {tracked.name!r} (instance {tracked.instance}): {describe(exc)}"
        if problem:
            s.problems.append(problem)
    s.executor.shutdown(wait=True, cancel_futures=True)
    _leave_shared(s, keep)  # after the launches' end: none is joining any more
    try:
        return _last_calls(s)
    except FAULTS as exc:
        s.problems.append(f"could not check LXD for leftovers: {members.explain(s.client, exc)}. Once LXD answers "
                          "again, `lxdsnap gc` restores and removes what this session left")
        return []
    finally:
        s.heartbeat.stop()


def _give_back_checkouts(s: LxdSession) -> None:
    """Reset the states kept for a next test of the same scope that never came."""
    for tracked in s.tracked.values():
        if tracked.current is not None:
            problem = resets.release_one(s, tracked.current)
            tracked.current = None
            if problem:
                s.problems.append(problem)


def _settle(s: LxdSession, tracked: Tracked, keep: Iterable[str]) -> str | None:
    """Leave one container as it should stay after the session; what went wrong, or None."""
    if tracked.shared_stopping is not None:
        tracked.shared_stopping.exception()  # wait; the shared base is left (and maybe deleted) after this
    if tracked.shared is not None and tracked.instance == tracked.shared.instance:
        return None  # clones only: nothing of this worker's own but the clones (closed) and its key (left later)
    if tracked.broken:  # its baseline stays for recovery
        return tracked.broken
    if tracked.kept:  # --lxd-reuse: leave it stopped at its baseline for the next run
        problem = resets.restore(s, tracked) if tracked.dirty else None
        if problem:
            return problem
        if lxdapi.status(s.own, tracked.instance) != lxdapi.STOPPED:
            lxdapi.set_power(s.own, tracked.instance, "stop")
        claims.release(s.own, tracked.instance, s.identity)
        return None
    if tracked.declared and tracked.name in keep:
        until = time.time() + s.snapshot_ttl
        claims.mark_kept(s.own, tracked.instance, until)
        s.kept.append(f"kept declared container {tracked.name!r} as instance {tracked.instance} (a cleanup hook "
                      f"asked; `lxdsnap gc` deletes it after {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))})")
        return None
    if tracked.declared:
        lxdapi.delete_owned_instance(s.own, tracked.instance, s.identity)
        return None
    if tracked.dirty:  # a readonly test (or an interrupted one) may have changed it
        if s.turns(tracked):
            claims.claim(s.client, tracked.instance, s.identity, wait=s.lease_wait)
        problem = resets.restore(s, tracked)
        if problem:
            return problem
    lxdapi.delete_owned_snapshot(s.client, tracked.instance, tracked.snapshot, s.identity)
    claims.release(s.client, tracked.instance, s.identity)
    return None


def _leave_shared(s: LxdSession, keep: Iterable[str]) -> None:
    """Leave each base this session shared with the run's other workers (the last user deletes it); a cleanup
    hook's wish to keep one is passed on when this worker has no base of its own for it."""
    keep = set(keep)
    for name, shared in s.joined.items():
        tracked = s.tracked.get(name)
        own = tracked is not None and tracked.instance != shared.instance
        try:
            s.kept.extend(sharedbases.leave(s, name, shared, keep=name in keep and not own))
        except FAULTS as exc:
            s.problems.append(f"leaving the shared base {shared.instance} of {name!r}: {describe(exc)}; "
                              "`lxdsnap gc` deletes it once no live session uses it")


def _last_calls(s: LxdSession) -> list[Leftover]:
    """Sweep, delete the session's project and lease, then look for leftovers."""
    sweep(s)
    if s.own_project is not None:
        s.notices.extend(line for line in projects.delete(s.client, s.own_project.project, s.identity)
                         if line.startswith("kept"))
    if s.planned:  # a peer that died meanwhile (a crashed xdist worker) left its instances too
        sweep_dead_sessions(s, also_held=[t.instance for t in s.tracked.values() if not t.declared])
    s.heartbeat.stop()  # alive until here: our last change is done
    leases.close_lease(s.client, s.identity)
    return leftovers(s)


def sweep(s: LxdSession) -> None:
    """Delete any instance this session created that is still there (a launch cut short by Ctrl-C)."""
    broken = {t.instance for t in s.tracked.values() if t.broken}
    client = s.own_project or s.client
    for name in lxdapi.owned_instances(client, s.identity):
        if name in broken:
            continue
        try:
            lxdapi.delete_owned_instance(client, name, s.identity)
        except FAULTS as exc:
            s.problems.append(f"deleting instance {name}: {describe(exc)}")


def leftovers(s: LxdSession) -> list[Leftover]:
    """Everything of this session's that LXD still holds, looked up afresh."""
    client, found = s.client, []
    for name in lxdapi.owned_instances(s.own_project or client, s.identity):
        found.append(Leftover(name, f"instance {name}"))
    if s.own_project is not None and s.own_project.project in {p["name"] for p in projects.session_projects(client)}:
        if not lxdapi.listing(s.own_project.api.instances, recursion=False):  # else it holds kept states
            found.append(Leftover("session", f"project {s.own_project.project}"))
    for name, shared in s.joined.items():
        left = sharedbases.still_used(s, shared)
        if left:
            found.append(Leftover(name, left))
    for tracked in s.tracked.values():
        if tracked.declared and not tracked.kept:
            continue
        where = s.client_for(tracked.name)
        try:
            config = lxdapi.get_instance(where, tracked.instance)["config"]
        except NotFound:
            continue
        for snap in lxdapi.owned_snapshots(where, tracked.instance, s.identity):
            found.append(Leftover(tracked.name, f"snapshot {tracked.instance}/{snap}"))
        if s.identity.owns(config, lxdapi.where(where, tracked.instance)):
            found.append(Leftover(tracked.name, f"config key {OWNER_KEY} on {tracked.instance}"))
        elif OWNER_KEY not in config and POWER_KEY in config:
            found.append(Leftover(tracked.name, f"config key {POWER_KEY} on {tracked.instance}"))
    if leases.lease_of(client, s.identity)[0] is not None:
        found.append(Leftover("session", f"profile {leases.profile_name(s.identity)}"))
    return found
