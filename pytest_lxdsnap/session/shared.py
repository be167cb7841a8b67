"""pytest-xdist: the workers of one run share each declared container's base, built and provisioned once.

The base is ``lxdsnap-<name>-r<key>``, the key a hash of the run's id (xdist's ``testrunuid``, the same in every
worker of a run) and of the declaration (:func:`~pytest_lxdsnap.session.reuse.declaration_hash`), so the workers
find the same instance and a changed declaration never meets an old build; with ``--lxd-reuse`` it is the kept
build itself, shared the same way. The first worker to create it builds it (``user.lxdsnap.building`` holds its
tag until the baseline snapshot exists); the others record themselves as its users (once it runs: never during its
create operation) and wait, showing what they wait for as the launch's stage. Every worker then copies its own
clones from the shared baseline, named after itself (``lxdsnap-<name>-<token>-<n>``). Tests that reset in place
(inplace, recipe, readonly) never touch the shared base: they get a copy of the shared baseline of their worker's
own (``lxdsnap-<name>-<token>``, with its own baseline snapshot), so the base only ever has its one snapshot and
is never restored — which also keeps ZFS's "only the latest snapshot restores" out of the way. At the end each
worker leaves: the last live user deletes the base, or leaves a kept build stopped at its baseline (who may
delete, and how a dead user is told from a live one: :mod:`pytest_lxdsnap.safety.sharing`).

With a ``target`` list that spreads the workers over cluster members, the workers share per member: each member
gets a base of its own (the member is part of the run key), built by the first of its workers, so every clone is a
copy beside its base and never a migration between members.

Not shared (each worker builds its own, as without xdist): with ``--lxd-project auto`` (each worker has a
project of its own), and for a declaration with a ``target`` list when the build is kept (``--lxd-reuse``) or
the cluster is Incus: on an Incus 6.0 cluster (``dir`` pools) the first clone a joining worker copied from a
base shared per member failed to start ("Failed to handle idmapped storage: No such file or directory:
.../rootfs"), every time, while the builder's clones started; not understood yet.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from pylxd.exceptions import NotFound

from pytest_lxdsnap.declarations import ContainerSpec
from pytest_lxdsnap.errors import LxdSnapError, OwnershipError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.lxdapi import FAULTS, describe
from pytest_lxdsnap.model import Shared, Tracked
from pytest_lxdsnap.safety import sharing
from pytest_lxdsnap.safety.ownership import (
    BASELINE_LABEL,
    BUILDING_KEY,
    CLOSING_KEY,
    CREATED_KEY,
    INSTANCE_PREFIX,
    OWNER_KEY,
    REUSE_SNAPSHOT,
    SHARED_FAILED_KEY,
    SHARED_KEEP_KEY,
    SHARED_KEY,
    SHARED_SNAPSHOT,
    SessionIdentity,
    holder_at,
    kept_config,
    shared_marker,
    shared_run,
)
from pytest_lxdsnap.session import reuse

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession

RUN_KEY_LENGTH = 8
"""Hex digits of the run key: ``r`` + these are no longer than a worker's session token (``gw0`` + 6)."""
POLL = 0.1
"""Seconds between looks while waiting for another worker's build or deletion."""
FAILURE_LENGTH = 4000
"""Characters of a failed build's error kept on the base for the workers waiting for it."""


def applies(s: LxdSession, spec: ContainerSpec) -> bool:
    """Whether the workers of this run share ``spec``'s base (see the module's docstring for when not)."""
    per_member = not s.options.lxd_reuse and not s.commands.incus  # Incus 6.0: see the module's docstring
    return s.run is not None and not s.auto_project and (len(spec.targets) <= 1 or per_member)


def sharers(s: LxdSession, spec: ContainerSpec) -> int:
    """How many workers of the run share this worker's base of ``spec``: all of them, or those on its member."""
    if len(spec.targets) <= 1:
        return s.run_workers
    return sum(1 for w in range(s.run_workers) if spec.target_for(w) == spec.target_for(s.worker))


def base_name(spec: ContainerSpec, run: str, digest: str, member: str | None = None) -> tuple[str, str]:
    """The shared base's instance name for this run and declaration (and cluster member, when the workers are
    spread over several), and the run key in it."""
    place = f":{member}" if member is not None else ""
    key = hashlib.sha256(f"{run}:{digest}{place}".encode()).hexdigest()[:RUN_KEY_LENGTH]
    return f"{INSTANCE_PREFIX}{spec.name}-r{key}", key


def who(holder: SessionIdentity) -> str:
    """A session as the waiting line names it: its pytest-xdist worker when it is one."""
    worker = re.fullmatch(r"(gw\d+)[0-9a-f]{6}", holder.token)  # the session token under xdist: worker + 6 hex
    return f"worker {worker.group(1)}" if worker else f"session {holder.token}"


