"""One pytest session's containers: adopt existing ones, launch declared ones, hand out clean states.

No pytest here: the plugin drives this class, and so can any other runner. A test asks for
:class:`Request` s and gets :class:`Checkout` s (the instance it may change); :meth:`LxdSession.release`
brings each back to its baseline with the checkout's strategy (see :mod:`pytest_lxdsnap.session.strategy`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace

import pylxd
from pylxd.exceptions import NotFound

from pytest_lxdsnap.declarations import (
    DEFAULT_LEASE_WAIT,
    DEFAULT_MAX_CLONES,
    DEFAULT_PREPARE_AHEAD,
    DEFAULT_SNAPSHOT_TTL,
    TABLE,
    ContainerSpec,
)
from pytest_lxdsnap.errors import ConfigError, ContainerNotFound, LxdSnapError, ProvisionError, ResetError
from pytest_lxdsnap.lxd import lxdapi, ports, projects
from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.execution import exec_command, purge_unread_logs
from pytest_lxdsnap.lxd.lxdapi import FAULTS, LXD_FAULTS, describe
from pytest_lxdsnap.lxd.readiness import wait_ready
from pytest_lxdsnap.safety import claims, garbage, leases, zfs
from pytest_lxdsnap.safety.ownership import (
    BASELINE_LABEL,
    BUILDING_KEY,
    CREATED_KEY,
    INSTANCE_PREFIX,
    KEPT_LABEL,
    LEASE_SECONDS,
    OWNER_KEY,
    POWER_KEY,
    REUSE_SNAPSHOT,
    SessionIdentity,
)
from pytest_lxdsnap.session import reuse
from pytest_lxdsnap.session.clones import ClonePool, Slots
from pytest_lxdsnap.session.strategy import resolve

BACKGROUND_WORKERS = 8
PROGRESS_TICK = 0.5
_FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")
# Image servers a `remote:alias` image may name (the lxc client's default remotes).
REMOTES = {
    "images": ("https://images.linuxcontainers.org", "simplestreams"),
    "ubuntu": ("https://cloud-images.ubuntu.com/releases", "simplestreams"),
    "ubuntu-daily": ("https://cloud-images.ubuntu.com/daily", "simplestreams"),
}


@dataclass(frozen=True)
class Request:
    """A test's use of one container: its name, the strategy it asks for, and its scope key.

    Consecutive requests with the same scope key (and strategy) share one state.
    """

    name: str
    strategy: str | None = None  # None: the container's declared strategy, else the session default
    scope_key: str = ""


@dataclass
class Tracked:
    """A container this session uses, with its baseline snapshot and reset figures."""

    name: str
    instance: str  # the base instance: the user's own, or the declared one this session launched
    declared: bool
    snapshot: str
    running: bool  # power state of the baseline
    extended: float  # when the snapshot's expiry was last set (time.monotonic(); LXD expires it a TTL later)
    pool: str = ""
    pool_driver: str = ""
    snapshot_seconds: float = 0.0
    reset_times: list[float] = field(default_factory=list)
    strategies: Counter[str] = field(default_factory=Counter)
    broken: str | None = None
    current: Checkout | None = None  # a state kept for the next test of the same scope
    clones: ClonePool | None = None
    base_running: bool = True  # power state the base instance is in now
    base_stopping: Future[None] | None = None
    dirty: bool = False  # the base instance may differ from its baseline
    kept: bool = False  # a declared container kept between runs (--lxd-reuse)

    @property
    def kind(self) -> str:
        return "declared" if self.declared else "existing"

    @property
    def resets(self) -> int:
        return len(self.reset_times)

    @property
    def reset_seconds(self) -> float:
        return sum(self.reset_times)


@dataclass
class Checkout:
    """A clean state handed to a test: ``instance`` is what the test may change."""

    tracked: Tracked
    strategy: str
    scope_key: str
    instance: str
    kept: bool = False  # a failed test's clone kept for inspection (--lxd-keep-failed): not retired


@dataclass
class Leftover:
    """Something of this session's that is still in LXD after cleanup."""

    container: str
    what: str


# config keys LXD and Incus name differently: key -> (whose name it is, the other daemon's name)
RENAMED_KEYS = {
    "security.devlxd": ("LXD", "security.guestapi"),
    "security.devlxd.images": ("LXD", "security.guestapi.images"),
    "security.guestapi": ("Incus", "security.devlxd"),
    "security.guestapi.images": ("Incus", "security.devlxd.images"),
}


