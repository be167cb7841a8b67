"""Paired runs of one suite under two installs of the plugin (say, main and a change), as a user feels them.

The same host, pool and image; an existing busybox container reset in place and a declared one reset with
clones, 10 tests each; the whole pytest process is timed (launch and cleanup included), the two installs
alternate run by run, and the medians and their ratio are printed. Leaves nothing behind.

    python benchmarks/paired.py --old /path/to/old/venv/bin/python --new .venv/bin/python --runs 5
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

SUITE = '''
import pytest


@pytest.mark.lxd({existing!r})
@pytest.mark.parametrize("i", range({tests}))
def test_existing(lxd, i):
    c = lxd[{existing!r}]
    assert not c.exists("/root/dirty")
    c.write_text("/root/dirty", "x")


@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range({tests}))
def test_declared(lxd, i):
    c = lxd["web"]
    assert not c.exists("/root/dirty")
    c.write_text("/root/dirty", "x")
'''
PYPROJECT = """
[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"

[tool.lxdsnap.containers.web]
image = "{image}"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="python of the install to compare against")
    parser.add_argument("--new", required=True, help="python of the install under test")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tests", type=int, default=10, help="tests per container")
    parser.add_argument("--image", default="lxdsnap/busybox")
    args = parser.parse_args()
    existing = f"bench-paired-{secrets.token_hex(3)}"
    subprocess.run(["lxc", "launch", args.image, existing, "-q"], check=True, capture_output=True)
    times: dict[str, list[float]] = {"old": [], "new": []}
    try:
        with tempfile.TemporaryDirectory(prefix="lxdsnap-paired-") as folder:
            Path(folder, "pyproject.toml").write_text(PYPROJECT.format(image=args.image))
            Path(folder, "test_suite.py").write_text(SUITE.format(existing=existing, tests=args.tests))
            for run in range(1, args.runs + 1):
                for which in ("old", "new"):
                    python = os.path.abspath(args.old if which == "old" else args.new)  # a venv's, not resolved
                    start = time.perf_counter()
                    done = subprocess.run([python, "-m", "pytest", "-q"], cwd=folder, capture_output=True, text=True)
                    took = time.perf_counter() - start
                    if done.returncode != 0:
                        raise SystemExit(f"{which} run {run} failed:\n{done.stdout[-3000:]}")
                    times[which].append(took)
                    print(f"{which} run {run}: {took:.2f} s", flush=True)
    finally:
        subprocess.run(["lxc", "delete", "--force", existing], check=False, capture_output=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"median of {args.runs}: old {old:.2f} s, new {new:.2f} s, new/old {new / old:.3f} "
          f"({2 * args.tests} tests, whole pytest process)")


if __name__ == "__main__":
    main()
