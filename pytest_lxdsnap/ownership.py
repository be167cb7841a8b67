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
    started: float = field(default_factory=time.time)

    def tag(self) -> str:
        """The JSON value written to ``user.lxdsnap.owner`` / ``user.lxdsnap.created``."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def owns(self, config: dict[str, str], key: str = OWNER_KEY) -> bool:
        """True when ``config`` carries this session's tag under ``key``."""
        return parse_tag(config.get(key)) == self

    def snapshot_name(self, label: str) -> str:
        """A plugin snapshot name: recognisable prefix, this session's token, a label."""
        name = f"{SNAPSHOT_PREFIX}{self.token}-{label}"
        if not _SNAPSHOT_NAME.match(name):
            raise ValueError(f"invalid snapshot label {label!r}: use lowercase letters, digits and '-'")
        return name


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
