"""Every reset strategy against the tutorial's recipe, per pool: `make bench-strategies` (root, LXD running).

`make bench` (benchmarks/bench.py) reports the real-systems view and the targets; it reuses the in-place,
concurrency, snapshot, exec and memory measurements defined here.

Every figure comes from one run of this script, so ratios compare like with like on a noisy machine.

1. Whole-suite reset overhead per test: a generated suite of N short tests (each checks the container
   is clean, then dirties it) runs in a pytest subprocess with every plugin strategy, with a
   hand-written conftest doing the tutorial's recipe (`lxc snapshot`, then `lxc stop`, `lxc restore`,
   `lxc start`, `lxc delete c/snap` per test) and with one doing "a new instance from the image per
   test". Overhead = (suite time - suite time of the same setup without resets) / N; medians of R runs.
2. In-place reset of an existing container: the plugin against the raw LXD API floor (restore of the
   running instance) and the tutorial's recipe, per reset, medians.
3. Resetting 4 containers touched by one test against 1; baseline snapshot time against rootfs size;
   exec latency; the plugin's cost for a suite without marked tests; pytest's memory over many resets.

Prints tables (and their markdown with --markdown) and writes a PNG chart (--chart). Leaves nothing
behind: every instance, snapshot and the temporary dir pool it makes is deleted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_lxdsnap.host import stophook
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.execution import exec_command
from pytest_lxdsnap.model import Checkout, Tracked
from pytest_lxdsnap.session.core import LxdSession

PREFIX = "bench-lxdsnap-"  # every instance this script makes (never the plugin's "lxdsnap-" prefix)
DIR_POOL = "bench-lxdsnap-dir"
PLUGIN_VARIANTS = ["recipe", "inplace", "clone", "auto"]
FLOOR_SYSTEMD = "LXD API floor + `systemctl is-system-running --wait`"
HAND_VARIANTS = {"tutorial": "tutorial recipe (lxc CLI, snapshot per test)", "fresh": "new instance per test"}
client = connect(Endpoint())


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def lxc(*args: str) -> None:
    subprocess.run(["lxc", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- 1. whole suites ---------------------------------------------------------------------------
TESTS = """
import os
import pytest

CHECK = not os.environ.get("BENCH_NO_RESET")  # the reference run makes the same calls without resets


@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range({n}))
def test_short(lxd, i):
    web = lxd["web"]
    assert not web.exists("/root/dirty") or not CHECK, "state leaked from an earlier test"
    web.write_text("/root/dirty", "x")
