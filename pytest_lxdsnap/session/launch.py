"""Bringing a container into the session: adopt an existing instance (claim it, take its baseline), or
launch a declared one (create, start, provision, check, snapshot), kept between runs with --lxd-reuse."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from pylxd.exceptions import NotFound

from pytest_lxdsnap.declarations import FINGERPRINT, REMOTES, TABLE, ContainerSpec
from pytest_lxdsnap.errors import ConfigError, ContainerNotFound, LxdSnapError, ProvisionError
from pytest_lxdsnap.lxd import aptproxy, lxdapi, ports
from pytest_lxdsnap.lxd.execution import exec_command
from pytest_lxdsnap.lxd.identity import install_identity_templates
from pytest_lxdsnap.lxd.lxdapi import LXD_FAULTS, describe
from pytest_lxdsnap.model import Tracked
from pytest_lxdsnap.safety import claims, zfs
from pytest_lxdsnap.safety.ownership import (
    BASELINE_LABEL,
    BUILDING_KEY,
    CREATED_KEY,
    INSTANCE_PREFIX,
    OWNER_KEY,
    REUSE_SNAPSHOT,
)
from pytest_lxdsnap.session import reuse, shared

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


PROGRESS_TICK = 0.5  # seconds between progress reports while a test waits for a launch
# config keys LXD and Incus name differently: key -> (whose name it is, the other daemon's name)
RENAMED_KEYS = {
    "security.devlxd": ("LXD", "security.guestapi"),
    "security.devlxd.images": ("LXD", "security.guestapi.images"),
    "security.guestapi": ("Incus", "security.devlxd"),
    "security.guestapi.images": ("Incus", "security.devlxd.images"),
}


def space_hint(s: LxdSession, name: str, exc: BaseException) -> str:
    """When LXD ran out of space: which pool, and what to do."""
    if "no space left" not in describe(exc).lower():
        return ""
    pool: str | None
    try:
        client = s.client_for(name)
        pool, _ = lxdapi.root_pool(client, lxdapi.get_instance(client, name))
    except LXD_FAULTS:  # NotFound among them
        pool = s.specs[name].pool if name in s.specs else None
    info = s.commands(f"storage info {pool}")
    return (f"\nThe storage pool {pool or '(unknown)'!r} is full: free space in it (`{info}`), "
            "or move the container to a bigger pool. Nothing was changed.")


def wait_for_launch(s: LxdSession, name: str, future: Future[Tracked]) -> Tracked:
    """The background launch's result; reports its stage on every tick once a test waited a second."""
    start, shown = time.monotonic(), False
    while True:
        try:
            tracked = future.result(timeout=PROGRESS_TICK)
        except FutureTimeout:
            waited = time.monotonic() - start
            if s.on_progress and waited >= 1.0:
                s.on_progress(name, s.stages.get(name, ""), waited)
                shown = True
            continue
        if shown and s.on_progress:
            s.on_progress(name, None, time.monotonic() - start)
        return tracked


def adopt(s: LxdSession, name: str) -> Tracked:
    """Take an existing instance into the session: claim it, snapshot it, remember its power state."""
    client = s.client
    try:
        record = claims.claim(client, name, s.identity, wait=s.lease_wait, log=s.notices.append)
    except NotFound:
        raise ContainerNotFound(
            f"container {name!r} is neither declared nor an existing instance at {s.endpoint.describe()}. "
            f"Declare it in pyproject.toml:\n  [{TABLE}.containers.{name}]\n  image = \"lxdsnap/busybox\"\n"
            f"or create it: {s.commands(f'launch <image> {name}')}"
        ) from None
    snapshot = s.identity.snapshot_name(BASELINE_LABEL)
    pool, driver = lxdapi.root_pool(client, record)
    start = time.perf_counter()
    running = record["status"] == lxdapi.RUNNING
    try:
        if running:  # never hand out (or snapshot) a half-booted system
            s.wait_until_ready(name, name)
        refuse_a_second_zfs_baseline(s, name, pool, driver)
        lxdapi.create_owned_snapshot(client, name, snapshot, s.identity, s.snapshot_ttl)
    except BaseException:
        claims.release(client, name, s.identity)
        raise
    if s.take_turns:  # other workers use it between our tests: claim it per test from now on
        claims.release(client, name, s.identity)
    return Tracked(name, name, False, snapshot, running, time.monotonic(), pool, driver,
                   time.perf_counter() - start, base_running=running)


