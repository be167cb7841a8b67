"""Fresh copy-on-write clones of a declared container's baseline, prepared ahead and retired behind.

A clone is ``<base instance>-<n>`` (of a base pytest-xdist workers share: ``lxdsnap-<name>-<session token>-<n>``),
copied from the baseline snapshot (with the session's tags, so only this session may delete it), started
(LXD gives it its own machine-id and hostname on this first start: :mod:`pytest_lxdsnap.lxd.identity`),
and checked for readiness before a test takes it. Used clones are stopped and deleted in the background;
:meth:`ClonePool.close` waits for all of it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, wait

import pylxd

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.safety.ownership import CREATED_KEY, OWNER_KEY, SessionIdentity

MAX_INSTANCE_NAME = 63
SLOT_WAIT = 120.0
"""Seconds a test waits for room under --lxd-max-clones (clones in use by earlier tests are being deleted)."""


class Slots:
    """The session's cap on clones that exist at once (--lxd-max-clones), shared by its clone pools.

    Preparing ahead never takes the last ``reserve`` free slots, so a test's own clone of any container can
    always be made; a test that finds none free waits for a retired clone's deletion."""

    def __init__(self, total: int, reserve: int = 0) -> None:
        self.total = total
        self.reserve = reserve
        self._free = total
        self._changed = threading.Condition()

    def try_take_ahead(self) -> bool:
        with self._changed:
            if self._free <= self.reserve:
                return False
            self._free -= 1
            return True

    def take(self, timeout: float) -> bool:
        with self._changed:
            if not self._changed.wait_for(lambda: self._free > 0, timeout):
                return False
            self._free -= 1
            return True

    def give(self) -> None:
        with self._changed:
            self._free = min(self._free + 1, self.total)
            self._changed.notify()

    @property
    def in_use(self) -> int:
        return self.total - self._free


