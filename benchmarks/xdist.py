"""pytest -n 2 against -n 0 on the same suites, as a user feels them (whole pytest process, launch and cleanup in).

Two suites on one declared busybox container with strategy clone: a reset-bound one (tests that each touch a
file: the resets are all the work) and a slow one (tests that each also sleep a second: the work is the tests').
The runs alternate (-n 0, -n 2, -n 0, ...) on the same host, pool and image; medians and the ratio -n 0 / -n 2
are printed with the targets of the xdist design (-n 2 never slower on the reset-bound suite, at least 1.6x
faster on the slow one). Every run must pass and leave nothing behind (the plugin's own summary says so).
A third suite, the reset-bound one without the marker (no LXD at all), shows what pytest-xdist itself costs
here: its controller and workers start as processes of their own.

    python benchmarks/xdist.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = '''
import time

import pytest


@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range({tests}))
def test_it(lxd, i):
    c = lxd["web"]
    assert not c.exists("/root/dirty")
    c.write_text("/root/dirty", "x")
    time.sleep({sleep})
'''
NO_LXD = '''
import pytest


@pytest.mark.parametrize("i", range({tests}))
def test_it(tmp_path, i):
    assert not (tmp_path / "dirty").exists()
    (tmp_path / "dirty").write_text("x")
'''
PYPROJECT = """
[tool.pytest.ini_options]
addopts = "-p no:cacheprovider -p no:randomly"

[tool.lxdsnap.containers.web]
image = "{image}"
strategy = "clone"
{provision}
"""
SUITES = {  # name: (seconds each test sleeps, -n 0 / -n 2 the target asks for; None: a reference)
    "reset-bound": (0.0, 1.0),
    "sleep 1 s": (1.0, 1.6),
    "no lxd": (0.0, None),
}


def timed_run(python: str, folder: str, workers: int) -> float:
    argv = [python, "-m", "pytest", "-q", *(["-n", str(workers), "-p", "xdist"] if workers else [])]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0 or "LEFTOVER" in done.stdout:
        raise SystemExit(f"pytest {' '.join(argv[3:])} failed in {folder}:\n{done.stdout[-4000:]}"
                         f"{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="python of the install under test")
    parser.add_argument("--runs", type=int, default=5, help="runs of each suite and -n (medians of these)")
    parser.add_argument("--tests", type=int, default=20, help="tests in the reset-bound suite")
    parser.add_argument("--slow-tests", type=int, default=20, help="tests in the slow suite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image", default="lxdsnap/busybox")
    parser.add_argument("--provision", default="", help="one provision command (an expensive one shows the "
                                                        "one-build-per-run gain), e.g. 'sleep 5'")
    parser.add_argument("--suite", choices=SUITES, action="append", help="run only this suite (repeatable)")
    args = parser.parse_args()
    provision = f"provision = [{args.provision!r}]" if args.provision else ""
    results = []
    for suite, (sleep, target) in SUITES.items():
        if args.suite and suite not in args.suite:
            continue
        tests = args.tests if sleep == 0 else args.slow_tests
        times: dict[int, list[float]] = {0: [], args.workers: []}
        with tempfile.TemporaryDirectory(prefix="lxdsnap-bench-xdist-") as folder:
            Path(folder, "pyproject.toml").write_text(PYPROJECT.format(image=args.image, provision=provision))
            Path(folder, "test_suite.py").write_text((NO_LXD if target is None else SUITE).format(tests=tests,
                                                                                                 sleep=sleep))
            for run in range(1, args.runs + 1):
                for workers in times:
                    took = timed_run(args.python, folder, workers)
                    times[workers].append(took)
                    print(f"{suite}, {tests} tests, -n {workers}, run {run}: {took:.2f} s", flush=True)
        serial, parallel = statistics.median(times[0]), statistics.median(times[args.workers])
        ratio = serial / parallel
        verdict = ("what pytest-xdist alone costs: -n {workers} - -n 0 = {gap:.2f} s" if target is None else
                   "target >= {target:g}: " + ("met" if ratio >= target else "MISSED"))
        results.append(f"{suite:12} {tests:3} tests: -n 0 {serial:6.2f} s, -n {args.workers} {parallel:6.2f} s, "
                       f"-n 0 / -n {args.workers} = {ratio:.2f} ("
                       + verdict.format(workers=args.workers, gap=parallel - serial, target=target) + ")")
    print(f"\nmedians of {args.runs} alternating runs, whole pytest process, image {args.image}"
          + (f", provision {args.provision!r}" if args.provision else ""))
    print("\n".join(results))


if __name__ == "__main__":
    main()