def refuse_a_second_zfs_baseline(s: LxdSession, name: str, pool: str, driver: str) -> None:
    """On ZFS only the latest snapshot can be restored: a baseline beside another session's (a second
    pytest-xdist worker) would make the first one unrestorable."""
    if not zfs.newer_snapshots_block_restore(driver):
        return
    others = zfs.baselines(lxdapi.list_snapshots(s.client, name))
    if others:
        raise ConfigError(zfs.snapshot_refusal_message(name, name, pool, s.commands, purpose="baseline",
                                                       blocking=others))


def launch(s: LxdSession, spec: ContainerSpec) -> Tracked:
    """Launch a declared container, provision it, wait until ready, and take its baseline snapshot (under
    pytest-xdist: join the base the run's workers share, see :mod:`~pytest_lxdsnap.session.shared`)."""
    if shared.applies(s, spec):
        return shared.launch(s, spec)
    if s.options.lxd_reuse:
        return launch_kept(s, spec)
    client = s.own
    instance = f"{INSTANCE_PREFIX}{spec.name}-{s.identity.token}"
    snapshot = s.identity.snapshot_name(BASELINE_LABEL)
    tag = s.identity.tag(lxdapi.where(client, instance))
    try:
        seconds = build(s, spec, instance, {CREATED_KEY: tag, OWNER_KEY: tag}, lambda: (
            lxdapi.create_owned_snapshot(client, instance, snapshot, s.identity, s.snapshot_ttl)))
        pool, driver = lxdapi.root_pool(client, lxdapi.get_instance(client, instance))
    except BaseException:
        if lxdapi.instance_exists(client, instance):
            lxdapi.delete_owned_instance(client, instance, s.identity)
        raise
    return Tracked(spec.name, instance, True, snapshot, True, time.monotonic(), pool, driver, seconds)


def launch_kept(s: LxdSession, spec: ContainerSpec) -> Tracked:
    """--lxd-reuse: claim the kept build of this declaration, or build and keep it."""
    client = s.own
    digest = reuse.declaration_hash(client, spec)
    instance = reuse.kept_name(spec, digest)
    for old in reuse.stale(client, spec, instance):
        reuse.delete_kept(client, old)
        s.notices.append(f"deleted {old}: the declaration of {spec.name!r} changed since it was built")
    seconds = 0.0
    reused = lxdapi.instance_exists(client, instance) and reuse.has_baseline(client, instance)
    if reused:
        s.notices.append(f"reusing {instance} for {spec.name!r} (its declaration is unchanged)")
    elif lxdapi.instance_exists(client, instance):  # being built by another session, or a build cut short
        reused = reuse.wait_for_builder(client, instance, s.lease_wait)
        if not reused:
            reuse.delete_kept(client, instance)
    if not reused:
        tags = {**reuse.kept_tags(spec, digest), BUILDING_KEY: s.identity.tag(lxdapi.where(client, instance))}
        try:
            seconds = build(s, spec, instance, tags,  # held while it is built: nobody else deletes it
                            lambda: reuse.take_baseline(client, instance, s.snapshot_ttl))
        except BaseException:
            if lxdapi.instance_exists(client, instance):
                reuse.delete_kept(client, instance)
            raise
    record = claims.claim(client, instance, s.identity, wait=s.lease_wait, log=s.notices.append)
    if reused:  # start from its baseline, stopped, whatever a crashed run left
        if record["status"] != lxdapi.STOPPED:
            lxdapi.set_power(client, instance, "stop")
        lxdapi.restore_snapshot(client, instance, REUSE_SNAPSHOT)
        record = claims.claim(client, instance, s.identity, wait=s.lease_wait)
    lxdapi.extend_snapshot_expiry(client, instance, REUSE_SNAPSHOT, s.snapshot_ttl)
    pool, driver = lxdapi.root_pool(client, record)
    return Tracked(spec.name, instance, True, REUSE_SNAPSHOT, True, time.monotonic(), pool, driver, seconds,
                   base_running=record["status"] == lxdapi.RUNNING, kept=True)


def build(s: LxdSession, spec: ContainerSpec, instance: str, tags: dict[str, str],
          take_baseline: Callable[[], None]) -> float:
    """Create ``instance`` from the declaration, provision it, check it, snapshot it; the snapshot's seconds."""
    create(s, spec, instance, tags)
    return prepare(s, spec, instance, take_baseline)


