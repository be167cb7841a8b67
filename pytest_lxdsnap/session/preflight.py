"""Before anything is created: every declaration checked against the server (pools, profiles, images,
cluster members), with the key path and the valid choices in each error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pylxd

from pytest_lxdsnap.declarations import FINGERPRINT, PACKAGE_CACHE, REMOTES, TABLE
from pytest_lxdsnap.errors import ConfigError
from pytest_lxdsnap.lxd import lxdapi, members

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
            from pytest_lxdsnap.host.hostsetup import IMAGES

            buildable = {alias: name for name, alias in IMAGES.items()}
            how = (f"`lxdsnap setup --image {buildable[spec.image]}` builds it (as root, once per machine)"
                   if spec.image in buildable else
                   f"`lxdsnap setup` imports lxdsnap/busybox, `lxdsnap setup --image debian` builds "
                   f"lxdsnap/debian-12; `{s.commands('image import FILE --alias NAME')}` adds your own")
            raise ConfigError(f"{path} image: no local image {spec.image!r}; valid choices: "
                              f"{', '.join(aliases) or 'none'}. {how}")
    check_package_caches(s)


def check_package_caches(s: LxdSession) -> None:
    """Every ``package_cache`` answers, before anything is created (on a local daemon: a remote one's host
    cannot be asked from here)."""
    wanted = {spec.package_cache: spec.name for spec in s.specs.values() if spec.package_cache}
    if not wanted or s.endpoint.is_https:
        return
    from pytest_lxdsnap.host.packagecache import SETUP_HINT, describe_cache

    for address, name in sorted(wanted.items()):
        answers, detail = describe_cache(address)
        if not answers:
            start = (f"start it with `{SETUP_HINT}` (as root)" if address == PACKAGE_CACHE else
                     f"start your apt cache at {address}, or use package_cache = true for the one `{SETUP_HINT}` "
                     "starts")
            raise ConfigError(f"[{TABLE}.containers.{name}] package_cache: the host's package cache is not running "
                              f"({detail}): {start}, or remove package_cache. Nothing was created.")


def check_members(s: LxdSession, client: pylxd.Client) -> None:
    """On a cluster, before anything is created: a ``target`` naming a member that is offline or evacuated is a
    usage error; any other member that is down is reported (tests on containers there will fail, naming it)."""
    if not lxdapi.clustered(client):
        return
    _, down = members.usable_members(client)
    wanted = {t: spec.name for spec in sorted(s.specs.values(), key=lambda x: x.name) for t in spec.targets}
    for member in down:
        if member.name in wanted:
            fix = (f"bring it back (`{s.commands(f'cluster restore {member.name}')}`)"
                   if member.status == "Evacuated" else "start its daemon again")
            raise ConfigError(f"[{TABLE}.containers.{wanted[member.name]}] target: cluster member {member.name!r} "
                              f"({member.address}) is {member.status.lower()}: {member.message}. Remove it from "
                              f"`target`, or {fix}. Nothing was created.")
    for member in down:
        s.notices.append(f"cluster member {member.name!r} ({member.address}) was {member.status.lower()} at the "
                         f"session's start ({member.message}): tests on containers there fail, naming it")


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
