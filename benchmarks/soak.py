"""Soak run: `make soak` (root, LXD running). N tests x 2 declared containers in one pytest session.

Checks what a long session could leak: LXD instances and snapshots, threads and file descriptors of
the pytest process, memory, and whether resets get slower over time. Prints the figures; exits 1 when
a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_lxdsnap.lxd.connection import Endpoint, connect

TESTS = """
import pytest


@pytest.mark.lxd("web", "db")
@pytest.mark.parametrize("i", range({n}))
def test_soak(lxd, i):
    for name in ("web", "db"):
        assert not lxd[name].exists("/root/dirty"), "state leaked from an earlier test"
        lxd[name].write_text("/root/dirty", str(i))
        assert lxd[name].exec(["cat", "/root/dirty"]).stdout == str(i)
"""

CONFTEST = """
import json
import os
import threading

SAMPLES = {}


def _sample():
    with open("/proc/self/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024
    return {"threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")), "rss_mb": rss}


def pytest_runtest_logfinish(nodeid, location):
    SAMPLES["count"] = SAMPLES.get("count", 0) + 1
    if SAMPLES["count"] == 20:
        SAMPLES["warm"] = _sample()
    SAMPLES["last"] = _sample()


def pytest_sessionfinish(session):
    from pytest_lxdsnap.plugin import SESSION

    lxd = session.config.stash.get(SESSION, None)
    SAMPLES["resets"] = {t.name: t.reset_times for t in lxd.tracked.values()} if lxd else {}
    SAMPLES["strategies"] = {t.name: dict(t.strategies) for t in lxd.tracked.values()} if lxd else {}


def pytest_unconfigure(config):
    SAMPLES["after_cleanup"] = _sample()
    with open(os.environ["SOAK_OUT"], "w") as fh:
        json.dump(SAMPLES, fh)
"""


def lxd_objects() -> tuple[set[str], set[str]]:
    client = connect(Endpoint())
    records = client.api.instances.get(params={"recursion": 2}).json()["metadata"]
    instances = {r["name"] for r in records}
    snapshots = {f"{r['name']}/{s['name']}" for r in records for s in (r.get("snapshots") or [])}
    return instances, snapshots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--strategy", default="auto", help="--lxd-strategy of the run (default auto)")
    args = parser.parse_args()
    before = lxd_objects()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        (path / "pyproject.toml").write_text(
            '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n\n'
            '[tool.lxdsnap.containers.web]\nimage = "lxdsnap/busybox"\n\n'
            '[tool.lxdsnap.containers.db]\nimage = "lxdsnap/busybox"\n')
        (path / "test_soak.py").write_text(TESTS.format(n=args.tests))
        (path / "conftest.py").write_text(CONFTEST)
        out = path / "samples.json"
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", f"--lxd-strategy={args.strategy}"], cwd=path,
                                capture_output=True, text=True, env={**os.environ, "SOAK_OUT": str(out)})
        elapsed = time.perf_counter() - start
        samples = json.loads(out.read_text())
    after = lxd_objects()
    print(result.stdout.splitlines()[-1] if result.stdout else result.stderr[-2000:])
    warm, last = samples["warm"], samples["last"]
    checks: list[tuple[str, str, bool]] = [
        ("pytest exit code", str(result.returncode), result.returncode == 0),
        ("new LXD instances after the run", str(sorted(after[0] - before[0])), after[0] <= before[0]),
        ("new LXD snapshots after the run", str(sorted(after[1] - before[1])), after[1] <= before[1]),
        ("threads after 20 tests / last test", f"{warm['threads']} / {last['threads']}",
         last["threads"] <= warm["threads"]),
        ("open fds after 20 tests / last test", f"{warm['fds']} / {last['fds']}", last["fds"] <= warm["fds"] + 2),
        ("RSS after 20 tests / last test", f"{warm['rss_mb']:.1f} / {last['rss_mb']:.1f} MB",
         last["rss_mb"] - warm["rss_mb"] <= 20),
    ]
    for name, times in samples["resets"].items():
        if len(times) < 100:
            continue
        first, final = statistics.median(times[:50]), statistics.median(times[-50:])
        checks.append((f"{name}: median reset, first / last 50 ({samples['strategies'][name]})",
                       f"{first * 1000:.0f} / {final * 1000:.0f} ms", final <= first * 1.5 + 0.05))
    print(f"\nsoak: {args.tests} tests x 2 containers, strategy {args.strategy}, {elapsed:.0f} s")
    width = max(len(c[0]) for c in checks)
    for name, value, ok in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name:<{width}}  {value}")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
