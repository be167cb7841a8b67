"""One pytest session's containers: adopt existing ones, launch declared ones, reset, clean up.

No pytest here: the plugin drives this class, and so can any other runner.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pylxd
import requests
from pylxd.exceptions import LXDAPIException, NotFound

from . import lxdapi
from .connection import Endpoint, connect
from .errors import ConfigError, ContainerNotFound, LxdSnapError, OwnershipError, ProvisionError, ResetError
from .execution import exec_command
from .ownership import CREATED_KEY, INSTANCE_PREFIX, OWNER_KEY, SessionIdentity, parse_tag
from .settings import DEFAULT_SNAPSHOT_TTL, TABLE, ContainerSpec

BASELINE_LABEL = "base"
_FINGERPRINT = re.compile(r"^[0-9a-f]{12,64}$")
_LXD_FAULTS = (LXDAPIException, lxdapi.OperationFailed, TimeoutError, requests.RequestException)
# Image servers a `remote:alias` image may name (the lxc client's default remotes).
REMOTES = {
    "images": ("https://images.linuxcontainers.org", "simplestreams"),
    "ubuntu": ("https://cloud-images.ubuntu.com/releases", "simplestreams"),
    "ubuntu-daily": ("https://cloud-images.ubuntu.com/daily", "simplestreams"),
}


@dataclass
class Tracked:
    """A container this session uses, with its baseline snapshot and reset figures."""

    name: str
    instance: str
    declared: bool
    snapshot: str
    running: bool
    expires: float  # when LXD will delete the snapshot (epoch seconds)
    reset_times: list[float] = field(default_factory=list)
    broken: str | None = None

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
class Leftover:
    """Something of this session's that is still in LXD after cleanup."""

    container: str
    what: str


