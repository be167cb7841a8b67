"""A role suite of 5 tests, two ways, on this host: `make bench-ansible` (root; `make setup-debian` first).

- **ours**: ``pytest`` on a suite whose declared Debian container has ``playbook = "converge.yml"`` (the role of
  ``examples/ansible_role``: nginx from the package cache, a templated site, the service enabled, its port): the
  role converges once into the baseline, then each test gets a clean clone, changes the site (``lxd.playbook`` of
  a one-task play with its own ``extra_vars``) and verifies it with testinfra. Timed as the whole pytest process;
  also with ``--lxd-reuse`` and the build already kept (converged once ever).
- **recreate**: Molecule's way, per test: a new instance from the image (create), the role applied (converge),
  the same change and checks (verify), the instance deleted (destroy), with the same connection plugin and
  testinfra backend; timed the same way, in one process.

Alternating rounds; prints medians and the ratios. With N tests a fresh run cannot be N times faster than
recreating (it converges once too); a kept build (--lxd-reuse) converges once ever. Leaves nothing behind: its own
instances are ``bench-lxdsnap-ans-*``, and the kept build of the --lxd-reuse variant is deleted at the end.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pylxd

from pytest_lxdsnap.ansible.inventory import Target, write_inventory
from pytest_lxdsnap.ansible.runner import run_playbook
from pytest_lxdsnap.declarations import PACKAGE_CACHE, SYSTEMD_READY
from pytest_lxdsnap.host.debian import DEBIAN_ALIAS
from pytest_lxdsnap.lxd import aptproxy, lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.execution import exec_command
from pytest_lxdsnap.lxd.readiness import wait_systemd
from pytest_lxdsnap.lxd.testinfra_backend import make_host
from pytest_lxdsnap.session import reuse

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ansible_role"
PREFIX = "bench-lxdsnap-ans-"
TESTS = 5

CHANGE = """
- name: Change the site for one test
  hosts: web
  gather_facts: false
  tasks:
    - name: Write the page
      ansible.builtin.copy:
        dest: /var/www/site/index.html
        content: "<h1>{{ site_message }}</h1>"
"""

SUITE = '''
import pytest


@pytest.mark.lxd("web")
@pytest.mark.parametrize("i", range({tests}))
def test_change_and_verify(lxd, i):
    lxd.playbook("change.yml", extra_vars={{"site_message": f"test {{i}}"}})
    host = lxd["web"].host
    assert host.service("nginx").is_running
    assert host.file("/var/www/site/index.html").contains(f"test {{i}}")
'''


def suite_folder() -> Path:
    """The example's role and pyproject, with the benchmark's tests."""
    folder = Path(tempfile.mkdtemp(prefix="lxdsnap-bench-ansible-"))
    for name in ("pyproject.toml", "converge.yml"):
        shutil.copy(EXAMPLE / name, folder / name)
    shutil.copytree(EXAMPLE / "roles", folder / "roles")
    (folder / "test_bench.py").write_text(SUITE.format(tests=TESTS))
    (folder / "change.yml").write_text(CHANGE)
    return folder


def ours(folder: Path, *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=folder,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or f"{TESTS} passed" not in done.stdout:
        raise SystemExit(f"the suite failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    return seconds


def recreate(client: pylxd.Client, folder: Path, endpoint: Endpoint) -> float:
    """Create, converge, verify, destroy, per test."""
    start = time.perf_counter()
    for i in range(TESTS):
        name = f"{PREFIX}{secrets.token_hex(3)}"
        lxdapi.create_instance(client, {"name": name, "type": "container", "profiles": ["default"],
                                        "source": {"type": "image", "alias": DEBIAN_ALIAS},
                                        "devices": {aptproxy.DEVICE: aptproxy.device(PACKAGE_CACHE)}})
        work = Path(tempfile.mkdtemp(prefix="lxdsnap-bench-ansible-run-"))
        try:
            lxdapi.set_power(client, name, "start")
            wait_systemd(client, name, SYSTEMD_READY, "web", where="bench")
            aptproxy.configure_apt(client, name, "web", "bench")
            inventory = write_inventory([Target("web", name, endpoint, disposable=True)], work / "inventory.yml")
            instances = {"web": name}
            run_playbook(folder / "converge.yml", inventory, work, where="converge", instances=instances)
            run_playbook(folder / "change.yml", inventory, work, where="test", instances=instances,
                         extra_vars={"site_message": f"test {i}"})
            host = make_host("web", lambda argv: exec_command(client, name, argv))  # noqa: B023
            assert host.service("nginx").is_running
            assert host.file("/var/www/site/index.html").contains(f"test {i}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            lxdapi.stop_and_delete(client, name, lxdapi.status(client, name))
    return time.perf_counter() - start


def kept(client: pylxd.Client) -> set[str]:
    return {r["name"] for r in lxdapi.listing(client.api.instances) if reuse.belongs(r, "web")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    endpoint = Endpoint()
    client = connect(endpoint)
    folder = suite_folder()
    times: dict[str, list[float]] = {"ours": [], "ours, --lxd-reuse (kept build)": [], "recreate": []}
    kept_before = kept(client)
    try:
        ours(folder, "--lxd-reuse")  # builds the kept build (and warms the package cache)
        for _ in range(args.rounds):
            times["ours"].append(ours(folder))
            times["ours, --lxd-reuse (kept build)"].append(ours(folder, "--lxd-reuse"))
            times["recreate"].append(recreate(client, folder, endpoint))
    finally:
        for record in lxdapi.listing(client.api.instances):
            if record["name"].startswith(PREFIX):
                lxdapi.stop_and_delete(client, record["name"], record["status"])
        for name in kept(client) - kept_before:  # the build of --lxd-reuse (another one of "web" is not ours)
            reuse.delete_kept(client, name)
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(times["recreate"])
    print(f"\nA role suite of {TESTS} tests on {DEBIAN_ALIAS} (nginx from the package cache), medians of "
          f"{args.rounds} (wall time, s)")
    for label, values in times.items():
        median = statistics.median(values)
        ratio = f"{base / median:5.1f}x less" if label != "recreate" else "    1.0x"
        print(f"  {label:<34} {median:7.1f} s   {ratio}   (each: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
