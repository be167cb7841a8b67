"""The record of changes ``lxdsnap setup`` makes, kept in a state file so ``lxdsnap setup --undo`` can reverse them.

Each change (a package setup installed, the apt source it wrote, a daemon it started, a pool, the default
profile's root disk, an image, the lxcfs fast-stop diversion, a built image tarball kept for the next import,
the package cache it started) is saved in
``/var/lib/lxdsnap/setup-changes.json`` the moment it is made; :mod:`pytest_lxdsnap.host.setupundo` reads it back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import stophook

STATE_FILE = Path("/var/lib/lxdsnap/setup-changes.json")

Log = Callable[[str], None]


@dataclass
class Change:
    """One change setup made, as recorded in the state file."""

    kind: str  # package, apt-source, daemon, pool, profile-root, image, fast-stop, cache-file, package-cache
    backend: str
    data: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        d = self.data
        return {
            "package": lambda: f"installed package {d['name']}",
            "apt-source": lambda: f"wrote apt source {d['path']}",
            "daemon": lambda: f"started the {self.backend} daemon ({d['how']}, socket {d['socket']})",
            "pool": lambda: f"created {d['driver']} storage pool {d['name']!r} ({self.backend})",
            "profile-root": lambda: f"gave the {d['profile']!r} profile a root disk on pool {d['device']['pool']!r}"
                                    f" ({self.backend})",
            "image": lambda: f"imported image {d['alias']} ({d['fingerprint'][:12]}, {self.backend})",
            "fast-stop": lambda: f"diverted lxcfs's stop hook {d['hook']} (--fast-stop)",
            "cache-file": lambda: f"kept the built image tarball {d['path']}",
            "package-cache": lambda: f"started apt-cacher-ng (pid {d['pid']}) on {d['address']}",
        }.get(self.kind, lambda: f"{self.kind} {d}")()


class ChangeLog:
    """The state file: every change setup made and has not undone yet, oldest first; saved on every change."""

    def __init__(self, path: Path = STATE_FILE, backend: str = "lxd") -> None:
        self.path, self.backend = path, backend
        self.added: list[Change] = []

    def load(self) -> list[Change]:
        if not self.path.exists():
            return []
        try:
            records = json.loads(self.path.read_text())["changes"]
            return [Change(r["kind"], r["backend"], r["data"]) for r in records]
        except (ValueError, KeyError, TypeError) as exc:
            raise LxdSnapError(f"{self.path} is not a setup record ({exc}): fix or remove it") from None

    def save(self, changes: list[Change]) -> None:
        if not changes:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"version": 1, "changes": [{"kind": c.kind, "backend": c.backend, "data": c.data} for c in changes]}
        stophook.write_atomic(self.path, (json.dumps(body, indent=1) + "\n").encode(), 0o644)

    def add(self, kind: str, **data: Any) -> None:
        change = Change(kind, self.backend, data)
        self.save([*self.load(), change])
        self.added.append(change)

    def drop(self, kind: str) -> None:
        """Forget this backend's changes of ``kind`` (undone by other means, e.g. --undo-fast-stop)."""
        self.save([c for c in self.load() if not (c.kind == kind and c.backend == self.backend)])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
