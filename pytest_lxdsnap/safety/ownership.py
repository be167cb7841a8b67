"""Who owns what: the tags the plugin stores in LXD so its objects are never mistaken for the user's.

A session writes its identity (random token, host, machine id, boot id, PID namespace, pid and the
process's start time) into the config key ``user.lxdsnap.owner`` of every instance it creates or holds.
Each tag is *bound* to the object it was written on (``server:project/instance``, or a profile or
project name): LXD copies config into snapshots and into copies the user makes (``lxc copy``), and a tag
bound to another place marks such a copy, which is never the plugin's to delete, restore or sweep.
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
"""Config key of a session's lease profile: until when (epoch seconds, the server's clock) it is alive."""

SESSION_PROFILE_PREFIX = "lxdsnap-session-"
"""A live session keeps a profile ``lxdsnap-session-<token>`` (used by no instance) holding its lease, so
renewing it never touches an instance a test is using."""

POWER_KEY = "user.lxdsnap.power"
"""Config key: the power state an existing instance had when a session took it (Running/Stopped)."""

EPHEMERAL_KEY = "user.lxdsnap.ephemeral"
"""Config key: the instance was ephemeral when a session took it. The flag is off while the session
holds it (LXD deletes an ephemeral instance when it stops) and is put back when the session lets go."""

RECOVERING_KEY = "user.lxdsnap.recovering"
"""Config key written with the claim that starts a recovery: the dead holder whose baseline is being put
back. Should the recovery itself die half-way, the next one still knows which baseline to restore."""

BUILDING_KEY = "user.lxdsnap.building"
"""Config key on a --lxd-reuse build while a session builds it (its tag): nobody else deletes it meanwhile.
Not the owner key: the build's baseline snapshot must never look like a session's own snapshot."""

KEPT_KEY = "user.lxdsnap.kept"
"""Config key on an instance kept after a failed test (--lxd-keep-failed): when gc may delete it."""
KEPT_PLACE_KEY = "user.lxdsnap.kept.place"
"""Config key beside it: the place it was kept at (a copy of a kept state is not one)."""

REUSE_KEY = "user.lxdsnap.reuse"
"""Config key on a declared container kept between runs (--lxd-reuse): the hash of its declaration."""

SHARED_KEY = "user.lxdsnap.shared"
"""Config key on the base of a declared container that the pytest-xdist workers of one run share: the run's
key, bound to the instance (see :func:`shared_marker`). No session's created or owner tag is on it: it is no
single worker's, and only :mod:`pytest_lxdsnap.safety.sharing` deletes it."""

SHARED_USER_PREFIX = "user.lxdsnap.shared.user."
"""Config keys ``<prefix><token>`` on a shared base (or on a --lxd-reuse build that xdist workers share): the tag
of each session that uses it. The last one to leave deletes the base; a dead one's key is dropped by the
next user to leave, or by ``lxdsnap gc``."""

CLOSING_KEY = "user.lxdsnap.shared.closing"
"""Config key on a shared base (or kept build) about to be deleted: the tag of the session (or gc) deleting it.
It is written with the same compare-and-swap that checks no live session uses it; a session that finds it
waits until the instance is gone instead of joining it."""

SHARED_FAILED_KEY = "user.lxdsnap.shared.failed"
"""Config key on a shared base whose build failed: the builder's error, for the workers waiting for it."""

SHARED_KEEP_KEY = "user.lxdsnap.shared.keep"
"""Config key on a shared base: a session's cleanup hook asked to keep it; the last user keeps it then."""

SHARED_SNAPSHOT = "lxdsnap-shared-base"
"""The baseline snapshot of a shared base (it carries no session tag: every user's clones copy it)."""

REUSE_PREFIX = "lxdsnap-keep-"
REUSE_SNAPSHOT = "lxdsnap-reuse-base"

LEASE_SECONDS = 90.0
"""A session renews its lease every sixth of this (15 s); a lease that ran out (server's clock) marks it dead."""

SNAPSHOT_PREFIX = "lxdsnap-"
INSTANCE_PREFIX = "lxdsnap-"
BASELINE_LABEL = "base"
"""Label of a session's baseline snapshot (``lxdsnap-<token>-base``); recovery after a crash looks for it."""
KEPT_LABEL = "failed"

LEGACY = "lxdsnap<0.2"
"""Stands for the machine id, PID namespace and place a tag written by lxdsnap before 0.2 does not have."""