def copy_body(shared: Shared, name: str, profiles: tuple[str, ...], identity: SessionIdentity, where: str
              ) -> dict[str, Any]:
    """Create request for a worker's own copy of the shared baseline (its clones are made alike, in ClonePool):
    the session's tags, and none of the shared base's keys (an empty value keeps LXD from copying one)."""
    tag = identity.tag(where)
    return {"name": name, "type": "container", "profiles": list(profiles),
            "source": {"type": "copy", "source": shared.source, "instance_only": True},
            "config": {**dict.fromkeys(shared.blank, ""), CREATED_KEY: tag, OWNER_KEY: tag}}


def launch(s: LxdSession, spec: ContainerSpec) -> Tracked:
    """Join (or build) the base the run's workers share for ``spec``; this worker's Tracked for it."""
    client = s.own
    digest = reuse.declaration_hash(client, spec)
    kept = s.options.lxd_reuse
    if kept:
        instance, snapshot, marks = reuse.kept_name(spec, digest), REUSE_SNAPSHOT, reuse.kept_tags(spec, digest)
        for old in reuse.stale(client, spec, instance):
            if sharing.close(client, old, s.identity, sharing.by_leases(client), leaving=False):
                sharing.delete_closed(client, old, s.identity)
                s.notices.append(f"deleted {old}: the declaration of {spec.name!r} changed since it was built")
    else:
        member = spec.target_for(s.worker) if len(spec.targets) > 1 else None
        instance, key = base_name(spec, s.run or "", digest, member)
        snapshot, marks = SHARED_SNAPSHOT, {SHARED_KEY: shared_marker(key, lxdapi.where(client, instance))}
    with s.shared_lock:
        s.joined[spec.name] = Shared(instance, snapshot, kept)  # from now on finish() leaves it, whatever happens
    built = join(s, spec, Shared(instance, snapshot, kept), marks)
    record = lxdapi.get_instance(client, instance)
    stopping = _stop_once_all_joined(s, record, sharers(s, spec))
    pool, driver = lxdapi.root_pool(client, record)
    baseline = client.api.instances[instance].snapshots[snapshot].get().json()["metadata"]
    blank = tuple(sorted(k for k in baseline.get("config") or {} if k.startswith("user.lxdsnap.")))
    if built is None:  # built by another worker or run: push its expiry on, as the heartbeat does later
        lxdapi.extend_snapshot_expiry(client, instance, snapshot, s.snapshot_ttl)
    tracked = Tracked(spec.name, instance, True, snapshot, True, time.monotonic(), pool, driver, built or 0.0,
                      base_running=False, shared=Shared(instance, snapshot, kept, blank), shared_stopping=stopping)
    if built is None and kept:
        s.notices.append(f"reusing {instance} for {spec.name!r} (its declaration is unchanged)")
    if any(s.strategy_for(tracked, r) != "clone" for r in s.planned.get(spec.name, [])):
        own_copy(s, tracked)  # now, in the background, rather than in the first in-place test
    return tracked


def join(s: LxdSession, spec: ContainerSpec, shared: Shared, marks: dict[str, str]) -> float | None:
    """Become a user of the shared base, building it if nobody has; the baseline snapshot's seconds if this
    session built it, else None."""
    client, me, instance = s.own, s.identity, shared.instance
    where, mine = lxdapi.where(client, instance), sharing.user_key(me)
    verdict = sharing.by_leases(client)
    while True:
        if s.closing.is_set():
            raise LxdSnapError(f"the session ended while container {spec.name!r} was being prepared")
        try:
            record, etag = lxdapi.read_instance(client, instance)
        except NotFound:
            if _create(s, spec, instance, {**marks, BUILDING_KEY: me.tag(where), mine: me.tag(where)}):
                return _build(s, spec, shared)
            continue
        try:
            if _step(s, spec, shared, record, etag, verdict):
                return None
        except NotFound:
            continue  # deleted meanwhile (its last user, or a sweep that found every session on it dead): again