class LxdSession:
    """The containers of one test session on one LXD endpoint."""

    def __init__(self, endpoint: Endpoint, specs: dict[str, ContainerSpec], *,
                 snapshot_ttl: float = DEFAULT_SNAPSHOT_TTL, identity: SessionIdentity | None = None,
                 default_strategy: str = "auto", prepare_ahead: int = DEFAULT_PREPARE_AHEAD,
                 lease_wait: float = DEFAULT_LEASE_WAIT,
                 on_provision: Callable[[ContainerSpec, str], None] | None = None,
                 on_ready: Callable[[str, str], None] | None = None, take_turns: bool = False,
                 reuse: bool = False, worker: int = 0, max_clones: int = DEFAULT_MAX_CLONES) -> None:
        self.endpoint = endpoint
        self.specs = specs
        self.snapshot_ttl = snapshot_ttl
        self.identity = identity or SessionIdentity()
        self.default_strategy = default_strategy
        self.prepare_ahead = prepare_ahead
        self.lease_wait = lease_wait
        self.on_provision = on_provision  # (spec, instance): after the provision commands
        self.on_ready = on_ready  # (name, instance): a fresh container passed its readiness check
        self.take_turns = take_turns  # claim existing containers per test, not per session (xdist workers)
        self.reuse = reuse  # keep provisioned declared containers between runs
        self.worker = worker  # pytest-xdist worker number: picks its cluster member from a spec's targets
        self._clone_slots = Slots(max_clones)  # clones that exist at once, all containers
        # (name, stage or None once ready, seconds waited) on every tick while a test waits for a launch
        self.on_progress: Callable[[str, str | None, float], None] | None = None
        self.stages: dict[str, str] = {}  # what each background launch is doing now
        self.tracked: dict[str, Tracked] = {}
        self.problems: list[str] = []
        self.notices: list[str] = []
        self.kept: list[str] = []  # states of failed tests kept on purpose (--lxd-keep-failed)
        self._kept_count = 0
        self._failed: dict[str, LxdSnapError] = {}
        self._launches: dict[str, Future[Tracked]] = {}
        self._planned: dict[str, list[Request]] = {}
        self._client: pylxd.Client | None = None
        self._own: pylxd.Client | None = None  # --lxd-project auto: the session's own project
        self._own_lock = threading.Lock()
        self.commands = Commands()  # the lxc (or incus) command lines messages show; set on connect
        self._executor = ThreadPoolExecutor(BACKGROUND_WORKERS, thread_name_prefix="lxdsnap")
        self._stopping = threading.Event()
        self._finishing = False
        self._heartbeat: list[threading.Thread] | None = None

    @property
    def client(self) -> pylxd.Client:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    @property
    def auto_project(self) -> bool:
        return self.endpoint.project == projects.AUTO

    @property
    def own(self) -> pylxd.Client:
        """Where this session creates instances: with --lxd-project auto a project of its own, made on first
        use; else the endpoint's project."""
        if not self.auto_project:
            return self.client
        with self._own_lock:
            if self._own is None:
                self._own = projects.in_project(self.client, projects.create(self.client, self.identity))
            return self._own

    def client_for(self, name: str) -> pylxd.Client:
        """The client for a container: declared ones live where the session creates instances."""
        return self.own if name in self.specs else self.client

    def connect(self) -> None:
        """Connect and check every declared container against the server (pools, images, profiles)."""
        if self.auto_project and self.reuse:
            raise ConfigError("--lxd-reuse keeps declared containers between runs, but --lxd-project auto deletes "
                              "the session's project at the end: name a project (--lxd-project NAME) to reuse")
        client = connect(replace(self.endpoint, project=None) if self.auto_project else self.endpoint)
        self.commands = Commands(incus=lxdapi.is_incus(client))
        self._check_specs(client)
        self._client = client

    def _check_specs(self, client: pylxd.Client) -> None:
        if not self.specs:
            return
        self._check_targets(client)
        pools = [p["name"] for p in lxdapi.listing(client.api.storage_pools)]
        profiles = [p.rsplit("/", 1)[-1] for p in lxdapi.listing(client.api.profiles, recursion=False)]
        images = lxdapi.listing(client.api.images)
        aliases = sorted(a["name"] for img in images for a in img.get("aliases") or [])
        for spec in self.specs.values():
            path = f"[{TABLE}.containers.{spec.name}]"
            if spec.pool is not None and spec.pool not in pools:
                raise ConfigError(f"{path} pool: no storage pool {spec.pool!r} at {self.endpoint.describe()}; "
                                  f"valid choices: {', '.join(pools) or 'none (run `lxdsnap setup`)'}")
            for profile in spec.profiles:
                if profile not in profiles:
                    raise ConfigError(f"{path} profiles: no profile {profile!r}; valid choices: {', '.join(profiles)}")
            if spec.image_remote is not None:
                if spec.image_remote not in REMOTES:
                    raise ConfigError(f"{path} image: unknown remote {spec.image_remote!r}; valid remotes: "
                                      f"{', '.join(REMOTES)} (or use a local alias)")
                continue
            known = spec.image in aliases or any(
                img["fingerprint"].startswith(spec.image) for img in images if _FINGERPRINT.match(spec.image))
            if not known:
                raise ConfigError(
                    f"{path} image: no local image {spec.image!r}; valid choices: "
                    f"{', '.join(aliases) or 'none'}. `lxdsnap setup` imports lxdsnap/busybox; "
                    f"`{self.commands('image import FILE --alias NAME')}` adds your own")

    def _check_targets(self, client: pylxd.Client) -> None:
        """Every cluster member a declaration names exists (and the server is a cluster at all)."""
        wanted = {(spec.name, t) for spec in self.specs.values() for t in spec.targets}
        if not wanted:
            return
        name, target = min(wanted)
        if not client.host_info.get("environment", {}).get("server_clustered"):
            raise ConfigError(
                f"[{TABLE}.containers.{name}] target: {target!r} names a cluster member, but LXD at "
                f"{self.endpoint.describe()} is a standalone server, not a cluster. Remove `target`, or point "
                "--lxd-endpoint at a member of the cluster")
        members = [m["server_name"] for m in lxdapi.listing(client.api.cluster.members)]
        for name, target in sorted(wanted):
            if target not in members:
                raise ConfigError(f"[{TABLE}.containers.{name}] target: no cluster member {target!r} at "
                                  f"{self.endpoint.describe()}; valid members: {', '.join(sorted(members))}")

    # -- planning ------------------------------------------------------------------------------
    def plan(self, requests: list[Request]) -> None:
        """The requests the collected tests will make, in run order: launch declared containers now.

        Declared containers launch and provision in the background, concurrently; the first test
        that needs one waits for it. Clones are then prepared ahead for the tests that will use them.
        """
        self._start_heartbeat()
        self._executor.submit(self._sweep_dead_sessions)
        for request in requests:
            self._planned.setdefault(request.name, []).append(request)
        self._clone_slots.reserve = sum(1 for name in self._planned if name in self.specs)  # one each, always
        for name in self._planned:
            if name in self.specs and name not in self._launches and name not in self.tracked:
                self._launches[name] = self._executor.submit(self._launch, self.specs[name])

    def _sweep_dead_sessions(self, also_held: list[str] | None = None) -> None:
        """Delete the instances (clones, declared containers) and leases of sessions that died without
        cleaning up; with ``also_held``, restore those existing instances if a dead session holds them."""
        try:
            found = garbage.find_garbage(self.client, self.identity)
        except FAULTS as exc:
            self.notices.append(f"looking for instances of dead sessions failed: {describe(exc)}; run `lxdsnap gc`")
            return
        for item in found:
            held = item.kind == "held" and item.name in (also_held or [])
            if not (held or item.kind in ("created", "project", "lease")):
                continue
            try:
                self.notices.extend(f"{line} ({item.why})" for line in item.clean())
            except FAULTS as exc:
                self.notices.append(f"deleting {item.what} ({item.why}) failed: {describe(exc)}; run `lxdsnap gc`")

    def _start_heartbeat(self) -> None:
        """Open this session's lease (a profile no instance uses); two threads keep it fresh and the baselines
        from expiring until the session's last LXD call."""
        if self._heartbeat is not None:
            return
        try:
            leases.open_lease(self.client, self.identity)
        except LXD_FAULTS as exc:
            raise LxdSnapError(
                f"could not create this session's lease (profile {leases.profile_name(self.identity)}): "
                f"{describe(exc)}. Without it other sessions and `lxdsnap gc` could judge this one dead, so nothing "
                "was changed. Check that this client may create profiles (`lxdsnap doctor`)") from None
        self._heartbeat = [threading.Thread(target=self._renew, name="lxdsnap-lease", daemon=True),
                           threading.Thread(target=self._extend, name="lxdsnap-baselines", daemon=True)]
        for thread in self._heartbeat:
            thread.start()

    def _renew(self) -> None:
        """The lease, on a thread of its own: a slow snapshot call must never let it run out."""
        while not self._stopping.wait(LEASE_SECONDS / 6):
            try:
                leases.renew_lease(self.client, self.identity)
            except FAULTS:
                pass  # briefly unreachable: the next round tries again, well within the lease

    def _extend(self) -> None:
        while not self._stopping.wait(max(min(LEASE_SECONDS / 3, self.snapshot_ttl / 4), 0.25)):
            try:
                self._extend_baselines()
            except FAULTS:
                pass

    def _extend_baselines(self) -> None:
        """Push on the expiry of every baseline that has run through half its TTL (a long test, --pdb)."""
        for tracked in list(self.tracked.values()):
            if self._finishing or tracked.broken or time.monotonic() - tracked.extended < self.snapshot_ttl / 2:
                continue
            client = self.client_for(tracked.name)
            lxdapi.extend_snapshot_expiry(client, tracked.instance, tracked.snapshot, self.snapshot_ttl)
            tracked.extended = time.monotonic()

    def _stop_heartbeat(self) -> None:
        self._stopping.set()
        for thread in self._heartbeat or []:
            thread.join(timeout=LEASE_SECONDS / 3)  # a renewal under way ends within its request timeout

    def strategy_for(self, tracked: Tracked, request: Request) -> str:
        """The concrete strategy of ``request`` on ``tracked`` (``auto`` resolved by pool driver)."""
        spec = self.specs.get(tracked.name)
        requested = request.strategy or (spec.strategy if spec else None) or self.default_strategy
        try:
            return resolve(requested, declared=tracked.declared, pool_driver=tracked.pool_driver)
        except ValueError as exc:
            raise ConfigError(f"container {tracked.name!r}: {exc}") from None

    def _planned_clone_uses(self, tracked: Tracked) -> int:
        keys = {r.scope_key for r in self._planned.get(tracked.name, []) if self.strategy_for(tracked, r) == "clone"}
        return len(keys)

    # -- acquiring -----------------------------------------------------------------------------
    def acquire(self, requests: list[Request] | tuple[str, ...]) -> list[Checkout]:
        """A clean state of each requested container (adopting or launching it on first use).

        A state kept from the previous test of the same scope is handed out again; any other kept
        state is reset first.
        """
        wanted = [r if isinstance(r, Request) else Request(r) for r in requests]
        checkouts = []
        for request in wanted:
            tracked = self._acquire(request.name)
            strategy = self.strategy_for(tracked, request)
            current = tracked.current
            if current is not None and (current.strategy, current.scope_key) == (strategy, request.scope_key):
                checkouts.append(current)
                continue
            if current is not None:
                tracked.current = None
                problem = self._release_one(current)
                if problem:
                    raise ResetError(problem)
            try:
                checkouts.append(self._checkout(tracked, strategy, request.scope_key))
            except LXD_FAULTS as exc:
                raise LxdSnapError(f"getting a clean state of container {request.name!r} failed: "
                                   f"{describe(exc)}") from None
        return checkouts

    def _acquire(self, name: str) -> Tracked:
        if name in self.tracked:
            return self.tracked[name]
        if name in self._failed:  # fail fast, with a fresh exception, for every later test
            failed = self._failed[name]
            raise type(failed)(str(failed))
        try:
            if name in self._launches:
                tracked = self._wait_for_launch(name, self._launches.pop(name))
            elif name in self.specs:
                tracked = self._launch(self.specs[name])
            else:
                tracked = self._adopt(name)
        except LxdSnapError as exc:
            self._failed[name] = exc
            raise
        except LXD_FAULTS as exc:
            error = LxdSnapError(f"preparing container {name!r} failed: {describe(exc)}{self._space_hint(name, exc)}")
            self._failed[name] = error
            raise error from None
        self.tracked[name] = tracked
        self._note_pool(tracked)
        if tracked.declared and self._planned_clone_uses(tracked):
            self._start_clones(tracked)
        return tracked

    def _space_hint(self, name: str, exc: BaseException) -> str:
        """When LXD ran out of space: which pool, and what to do."""
        if "no space left" not in describe(exc).lower():
            return ""
        pool: str | None
        try:
            client = self.client_for(name)
            pool, _ = lxdapi.root_pool(client, lxdapi.get_instance(client, name))
        except LXD_FAULTS:  # NotFound among them
            pool = self.specs[name].pool if name in self.specs else None
        info = self.commands(f"storage info {pool}")
        return (f"\nThe storage pool {pool or '(unknown)'!r} is full: free space in it (`{info}`), "
                "or move the container to a bigger pool. Nothing was changed.")

    def _wait_for_launch(self, name: str, future: Future[Tracked]) -> Tracked:
        """The background launch's result; reports its stage on every tick once a test waited a second."""
        start, shown = time.monotonic(), False
        while True:
            try:
                tracked = future.result(timeout=PROGRESS_TICK)
            except FutureTimeout:
                waited = time.monotonic() - start
                if self.on_progress and waited >= 1.0:
                    self.on_progress(name, self.stages.get(name, ""), waited)
                    shown = True
                continue
            if shown and self.on_progress:
                self.on_progress(name, None, time.monotonic() - start)
            return tracked

    def _checkout(self, tracked: Tracked, strategy: str, scope_key: str) -> Checkout:
        if tracked.broken:
            raise ResetError(tracked.broken)
        start = time.perf_counter()
        if strategy == "clone":
            if tracked.clones is None:
                self._start_clones(tracked)
            assert tracked.clones is not None
            instance = tracked.clones.take()
            tracked.reset_times.append(time.perf_counter() - start)
        else:
            instance = tracked.instance
            if self._turns(tracked):
                claims.claim(self.client, instance, self.identity, wait=self.lease_wait, log=self.notices.append)
            self._power_base(tracked)
            tracked.dirty = True
        tracked.strategies[strategy] += 1
        return Checkout(tracked, strategy, scope_key, instance)

    def _power_base(self, tracked: Tracked) -> None:
        """Bring the base instance back to its baseline power state if clones had it stopped."""
        if tracked.base_stopping is not None:
            tracked.base_stopping.result()
            tracked.base_stopping = None
        if tracked.running and not tracked.base_running:
            lxdapi.set_power(self.client_for(tracked.name), tracked.instance, "start")
            self._check_ready(tracked.name, tracked.instance)
        tracked.base_running = tracked.running

    def _start_clones(self, tracked: Tracked) -> None:
        spec = self.specs[tracked.name]
        tracked.clones = ClonePool(
            self.own, self._executor, container=tracked.name, base=tracked.instance, snapshot=tracked.snapshot,
            profiles=spec.profiles, identity=self.identity, ahead=self.prepare_ahead,
            planned=self._planned_clone_uses(tracked), ready=lambda instance: self._check_ready(tracked.name, instance),
            target=spec.target_for(self.worker), slots=self._clone_slots,
        )
        tracked.clones.top_up()
        only_clones = all(self.strategy_for(tracked, r) == "clone" for r in self._planned.get(tracked.name, []))
        if only_clones and tracked.base_running:
            # Only clones will run: stop the base instance in the background (its delete is then quick).
            tracked.base_running = False
            tracked.base_stopping = self._executor.submit(lxdapi.set_power, self.own, tracked.instance, "stop")

    def _check_ready(self, name: str, instance: str) -> None:
        spec = self.specs.get(name)
        if spec is not None and spec.ready is not None:
            wait_ready(self.own, instance, spec.ready, name)
        if self.on_ready is not None:
            self.on_ready(name, instance)

    def _note_pool(self, tracked: Tracked) -> None:
        if tracked.pool_driver == "dir" and not any(f"pool {tracked.pool!r}" in n for n in self.notices):
            self.notices.append(
                f"pool {tracked.pool!r} uses the dir driver: every snapshot and clone copies the whole rootfs "
                f"(the baseline of {tracked.name!r} took {tracked.snapshot_seconds:.2f} s) and each reset is a "
                "full restore, so 'auto' resets in place. A copy-on-write pool makes both near-instant: "
                f"`{self.commands('storage create fast btrfs size=8GiB')}`, then `pool = \"fast\"` in "
                f"[{TABLE}.containers.<name>] (run `lxdsnap doctor` to see the pools)"
            )

    def _adopt(self, name: str) -> Tracked:
        """Take an existing instance into the session: claim it, snapshot it, remember its power state."""
        client = self.client
        try:
            record = claims.claim(client, name, self.identity, wait=self.lease_wait, log=self.notices.append)
        except NotFound:
            raise ContainerNotFound(
                f"container {name!r} is neither declared nor an existing instance at {self.endpoint.describe()}. "
                f"Declare it in pyproject.toml:\n  [{TABLE}.containers.{name}]\n  image = \"lxdsnap/busybox\"\n"
                f"or create it: {self.commands(f'launch <image> {name}')}"
            ) from None
        snapshot = self.identity.snapshot_name(BASELINE_LABEL)
        pool, driver = lxdapi.root_pool(client, record)
        start = time.perf_counter()
        try:
            self._refuse_a_second_zfs_baseline(name, pool, driver)
            lxdapi.create_owned_snapshot(client, name, snapshot, self.identity, self.snapshot_ttl)
        except BaseException:
            claims.release(client, name, self.identity)
            raise
        running = record["status"] == lxdapi.RUNNING
        if self.take_turns:  # other workers use it between our tests: claim it per test from now on
            claims.release(client, name, self.identity)
        return Tracked(name, name, False, snapshot, running, time.monotonic(), pool, driver,
                       time.perf_counter() - start, base_running=running)

    def _refuse_a_second_zfs_baseline(self, name: str, pool: str, driver: str) -> None:
        """On ZFS only the latest snapshot can be restored: a baseline beside another session's (a second
        pytest-xdist worker) would make the first one unrestorable."""
        if not zfs.newer_snapshots_block_restore(driver):
            return
        others = zfs.baselines(lxdapi.list_snapshots(self.client, name))
        if others:
            raise ConfigError(zfs.snapshot_refusal_message(name, name, pool, self.commands, purpose="baseline",
                                                           blocking=others))

    def _launch(self, spec: ContainerSpec) -> Tracked:
        """Launch a declared container, provision it, wait until ready, and take its baseline snapshot."""
        if self.reuse:
            return self._launch_kept(spec)
        client = self.own
        instance = f"{INSTANCE_PREFIX}{spec.name}-{self.identity.token}"
        snapshot = self.identity.snapshot_name(BASELINE_LABEL)
        tag = self.identity.tag(lxdapi.where(client, instance))
        try:
            seconds = self._build(spec, instance, {CREATED_KEY: tag, OWNER_KEY: tag}, lambda: (
                lxdapi.create_owned_snapshot(client, instance, snapshot, self.identity, self.snapshot_ttl)))
            pool, driver = lxdapi.root_pool(client, lxdapi.get_instance(client, instance))
        except BaseException:
            if lxdapi.instance_exists(client, instance):
                lxdapi.delete_owned_instance(client, instance, self.identity)
            raise
        return Tracked(spec.name, instance, True, snapshot, True, time.monotonic(), pool, driver, seconds)

    def _launch_kept(self, spec: ContainerSpec) -> Tracked:
        """--lxd-reuse: claim the kept build of this declaration, or build and keep it."""
        client = self.own
        digest = reuse.declaration_hash(client, spec)
        instance = reuse.kept_name(spec, digest)
        for old in reuse.stale(client, spec, instance):
            reuse.delete_kept(client, old)
            self.notices.append(f"deleted {old}: the declaration of {spec.name!r} changed since it was built")
        seconds = 0.0
        reused = lxdapi.instance_exists(client, instance) and reuse.has_baseline(client, instance)
        if reused:
            self.notices.append(f"reusing {instance} for {spec.name!r} (its declaration is unchanged)")
        elif lxdapi.instance_exists(client, instance):  # being built by another session, or a build cut short
            reused = reuse.wait_for_builder(client, instance, self.lease_wait)
            if not reused:
                reuse.delete_kept(client, instance)
        if not reused:
            tags = {**reuse.kept_tags(spec, digest), BUILDING_KEY: self.identity.tag(lxdapi.where(client, instance))}
            try:
                seconds = self._build(spec, instance, tags,  # held while it is built: nobody else deletes it
                                      lambda: reuse.take_baseline(client, instance, self.snapshot_ttl))
            except BaseException:
                if lxdapi.instance_exists(client, instance):
                    reuse.delete_kept(client, instance)
                raise
        record = claims.claim(client, instance, self.identity, wait=self.lease_wait, log=self.notices.append)
        if reused:  # start from its baseline, stopped, whatever a crashed run left
            if record["status"] != lxdapi.STOPPED:
                lxdapi.set_power(client, instance, "stop")
            lxdapi.restore_snapshot(client, instance, REUSE_SNAPSHOT)
            record = claims.claim(client, instance, self.identity, wait=self.lease_wait)
        lxdapi.extend_snapshot_expiry(client, instance, REUSE_SNAPSHOT, self.snapshot_ttl)
        pool, driver = lxdapi.root_pool(client, record)
        return Tracked(spec.name, instance, True, REUSE_SNAPSHOT, True, time.monotonic(), pool, driver, seconds,
                       base_running=record["status"] == lxdapi.RUNNING, kept=True)

    def _build(self, spec: ContainerSpec, instance: str, tags: dict[str, str],
               take_baseline: Callable[[], None]) -> float:
        """Create ``instance`` from the declaration, provision it, check it, snapshot it; the snapshot's seconds."""
        client = self.own
        if spec.image_remote is not None:
            server, protocol = REMOTES[spec.image_remote]
            source = {"type": "image", "alias": spec.image.split(":", 1)[1], "server": server, "protocol": protocol}
        elif _FINGERPRINT.match(spec.image):
            source = {"type": "image", "fingerprint": spec.image}
        else:
            source = {"type": "image", "alias": spec.image}
        body = {
            "name": instance,
            "type": "container",
            "source": source,
            "profiles": list(spec.profiles),
            "config": {**spec.config, **tags},
            "devices": {"root": {"type": "disk", "path": "/", "pool": spec.pool}} if spec.pool else {},
        }
        target = spec.target_for(self.worker)
        self.stages[spec.name] = f"creating from image {spec.image}" + (f" on {target}" if target else "")
        try:
            lxdapi.create_instance(client, body, target=target)
        except LXD_FAULTS as exc:
            raise LxdSnapError(f"launching declared container {spec.name!r} from image {spec.image!r} failed: "
                               f"{describe(exc)}{self._config_key_hint(spec, describe(exc))}") from None
        self.stages[spec.name] = "starting"
        lxdapi.set_power(client, instance, "start")
        for number, command in enumerate(spec.provision, 1):
            self.stages[spec.name] = f"provisioning {number}/{len(spec.provision)}: {command[:60]}"
            result = exec_command(client, instance, command, keep_logs=True)
            if result.exit_code != 0:
                raise ProvisionError(
                    f"provisioning declared container {spec.name!r} (instance {instance}) failed: "
                    f"{command!r} exited {result.exit_code}\nstdout: {result.stdout[-2000:]}\n"
                    f"stderr: {result.stderr[-2000:]}\nFix `provision` in [{TABLE}.containers.{spec.name}]"
                )
        if self.on_provision is not None:
            self.on_provision(spec, instance)
        self.stages[spec.name] = "waiting until ready"
        self._check_ready(spec.name, instance)
        ports.remove_all(client, instance)  # hooks may have exposed ports: keep them out of the baseline
        self.stages[spec.name] = "taking the baseline snapshot"
        start = time.perf_counter()
        take_baseline()
        return time.perf_counter() - start

    def _config_key_hint(self, spec: ContainerSpec, error: str) -> str:
        """For a config key this server does not know: which server it is, and the other daemon's name for it."""
        match = re.search(r"Unknown configuration key: (\S+)", error)
        if not match:
            return ""
        key = match.group(1)
        env = self.client.host_info.get("environment", {})
        server = env.get("server", "lxd")
        hint = (f"\n{server} {env.get('server_version', '')} at {self.endpoint.describe()} does not know config key "
                f"{key!r} ([{TABLE}.containers.{spec.name}] config)")
        renamed = RENAMED_KEYS.get(key)
        if renamed:
            hint += f": it is {renamed[0]}'s name, {server} calls it {renamed[1]!r}"
        return hint + ". Remove or rename it; nothing was created."

    # -- resetting -----------------------------------------------------------------------------
    def release(self, checkouts: list[Checkout], *, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Give the states back after a test: keep those named in ``keep`` for the next test of the same
        scope, reset the others (concurrently); ResetError names what failed."""
        resets = []
        for checkout in checkouts:
            if checkout.tracked.name in keep:
                checkout.tracked.current = checkout
            else:
                checkout.tracked.current = None
                resets.append(checkout)
        if len(resets) <= 1:
            problems = [self._release_one(c) for c in resets]
        else:
            problems = list(self._executor.map(self._release_one, resets))
        messages = [p for p in problems if p]
        if messages:
            raise ResetError("\n".join(messages))

    def reset(self, tracked: list[Tracked]) -> None:
        """Restore each base instance to its baseline now (in place), concurrently."""
        self.release([Checkout(t, "inplace", "", t.instance) for t in tracked])

    def _release_one(self, checkout: Checkout) -> str | None:
        tracked = checkout.tracked
        if checkout.strategy == "clone":
            assert tracked.clones is not None
            if checkout.kept:
                tracked.clones.let_go(checkout.instance)
            else:
                tracked.clones.retire(checkout.instance)
            return None
        problem = None
        if checkout.strategy != "readonly":  # readonly: finish() restores an existing container if needed
            problem = self._restore(tracked, recipe=checkout.strategy == "recipe")
        if self._turns(tracked) and not problem:
            claims.release(self.client, tracked.instance, self.identity)  # the next worker's turn
        return problem

    def _turns(self, tracked: Tracked) -> bool:
        return self.take_turns and not tracked.declared

    def _restore(self, tracked: Tracked, *, recipe: bool = False) -> str | None:
        """Restore the base instance to its baseline; None, or what failed (the container is then broken)."""
        if tracked.broken:
            return tracked.broken
        client, instance, snapshot = self.client_for(tracked.name), tracked.instance, tracked.snapshot
        start = time.perf_counter()
        try:
            running = lxdapi.status(client, instance) == lxdapi.RUNNING
            if running and (recipe or not tracked.running):
                lxdapi.set_power(client, instance, "stop")  # the tutorial's recipe stops first, explicitly
                running = False
            refusal = self._zfs_refusal(tracked, client)
            if refusal:
                tracked.broken = refusal
                return refusal
            lxdapi.restore_snapshot(client, instance, snapshot)  # LXD restarts a running instance itself
            if tracked.kept:  # the kept baseline has no session tag: take the instance again
                claims.claim(client, instance, self.identity, wait=self.lease_wait)
            if tracked.running and not running:
                lxdapi.set_power(client, instance, "start")
            tracked.base_running = tracked.running
            if tracked.running:
                self._check_ready(tracked.name, instance)
        except FAULTS as exc:
            tracked.broken = (
                f"resetting container {tracked.name!r} (instance {instance}) to snapshot {snapshot} failed: "
                f"{describe(exc)}\nThe snapshot is kept for recovery. Inspect: `{self.commands(f'info {instance}')}`; "
                f"restore by hand: `{self.commands.restore(instance, snapshot)}`, or run `lxdsnap gc` once this "
                "session has ended"
            )
            return tracked.broken
        tracked.dirty = False
        tracked.reset_times.append(time.perf_counter() - start)
        purge_unread_logs(client, instance)
        return None

    def _zfs_refusal(self, tracked: Tracked, client: pylxd.Client) -> str | None:
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
                                   self.commands, snapshots=snapshots, declared=tracked.declared)

    # -- keeping a failed test's state -------------------------------------------------------
    def keep_failed(self, checkouts: list[Checkout], test: str) -> list[str]:
        """Keep the state of each container before its reset (a clone, a copy or a snapshot that expires
        after the snapshot TTL); the ``lxc`` commands to inspect each, or why it could not be kept."""
        lines = []
        for checkout in checkouts:
            try:
                lines.append(self._keep(checkout, test))
            except FAULTS as exc:
                lines.append(f"could not keep {checkout.tracked.name!r} for {test}: {describe(exc)}")
        self.kept.extend(lines)
        return lines

    def _keep(self, checkout: Checkout, test: str) -> str:
        tracked, client, cmd = checkout.tracked, self.client_for(checkout.tracked.name), self.commands
        self._kept_count += 1
        expires = time.time() + self.snapshot_ttl
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
        if not tracked.declared:  # the user's instance keeps its identity: a snapshot that LXD expires
            if zfs.newer_snapshots_block_restore(tracked.pool_driver):
                return zfs.snapshot_refusal_message(tracked.name, tracked.instance, tracked.pool, cmd,
                                                    purpose="keep-failed", blocking=[tracked.snapshot])
            snapshot = self.identity.snapshot_name(f"{KEPT_LABEL}-{self._kept_count}")
            lxdapi.create_owned_snapshot(client, tracked.instance, snapshot, self.identity, self.snapshot_ttl)
            copy = f"{tracked.instance}-failed-{self._kept_count}"
            return (f"kept {tracked.name!r} of {test} as snapshot {tracked.instance}/{snapshot} (LXD deletes it "
                    f"{until}). Inspect: {cmd(f'copy {tracked.instance}/{snapshot} {copy}')} && "
                    f"{cmd(f'start {copy}')} && {cmd(f'exec {copy} -- sh')}; then {cmd(f'delete --force {copy}')}")
        if checkout.strategy == "clone":
            kept, checkout.kept = checkout.instance, True
        else:  # the base goes at the end of the session: keep a copy of it
            kept = f"{tracked.instance}-failed-{self._kept_count}"
            # on ZFS an instance-only copy is a clone that leaves a hidden snapshot on the base, newer than the
            # baseline: every later reset would be refused. A full copy (snapshots too) leaves none.
            full = zfs.newer_snapshots_block_restore(tracked.pool_driver)
            body = {"name": kept, "source": {"type": "copy", "source": tracked.instance, "instance_only": not full},
                    "profiles": list(self.specs[tracked.name].profiles)}
            lxdapi.wait(client, client.api.instances.post(json=body))
            for copied in lxdapi.list_snapshots(client, kept) if full else []:
                lxdapi.wait(client, client.api.instances[kept].snapshots[copied["name"]].delete())
        claims.mark_kept(client, kept, expires)
        start = "" if checkout.strategy == "clone" else f"{cmd(f'start {kept}')} && "
        return (f"kept {tracked.name!r} of {test} as instance {kept} (`lxdsnap gc` deletes it after {until}). "
                f"Inspect: {start}{cmd(f'exec {kept} -- sh')}; {cmd(f'delete --force {kept}')} when done")

    # -- cleaning up ---------------------------------------------------------------------------
    def finish(self, keep: Iterable[str] = ()) -> list[Leftover]:
        """Reset what is still checked out, delete what this session made (keeping broken ones for
        recovery), wait for the background work; what is left over."""
        if self._client is None:
            self._stopping.set()
            self._executor.shutdown(wait=True, cancel_futures=True)
            return []
        self._finishing = True  # baselines go now: the heartbeat only renews the lease
        for future in self._launches.values():
            future.cancel()
        for tracked in self.tracked.values():
            if tracked.current is not None:
                problem = self._release_one(tracked.current)
                tracked.current = None
                if problem:
                    self.problems.append(problem)
        for tracked in self.tracked.values():
            if tracked.clones is not None:
                self.problems.extend(tracked.clones.close())
            if tracked.base_stopping is not None:
                tracked.base_stopping.exception()  # wait; a failed stop shows up in the delete below
        for tracked in self.tracked.values():
            if tracked.broken:
                self.problems.append(tracked.broken)
                continue
            try:
                if tracked.kept:  # --lxd-reuse: leave it stopped at its baseline for the next run
                    if tracked.dirty:
                        problem = self._restore(tracked)
                        if problem:
                            self.problems.append(problem)
                            continue
                    if lxdapi.status(self.own, tracked.instance) != lxdapi.STOPPED:
                        lxdapi.set_power(self.own, tracked.instance, "stop")
                    claims.release(self.own, tracked.instance, self.identity)
                    continue
                if tracked.declared and tracked.name in keep:
                    until = time.time() + self.snapshot_ttl
                    claims.mark_kept(self.own, tracked.instance, until)
                    self.kept.append(f"kept declared container {tracked.name!r} as instance {tracked.instance} "
                                     f"(a cleanup hook asked; `lxdsnap gc` deletes it after "
                                     f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(until))})")
                    continue
                if tracked.declared:
                    lxdapi.delete_owned_instance(self.own, tracked.instance, self.identity)
                    continue
                if tracked.dirty:  # a readonly test (or an interrupted one) may have changed it
                    if self._turns(tracked):
                        claims.claim(self.client, tracked.instance, self.identity, wait=self.lease_wait)
                    problem = self._restore(tracked)
                    if problem:
                        self.problems.append(problem)
                        continue
                lxdapi.delete_owned_snapshot(self.client, tracked.instance, tracked.snapshot, self.identity)
                claims.release(self.client, tracked.instance, self.identity)
            except FAULTS as exc:
                self.problems.append(f"cleaning up {tracked.name!r} (instance {tracked.instance}): {describe(exc)}")
        self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            self._sweep()
            if self._own is not None:
                self.notices.extend(line for line in projects.delete(self.client, self._own.project, self.identity)
                                    if line.startswith("kept"))
            if self._planned:  # a peer that died meanwhile (a crashed xdist worker) left its instances too
                self._sweep_dead_sessions(also_held=[t.instance for t in self.tracked.values() if not t.declared])
            self._stop_heartbeat()  # alive until here: our last change is done
            leases.close_lease(self.client, self.identity)
            return self.leftovers()
        except FAULTS as exc:
            self.problems.append(f"could not check LXD for leftovers: {describe(exc)}. Once LXD answers again, "
                                 "`lxdsnap gc` restores and removes what this session left")
            return []
        finally:
            self._stop_heartbeat()

    def _sweep(self) -> None:
        """Delete any instance this session created that is still there (a launch cut short by Ctrl-C)."""
        broken = {t.instance for t in self.tracked.values() if t.broken}
        client = self._own or self.client
        for name in lxdapi.owned_instances(client, self.identity):
            if name in broken:
                continue
            try:
                lxdapi.delete_owned_instance(client, name, self.identity)
            except FAULTS as exc:
                self.problems.append(f"deleting instance {name}: {describe(exc)}")

    def leftovers(self) -> list[Leftover]:
        """Everything of this session's that LXD still holds, looked up afresh."""
        client, found = self.client, []
        for name in lxdapi.owned_instances(self._own or client, self.identity):
            found.append(Leftover(name, f"instance {name}"))
        if self._own is not None and self._own.project in {p["name"] for p in projects.session_projects(client)}:
            if not lxdapi.listing(self._own.api.instances, recursion=False):  # else it holds kept states
                found.append(Leftover("session", f"project {self._own.project}"))
        for tracked in self.tracked.values():
            if tracked.declared and not tracked.kept:
                continue
            where = self.client_for(tracked.name)
            try:
                config = lxdapi.get_instance(where, tracked.instance)["config"]
            except NotFound:
                continue
            for snap in lxdapi.owned_snapshots(where, tracked.instance, self.identity):
                found.append(Leftover(tracked.name, f"snapshot {tracked.instance}/{snap}"))
            if self.identity.owns(config, lxdapi.where(where, tracked.instance)):
                found.append(Leftover(tracked.name, f"config key {OWNER_KEY} on {tracked.instance}"))
            elif OWNER_KEY not in config and POWER_KEY in config:
                found.append(Leftover(tracked.name, f"config key {POWER_KEY} on {tracked.instance}"))
        if leases.lease_of(client, self.identity)[0] is not None:
            found.append(Leftover("session", f"profile {leases.profile_name(self.identity)}"))
        return found
