"""``lxdsnap setup --undo``: reverse the recorded changes newest first, leaving what changed since or is in use.

For each recorded change, :func:`observe` looks at the host, the pure :func:`decide` says whether to undo it
or why not, and :func:`apply` reverses it; packages are removed together in one apt call.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylxd.exceptions import NotFound

from pytest_lxdsnap.errors import LxdSnapError
from pytest_lxdsnap.host import packagecache, stophook
from pytest_lxdsnap.host.daemons import ask_daemon, candidate_sockets, dpkg_installed, find_daemon
from pytest_lxdsnap.host.setupchanges import STATE_FILE, Change, ChangeLog, Log, sha256
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import BACKENDS, INCUS, LXD, Backend
from pytest_lxdsnap.lxd.connection import Endpoint, connect


@dataclass(frozen=True)
class Seen:
    """What undo found on the host for one recorded change."""

    gone: bool = False  # already undone by someone
    unreachable: str = ""  # the daemon holding it does not answer
    changed: str = ""  # how it differs from what setup left
    users: tuple[str, ...] = ()  # what still uses it
    also_removes: tuple[str, ...] = ()  # packages apt would remove with it


@dataclass(frozen=True)
class Decision:
    undo: bool
    why: str = ""


def decide(change: Change, seen: Seen, left: list[Change]) -> Decision:
    """Undo ``change``, or leave it and say why (pure: ``left`` are the newer changes already left)."""
    if seen.unreachable:
        return Decision(False, f"{seen.unreachable}: start it and rerun --undo")
    if seen.gone:
        return Decision(False, "already undone")
    if seen.changed:
        return Decision(False, f"changed since setup ({seen.changed})")
    if seen.users:
        shown = ", ".join(seen.users[:5]) + (f" and {len(seen.users) - 5} more" if len(seen.users) > 5 else "")
        return Decision(False, f"still in use by {shown}")
    same = [c for c in left if c.backend == change.backend]
    if change.kind == "package" and any(c.kind == "daemon" for c in same):
        return Decision(False, "the daemon setup started was left running")
    if change.kind == "package" and change.data.get("name") == packagecache.PACKAGE and any(
            c.kind == "package-cache" for c in same):
        return Decision(False, "the apt-cacher-ng setup started was left running")
    if change.kind == "package" and seen.also_removes:
        return Decision(False, f"apt would also remove {', '.join(seen.also_removes)}")
    if change.kind == "apt-source" and any(c.kind == "package" for c in same):
        return Decision(False, "packages installed from it stay")
    return Decision(True)


def _client(change: Change) -> Any:
    endpoint = Endpoint(url=change.data["socket"], timeout=30)
    return connect(endpoint)


def _instances(client: Any) -> list[dict[str, Any]]:
    """Every instance, in every project."""
    found: list[dict[str, Any]] = []
    for project in lxdapi.listing(client.api.projects):
        found += client.api.instances.get(params={"recursion": 1, "project": project["name"]}).json()["metadata"] \
            or []
    return found


def _apt_extras(packages: list[str]) -> tuple[str, ...]:
    """Packages beyond ``packages`` that `apt-get remove` of them would remove too."""
    run = subprocess.run(["apt-get", "-s", "remove", *packages], capture_output=True, text=True, check=False)
    removed = re.findall(r"^Remv (\S+)", run.stdout, re.M)
    return tuple(sorted(set(removed) - set(packages)))


def recorded_hook(data: dict[str, Any]) -> stophook.Hook:
    return stophook.Hook(Path(data["hook"]), Path(data.get("original") or stophook.ORIGINAL), data.get("admindir"))


def observe(change: Change, removing: list[str]) -> Seen:
    """Look at the host for ``change`` (``removing``: every recorded package being undone with it)."""
    d = change.data
    if change.kind == "package":
        if not dpkg_installed(d["name"]):
            return Seen(gone=True)
        other = [b for b in BACKENDS.values() if b.name != change.backend and d["name"] in b.packages.values()
                 and find_daemon(b, candidate_sockets(b))]
        if other:
            return Seen(users=tuple(f"the running {b.name} daemon" for b in other))
        return Seen(also_removes=_apt_extras(removing))
    if change.kind == "apt-source":
        return _file_seen(Path(d["path"]), d["sha256"], "edited")
    if change.kind == "fast-stop":
        return Seen(gone=stophook.state(recorded_hook(d)) != "fast")
    if change.kind == "cache-file":
        return _file_seen(Path(d["path"]), d["sha256"], "replaced")
    if change.kind == "package-cache":
        return Seen(gone=not packagecache.is_recorded_process(d["pid"], d["started"]))
    daemon = ask_daemon(d["socket"])
    if change.kind == "daemon":
        if not daemon:
            return Seen(gone=True)
        return Seen(users=tuple(f"instance {i['name']}" for i in _instances(_client(change))))
    if not daemon:
        return Seen(unreachable=f"the {change.backend} daemon at {d['socket']} does not answer")
    client = _client(change)
    params = {"project": d["project"]} if d.get("project") else {}
    if change.kind == "pool":
        try:
            pool = client.api.storage_pools[d["name"]].get().json()["metadata"]
        except NotFound:
            return Seen(gone=True)
        return Seen(changed=f"driver is {pool['driver']}" if pool["driver"] != d["driver"] else "",
                    users=tuple(pool.get("used_by") or ()))
    if change.kind == "profile-root":
        profile = client.api.profiles[d["profile"]].get(params=params).json()["metadata"]
        root = profile["devices"].get("root")
        if root is None:
            return Seen(gone=True)
        return Seen(changed="its root disk was edited" if root != d["device"] else "",
                    users=tuple(profile.get("used_by") or ()))
    if change.kind == "image":
        try:
            client.api.images[d["fingerprint"]].get(params=params)
        except NotFound:
            return Seen(gone=True)
        users = [f"instance {i['name']}" for i in _instances(client)
                 if i.get("config", {}).get("volatile.base_image") == d["fingerprint"]]
        return Seen(users=tuple(users))
    return Seen(changed=f"unknown kind {change.kind!r} (recorded by a newer lxdsnap?)")


def apply(change: Change) -> None:
    """Reverse one change (its :func:`decide` said so)."""
    d = change.data
    params = {"project": d["project"]} if d.get("project") else {}
    if change.kind in ("apt-source", "cache-file"):
        Path(d["path"]).unlink()
    elif change.kind == "package-cache":
        packagecache.stop(d["pid"], d["address"])
    elif change.kind == "fast-stop":
        stophook.disable(recorded_hook(d))
    elif change.kind == "daemon":
        backend = BACKENDS[change.backend]
        if d["how"] == "systemctl":
            subprocess.run(["systemctl", "stop", d["service"]], check=True)
        else:
            env = dict(os.environ, LXD_DIR=os.path.dirname(d["socket"]), INCUS_DIR=os.path.dirname(d["socket"]))
            command = ["incus", "admin", "shutdown"] if backend is INCUS else ["lxd", "shutdown"]
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    elif change.kind == "pool":
        _client(change).api.storage_pools[d["name"]].delete()
    elif change.kind == "profile-root":
        client = _client(change)
        node = client.api.profiles[d["profile"]]
        profile = node.get(params=params).json()["metadata"]
        devices = {k: v for k, v in profile["devices"].items() if k != "root"}
        node.put(params=params, json={"config": profile["config"], "description": profile["description"],
                                      "devices": devices})
    elif change.kind == "image":
        client = _client(change)
        lxdapi.wait(client, client.api.images[d["fingerprint"]].delete(params=params))


def remove_packages(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "remove", "-y", "-q", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


UNDO_FAULTS: tuple[type[BaseException], ...] = (*lxdapi.LXD_FAULTS, LxdSnapError, OSError, RuntimeError,
                                               subprocess.CalledProcessError)


def undo(backend: Backend = LXD, state_file: Path = STATE_FILE, log: Log = print) -> bool:
    """Reverse ``backend``'s recorded changes newest first; False when one of them failed."""
    record = ChangeLog(state_file, backend.name)
    changes = record.load()
    mine = [c for c in changes if c.backend == backend.name]
    if not mine:
        log(f"nothing to undo: {state_file} records no change to {backend.name}")
        return True
    removing = [c.data["name"] for c in mine if c.kind == "package"]
    left: list[Change] = []
    batch: list[Change] = []
    ok = True

    def flush() -> None:  # packages go in one apt call: lxd depends on lxd-client
        nonlocal ok
        if batch:
            try:
                remove_packages([c.data["name"] for c in batch])
                log(f"undone: removed packages {', '.join(c.data['name'] for c in batch)} (apt-get autoremove "
                    "removes the dependencies apt installed with them)")
            except subprocess.CalledProcessError as exc:
                ok = False
                left.extend(batch)
                log(f"FAILED: removing packages: {exc}")
            batch.clear()

    for change in reversed(mine):
        if change.kind != "package":
            flush()
        try:
            decision = decide(change, observe(change, removing), left)
            if decision.undo and change.kind == "package":
                batch.append(change)
                continue
            if decision.undo:
                apply(change)
                log(f"undone: {change.describe()}")
            elif decision.why == "already undone":
                log(f"gone:   {change.describe()} (already undone)")
            else:
                left.append(change)
                log(f"left:   {change.describe()}: {decision.why}")
        except UNDO_FAULTS as exc:
            ok = False
            left.append(change)
            log(f"FAILED: {change.describe()}: {lxdapi.describe(exc)}")
    flush()
    record.save([c for c in changes if c.backend != backend.name or any(c is kept for kept in left)])
    log(f"{len(left)} change(s) left, still recorded in {state_file}" if left else
        f"every recorded change to {backend.name} is undone")
    return ok


def _file_seen(path: Path, recorded: str, changed: str) -> Seen:
    """A file setup wrote: gone, ``changed`` since (its digest differs), or as written."""
    if not path.exists():
        return Seen(gone=True)
    return Seen(changed=changed if sha256(path) != recorded else "")