_SNAPSHOT_NAME = re.compile(r"^lxdsnap-[a-z0-9]+-[a-z0-9-]+$")


def place(project: str | None, instance: str, server: str = "") -> str:
    """Where an instance lives, as its tags record it: ``server:project/name`` (the server by its certificate's
    fingerprint, shared by a cluster's members), so a copy to another project or server is not the original."""
    return f"{server[:16]}:{project or 'default'}/{instance}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except (OSError, UnicodeDecodeError):
        return "unknown"


def _pid_namespace() -> str:
    try:
        info = os.stat("/proc/self/ns/pid")
    except OSError:
        return "unknown"
    return f"{info.st_dev}:{info.st_ino}"


def _proc_is_ours() -> bool:
    """True when /proc shows this process's PID namespace (not so after `unshare --pid` without
    --mount-proc): only then do pids read there mean what our pids mean."""
    try:
        return int(os.readlink("/proc/self")) == os.getpid()
    except (OSError, ValueError):
        return False


def _ticks(pid: int | str) -> int | None:
    """Start time of a process in clock ticks since boot (immune to clock steps), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if fields[0] in ("Z", "X"):
        return None  # exited, not yet reaped by its parent (a crashed xdist worker, say)
    return int(fields[19])  # field 22 of stat


def _process_start(ticks: int | None = None) -> float | None:
    """When a process started (epoch seconds; by default this one): what lxdsnap before 0.2 compared."""
    ticks = _ticks("self") if ticks is None else ticks
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return None if ticks is None else boot + ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SessionIdentity:
    """The identity of one pytest session (or one `lxdsnap gc`), as stored in LXD."""

    token: str = field(default_factory=lambda: secrets.token_hex(4))
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    boot_id: str = field(default_factory=lambda: _read("/proc/sys/kernel/random/boot_id"))
    machine_id: str = field(default_factory=lambda: _read("/etc/machine-id"))
    pidns: str = field(default_factory=_pid_namespace)
    ticks: int = field(default_factory=lambda: _ticks("self") or 0)
    started: float = field(default_factory=lambda: _process_start() or time.time())  # messages only: clocks step

    def tag(self, where: str) -> str:
        """The JSON value written to ``user.lxdsnap.owner`` / ``created``, bound to ``where``."""
        return json.dumps({**asdict(self), "place": where}, sort_keys=True, separators=(",", ":"))

    def owns(self, config: dict[str, str], where: str, key: str = OWNER_KEY) -> bool:
        """True when ``config`` carries this session's tag under ``key``, bound to ``where``."""
        return holder_at(config, where, key) == self

    def local_evidence(self) -> bool | None:
        """Whether the session still runs, where this process can know for sure: same machine, boot and
        PID namespace (pid and start ticks). None (unknown) anywhere else: its lease decides."""
        if self.machine_id == LEGACY:
            return self._legacy_evidence()
        me = SessionIdentity()
        if (self.host, self.machine_id, self.boot_id, self.pidns) != (me.host, me.machine_id, me.boot_id, me.pidns):
            return None
        if "unknown" in (self.machine_id, self.boot_id, self.pidns) or not _proc_is_ours():
            return None
        return _ticks(self.pid) == self.ticks

    def _legacy_evidence(self) -> bool | None:
        """A session of lxdsnap before 0.2 (no machine id, PID namespace or ticks in its tag): judged as it
        judged itself, by host, boot id and the pid's start time."""
        if self.host != socket.gethostname() or self.boot_id != _read("/proc/sys/kernel/random/boot_id"):
            return None
        ticks = _ticks(self.pid)
        if ticks is None:
            return False
        start = _process_start(ticks)
        return start is not None and abs(start - self.started) < 2.0

    def describe(self) -> str:
        return f"session {self.token} (host {self.host}, pid {self.pid})"

    def snapshot_name(self, label: str) -> str:
        """A plugin snapshot name: recognisable prefix, this session's token, a label."""
        name = f"{SNAPSHOT_PREFIX}{self.token}-{label}"
        if not _SNAPSHOT_NAME.match(name):
            raise ValueError(f"invalid snapshot label {label!r}: use lowercase letters, digits and '-'")
        return name


