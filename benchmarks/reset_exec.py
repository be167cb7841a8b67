"""Reset and exec cost of pytest-lxdsnap on this host, per storage pool: `make bench` (root, LXD running).

For each pool (the btrfs `default` pool from `lxdsnap setup`, and a temporary dir pool) it launches a
declared busybox container through the plugin's own session code, then measures N resets, the tutorial's
recipe (`stop; restore; start` by hand) and N trivial execs. Prints medians from one run; leaves nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_lxdsnap import lxdapi
from pytest_lxdsnap.connection import Endpoint, connect
from pytest_lxdsnap.execution import exec_command
from pytest_lxdsnap.image import IMAGE_ALIAS
from pytest_lxdsnap.session import LxdSession
from pytest_lxdsnap.settings import ContainerSpec

DIR_POOL = "lxdsnap-bench-dir"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(pool: str, rounds: int) -> dict[str, float]:
    spec = ContainerSpec("bench", IMAGE_ALIAS, pool=pool)
    session = LxdSession(Endpoint(), {"bench": spec})
    session.connect()
    try:
        start = time.perf_counter()
        (tracked,) = session.acquire(("bench",))
        launch = time.perf_counter() - start
        client, instance = session.client, tracked.instance
        execs, resets, recipe = [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            exec_command(client, instance, ["true"])
            execs.append(time.perf_counter() - t)
            exec_command(client, instance, ["touch", "/root/dirty"])
            t = time.perf_counter()
            session.reset([tracked])
            resets.append(time.perf_counter() - t)
            t = time.perf_counter()
            lxdapi.set_power(client, instance, "stop")
            lxdapi.restore_snapshot(client, instance, tracked.snapshot)
            lxdapi.set_power(client, instance, "start")
            recipe.append(time.perf_counter() - t)
        t = time.perf_counter()
        lxdapi.create_owned_snapshot(client, instance, session.identity.snapshot_name("extra"), session.identity,
                                     600)
        snapshot = time.perf_counter() - t
        return {"launch+provision+baseline": launch * 1000, "take snapshot": snapshot * 1000,
                "plugin reset": median_ms(resets), "recipe stop/restore/start": median_ms(recipe),
                "exec `true`": median_ms(execs)}
    finally:
        leftovers = session.finish()
        assert not leftovers, leftovers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    client = connect(Endpoint())
    pools = {p["name"]: p["driver"] for p in client.api.storage_pools.get(params={"recursion": 1}).json()["metadata"]}
    made_dir_pool = DIR_POOL not in pools
    if made_dir_pool:
        client.api.storage_pools.post(json={"name": DIR_POOL, "driver": "dir", "config": {}})
        pools[DIR_POOL] = "dir"
    try:
        cow = [name for name, driver in pools.items() if driver in ("btrfs", "zfs", "lvm")]
        chosen = [*cow[:1], DIR_POOL]
        results = {f"{name} ({pools[name]})": measure(name, args.rounds) for name in chosen}
    finally:
        if made_dir_pool:
            client.api.storage_pools[DIR_POOL].delete()
    rows = list(next(iter(results.values())))
    width = max(len(r) for r in rows)
    print(f"\nmedian of {args.rounds} rounds, milliseconds (launch and snapshot: one sample), busybox image")
    print(f"{'step':<{width}} | " + " | ".join(f"{k:>16}" for k in results))
    print("-" * width + "-+-" + "-+-".join("-" * 16 for _ in results))
    for row in rows:
        print(f"{row:<{width}} | " + " | ".join(f"{r[row]:>16.1f}" for r in results.values()))
    for pool, r in results.items():
        print(f"{pool}: plugin reset / recipe = {r['plugin reset'] / r['recipe stop/restore/start']:.2f}")


if __name__ == "__main__":
    main()
