"""Before anything is created: every declaration checked against the server (pools, profiles, images,
cluster members), with the key path and the valid choices in each error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pylxd

from pytest_lxdsnap.declarations import FINGERPRINT, REMOTES, TABLE
from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.lxd import lxdapi

if TYPE_CHECKING:
    from pytest_lxdsnap.session.core import LxdSession


def check_specs(s: LxdSession, client: pylxd.Client) -> None:
    if not s.specs:
        return
    check_targets(s, client)
    pools = [p["name"] for p in lxdapi.listing(client.api.storage_pools)]
    profiles = [p.rsplit("/", 1)[-1] for p in lxdapi.listing(client.api.profiles, recursion=False)]
    images = lxdapi.listing(client.api.images)
    aliases = sorted(a["name"] for img in images for a in img.get("aliases") or [])
    for spec in s.specs.values():
        path = f"[{TABLE}.containers.{spec.name}]"
        if spec.pool is not None and spec.pool not in pools:
            raise ConfigError(f"{path} pool: no storage pool {spec.pool!r} at {s.endpoint.describe()}; "
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
            img["fingerprint"].startswith(spec.image) for img in images if FINGERPRINT.match(spec.image))
        if not known:
            raise ConfigError(
                f"{path} image: no local image {spec.image!r}; valid choices: "
                f"{', '.join(aliases) or 'none'}. `lxdsnap setup` imports lxdsnap/busybox; "
                f"`{s.commands('image import FILE --alias NAME')}` adds your own")


def check_targets(s: LxdSession, client: pylxd.Client) -> None:
    """Every cluster member a declaration names exists (and the server is a cluster at all)."""
    wanted = {(spec.name, t) for spec in s.specs.values() for t in spec.targets}
    if not wanted:
        return
    name, target = min(wanted)
    if not client.host_info.get("environment", {}).get("server_clustered"):
        raise ConfigError(
            f"[{TABLE}.containers.{name}] target: {target!r} names a cluster member, but LXD at "
            f"{s.endpoint.describe()} is a standalone server, not a cluster. Remove `target`, or point "
            "--lxd-endpoint at a member of the cluster")
    members = [m["server_name"] for m in lxdapi.listing(client.api.cluster.members)]
    for name, target in sorted(wanted):
        if target not in members:
            raise ConfigError(f"[{TABLE}.containers.{name}] target: no cluster member {target!r} at "
                              f"{s.endpoint.describe()}; valid members: {', '.join(sorted(members))}")