def _step(s: LxdSession, spec: ContainerSpec, shared: Shared, record: dict[str, Any], etag: str,
          verdict: sharing.Verdict) -> bool:
    """One look at the existing shared base: True when this session is its user and its baseline exists, else
    one step towards that (wait, register, or clear away a build cut short)."""
    client, me, instance = s.own, s.identity, shared.instance
    where, mine = lxdapi.where(client, instance), sharing.user_key(me)
    config = record["config"]
    if not _is_ours(s, spec, shared, record, where):
        raise OwnershipError(
            f"instance {instance!r} exists but is not {'the kept build' if shared.kept else 'the shared base'} "
            f"of declared container {spec.name!r} for this run: it was left alone. Delete or rename it "
            f"({s.commands(f'delete --force {instance}')}) if it is not yours")
    closer = holder_at(config, where, CLOSING_KEY)
    if closer is not None:  # its last user is deleting it: wait, then build a new one
        if verdict(closer)[0] and sharing.close(client, instance, me, verdict):
            sharing.delete_closed(client, instance, me)  # the closer died half-way: finish its work
        else:
            _wait(s, spec, f"waiting while {who(closer)} deletes an earlier build")
        return False
    failed = config.get(SHARED_FAILED_KEY)
    if failed is not None:
        raise LxdSnapError(f"building declared container {spec.name!r} (instance {instance}) failed in another "
                           f"pytest-xdist worker: {failed}")
    registered = sharing.users(config, where).get(mine) == me
    if not registered and (record["status"] == lxdapi.RUNNING  # started, or snapshotted: created
                           or reuse.has_baseline(client, instance, shared.snapshot)):
        # Never write while the builder's create operation runs: Incus 6.0 breaks an instance whose config
        # is written while it is being created from its image (its start and delete then fail).
        lxdapi.update_config(client, instance, record, etag, {mine: me.tag(where)})
        return False  # written, or changed meanwhile: look again
    if not reuse.has_baseline(client, instance, shared.snapshot):
        builder = holder_at(config, where, BUILDING_KEY)
        if builder is not None and builder != me and not verdict(builder)[0]:
            _wait(s, spec, f"waiting for {who(builder)} to build it")
            return False
        # no baseline and nobody building it (the builder died): delete the remains, then build it again
        def cut_short(record: dict[str, Any]) -> bool:
            return not reuse.has_baseline(client, instance, shared.snapshot)
        if sharing.close(client, instance, me, verdict, unused=False, still=cut_short):
            sharing.delete_closed(client, instance, me)
            gone = who(builder) if builder else "its builder"
            s.notices.append(f"deleted {instance}: its build was cut short ({gone} is gone)")
        return False
    return True


def _wait(s: LxdSession, spec: ContainerSpec, stage: str) -> None:
    s.stages[spec.name] = stage
    s.closing.wait(POLL)


def _is_ours(s: LxdSession, spec: ContainerSpec, shared: Shared, record: dict[str, Any], where: str) -> bool:
    if shared.kept:
        return reuse.belongs(record, spec.name)
    run = shared_run(record.get("config") or {}, where)
    return sharing.is_shared_base(record, where) and shared.instance.endswith(f"-r{run}")


def _create(s: LxdSession, spec: ContainerSpec, instance: str, tags: dict[str, str]) -> bool:
    """Create the shared base with this session as its builder; False when another session created it first."""
    from pytest_lxdsnap.session import launch  # launch imports this module

    try:
        launch.create(s, spec, instance, tags)
    except LxdSnapError:
        if lxdapi.instance_exists(s.own, instance):
            return False  # LXD refused a second instance of that name: join the first
        raise
    return True


def _build(s: LxdSession, spec: ContainerSpec, shared: Shared) -> float:
    """Provision and snapshot the base this session created, then hand it to the others."""
    from pytest_lxdsnap.session import launch

    client, instance = s.own, shared.instance
    try:
        seconds = launch.prepare(s, spec, instance,
                                 lambda: reuse.take_baseline(client, instance, s.snapshot_ttl, shared.snapshot))
    except BaseException as exc:
        failure = (str(exc) if isinstance(exc, LxdSnapError) else describe(exc)) or type(exc).__name__
        try:  # tell the waiting workers why; the last user to leave deletes it
            lxdapi.set_config_keys(client, instance, {SHARED_FAILED_KEY: failure[:FAILURE_LENGTH], BUILDING_KEY: None})
        except FAULTS:
            pass  # it stays ours to leave: finish() does, and the others see a dead builder
        raise
    lxdapi.set_config_keys(client, instance, {BUILDING_KEY: None})
    return seconds


def _stop_once_all_joined(s: LxdSession, record: dict[str, Any], workers: int) -> Future[None] | None:
    """Clones copy the baseline snapshot, so the running base only costs memory, and its stop at the end costs
    the last user time: stop it in the background once every worker of the run has joined. Not before: a
    stop holds LXD's lock on the instance, and a worker joining meanwhile would wait for it to write its key."""
    client, name = s.own, record["name"]
    where = lxdapi.where(client, name)
    if (record["status"] != lxdapi.RUNNING or len(sharing.users(record["config"], where)) < workers
            or holder_at(record["config"], where) is not None):  # a --lxd-reuse session without xdist uses it
        return None
    future: Future[None] = Future()

    def stop() -> None:  # on a thread of its own: finish() may be shutting the session's executor down
        try:
            if lxdapi.status(client, name) == lxdapi.RUNNING:
                lxdapi.set_power(client, name, "stop")
        except FAULTS:
            pass  # another worker stopped it first, or it is gone: its last user stops and deletes it anyway
        future.set_result(None)

    threading.Thread(target=stop, name="lxdsnap-shared-stop", daemon=True).start()
    return future