class ClonePool:
    """Clones of one baseline snapshot: ``take()`` a ready one, ``retire()`` it after the test."""

    def __init__(
        self,
        client: pylxd.Client,
        executor: Executor,
        *,
        container: str,
        base: str,
        snapshot: str,
        profiles: tuple[str, ...],
        identity: SessionIdentity,
        ahead: int,
        planned: int,
        ready: Callable[[str], object] | None = None,
        target: str | None = None,
        slots: Slots | None = None,
        prefix: str | None = None,
        blank: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self.target = target  # the cluster member of the base (None: standalone or left to LXD)
        self._executor = executor
        self.container = container
        self.base = base
        self.snapshot = snapshot
        self.prefix = prefix or base  # clones are <prefix>-<n> (a shared base's: named after this session)
        self.blank = blank  # keys of the baseline's config the clones must not copy (a shared base's own)
        self.profiles = profiles
        self.identity = identity
        self.ahead = ahead
        self.planned = planned  # uses still expected from the collected tests
        self._ready = ready
        self._slots = slots or Slots(ahead + 2)  # the session's cap on clones at once
        self._lock = threading.Lock()
        self._counter = 0
        self._prepared: deque[Future[str]] = deque()
        self._retiring: list[Future[None]] = []
        self._error: LxdSnapError | None = None
        self.prepare_seconds: list[float] = []  # each clone's copy + start + readiness, off the critical path

    # -- the test's side -------------------------------------------------------------------------
    def take(self) -> str:
        """A started, ready clone of the baseline (waits only if none is prepared yet)."""
        if self._error is not None:
            raise type(self._error)(str(self._error))
        with self._lock:
            waiting = not self._prepared
        if waiting and not self._slots.take(timeout=SLOT_WAIT):
            raise LxdSnapError(
                f"no clone of {self.container!r} could be made in {SLOT_WAIT:g} s: this session already has "
                f"{self._slots.in_use} clones (--lxd-max-clones={self._slots.total}), in use by this test or not "
                f"yet deleted. Raise --lxd-max-clones to at least the number of declared containers one test uses, "
                f"plus one")
        with self._lock:
            if waiting:
                self._prepared.append(self._executor.submit(self._make))
            future = self._prepared.popleft()
            self.planned = max(self.planned - 1, 0)
        try:
            instance = future.result()
        except LxdSnapError as exc:
            self._error = exc
            raise
        self.top_up()
        return instance

    def retire(self, instance: str) -> None:
        """Stop and delete a used clone in the background."""
        self._retiring.append(self._executor.submit(self._retire, instance))

    def let_go(self, instance: str) -> None:
        """A clone kept for inspection (--lxd-keep-failed) is no longer the pool's: its slot is free."""
        self._slots.give()

    def top_up(self) -> None:
        """Keep up to ``ahead`` clones prepared, but no more than the collected tests will use."""
        with self._lock:
            while self._error is None and len(self._prepared) < min(self.ahead, self.planned):
                if not self._slots.try_take_ahead():
                    break  # at the cap: the next retirement makes room
                self._prepared.append(self._executor.submit(self._make))

    # -- the background's side -------------------------------------------------------------------
    def _next_name(self) -> str:
        with self._lock:
            self._counter += 1
            name = f"{self.prefix}-{self._counter}"
        if len(name) > MAX_INSTANCE_NAME:
            raise LxdSnapError(f"clone name {name!r} is longer than LXD's {MAX_INSTANCE_NAME} characters; "
                               f"use a shorter container name than {self.container!r}")
        return name

    def _make(self) -> str:
        """Copy, start and check one clone (its slot is taken; given back if it fails)."""
        try:
            return self._make_in_slot()
        except BaseException:
            self._slots.give()
            raise

    def _make_in_slot(self) -> str:
        start = time.perf_counter()
        name = self._next_name()
        body = {
            "name": name,
            "type": "container",
            "source": {"type": "copy", "source": f"{self.base}/{self.snapshot}", "instance_only": True},
            "profiles": list(self.profiles),
            # this session's tags, whatever the snapshot carries (a kept baseline carries none)
            "config": {**dict.fromkeys(self.blank, ""),  # an empty value keeps LXD from copying the key
                       **dict.fromkeys((CREATED_KEY, OWNER_KEY), self.identity.tag(lxdapi.where(self._client, name)))},
        }
        try:
            lxdapi.create_instance(self._client, body, target=self.target)  # beside the base: a CoW copy
        except lxdapi.LXD_FAULTS as exc:
            raise LxdSnapError(f"cloning container {self.container!r} from {self.base}/{self.snapshot} failed: "
                               f"{lxdapi.describe(exc)}") from None
        try:
            lxdapi.set_power(self._client, name, "start")
            if self._ready is not None:
                self._ready(name)
        except BaseException as exc:
            self._delete(name)
            if isinstance(exc, lxdapi.LXD_FAULTS):
                raise LxdSnapError(f"starting clone {name} of container {self.container!r} failed: "
                                   f"{lxdapi.describe(exc)}") from None
            raise
        self.prepare_seconds.append(time.perf_counter() - start)
        return name

    def _delete(self, instance: str) -> None:
        lxdapi.delete_owned_instance(self._client, instance, self.identity)

    def _retire(self, instance: str) -> None:
        try:
            self._delete(instance)
        finally:
            self._slots.give()

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Delete unused and used clones; wait for the background; the problems met, if any."""
        with self._lock:
            self.planned = 0
            pending = list(self._prepared)
            self._prepared.clear()
        problems = []
        for future in pending:
            if future.cancel():
                self._slots.give()
                continue
            try:
                self.retire(future.result())
            except Exception as exc:  # noqa: BLE001 - a clone that failed to prepare deleted itself
                if not isinstance(exc, LxdSnapError):
                    problems.append(f"preparing a clone of {self.container!r}: {lxdapi.describe(exc)}")
        wait(self._retiring)
        for retired in self._retiring:
            failure = retired.exception()
            if failure is not None:
                problems.append(f"deleting a clone of {self.container!r}: {lxdapi.describe(failure)}")
        self._retiring.clear()
        return problems