"""

HAND_CONFTEST = '''
import os, secrets, subprocess
import pytest
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.handle import Container

MODE, IMAGE, POOL = os.environ["BENCH_MODE"], os.environ["BENCH_IMAGE"], os.environ["BENCH_POOL"]


def lxc(*args):
    subprocess.run(["lxc", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_configure(config):
    config.addinivalue_line("markers", "lxd(*names): containers (hand-written conftest)")


@pytest.fixture(scope="session")
def base():
    name = "PREFIX" + secrets.token_hex(3)
    if MODE != "fresh":
        lxc("launch", IMAGE, name, "--storage", POOL)
    yield name
    if MODE != "fresh":
        lxc("delete", "--force", name)


@pytest.fixture
def lxd(base):
    client = connect(Endpoint())
    if MODE == "fresh":  # a new instance from the image for every test
        name = base + "-" + secrets.token_hex(2)
        lxc("launch", IMAGE, name, "--storage", POOL)
        yield {"web": Container(client, "web", name)}
        lxc("delete", "--force", name)
        return
    if MODE == "tutorial":  # the tutorial chapter's recipe, step by step
        lxc("snapshot", base, "bench-snap")
    yield {"web": Container(client, "web", base)}
    if MODE == "tutorial":
        lxc("stop", base)
        lxc("restore", base, "bench-snap")
        lxc("start", base)
        lxc("delete", base + "/bench-snap")
'''.replace("PREFIX", PREFIX)

MEMORY_CONFTEST = '''
import os

RSS = {}


def _rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def pytest_runtest_logfinish(nodeid, location):
    RSS.setdefault("first", _rss_mb()) if len(RSS) == 0 else None
    RSS["last"] = _rss_mb()
    RSS["count"] = RSS.get("count", 0) + 1
    if RSS["count"] == 20:
        RSS["warm"] = RSS["last"]


def pytest_unconfigure(config):
    with open(os.environ["BENCH_RSS"], "w") as fh:
        fh.write(f"{RSS['warm']} {RSS['last']} {RSS['count']}")
'''


def write_suite(directory: Path, *, n: int, image: str, pool: str, hand: bool, strategy: str = "",
                ready: str = "") -> None:
    pyproject = '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n'
    if not hand:
        pyproject += f'\n[tool.lxdsnap.containers.web]\nimage = "{image}"\npool = "{pool}"\n'
        if ready:
            pyproject += f"ready = {ready}\n"
    (directory / "pyproject.toml").write_text(pyproject)
    (directory / "test_suite.py").write_text(TESTS.format(n=n))
    if hand:
        (directory / "conftest.py").write_text(HAND_CONFTEST)


def run_suite(directory: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=directory, capture_output=True,
                            text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark suite failed ({args}, {env}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def suite_overheads(pool: str, image: str, n: int, repeats: int, ready: str = "") -> dict[str, float]:
    """Per-test reset overhead (seconds) of each variant on ``pool``: medians of ``repeats`` runs."""
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as plugin_dir, tempfile.TemporaryDirectory() as hand_dir:
        write_suite(Path(plugin_dir), n=n, image=image, pool=pool, hand=False, ready=ready)
        write_suite(Path(hand_dir), n=n, image=image, pool=pool, hand=True)
        for _ in range(repeats):  # interleaved, so drift on the machine hits every variant alike
            for strategy in ["readonly", *PLUGIN_VARIANTS]:  # readonly: the same work without resets
                env = {"BENCH_NO_RESET": "1"} if strategy == "readonly" else {}
                times.setdefault(strategy, []).append(run_suite(Path(plugin_dir), [f"--lxd-strategy={strategy}"],
                                                                env))
            for mode in ["none", *HAND_VARIANTS]:
                env = {"BENCH_MODE": mode, "BENCH_IMAGE": image, "BENCH_POOL": pool}
                if mode == "none":
                    env["BENCH_NO_RESET"] = "1"
                times.setdefault(f"hand-{mode}", []).append(run_suite(Path(hand_dir), ["-p", "no:lxdsnap"], env))
    plugin_ref, hand_ref = median(times["readonly"]), median(times["hand-none"])
    result = {s: (median(times[s]) - plugin_ref) / n for s in PLUGIN_VARIANTS}
    for mode in HAND_VARIANTS:
        result[mode] = (median(times[f"hand-{mode}"]) - hand_ref) / n
    return result


# -- 2. in place, per reset -------------------------------------------------------------------
@contextmanager
def existing_containers(pool: str, image: str, count: int) -> Iterator[list[str]]:
    names = [f"{PREFIX}{secrets.token_hex(3)}" for _ in range(count)]
    try:
        for name in names:
            lxc("launch", image, name, "--storage", pool)
        yield names
    finally:
        for name in names:
            subprocess.run(["lxc", "delete", "--force", name], check=False, capture_output=True)


def dirty(instance: str) -> None:
    exec_command(client, instance, ["touch", "/root/dirty"], check=True)


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def inplace_resets(pool: str, image: str, rounds: int, *, systemd: bool = False) -> dict[str, float]:
    """Median seconds per reset of one existing, running container, four (systemd: five) ways, interleaved."""
    with existing_containers(pool, image, 1) as (name,):
        session = LxdSession(Endpoint(), {})
        session.connect()
        try:
            (checkout,) = session.acquire((name,))
            tracked = checkout.tracked
            samples: dict[str, list[float]] = {}

            def tutorial() -> None:
                lxc("snapshot", name, "bench-snap")
                dirty(name)
                start = time.perf_counter()
                lxc("stop", name)
                lxc("restore", name, "bench-snap")
                lxc("start", name)
                lxc("delete", f"{name}/bench-snap")
                samples.setdefault("tutorial recipe (lxc CLI, snapshot per test)", []).append(
                    time.perf_counter() - start)

            for _ in range(rounds):
                dirty(name)
                samples.setdefault("LXD API floor (restore the running instance)", []).append(
                    timed(lambda: lxdapi.restore_snapshot(client, name, tracked.snapshot)))
                if systemd:  # the floor a test may start on: restored and booted
                    dirty(name)
                    samples.setdefault(FLOOR_SYSTEMD, []).append(timed(lambda: (
                        lxdapi.restore_snapshot(client, name, tracked.snapshot),
                        exec_command(client, name, ["systemctl", "is-system-running", "--wait"]))))
                dirty(name)
                samples.setdefault("plugin inplace", []).append(timed(lambda: session.reset([tracked])))
                dirty(name)
                samples.setdefault("plugin recipe (API stop, restore, start)", []).append(
                    timed(lambda: session.release([checkout_for(tracked, "recipe")])))
                tutorial()
            snapshot_and_delete = timed(lambda: (lxc("snapshot", name, "bench-x"), lxc("delete", f"{name}/bench-x")))
        finally:
            assert not session.finish(), "the benchmark's session left something behind"
    result = {k: median(v) for k, v in samples.items()}
    # The tutorial's per-test cost includes taking and deleting its snapshot, outside the timed block above.
    result["tutorial recipe (lxc CLI, snapshot per test)"] += snapshot_and_delete
    return result


def checkout_for(tracked: Tracked, strategy: str) -> Checkout:
    return Checkout(tracked, strategy, "", tracked.instance)


def concurrent_resets(pool: str, image: str, rounds: int) -> tuple[float, float]:
    """Median seconds to reset 1 and 4 existing containers (one test touching all four)."""
    with existing_containers(pool, image, 4) as names:
        session = LxdSession(Endpoint(), {})
        session.connect()
        try:
            tracked = [c.tracked for c in session.acquire(tuple(names))]
            one, four = [], []
            for _ in range(rounds):
                dirty(names[0])
                one.append(timed(lambda: session.reset(tracked[:1])))
                for name in names:
                    dirty(name)
                four.append(timed(lambda: session.reset(tracked)))
        finally:
            assert not session.finish()
    return median(one), median(four)


# -- 3. snapshot size, exec, idle plugin, memory ------------------------------------------------
def snapshot_seconds(pool: str, image: str, megabytes: int, samples: int = 3) -> float:
    with existing_containers(pool, image, 1) as (name,):
        exec_command(client, name, ["dd", "if=/dev/zero", "of=/big", "bs=1M", f"count={megabytes}"], check=True)
        exec_command(client, name, ["sync"], check=True)
        subprocess.run(["sync"], check=True)
        times = []
        for i in range(samples):
            start = time.perf_counter()
            lxdapi.wait(client, client.api.instances[name].snapshots.post(json={"name": f"s{i}"}))
            times.append(time.perf_counter() - start)
            lxdapi.wait(client, client.api.instances[name].snapshots[f"s{i}"].delete())
    return median(times)


def exec_latency(pool: str, image: str, *, keep_logs: bool, samples: int = 200) -> float:
    """Median seconds of ``exec true``; keep_logs as for declared containers (the plugin's own)."""
    with existing_containers(pool, image, 1) as (name,):
        for _ in range(5):
            exec_command(client, name, ["true"], keep_logs=keep_logs)
        return median([timed(lambda: exec_command(client, name, ["true"], keep_logs=keep_logs))
                       for _ in range(samples)])


def idle_plugin_cost(runs: int = 11) -> float:
    """Median extra seconds of a pytest run without marked tests when the plugin is installed."""
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "test_plain.py").write_text("def test_plain():\n    assert True\n")
        Path(directory, "pyproject.toml").write_text('[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n')
        on, off = [], []
        for _ in range(runs):
            on.append(run_suite(Path(directory), []))
            off.append(run_suite(Path(directory), ["-p", "no:lxdsnap"]))
    return median(on) - median(off)


