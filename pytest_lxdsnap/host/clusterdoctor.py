"""``lxdsnap doctor`` on a cluster member: every member, its state, the storage pools on it, and where the
images are (asked of the cluster through the endpoint, so it works the same through any member, local or HTTPS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pylxd

from pytest_lxdsnap.lxd import lxdapi, members

if TYPE_CHECKING:
    from pytest_lxdsnap.host.hostsetup import Check


def cluster_checks(client: pylxd.Client, cli: str) -> list[Check]:
    """One line per member (its state, address, roles, the pools created on it), and one for the images."""
    from pytest_lxdsnap.host.hostsetup import Check

    if not lxdapi.clustered(client):
        return []
    records = {m["server_name"]: m for m in lxdapi.listing(client.api.cluster.members)}
    pools = lxdapi.listing(client.api.storage_pools)
    good, bad = members.usable_members(client)
    checks = [Check("cluster", not bad, f"{len(records)} members: {', '.join(sorted(records))}"
                    + (f"; not usable: {', '.join(m.name for m in bad)}" if bad else ""))]
    for member in sorted([*good, *bad], key=lambda m: m.name):
        record = records[member.name]
        on_it = [f"{p['name']} ({p['driver']})" for p in pools if member.name in (p.get("locations") or [])]
        roles = ", ".join(record.get("roles") or []) or "no database role"
        fix = (f"{cli} cluster restore {member.name}" if member.status == "Evacuated" else
               f"start the daemon of {member.name} (its tests fail, naming it; a target naming it is refused)")
        checks.append(Check(f"member {member.name}", member.usable,
                            f"{member.status} at {member.address} ({roles}); {member.message}; pools: "
                            f"{', '.join(on_it) or 'none'}", fix))
    config = client.host_info.get("config", {})
    replicas = config.get("cluster.images_minimal_replica", "3")
    aliases = sorted(a["name"] for img in lxdapi.listing(client.api.images) for a in img.get("aliases") or [])
    spread = ("on every member" if str(replicas) == "-1" else
              f"copied to {replicas} member(s) when imported, fetched by the others on first use")
    checks.append(Check("cluster images", bool(aliases), f"{', '.join(aliases) or 'none'}: {spread} "
                        "(cluster.images_minimal_replica)", f"{cli} image import FILE --alias NAME (once: it serves "
                        "every member)"))
    return checks
