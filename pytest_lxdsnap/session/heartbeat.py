"""A session's heartbeat: its lease kept fresh, and its baselines kept from expiring, until its last LXD call.

Two threads, so a slow snapshot call never lets the lease run out: other sessions and ``lxdsnap gc`` judge a
session by its lease (see :mod:`pytest_lxdsnap.safety.leases`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.lxdapi import FAULTS, LXD_FAULTS, describe
from pytest_lxdsnap.safety import leases
from pytest_lxdsnap.safety.ownership import LEASE_SECONDS

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


class Heartbeat:
    """The lease (renewed every sixth of its length) and the baselines' expiry (pushed on at half their TTL)."""

    def __init__(self, session: LxdSession) -> None:
        self.session = session
        self.stopping = threading.Event()
        self.finishing = False  # the baselines go now: only the lease is renewed
        self._threads: list[threading.Thread] | None = None

    def start(self) -> None:
        """Open the session's lease (a profile no instance uses) and start both threads; once."""
        s = self.session
        if self._threads is not None:
            return
        try:
            leases.open_lease(s.client, s.identity)
        except LXD_FAULTS as exc:
            raise LxdSnapError(
                f"could not create this session's lease (profile {leases.profile_name(s.identity)}): "
                f"{describe(exc)}. Without it other sessions and `lxdsnap gc` could judge this one dead, so nothing "
                "was changed. Check that this client may create profiles (`lxdsnap doctor`)") from None
        self._threads = [threading.Thread(target=self._renew, name="lxdsnap-lease", daemon=True),
                         threading.Thread(target=self._extend, name="lxdsnap-baselines", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads or []:
            thread.join(timeout=LEASE_SECONDS / 3)  # a renewal under way ends within its request timeout

    def _renew(self) -> None:
        while not self.stopping.wait(LEASE_SECONDS / 6):
            try:
                leases.renew_lease(self.session.client, self.session.identity)
            except FAULTS:
                pass  # briefly unreachable: the next round tries again, well within the lease

    def _extend(self) -> None:
        ttl = self.session.snapshot_ttl
        while not self.stopping.wait(max(min(LEASE_SECONDS / 3, ttl / 4), 0.25)):
            try:
                self.extend_baselines()
            except FAULTS:
                pass

    def extend_baselines(self) -> None:
        """Push on the expiry of every baseline that has run through half its TTL (a long test, --pdb)."""
        s = self.session
        for tracked in list(s.tracked.values()):
            if self.finishing or tracked.broken or time.monotonic() - tracked.extended < s.snapshot_ttl / 2:
                continue
            client = s.client_for(tracked.name)
            lxdapi.extend_snapshot_expiry(client, tracked.instance, tracked.snapshot, s.snapshot_ttl)
            if tracked.shared is not None and tracked.shared.instance != tracked.instance:  # clones still copy it
                lxdapi.extend_snapshot_expiry(client, tracked.shared.instance, tracked.shared.snapshot, s.snapshot_ttl)
            tracked.extended = time.monotonic()
