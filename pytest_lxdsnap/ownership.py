"""Who owns what: the tags the plugin stores in LXD so its objects are never mistaken for the user's.

A session writes its identity (random token, host, pid, boot id, start time) into the config key
``user.lxdsnap.owner`` of every instance it creates or snapshots. LXD copies instance config into a
snapshot, so each plugin snapshot carries the tag as well; a destructive call checks it first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field

OWNER_KEY = "user.lxdsnap.owner"
"""Config key on instances (and so on their snapshots) naming the session that uses them."""

CREATED_KEY = "user.lxdsnap.created"
"""Config key on instances the plugin launched itself: only those may ever be deleted."""

LEASE_KEY = "user.lxdsnap.lease"
"""Config key of a session's lease profile: until when (epoch seconds) the session counts as alive."""

SESSION_PROFILE_PREFIX = "lxdsnap-session-"
"""A live session keeps a profile ``lxdsnap-session-<token>`` (used by no instance) holding its lease, so
renewing it never touches an instance a test is using."""

POWER_KEY = "user.lxdsnap.power"
"""Config key: the power state an existing instance had when a session took it (Running/Stopped)."""

KEPT_KEY = "user.lxdsnap.kept"
"""Config key on an instance kept after a failed test (--lxd-keep-failed): when gc may delete it."""

REUSE_KEY = "user.lxdsnap.reuse"
"""Config key on a declared container kept between runs (--lxd-reuse): the hash of its declaration."""

REUSE_PREFIX = "lxdsnap-keep-"
REUSE_SNAPSHOT = "lxdsnap-reuse-base"

LEASE_SECONDS = 90.0
"""A session renews its leases every third of this; a lease that ran out marks its owner dead."""

SNAPSHOT_PREFIX = "lxdsnap-"
INSTANCE_PREFIX = "lxdsnap-"

_SNAPSHOT_NAME = re.compile(r"^lxdsnap-[a-z0-9]+-[a-z0-9-]+$")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


@dataclass(frozen=True)
class SessionIdentity:
    """The identity of one pytest session, as stored in LXD."""

    token: str = field(default_factory=lambda: secrets.token_hex(4))
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    boot_id: str = field(default_factory=_boot_id)
    started: float = field(default_factory=lambda: _process_start(os.getpid()) or time.time())  # process start

    def tag(self) -> str:
        """The JSON value written to ``user.lxdsnap.owner`` / ``user.lxdsnap.created``."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def owns(self, config: dict[str, str], key: str = OWNER_KEY) -> bool:
        """True when ``config`` carries this session's tag under ``key``."""
        return parse_tag(config.get(key)) == self

    def is_alive(self, now: float | None = None) -> bool | None:
        """Whether the session still runs: known on its own host (boot id, pid, process start time),
        None (unknown) for a session on another host, whose lease then decides."""
        if self.host != socket.gethostname():
            return None
        if self.boot_id != _boot_id():
            return False  # the host rebooted since
        started = _process_start(self.pid)
        return started is not None and abs(started - self.started) < 2.0  # else the pid was reused

    def snapshot_name(self, label: str) -> str:
        """A plugin snapshot name: recognisable prefix, this session's token, a label."""
        name = f"{SNAPSHOT_PREFIX}{self.token}-{label}"
        if not _SNAPSHOT_NAME.match(name):
            raise ValueError(f"invalid snapshot label {label!r}: use lowercase letters, digits and '-'")
        return name


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None  # exited, not yet reaped by its parent (a crashed xdist worker, say)
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in ticks


def holder_is_dead(holder: SessionIdentity, lease: str | None, now: float | None = None) -> tuple[bool, str]:
    """Whether the session named in a tag is gone, and why (for messages)."""
    alive = holder.is_alive()
    if alive is True:
        return False, f"pid {holder.pid} on this host still runs"
    if alive is False:
        return True, f"pid {holder.pid} on this host is gone (or the host rebooted)"
    try:
        expires = float(lease or 0)
    except ValueError:
        expires = 0.0
    now = time.time() if now is None else now
    if expires > now:
        return False, f"its lease runs for {expires - now:.0f} s more"
    return True, "its lease ran out" if expires else "it holds no lease"


def parse_tag(value: str | None) -> SessionIdentity | None:
    """The session identity stored in a tag, or None when the value is absent or not one of ours."""
    if not value:
        return None
    try:
        data = json.loads(value)
        return SessionIdentity(
            token=str(data["token"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            boot_id=str(data["boot_id"]),
            started=float(data["started"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def is_plugin_snapshot_name(name: str) -> bool:
    """True when ``name`` has the shape of a plugin snapshot (the tag must still be checked)."""
    return bool(_SNAPSHOT_NAME.match(name))


KEPT_LABEL = "failed"


def is_kept_snapshot_name(name: str) -> bool:
    """A failed test's state kept on purpose (--lxd-keep-failed); LXD deletes it when it expires."""
    return is_plugin_snapshot_name(name) and f"-{KEPT_LABEL}-" in name
