"""Plain data the session hands around: what a test asks for, what the session tracks, what it hands out.

No LXD and no pytest here: these are the nouns of :mod:`pytest_lxdsnap.session`.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_lxdsnap.session.clones import ClonePool


@dataclass(frozen=True)
class Request:
    """A test's use of one container: its name, the strategy it asks for, and its scope key.

    Consecutive requests with the same scope key (and strategy) share one state.
    """

    name: str
    strategy: str | None = None  # None: the container's declared strategy, else the session default
    scope_key: str = ""


@dataclass(frozen=True)
class Shared:
    """A base this session shares with the other pytest-xdist workers of its run (see session.shared)."""

    instance: str
    snapshot: str  # its baseline: every worker's clones (and own copies) are copied from it
    kept: bool  # a --lxd-reuse build (left at its baseline for later runs), else deleted by its last user
    blank: tuple[str, ...] = ()  # lxdsnap keys the baseline carries: copies of it drop them

    @property
    def source(self) -> str:
        return f"{self.instance}/{self.snapshot}"


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
    lendable: bool = False  # the booted base may serve the first clone test itself (see LxdSession._start_clones)
    kept: bool = False  # a declared container kept between runs (--lxd-reuse)
    shared: Shared | None = None  # pytest-xdist: the run's shared base; clones come from it, and ``instance`` is
    # it too until an in-place test needs a base of this worker's own (a copy of its baseline)
    shared_stopping: Future[None] | None = None  # the builder stops the shared base once its baseline exists

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
