"""The plugin on real systems, as users wait for it: `make bench` (root, LXD running, both images built).

Every figure comes from one run of this script, so ratios compare like with like on a noisy machine:

1. Whole suites (benchmarks/suites.py) on busybox and on Debian 12 + systemd side by side: the tutorial's
   recipe, a new instance per test, the plugin on an existing container and on a declared one, and
   testcontainers + Docker as the peer; per-test overhead against a no-plugin reference run.
2. One in-place reset of an existing container on each image against LXD's floor.
3. The targets of the "Real systems" issue, each with its measured value and whether it is met.
4. Other figures: 4 containers against 1, snapshot time against rootfs size, exec latency, memory.

`make bench-strategies` (benchmarks/strategies.py) has every strategy per pool and with lxcfs's stop hook
stock and fast. Leaves nothing behind: every instance and snapshot it makes is deleted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import load
import strategies
import suites
from strategies import FLOOR_SYSTEMD, client, table

from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, ensure_debian_image
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint

FLOOR = "LXD API floor (restore the running instance)"
TARGETS = [  # (what, variant, minimum ratio against the tutorial recipe)
    ("declared Debian + systemd: per-test overhead vs tutorial recipe", "debian", 3.0),
    ("declared busybox: per-test overhead vs tutorial recipe", "busybox", 5.0),
]


def chart(path: Path, per_image: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in suites.VARIANTS if all(v in values for values in per_image.values())]
    fig, axis = plt.subplots(figsize=(11, 4.6))
    width = 0.8 / len(per_image)
    for i, (image, values) in enumerate(per_image.items()):
        xs = [x + i * width for x in range(len(variants))]
        ms = [max(values[v] * 1000, 1) for v in variants]
        bars = axis.bar(xs, ms, width, label=image)
        axis.bar_label(bars, labels=[f"{m:.0f}" for m in ms], fontsize=7)
    names = [suites.VARIANTS[v].replace(", ", ",\n").replace(" (", "\n(") for v in variants]
    axis.set_xticks([x + width * (len(per_image) - 1) / 2 for x in range(len(variants))], names, fontsize=7)
    axis.set_ylabel("overhead per test, ms (launch and cleanup included)")
    axis.set_title("Whole suite of 10 short tests, per test (lower is better)")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=10, help="tests per generated suite (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each suite (default 5)")
    parser.add_argument("--rounds", type=int, default=7, help="resets per in-place measurement (default 7)")
    parser.add_argument("--load-runs", type=int, default=15, help="paired runs for the plugin's load cost")
    parser.add_argument("--memory-tests", type=int, default=300, help="tests in the memory run (0: skip)")
    parser.add_argument("--big-mb", type=int, default=2400, help="the large rootfs for snapshot times (0: skip)")
    parser.add_argument("--no-docker", action="store_true", help="leave out the testcontainers + Docker column")
    parser.add_argument("--chart", type=Path, default=Path("benchmarks/results.png"))
    args = parser.parse_args()

    ensure_debian_image(Endpoint(), log=print)  # `lxdsnap setup --image debian`: once per machine
    images = {"busybox": IMAGE_ALIAS, "debian": DEBIAN_ALIAS}
    pools = {p["name"]: p["driver"] for p in lxdapi.listing(client.api.storage_pools)}
    pool = next((name for name, driver in pools.items() if driver in ("btrfs", "zfs", "lvm")), None)
    if pool is None:
        raise SystemExit("no copy-on-write pool: run `lxdsnap setup` (btrfs) first")
    info = client.api.get().json()["metadata"]["environment"]
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    docker_note = "left out (--no-docker)" if args.no_docker else suites.docker_answers()
    print(f"host: {os.cpu_count()} cores, {memory_gib:.0f} GiB, {info.get('server')} {info.get('server_version')}, "
          f"kernel {info.get('kernel_version')}, pool {pool} ({pools[pool]}), images "
          f"{', '.join(images.values())}; Docker: {docker_note or 'answers'}", flush=True)

    per_image: dict[str, dict[str, float]] = {}
    reference: dict[str, float] = {}
    for label, image in images.items():
        per_image[label], reference[label] = suites.overheads(
            image, pool, args.tests, args.repeats, systemd=label == "debian", docker=not docker_note)
    rows = []
    for variant, title in suites.VARIANTS.items():
        cells = [title]
        for values in per_image.values():
            if variant in values:
                cells += [f"{values[variant] * 1000:.0f}", f"{values['tutorial'] / values[variant]:.1f}x"]
            else:
                cells += ["skipped", docker_note]
        rows.append(cells)
    header = ["variant"] + [h for label in images for h in (f"{label} ms/test", "vs tutorial")]
    print(table(f"Whole suite, overhead per test ({args.tests} short tests, median of {args.repeats} runs; "
                f"launch and cleanup included; reference run: busybox {reference['busybox']:.2f} s, "
                f"debian {reference['debian']:.2f} s)", header, rows), flush=True)

    inplace = {label: strategies.inplace_resets(pool, image, args.rounds, systemd=label == "debian")
               for label, image in images.items()}
    steps = list(inplace["debian"])
    rows = [[s] + [f"{v[s] * 1000:.0f}" if s in v else "" for v in inplace.values()] for s in steps]
    print(table(f"Existing container, one reset in place (ms, median of {args.rounds})", ["step", *inplace], rows),
          flush=True)

    without, with_plugin, load_cost = load.plugin_load(args.load_runs)
    targets = []
    for what, label, minimum in TARGETS:
        ratio = per_image[label]["tutorial"] / per_image[label]["declared"]
        targets.append([what, f"{ratio:.1f}x", f">= {minimum:.0f}x", "met" if ratio >= minimum else "MISSED"])
    for label, floor in [("busybox", FLOOR), ("debian", FLOOR_SYSTEMD)]:
        ratio = inplace[label]["plugin inplace"] / inplace[label][floor]
        targets.append([f"existing {label}: plugin in place / {floor}", f"{ratio:.3f}", "<= 1.05",
                        "met" if ratio <= 1.05 else "MISSED"])
    targets.append(["a suite without marked tests: plugin load (non-editable install)",
                    f"{load_cost * 1000:.0f} ms", "<= 50 ms", "met" if load_cost <= 0.05 else "MISSED"])
    print(table("Targets", ["target", "measured", "wanted", ""], targets), flush=True)

    one, four = strategies.concurrent_resets(pool, IMAGE_ALIAS, args.rounds)
    sizes = [240, args.big_mb] if args.big_mb else [240]
    snaps = {mb: strategies.snapshot_seconds(pool, IMAGE_ALIAS, mb) for mb in sizes}
    rows = [["reset 1 busybox container in place", f"{one * 1000:.0f} ms", ""],
            ["reset 4 containers touched by one test", f"{four * 1000:.0f} ms", f"{four / one:.2f}x of 1"]]
    rows += [[f"baseline snapshot, rootfs +{mb} MB", f"{s * 1000:.0f} ms", f"{s / snaps[240]:.2f}x of 240 MB"]
             for mb, s in snaps.items()]
    for label, image in images.items():
        exec_ms = strategies.exec_latency(pool, image, keep_logs=False) * 1000
        rows.append([f"exec `true`, {label} (median of 200)", f"{exec_ms:.1f} ms", ""])
    rows.append(["pytest, one unmarked test, without / with the plugin",
                 f"{without * 1000:.0f} / {with_plugin * 1000:.0f} ms", ""])
    if args.memory_tests:
        warm, last, count = strategies.memory_growth(pool, IMAGE_ALIAS, args.memory_tests)
        rows.append([f"pytest RSS after 20 / {count} tests (clone each)", f"{warm:.1f} / {last:.1f} MB",
                     f"+{last - warm:.1f} MB"])
    print(table("Other figures", ["measure", "value", "ratio"], rows), flush=True)
    if args.chart:
        chart(args.chart, per_image)
        print(f"\nchart: {args.chart}")


if __name__ == "__main__":
    main()