class LxdSession:
    """The containers of one test session on one LXD endpoint."""

    def __init__(self, endpoint: Endpoint, specs: dict[str, ContainerSpec], *,
                 snapshot_ttl: float = DEFAULT_SNAPSHOT_TTL, identity: SessionIdentity | None = None) -> None:
        self.endpoint = endpoint
        self.specs = specs
        self.snapshot_ttl = snapshot_ttl
        self.identity = identity or SessionIdentity()
        self.tracked: dict[str, Tracked] = {}
        self.problems: list[str] = []
        self._failed: dict[str, LxdSnapError] = {}
        self._client: pylxd.Client | None = None

    @property
    def client(self) -> pylxd.Client:
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    def connect(self) -> None:
        """Connect and check every declared container against the server (pools, images, profiles)."""
        client = connect(self.endpoint)
        self._check_specs(client)
        self._client = client

    def _check_specs(self, client: pylxd.Client) -> None:
        if not self.specs:
            return
        pools = [p["name"] for p in client.api.storage_pools.get(params={"recursion": 1}).json()["metadata"]]
        profiles = [p.rsplit("/", 1)[-1] for p in client.api.profiles.get().json()["metadata"]]
        images = client.api.images.get(params={"recursion": 1}).json()["metadata"]
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
                    "`lxc image import FILE --alias NAME` adds your own")

    # -- acquiring -----------------------------------------------------------------------------
    def acquire(self, names: tuple[str, ...]) -> list[Tracked]:
        """The tracked containers for ``names``, adopting or launching each on first use."""
        return [self._acquire(name) for name in names]

    def _acquire(self, name: str) -> Tracked:
        if name in self.tracked:
            return self.tracked[name]
        if name in self._failed:  # fail fast, with a fresh exception, for every later test
            failed = self._failed[name]
            raise type(failed)(str(failed))
        try:
            tracked = self._launch(self.specs[name]) if name in self.specs else self._adopt(name)
        except LxdSnapError as exc:
            self._failed[name] = exc
            raise
        except _LXD_FAULTS as exc:
            error = LxdSnapError(f"preparing container {name!r} failed: {_describe(exc)}")
            self._failed[name] = error
            raise error from None
        self.tracked[name] = tracked
        return tracked

    def _adopt(self, name: str) -> Tracked:
        """Take an existing instance into the session: tag it, snapshot it, remember its power state."""
        client = self.client
        try:
            record = lxdapi.get_instance(client, name)
        except NotFound:
            raise ContainerNotFound(
                f"container {name!r} is neither declared nor an existing instance at {self.endpoint.describe()}. "
                f"Declare it in pyproject.toml:\n  [{TABLE}.containers.{name}]\n  image = \"lxdsnap/busybox\"\n"
                f"or create it: lxc launch <image> {name}"
            ) from None
        holder = parse_tag(record["config"].get(OWNER_KEY))
        if holder is not None:
            raise OwnershipError(
                f"instance {name!r} is marked as used by another lxdsnap session (host {holder.host}, pid "
                f"{holder.pid}, token {holder.token}). If that session is still running, wait for it. If it "
                f"crashed, restore the instance from its snapshot: `lxc restore {name} "
                f"{holder.snapshot_name(BASELINE_LABEL)}`, then `lxc config unset {name} {OWNER_KEY}` and "
                f"`lxc delete {name}/{holder.snapshot_name(BASELINE_LABEL)}`"
            )
        snapshot = self.identity.snapshot_name(BASELINE_LABEL)
        lxdapi.set_config_key(client, name, OWNER_KEY, self.identity.tag())
        try:
            lxdapi.create_owned_snapshot(client, name, snapshot, self.identity, self.snapshot_ttl)
        except BaseException:
            lxdapi.set_config_key(client, name, OWNER_KEY, None)
            raise
        return Tracked(name, name, False, snapshot, record["status"] == lxdapi.RUNNING, self._expiry())

    def _launch(self, spec: ContainerSpec) -> Tracked:
        """Launch a declared container, provision it, and take its baseline snapshot."""
        client = self.client
        instance = f"{INSTANCE_PREFIX}{spec.name}-{self.identity.token}"
        if spec.image_remote is not None:
            server, protocol = REMOTES[spec.image_remote]
            source = {"type": "image", "alias": spec.image.split(":", 1)[1], "server": server, "protocol": protocol}
        elif _FINGERPRINT.match(spec.image):
            source = {"type": "image", "fingerprint": spec.image}
        else:
            source = {"type": "image", "alias": spec.image}
        tag = self.identity.tag()
        body = {
            "name": instance,
            "type": "container",
            "source": source,
            "profiles": list(spec.profiles),
            "config": {**spec.config, CREATED_KEY: tag, OWNER_KEY: tag},
            "devices": {"root": {"type": "disk", "path": "/", "pool": spec.pool}} if spec.pool else {},
        }
        try:
            lxdapi.wait(client, client.api.instances.post(json=body))
        except _LXD_FAULTS as exc:
            raise LxdSnapError(f"launching declared container {spec.name!r} from image {spec.image!r} failed: "
                               f"{_describe(exc)}") from None
        try:
            lxdapi.set_power(client, instance, "start")
            for command in spec.provision:
                result = exec_command(client, instance, command)
                if result.exit_code != 0:
                    raise ProvisionError(
                        f"provisioning declared container {spec.name!r} (instance {instance}) failed: "
                        f"{command!r} exited {result.exit_code}\nstdout: {result.stdout[-2000:]}\n"
                        f"stderr: {result.stderr[-2000:]}\nFix `provision` in [{TABLE}.containers.{spec.name}]"
                    )
            snapshot = self.identity.snapshot_name(BASELINE_LABEL)
            lxdapi.create_owned_snapshot(client, instance, snapshot, self.identity, self.snapshot_ttl)
        except BaseException:
            lxdapi.delete_owned_instance(client, instance, self.identity)
            raise
        return Tracked(spec.name, instance, True, snapshot, True, self._expiry())

    def _expiry(self) -> float:
        return time.time() + self.snapshot_ttl

    # -- resetting -----------------------------------------------------------------------------
    def reset(self, tracked: list[Tracked]) -> None:
        """Restore each container to its baseline, concurrently; ResetError names what failed."""
        if len(tracked) == 1:
            errors = [self._reset_one(tracked[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(tracked)) as pool:
                errors = list(pool.map(self._reset_one, tracked))
        messages = [e for e in errors if e]
        if messages:
            raise ResetError("\n".join(messages))

    def _reset_one(self, tracked: Tracked) -> str | None:
        if tracked.broken:
            return tracked.broken
        client, instance, snapshot = self.client, tracked.instance, tracked.snapshot
        start = time.perf_counter()
        try:
            running = lxdapi.status(client, instance) == lxdapi.RUNNING
            if running and not tracked.running:
                lxdapi.set_power(client, instance, "stop")
            lxdapi.restore_snapshot(client, instance, snapshot)  # LXD restarts a running instance itself
            if tracked.running and not running:
                lxdapi.set_power(client, instance, "start")
            if tracked.expires - time.time() < self.snapshot_ttl / 2:
                lxdapi.extend_snapshot_expiry(client, instance, snapshot, self.snapshot_ttl)
                tracked.expires = self._expiry()
        except _LXD_FAULTS as exc:
            tracked.broken = (
                f"resetting container {tracked.name!r} (instance {instance}) to snapshot {snapshot} failed: "
                f"{_describe(exc)}\nThe snapshot is kept for recovery. Inspect: `lxc info {instance}`; "
                f"restore by hand: `lxc restore {instance} {snapshot}`"
            )
            return tracked.broken
        tracked.reset_times.append(time.perf_counter() - start)
        return None

    # -- cleaning up ---------------------------------------------------------------------------
    def finish(self) -> list[Leftover]:
        """Delete what this session made (keeping broken ones for recovery); what is left over."""
        if self._client is None:
            return []
        for tracked in self.tracked.values():
            if tracked.broken:
                self.problems.append(tracked.broken)
                continue
            try:
                if tracked.declared:
                    lxdapi.delete_owned_instance(self.client, tracked.instance, self.identity)
                else:
                    lxdapi.delete_owned_snapshot(self.client, tracked.instance, tracked.snapshot, self.identity)
                    lxdapi.set_config_key(self.client, tracked.instance, OWNER_KEY, None)
            except (*_LXD_FAULTS, LxdSnapError) as exc:
                self.problems.append(f"cleaning up {tracked.name!r} (instance {tracked.instance}): {_describe(exc)}")
        return self.leftovers()

    def leftovers(self) -> list[Leftover]:
        """Everything of this session's that LXD still holds, looked up afresh."""
        client, found = self.client, []
        for name in lxdapi.owned_instances(client, self.identity):
            found.append(Leftover(name, f"instance {name}"))
        for tracked in self.tracked.values():
            if tracked.declared:
                continue
            try:
                config = lxdapi.get_instance(client, tracked.instance)["config"]
            except NotFound:
                continue
            for snap in lxdapi.owned_snapshots(client, tracked.instance, self.identity):
                found.append(Leftover(tracked.name, f"snapshot {tracked.instance}/{snap}"))
            if self.identity.owns(config):
                found.append(Leftover(tracked.name, f"config key {OWNER_KEY} on {tracked.instance}"))
        return found


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LXDAPIException):
        return lxdapi.api_error(exc)
    return str(exc) or type(exc).__name__
