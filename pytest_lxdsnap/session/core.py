"""One pytest session's containers: adopt existing ones, launch declared ones, hand out clean states.

No pytest here: the plugin drives this class, and so can any other runner. A test asks for
:class:`Request` s and gets :class:`Checkout` s (the instance it may change); :meth:`LxdSession.release`
brings each back to its baseline with the checkout's strategy (see :mod:`pytest_lxdsnap.session.strategy`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial

import pylxd

from pytest_lxdsnap.declarations import READY_OFF, SYSTEMD_READY, TABLE, ContainerSpec, ExistingSpec, ReadyCheck
from pytest_lxdsnap.errors import ConfigError, LxdSnapError, ResetError
from pytest_lxdsnap.handle import Container
from pytest_lxdsnap.lxd import lxdapi, projects
from pytest_lxdsnap.lxd.commands import Commands
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.lxdapi import LXD_FAULTS, describe
from pytest_lxdsnap.lxd.readiness import declared_where, pid1_is_systemd, wait_ready
from pytest_lxdsnap.model import Checkout, Leftover, Request, Shared, Tracked
from pytest_lxdsnap.options import Options
from pytest_lxdsnap.safety import claims
from pytest_lxdsnap.safety.ownership import INSTANCE_PREFIX, SessionIdentity
from pytest_lxdsnap.session import cleanup, keeping, launch, preflight, resets, shared
from pytest_lxdsnap.session.clones import ClonePool, Slots
from pytest_lxdsnap.session.heartbeat import Heartbeat
from pytest_lxdsnap.session.strategy import resolve

BACKGROUND_WORKERS = 8


def worker_number(worker: str | None) -> int:
    """pytest-xdist's worker id as a number: "gw3" -> 3 (0 outside xdist)."""
    return int(worker[2:]) if worker and worker[2:].isdigit() else 0