def create(s: LxdSession, spec: ContainerSpec, instance: str, tags: dict[str, str]) -> None:
    """Create ``instance`` from the declaration's image, with ``tags`` among its config keys (not started)."""
    client = s.own
    if spec.image_remote is not None:
        server, protocol = REMOTES[spec.image_remote]
        source = {"type": "image", "alias": spec.image.split(":", 1)[1], "server": server, "protocol": protocol}
    elif FINGERPRINT.match(spec.image):
        source = {"type": "image", "fingerprint": spec.image}
    else:
        source = {"type": "image", "alias": spec.image}
    devices = {"root": {"type": "disk", "path": "/", "pool": spec.pool}} if spec.pool else {}
    if spec.package_cache:  # clones copy the device; it listens inside each of them
        devices[aptproxy.DEVICE] = aptproxy.device(spec.package_cache)
    body = {
        "name": instance,
        "type": "container",
        "source": source,
        "profiles": list(spec.profiles),
        "config": {**spec.config, **tags},
        "devices": devices,
    }
    target = spec.target_for(s.worker)
    s.stages[spec.name] = f"creating from image {spec.image}" + (f" on {target}" if target else "")
    try:
        lxdapi.create_instance(client, body, target=target)
    except LXD_FAULTS as exc:
        raise LxdSnapError(f"launching declared container {spec.name!r} from image {spec.image!r} failed: "
                           f"{describe(exc)}{config_key_hint(s, spec, describe(exc))}") from None


def prepare(s: LxdSession, spec: ContainerSpec, instance: str, take_baseline: Callable[[], None]) -> float:
    """Start a created ``instance``, provision it, check it, snapshot it; the snapshot's seconds."""
    client = s.own
    s.stages[spec.name] = "starting"
    lxdapi.set_power(client, instance, "start")
    s.stages[spec.name] = "booting"
    s.wait_for_boot(spec.name, instance)
    if spec.package_cache:
        s.stages[spec.name] = f"pointing apt at the package cache {spec.package_cache}"
        aptproxy.configure_apt(client, instance, spec.name, f"[{TABLE}.containers.{spec.name}]")
    for number, command in enumerate(spec.provision, 1):
        s.stages[spec.name] = f"provisioning {number}/{len(spec.provision)}: {command[:60]}"
        result = exec_command(client, instance, command, keep_logs=True)
        if result.exit_code != 0:
            raise ProvisionError(
                f"provisioning declared container {spec.name!r} (instance {instance}) failed: "
                f"{command!r} exited {result.exit_code}\nstdout: {result.stdout[-2000:]}\n"
                f"stderr: {result.stderr[-2000:]}\nFix `provision` in [{TABLE}.containers.{spec.name}]"
            )
    if spec.playbook:
        s.stages[spec.name] = f"converging with {os.path.basename(spec.playbook)}"
        converge_with_playbook(s, spec, instance)
    if s.on_provision is not None:
        s.on_provision(spec, instance)
    s.stages[spec.name] = "waiting until ready"
    s.check_ready(spec.name, instance)
    ports.remove_all(client, instance)  # hooks may have exposed ports: keep them out of the baseline
    install_identity_templates(client, instance)  # every clone of the baseline gets its own machine-id, hostname
    s.stages[spec.name] = "taking the baseline snapshot"
    start = time.perf_counter()
    take_baseline()
    return time.perf_counter() - start


def converge_with_playbook(s: LxdSession, spec: ContainerSpec, instance: str) -> None:
    """Run the declaration's ``playbook`` against ``instance`` (reached as the session reaches it)."""
    from pytest_lxdsnap.ansible.converge import converge

    target = s.container(spec.name, instance).target()
    converge(target, str(spec.playbook), f"[{TABLE}.containers.{spec.name}]")


def config_key_hint(s: LxdSession, spec: ContainerSpec, error: str) -> str:
    """For a config key this server does not know: which server it is, and the other daemon's name for it."""
    match = re.search(r"Unknown configuration key: (\S+)", error)
    if not match:
        return ""
    key = match.group(1)
    env = s.client.host_info.get("environment", {})
    server = env.get("server", "lxd")
    hint = (f"\n{server} {env.get('server_version', '')} at {s.endpoint.describe()} does not know config key "
            f"{key!r} ([{TABLE}.containers.{spec.name}] config)")
    renamed = RENAMED_KEYS.get(key)
    if renamed:
        hint += f": it is {renamed[0]}'s name, {server} calls it {renamed[1]!r}"
    return hint + ". Remove or rename it; nothing was created."