def own_copy(s: LxdSession, tracked: Tracked) -> None:
    """Give ``tracked`` a base of this worker's own for in-place tests: a copy of the shared baseline, started,
    checked, with its own baseline snapshot (the shared base is never restored: other workers copy it)."""
    shared, spec, client = tracked.shared, s.specs[tracked.name], s.own
    assert shared is not None
    name = f"{INSTANCE_PREFIX}{spec.name}-{s.identity.token}"
    snapshot = s.identity.snapshot_name(BASELINE_LABEL)
    s.stages[spec.name] = "copying the shared baseline for in-place tests"
    lxdapi.create_instance(client, copy_body(shared, name, spec.profiles, s.identity, lxdapi.where(client, name)),
                           target=lxdapi.location(client, shared.instance))
    try:
        lxdapi.set_power(client, name, "start")
        s.check_ready(spec.name, name)
        start = time.perf_counter()
        lxdapi.create_owned_snapshot(client, name, snapshot, s.identity, s.snapshot_ttl)
    except BaseException:
        lxdapi.delete_owned_instance(client, name, s.identity)
        raise
    tracked.snapshot_seconds = time.perf_counter() - start
    tracked.instance, tracked.snapshot, tracked.extended = name, snapshot, time.monotonic()
    tracked.running = tracked.base_running = True


def leave(s: LxdSession, name: str, shared: Shared, *, keep: bool = False) -> list[str]:
    """This session no longer uses the shared base: remove its key; the last live user deletes the base (keeps
    it, when a cleanup hook asked; leaves a kept build stopped at its baseline). What was kept, if anything."""
    client, me, instance = s.own, s.identity, shared.instance
    where, mine = lxdapi.where(client, instance), sharing.user_key(me)
    verdict = sharing.by_leases(client)
    while True:
        try:
            record, etag = lxdapi.read_instance(client, instance)
        except NotFound:
            return []
        config = record["config"]
        if holder_at(config, where, CLOSING_KEY) is not None or not _is_ours(s, s.specs[name], shared, record, where):
            return []  # someone else is deleting it (or it is no longer a shared base)
        if sharing.live(config, where, verdict, besides=me):  # others still use it: just go
            changes: dict[str, str | None] = {mine: None, **({SHARED_KEEP_KEY: "true"} if keep else {})}
            if holder_at(config, where, BUILDING_KEY) == me:
                changes[BUILDING_KEY] = None  # a build of ours that failed: the waiting workers see nobody at it
            if set(changes) == {mine} and mine not in config:
                return []
            if lxdapi.update_config(client, instance, record, etag, changes):
                return []
            continue
        if shared.kept and SHARED_FAILED_KEY not in config:  # a kept build outlives the run, stopped
            drop: dict[str, str | None] = {**dict.fromkeys(sharing.users(config, where)), BUILDING_KEY: None}
            if not lxdapi.update_config(client, instance, record, etag, drop):
                continue
            if holder_at(config, where) is None and record["status"] != lxdapi.STOPPED:
                lxdapi.set_power(client, instance, "stop")
            return []
        if keep or SHARED_KEEP_KEY in config:
            until = time.time() + s.snapshot_ttl
            keys = [k for k in config if k.startswith("user.lxdsnap.")]
            changes = {**dict.fromkeys(keys), **kept_config(until, where)}
            if lxdapi.update_config(client, instance, record, etag, changes):
                return [f"kept declared container {name!r} as instance {instance} (a cleanup hook asked; "
                        f"`lxdsnap gc` deletes it after {time.strftime('%Y-%m-%d %H:%M', time.localtime(until))})"]
            continue
        if sharing.close(client, instance, me, verdict):
            sharing.delete_closed(client, instance, me)
            return []
        # a session joined it meanwhile: look again (it is theirs to delete now)


def still_used(s: LxdSession, shared: Shared) -> str | None:
    """What of this session's is still on a shared base it left (its user key, or a deletion it began)."""
    client = s.own
    where = lxdapi.where(client, shared.instance)
    try:
        config = lxdapi.get_instance(client, shared.instance)["config"]
    except NotFound:
        return None
    if holder_at(config, where, CLOSING_KEY) == s.identity:
        return f"instance {shared.instance}"
    if sharing.users(config, where).get(sharing.user_key(s.identity)) == s.identity:
        return f"config key {sharing.user_key(s.identity)} on {shared.instance}"
    return None

