"""What the plugin adds to a suite that marks no test: pytest's whole process with and without it.

A fresh venv with the package installed as users get it (``pip install .``, not editable) beside
pytest-xdist; a one-test suite; runs alternate with ``-p no:lxdsnap`` and without; prints the medians and
the median of the paired differences (target: at most 50 ms). Touches no daemon.

    python benchmarks/load.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(python: Path, suite: Path, *extra: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=suite, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def plugin_load(runs: int) -> tuple[float, float, float]:
    """Median seconds without and with the plugin, and the median of the paired differences."""
    with tempfile.TemporaryDirectory(prefix="lxdsnap-load-") as tmp:
        venv, suite = Path(tmp, "venv"), Path(tmp, "suite")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT), "pytest-xdist"], check=True,
                       capture_output=True)
        suite.mkdir()
        (suite / "test_plain.py").write_text("def test_plain():\n    assert True\n")
        timed(python, suite)  # warm the page cache and the bytecode
        with_plugin, without = [], []
        for _ in range(runs):
            without.append(timed(python, suite, "-p", "no:lxdsnap"))
            with_plugin.append(timed(python, suite))
    paired = statistics.median(a - b for a, b in zip(with_plugin, without, strict=True))
    return statistics.median(without), statistics.median(with_plugin), paired


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    without, with_plugin, paired = plugin_load(args.runs)
    print(f"pytest, one unmarked test, {args.runs} paired runs (non-editable install, pytest-xdist beside):")
    print(f"  without the plugin  {without * 1000:6.0f} ms (median)")
    print(f"  with the plugin     {with_plugin * 1000:6.0f} ms (median)")
    print(f"  the plugin adds     {paired * 1000:6.0f} ms (median of paired differences; target <= 50 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
