"""Per-member costs on a real cluster: `make bench-cluster` (root; builds a loopback cluster and removes it).

For each image (busybox, and lxdsnap/debian-12 when its tarball exists) and each member, medians of ``--rounds``:

- ``inplace``: restore a running base to its snapshot (what an existing container's reset costs);
- ``clone``: copy a clone from the base's snapshot on the base's member, start it, stop it, delete it;

then every member at once (one thread per member, ``--rounds`` in-place resets each): resets per minute for the
whole cluster, and per core of this machine (the members share its cores: this proves placement, not speed; on a
real cluster each member brings its own cores, so the per-member figures add up).

Reaches the cluster through member 1's socket only; every instance is made with ``target=`` its member, and
``bench-lxdsnap-cl-*`` is deleted again. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable

import pylxd

from pytest_lxdsnap.host import cluster
from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, tarball_path
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint, connect

PREFIX = "bench-lxdsnap-cl-"


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def base_on(client: pylxd.Client, image: str, member: str) -> str:
    name = f"{PREFIX}{secrets.token_hex(3)}"
    lxdapi.create_instance(client, {"name": name, "source": {"type": "image", "alias": image}}, target=member)
    lxdapi.set_power(client, name, "start")
    lxdapi.wait(client, client.api.instances[name].snapshots.post(json={"name": "base"}))
    return name


def clone_cycle(client: pylxd.Client, base: str, member: str) -> None:
    name = f"{PREFIX}{secrets.token_hex(3)}"
    body = {"name": name, "profiles": ["default"],
            "source": {"type": "copy", "source": f"{base}/base", "instance_only": True}}
    lxdapi.create_instance(client, body, target=member)
    lxdapi.set_power(client, name, "start")
    assert lxdapi.location(client, name) == member, f"{name} is not on {member}: a migration"
    lxdapi.stop_and_delete(client, name, lxdapi.RUNNING)


def measure(client: pylxd.Client, image: str, members: list[str], rounds: int) -> list[str]:
    rows = []
    bases = {m: base_on(client, image, m) for m in members}
    try:
        for member, base in bases.items():
            inplace = [timed(lambda b=base: lxdapi.restore_snapshot(client, b, "base")) for _ in range(rounds)]
            clone = [timed(lambda b=base, m=member: clone_cycle(client, b, m)) for _ in range(rounds)]
            rows.append(f"{image:<20} {member:<6} {statistics.median(inplace):8.2f} s {statistics.median(clone):8.2f} s"
                        f" {60 / statistics.median(inplace):10.0f}")
        counts: dict[str, int] = {}

        def resets(member: str) -> None:
            for _ in range(rounds):
                lxdapi.restore_snapshot(client, bases[member], "base")
            counts[member] = rounds

        start = time.perf_counter()
        threads = [threading.Thread(target=resets, args=(m,)) for m in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        per_minute = 60 * sum(counts.values()) / seconds
        cores = os.cpu_count() or 1
        rows.append(f"{image:<20} {'all':<6} {'':>10} {'':>10} {per_minute:10.0f}  ({per_minute / cores:.0f} per "
                    f"core, {len(members)} members at once on {cores} cores)")
    finally:
        for base in bases.values():
            if lxdapi.instance_exists(client, base):
                lxdapi.stop_and_delete(client, base, lxdapi.status(client, base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster up afterwards")
    args = parser.parse_args()
    images: dict[str, bytes | object] = dict(cluster.default_images())
    if tarball_path().is_file():
        images[DEBIAN_ALIAS] = tarball_path()
    up = cluster.up(args.members, log=lambda line: print(f"cluster: {line}"), images=images)  # type: ignore[arg-type]
    try:
        client = connect(Endpoint(url=up[0].socket))
        names = [m.name for m in up]
        print(f"{'image':<20} {'member':<6} {'inplace':>10} {'clone':>10} {'resets/min':>10}")
        for image in (IMAGE_ALIAS, DEBIAN_ALIAS):
            if image in images:
                for row in measure(client, image, names, args.rounds):
                    print(row, flush=True)
    finally:
        if not args.keep_cluster:
            cluster.down(log=lambda line: None)


if __name__ == "__main__":
    main()