class LxdSession:
    """The containers of one test session on one LXD endpoint."""

    def __init__(self, endpoint: Endpoint, specs: dict[str, ContainerSpec], options: Options | None = None, *,
                 identity: SessionIdentity | None = None, worker: str | None = None,
                 existing: dict[str, ExistingSpec] | None = None, run: str | None = None,
                 workers: int = 1) -> None:
        self.endpoint = endpoint
        self.specs = specs
        self.existing = existing or {}  # [tool.lxdsnap.existing.<name>]: settings for containers not declared
        self._systemd: dict[str, bool] = {}  # whether a container's PID 1 is systemd, read once per session
        self.options = options = options or Options()
        self.snapshot_ttl = options.lxd_snapshot_ttl
        self.lease_wait = options.lxd_lease_wait
        self.identity = identity or SessionIdentity()
        self.take_turns = worker is not None  # claim existing containers per test, not per session (xdist workers)
        self.worker = worker_number(worker)  # picks its cluster member from a spec's targets
        self.run = run  # pytest-xdist's id of the run, the same in all its workers: they share declared bases
        self.run_workers = max(workers, 1)  # the run's workers: each runs about its share of the planned tests
        self.joined: dict[str, Shared] = {}  # the shared bases this session uses (or tried to), by container
        self.shared_lock = threading.Lock()
        self.closing = threading.Event()  # finish() began: background waits give up
        self.on_provision: Callable[[ContainerSpec, str], None] | None = None  # (spec, instance): after provision
        self.on_ready: Callable[[str, str], None] | None = None  # (name, instance): a fresh one passed its check
        # (name, stage or None once ready, seconds waited) on every tick while a test waits for a launch
        self.on_progress: Callable[[str, str | None, float], None] | None = None
        self.stages: dict[str, str] = {}  # what each background launch is doing now
        self.tracked: dict[str, Tracked] = {}
        self.problems: list[str] = []
        self.notices: list[str] = []
        self.kept: list[str] = []  # states of failed tests kept on purpose (--lxd-keep-failed)
        self.kept_count = 0
        self.commands = Commands()  # the lxc (or incus) command lines messages show; set on connect
        self.heartbeat = Heartbeat(self)
        self.executor = ThreadPoolExecutor(BACKGROUND_WORKERS, thread_name_prefix="lxdsnap")
        self.launches: dict[str, Future[Tracked]] = {}
        self.planned: dict[str, list[Request]] = {}
        self._clone_slots = Slots(options.lxd_max_clones)  # clones that exist at once, all containers
        self._failed: dict[str, LxdSnapError] = {}
        self._client: pylxd.Client | None = None
        self._own: pylxd.Client | None = None  # --lxd-project auto: the session's own project
        self._own_lock = threading.Lock()

    @property
    def client(self) -> pylxd.Client:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def own_project(self) -> pylxd.Client | None:
        """The project this session made for itself (--lxd-project auto), once it made it."""
        return self._own

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

    def container(self, name: str, instance: str) -> Container:
        """The handle tests and hooks get for ``instance`` of container ``name`` (a declared one is disposable)."""
        return Container(self.client_for(name), name, instance, disposable=name in self.specs, endpoint=self.endpoint)

    def client_for(self, name: str) -> pylxd.Client:
        """The client for a container: declared ones live where the session creates instances."""
        return self.own if name in self.specs else self.client

    def connect(self) -> None:
        """Connect and check every declared container against the server (pools, images, profiles)."""
        if self.auto_project and self.options.lxd_reuse:
            raise ConfigError("--lxd-reuse keeps declared containers between runs, but --lxd-project auto deletes "
                              "the session's project at the end: name a project (--lxd-project NAME) to reuse")
        client = connect(replace(self.endpoint, project=None) if self.auto_project else self.endpoint)
        self.commands = Commands(incus=lxdapi.is_incus(client))
        preflight.check_specs(self, client)
        preflight.check_members(self, client)
        self._client = client

    # -- planning ------------------------------------------------------------------------------
    def plan(self, requests: list[Request]) -> None:
        """The requests the collected tests will make, in run order: launch declared containers now.

        Declared containers launch and provision in the background, concurrently; the first test
        that needs one waits for it. Clones are then prepared ahead for the tests that will use them.
        """
        self.heartbeat.start()
        self.executor.submit(cleanup.sweep_dead_sessions, self)
        for request in requests:
            self.planned.setdefault(request.name, []).append(request)
        self._clone_slots.reserve = sum(1 for name in self.planned if name in self.specs)  # one each, always
        for name in self.planned:
            if name in self.specs and name not in self.launches and name not in self.tracked:
                self.launches[name] = self.executor.submit(launch.launch, self, self.specs[name])

    def strategy_for(self, tracked: Tracked, request: Request) -> str:
        """The concrete strategy of ``request`` on ``tracked`` (``auto`` resolved by pool driver)."""
        spec = self.specs.get(tracked.name)
        requested = request.strategy or (spec.strategy if spec else None) or self.options.lxd_strategy
        try:
            return resolve(requested, declared=tracked.declared, pool_driver=tracked.pool_driver)
        except ValueError as exc:
            raise ConfigError(f"container {tracked.name!r}: {exc}") from None

    def planned_clone_uses(self, tracked: Tracked) -> int:
        """The clones this session expects to use: under pytest-xdist every worker collects every test but runs
        about its share (a clone beyond it is made when a test asks; one prepared for nothing costs as much)."""
        keys = {r.scope_key for r in self.planned.get(tracked.name, []) if self.strategy_for(tracked, r) == "clone"}
        return -(-len(keys) // self.run_workers)

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
                problem = resets.release_one(self, current)
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
            if name in self.launches:
                tracked = launch.wait_for_launch(self, name, self.launches.pop(name))
            elif name in self.specs:
                tracked = launch.launch(self, self.specs[name])
            else:
                tracked = launch.adopt(self, name)
        except LxdSnapError as exc:
            self._failed[name] = exc
            raise
        except LXD_FAULTS as exc:
            hint = launch.space_hint(self, name, exc)
            error = LxdSnapError(f"preparing container {name!r} failed: {describe(exc)}{hint}")
            self._failed[name] = error
            raise error from None
        self.tracked[name] = tracked
        self._note_pool(tracked)
        if tracked.declared and self.planned_clone_uses(tracked):
            self._start_clones(tracked)
        return tracked

    def _checkout(self, tracked: Tracked, strategy: str, scope_key: str) -> Checkout:
        if tracked.broken:
            raise ResetError(tracked.broken)
        start = time.perf_counter()
        if strategy == "clone":
            if tracked.clones is None:
                self._start_clones(tracked)
            assert tracked.clones is not None
            if tracked.lendable:  # the booted base, as clean as a clone (given back: resets.release_one)
                tracked.lendable, tracked.lent, tracked.dirty = False, True, True
                instance = tracked.instance
            else:
                instance = tracked.clones.take()
            tracked.reset_times.append(time.perf_counter() - start)
        else:
            if tracked.shared is not None and tracked.instance == tracked.shared.instance:
                shared.own_copy(self, tracked)  # an in-place test never restores the base other workers copy
            instance = tracked.instance
            if self.turns(tracked):
                claims.claim(self.client, instance, self.identity, wait=self.lease_wait, log=self.notices.append)
            resets.power_base(self, tracked)
            tracked.dirty = True
        tracked.strategies[strategy] += 1
        return Checkout(tracked, strategy, scope_key, instance)

    def _start_clones(self, tracked: Tracked) -> None:
        spec = self.specs[tracked.name]
        source = tracked.shared
        base = source.instance if source else tracked.instance
        only_clones = all(self.strategy_for(tracked, r) == "clone" for r in self.planned.get(tracked.name, []))
        # A base nothing provisioned was booted, checked and snapshotted just now: it is what a clone would be,
        # so the first clone test may use it (one copy, boot and delete fewer, no wait). Clones copy the snapshot,
        # never the base. A provisioned base is not: a clone boots what provisioning left (enabled units ...).
        tracked.lendable = (bool(self.planned.get(tracked.name)) and only_clones and tracked.base_running
                            and source is None and not tracked.kept and not tracked.dirty
                            and not self.options.lxd_keep_failed
                            and not spec.changes_the_image and self.on_provision is None)
        tracked.clones = ClonePool(
            self.own, self.executor, container=tracked.name, base=base,
            snapshot=source.snapshot if source else tracked.snapshot, profiles=spec.profiles, identity=self.identity,
            ahead=self.options.lxd_prepare_ahead, planned=self.planned_clone_uses(tracked) - tracked.lendable,
            ready=lambda instance: self.check_ready(tracked.name, instance), target=lxdapi.location(self.own, base),
            slots=self._clone_slots, prefix=f"{INSTANCE_PREFIX}{spec.name}-{self.identity.token}" if source else None,
            blank=source.blank if source else (),
        )
        tracked.clones.top_up()
        if only_clones and tracked.base_running and source is None and not tracked.lendable:
            # Only clones will run: stop the base instance in the background (its delete is then quick).
            resets.stop_base(self, tracked)

    def check_ready(self, name: str, instance: str) -> None:
        """Wait until ``instance`` of container ``name`` is ready, then run the ready hooks."""
        self.wait_until_ready(name, instance)
        if self.on_ready is not None:
            self.on_ready(name, instance)

    def wait_until_ready(self, name: str, instance: str) -> None:
        """Run the container's readiness check on ``instance`` (a running one); ReadinessError when it fails."""
        check = self.ready_check(name, instance)
        if check.off:
            return
        declared = name in self.specs
        wait_ready(self.client_for(name), instance, check, name, disposable=declared,
                   where=declared_where(name) if declared else f"[{TABLE}.existing.{name}]")

    def ready_check(self, name: str, instance: str) -> ReadyCheck:
        """The declared ``ready``; without one, systemd's boot when the container's PID 1 is systemd (read from
        ``instance`` the first time, then remembered), else no check."""
        spec = self.specs.get(name)
        declared = spec.ready if spec is not None else self.existing[name].ready if name in self.existing else None
        if declared is not None:
            return declared
        return SYSTEMD_READY if self.runs_systemd(name, instance) else READY_OFF

    def runs_systemd(self, name: str, instance: str) -> bool:
        """Whether container ``name``'s PID 1 is systemd (asked of the running ``instance`` once per session)."""
        if name not in self._systemd:
            self._systemd[name] = pid1_is_systemd(self.client_for(name), instance, disposable=name in self.specs)
        return self._systemd[name]

    def wait_for_boot(self, name: str, instance: str) -> None:
        """Before a declared container's provision commands: when its PID 1 is systemd, its boot has finished (a
        provision command that runs ``systemctl`` earlier finds no bus). Skipped with ``ready = false``; a
        degraded boot is the readiness check's to judge, after provisioning."""
        ready = self.specs[name].ready
        if (ready is not None and ready.off) or not self.runs_systemd(name, instance):
            return
        check = replace(SYSTEMD_READY, timeout=ready.timeout) if ready is not None and ready.systemd else SYSTEMD_READY
        wait_ready(self.own, instance, check, name, where=declared_where(name))

    def _note_pool(self, tracked: Tracked) -> None:
        if tracked.pool_driver == "dir" and not any(f"pool {tracked.pool!r}" in n for n in self.notices):
            self.notices.append(
                f"pool {tracked.pool!r} uses the dir driver: every snapshot and clone copies the whole rootfs "
                f"(the baseline of {tracked.name!r} took {tracked.snapshot_seconds:.2f} s) and each reset is a "
                "full restore, so 'auto' resets in place. A copy-on-write pool makes both near-instant: "
                f"`{self.commands('storage create fast btrfs size=8GiB')}`, then `pool = \"fast\"` in "
                f"[{TABLE}.containers.<name>] (run `lxdsnap doctor` to see the pools)"
            )

    # -- resetting -----------------------------------------------------------------------------
    def release(self, checkouts: list[Checkout], *, keep: frozenset[str] | set[str] = frozenset()) -> None:
        """Give the states back after a test: keep those named in ``keep`` for the next test of the same
        scope, reset the others (concurrently); ResetError names what failed."""
        to_reset = []
        for checkout in checkouts:
            if checkout.tracked.name in keep:
                checkout.tracked.current = checkout
            else:
                checkout.tracked.current = None
                to_reset.append(checkout)
        if len(to_reset) <= 1:
            problems = [resets.release_one(self, c) for c in to_reset]
        else:
            problems = list(self.executor.map(partial(resets.release_one, self), to_reset))
        messages = [p for p in problems if p]
        if messages:
            raise ResetError("\n".join(messages))

    def reset(self, tracked: list[Tracked]) -> None:
        """Restore each base instance to its baseline now (in place), concurrently."""
        self.release([Checkout(t, "inplace", "", t.instance) for t in tracked])

    def turns(self, tracked: Tracked) -> bool:
        """Whether ``tracked`` is claimed per test (an existing container shared by xdist workers)."""
        return self.take_turns and not tracked.declared

    def keep_failed(self, checkouts: list[Checkout], test: str) -> list[str]:
        """Keep the state of each container before its reset; the commands to inspect each (see keeping)."""
        return keeping.keep_failed(self, checkouts, test)

    def finish(self, keep: Iterable[str] = ()) -> list[Leftover]:
        """Reset what is still checked out, delete what this session made; what is left over (see cleanup)."""
        return cleanup.finish(self, keep)

    def leftovers(self) -> list[Leftover]:
        """Everything of this session's that LXD still holds, looked up afresh."""
        return cleanup.leftovers(self)