def memory_growth(pool: str, image: str, n: int) -> tuple[float, float, int]:
    """RSS (MB) of the pytest process after 20 tests and after ``n`` tests that each get a fresh clone."""
    with tempfile.TemporaryDirectory() as directory:
        write_suite(Path(directory), n=n, image=image, pool=pool, hand=False)
        Path(directory, "conftest.py").write_text(MEMORY_CONFTEST)
        rss_file = Path(directory, "rss")
        run_suite(Path(directory), ["--lxd-strategy=clone"], {"BENCH_RSS": str(rss_file)})
        warm, last, count = rss_file.read_text().split()
    return float(warm), float(last), int(count)


@contextmanager
def stop_hook(state: str) -> Iterator[None]:
    """Run with lxcfs's stop hook in ``state`` (stock or fast), then put the host back as it was."""
    before = stophook.state()
    try:
        stophook.enable() if state == "fast" else stophook.disable()
        yield
    finally:
        stophook.enable() if before == "fast" else stophook.disable()


# -- reporting ----------------------------------------------------------------------------------
def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    out = [f"\n{title}", line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def chart(path: Path, suites: dict[str, dict[str, float]], inplace: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    labels = ["tutorial", "fresh", "recipe", "inplace", "clone", "auto"]
    names = {"tutorial": "tutorial\nrecipe", "fresh": "new instance\nper test", "recipe": "plugin\nrecipe",
             "inplace": "plugin\ninplace", "clone": "plugin\nclone", "auto": "plugin\nauto"}
    width = 0.8 / max(len(suites), 1)
    for i, (pool, values) in enumerate(suites.items()):
        xs = [x + i * width for x in range(len(labels))]
        ms = [max(values[k] * 1000, 1) for k in labels]
        bars = left.bar(xs, ms, width, label=pool)
        left.bar_label(bars, labels=[f"{m:.0f}" for m in ms], fontsize=7)
    left.set_xticks([x + width * (len(suites) - 1) / 2 for x in range(len(labels))], [names[k] for k in labels])
    left.set_yscale("log")
    left.set_ylabel("reset overhead per test, ms (log)")
    left.set_title("Whole suite, busybox, per test (lower is better)")
    left.legend(fontsize=8)
    steps = list(next(iter(inplace.values())))
    for i, (pool, values) in enumerate(inplace.items()):
        ys = [y + i * 0.4 for y in range(len(steps))]
        bars = right.barh(ys, [values[s] * 1000 for s in steps], 0.4, label=pool)
        right.bar_label(bars, fmt="%.0f", fontsize=7)
    right.set_yticks([y + 0.2 for y in range(len(steps))], [textwrap.fill(s, 28) for s in steps], fontsize=7)
    right.set_xlabel("ms per reset")
    right.set_title("Existing container, in place")
    right.legend(loc="upper center", bbox_to_anchor=(0.4, -0.12), ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=10, help="tests per generated suite (default 10)")
    parser.add_argument("--more-tests", type=int, default=40, help="a second, larger suite size (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each suite (default 3)")
    parser.add_argument("--rounds", type=int, default=9, help="resets per in-place measurement (default 9)")
    parser.add_argument("--memory-tests", type=int, default=500, help="tests in the memory run (0: skip)")
    parser.add_argument("--big-mb", type=int, default=2400, help="the large rootfs for snapshot times (0: skip)")
    parser.add_argument("--image", default=IMAGE_ALIAS)
    parser.add_argument("--debian", action="store_true",
                        help="also measure the Debian 12 + systemd image lxdsnap/debian-12 (built as `lxdsnap setup "
                             "--image debian` builds it, once per machine)")
    parser.add_argument("--chart", type=Path, default=Path("benchmarks/results.png"))
    parser.add_argument("--stop-hook", choices=["as-is", "both"], default="as-is",
                        help="both: also measure the btrfs suites and in-place resets with lxcfs's stop hook "
                             "stock and fast (`lxdsnap setup --fast-stop`), restoring the host's choice after")
    args = parser.parse_args()

    pools = {p["name"]: p["driver"] for p in lxdapi.listing(client.api.storage_pools)}
    cow = next((name for name, driver in pools.items() if driver in ("btrfs", "zfs", "lvm")), None)
    if cow is None:
        raise SystemExit("no copy-on-write pool: run `lxdsnap setup` (btrfs) first")
    made_dir_pool = DIR_POOL not in pools
    if made_dir_pool:
        client.api.storage_pools.post(json={"name": DIR_POOL, "driver": "dir", "config": {}})
    chosen = {f"{cow} ({pools[cow]})": cow, f"{DIR_POOL} (dir)": DIR_POOL}
    info = client.api.get().json()["metadata"]["environment"]
    memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    print(f"host: {os.cpu_count()} cores, {memory_gib:.0f} GiB, {info.get('server')} {info.get('server_version')}, "
          f"kernel {info.get('kernel_version')}, image {args.image}, lxcfs stop hook: {stophook.state()}")
    states = ["stock", "fast"] if args.stop_hook == "both" and stophook.state() != "absent" else [stophook.state()]
    out: list[str] = []
    try:
        suites = {label: suite_overheads(pool, args.image, args.tests, args.repeats) for label, pool in chosen.items()}
        for state in states:
            if state != stophook.state():
                with stop_hook(state):
                    suites[f"{cow} ({pools[cow]}), stop hook {state}"] = suite_overheads(
                        cow, args.image, args.tests, args.repeats)
        rows = []
        for variant in ["tutorial", "fresh", *PLUGIN_VARIANTS]:
            cells = [HAND_VARIANTS.get(variant, f"plugin {variant}")]
            for values in suites.values():
                cells += [f"{values[variant] * 1000:.0f}", f"{values['tutorial'] / values[variant]:.1f}x"]
            rows.append(cells)
        header = ["variant"] + [h for label in suites for h in (f"{label} ms/test", "vs tutorial")]
        out.append(table(f"Whole-suite reset overhead per test ({args.tests} short tests, median of "
                         f"{args.repeats} runs each; cleanup included)", header, rows))
        print(out[-1], flush=True)
        if args.more_tests:
            many = suite_overheads(cow, args.image, args.more_tests, max(args.repeats - 1, 1))
            rows = [[HAND_VARIANTS.get(v, f"plugin {v}"), f"{suites[next(iter(suites))][v] * 1000:.0f}",
                     f"{many[v] * 1000:.0f}", f"{many['tutorial'] / many[v]:.1f}x"]
                    for v in ["tutorial", "fresh", *PLUGIN_VARIANTS]]
            out.append(table(f"Scaling with the number of tests ({cow})",
                             ["variant", f"{args.tests} tests ms/test", f"{args.more_tests} tests ms/test",
                              "vs tutorial"], rows))
            print(out[-1], flush=True)

        inplace = {label: inplace_resets(pool, args.image, args.rounds) for label, pool in chosen.items()}
        for state in states:
            if state != stophook.state():
                with stop_hook(state):
                    inplace[f"{cow} ({pools[cow]}), stop hook {state}"] = inplace_resets(cow, args.image, args.rounds)
        steps = list(next(iter(inplace.values())))
        rows = [[s] + [f"{v[s] * 1000:.0f}" for v in inplace.values()] for s in steps]
        for label, v in inplace.items():
            tutorial = v["tutorial recipe (lxc CLI, snapshot per test)"]
            pad = [""] * (len(inplace) - 1)
            rows.append([f"{label}: tutorial / plugin inplace", f"{tutorial / v['plugin inplace']:.2f}x", *pad])
            rows.append([f"{label}: plugin inplace / API floor",
                         f"{v['plugin inplace'] / v['LXD API floor (restore the running instance)']:.3f}", *pad])
        out.append(table(f"Existing container, one reset in place (ms, median of {args.rounds})",
                         ["step", *inplace], rows))
        print(out[-1], flush=True)

        one, four = concurrent_resets(cow, args.image, args.rounds)
        sizes = [240, args.big_mb] if args.big_mb else [240]
        snaps = {mb: snapshot_seconds(cow, args.image, mb) for mb in sizes}
        dir_snap = snapshot_seconds(DIR_POOL, args.image, 240)
        exec_existing = exec_latency(cow, args.image, keep_logs=False) * 1000
        exec_declared = exec_latency(cow, args.image, keep_logs=True) * 1000
        idle_ms = idle_plugin_cost() * 1000
        rows = [["reset 1 container in place", f"{one * 1000:.0f} ms", ""],
                ["reset 4 containers touched by one test", f"{four * 1000:.0f} ms", f"{four / one:.2f}x of 1"]]
        rows += [[f"baseline snapshot, rootfs +{mb} MB ({cow})", f"{s * 1000:.0f} ms",
                  f"{s / snaps[240]:.2f}x of 240 MB"] for mb, s in snaps.items()]
        rows.append([f"baseline snapshot, rootfs +240 MB ({DIR_POOL}, dir)", f"{dir_snap * 1000:.0f} ms",
                     f"{dir_snap / snaps[240]:.1f}x of btrfs"])
        rows.append(["exec `true`, existing container (median of 200)", f"{exec_existing:.1f} ms", ""])
        rows.append(["exec `true`, declared container (median of 200)", f"{exec_declared:.1f} ms", ""])
        rows.append(["suite without lxd-marked tests: plugin cost", f"{idle_ms:.0f} ms", "no LXD connection"])
        if args.memory_tests:
            warm, last, count = memory_growth(cow, args.image, args.memory_tests)
            rows.append([f"pytest RSS after 20 / {count} tests (clone each)", f"{warm:.1f} / {last:.1f} MB",
                         f"+{last - warm:.1f} MB"])
        out.append(table("Other targets", ["measure", "value", "ratio"], rows))
        print(out[-1], flush=True)
        if args.debian:
            from pytest_lxdsnap.host.debian import DEBIAN_ALIAS, ensure_debian_image

            ensure_debian_image(Endpoint(), log=print)  # `lxdsnap setup --image debian`: once per machine
            debian = DEBIAN_ALIAS
            suite = suite_overheads(cow, debian, args.tests, args.repeats, ready='"systemd"')
            resets = {label: inplace_resets(pool, debian, max(args.rounds // 3, 3), systemd=True)
                      for label, pool in chosen.items()}
            rows = [[HAND_VARIANTS.get(v, f"plugin {v}"), f"{suite[v] * 1000:.0f}",
                     f"{suite['tutorial'] / suite[v]:.1f}x"] for v in ["tutorial", "fresh", *PLUGIN_VARIANTS]]
            rows += [[f"in place, {label}: {step}", f"{value * 1000:.0f}", ""]
                     for label, steps in resets.items() for step, value in steps.items()]
            out.append(table(f"Debian 12 + systemd ({debian}), {cow}: reset overhead per test ({args.tests} tests)",
                             ["variant", "ms/test", "vs tutorial"], rows))
            print(out[-1], flush=True)
        if args.chart:
            chart(args.chart, suites, inplace)
            print(f"\nchart: {args.chart}")
    finally:
        for record in lxdapi.listing(client.api.instances):
            if record["name"].startswith(PREFIX):
                subprocess.run(["lxc", "delete", "--force", record["name"]], check=False, capture_output=True)
        if made_dir_pool:
            client.api.storage_pools[DIR_POOL].delete()


if __name__ == "__main__":
    main()