def holder_is_dead(holder: SessionIdentity, lease: str | None, server_now: float) -> tuple[bool, str]:
    """Whether the session named in a tag is gone, and why (for messages).

    Proof from this machine decides (the same boot and PID namespace: its pid is gone, or is another
    process); anywhere else only a lease that ran out by the server's clock (``server_now``) does.
    """
    alive = holder.local_evidence()
    if alive is True:
        return False, f"pid {holder.pid} in this PID namespace still runs"
    if alive is False:
        return True, f"pid {holder.pid} in this PID namespace is gone"
    try:
        expires = float(lease or 0)
    except ValueError:
        expires = 0.0
    if expires > server_now:
        return False, f"its lease runs for {expires - server_now:.0f} s more"
    return True, "its lease ran out" if expires else "it holds no lease"


@dataclass(frozen=True)
class Tag:
    """A parsed tag: the session, and the place it was written on."""

    holder: SessionIdentity
    where: str


def read_tag(value: str | None) -> Tag | None:
    """The tag stored in a config value, or None when the value is absent or not a tag of this version."""
    if not value:
        return None
    try:
        data = json.loads(value)
        legacy = "place" not in data  # written by lxdsnap before 0.2: bound to nothing, so to wherever it is
        holder = SessionIdentity(
            token=str(data["token"]), host=str(data["host"]), pid=int(data["pid"]), boot_id=str(data["boot_id"]),
            machine_id=LEGACY if legacy else str(data["machine_id"]), pidns=LEGACY if legacy else str(data["pidns"]),
            ticks=-1 if legacy else int(data["ticks"]), started=float(data["started"]),
        )
        return Tag(holder, LEGACY if legacy else str(data["place"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def holder_at(config: dict[str, str], where: str, key: str = OWNER_KEY) -> SessionIdentity | None:
    """The session whose tag under ``key`` is bound to ``where``; None when there is none (or it was
    written somewhere else: a copy's)."""
    tag = read_tag(config.get(key))
    return tag.holder if tag is not None and tag.where in (where, LEGACY) else None


def shared_marker(run: str, where: str) -> str:
    """The value of ``user.lxdsnap.shared``: the run's key, bound to ``where`` like a tag."""
    return json.dumps({"run": run, "place": where}, sort_keys=True, separators=(",", ":"))


def shared_run(config: dict[str, str], where: str) -> str | None:
    """The run key of a shared base bound to ``where``; None when ``config`` marks none (or a copy's)."""
    try:
        data = json.loads(config.get(SHARED_KEY) or "")
        return str(data["run"]) if data["place"] == where else None
    except (ValueError, KeyError, TypeError):
        return None


def foreign_keys(config: dict[str, str], where: str) -> list[str]:
    """The lxdsnap keys in ``config`` that were not written for ``where`` (a copy carries them)."""
    tagged = (OWNER_KEY, CREATED_KEY)
    if any(k in config for k in tagged) and not any(holder_at(config, where, k) for k in tagged):
        return sorted(k for k in config if k.startswith("user.lxdsnap."))
    if SHARED_KEY in config and shared_run(config, where) is None and not any(k in config for k in tagged):
        return sorted(k for k in config if k.startswith("user.lxdsnap."))  # a copy of a shared base
    if KEPT_KEY in config and kept_until(config, where) is None:
        return sorted(k for k in config if k.startswith("user.lxdsnap."))
    return []


def kept_config(until: float, where: str) -> dict[str, str]:
    """The keys that mark a kept failed-test state: until when (a plain number, as older versions read it),
    and the place it was kept at."""
    return {KEPT_KEY: f"{until:.0f}", KEPT_PLACE_KEY: where}


def kept_until(config: dict[str, str], where: str) -> float | None:
    """When a kept state (kept at ``where``) may be deleted; None when it is not one, or was kept elsewhere."""
    if KEPT_KEY not in config or config.get(KEPT_PLACE_KEY) != where:
        return None
    try:
        return float(config[KEPT_KEY])
    except ValueError:
        return None


def is_plugin_snapshot_name(name: str) -> bool:
    """True when ``name`` has the shape of a plugin snapshot (the tag must still be checked)."""
    return bool(_SNAPSHOT_NAME.match(name))


def is_kept_snapshot_name(name: str) -> bool:
    """A failed test's state kept on purpose (--lxd-keep-failed); LXD deletes it when it expires."""
    return is_plugin_snapshot_name(name) and f"-{KEPT_LABEL}-" in name


SESSION_KEYS = (OWNER_KEY, POWER_KEY, EPHEMERAL_KEY, RECOVERING_KEY, BUILDING_KEY)
"""The keys a session writes on an existing instance it holds, and removes when it lets go."""
