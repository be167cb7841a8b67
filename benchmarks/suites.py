"""Whole suites as a user waits for them, on busybox and on Debian 12 + systemd (part of `make bench`).

A generated suite of N short tests (each checks it starts clean, touches a file and adds a user) runs in a
pytest subprocess, several ways, interleaved, on the same host, pool and image:

- reference: the same test bodies against an already-running container, no plugin, no resets;
- tutorial: a hand-written conftest doing the tutorial chapter's recipe per test (`lxc snapshot`, then
  `lxc stop`, `lxc restore`, `lxc start`, `lxc delete c/snap`) on that running container;
- fresh: a new instance from the image per test (`lxc launch`, `lxc delete --force`);
- plugin, existing: the plugin on that running container (an in-place restore per test);
- plugin, declared: the container declared in pyproject.toml; the plugin launches it, clones it per
  test and cleans up, all inside the timed run;
- docker: testcontainers-python with a fresh Docker container per test (the same rootfs, `sleep infinity`,
  no systemd: Docker cannot run systemd here), skipped with a note where no Docker daemon answers.

Per-test overhead = (median wall time of the whole pytest process - median of the reference) / N.
The containers made outside the timed runs are deleted afterwards; the plugin's own are checked gone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "tutorial": "tutorial recipe (lxc CLI)",
    "fresh": "new instance per test (lxc launch)",
    "existing": "plugin, existing container (in place)",
    "declared": "plugin, declared (clones)",
    "docker": "testcontainers + Docker, new container per test",
}
PREFIX = "bench-lxdsnap-"

TESTS = """
import os
import pytest

NAME = os.environ["BENCH_NAME"]
CHECK = os.environ["BENCH_MODE"] != "reference"  # the reference makes the same calls without resets
BODY = "touch /root/dirty; useradd bench 2>/dev/null || adduser -D -H bench 2>/dev/null; true"


@pytest.mark.lxd(NAME)
@pytest.mark.parametrize("i", range({n}))
def test_short(box, i):
    clean = box.exec(["test", "!", "-e", "/root/dirty"]).exit_code == 0
    assert clean or not CHECK, "state leaked from an earlier test"
    box.exec(["sh", "-c", BODY], check=True)
"""

PLUGIN_CONFTEST = """
import os
import pytest


@pytest.fixture
def box(lxd):
    return lxd[os.environ["BENCH_NAME"]]
"""

HAND_CONFTEST = """
import os, secrets, subprocess
import pytest
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.handle import Container

MODE, NAME = os.environ["BENCH_MODE"], os.environ["BENCH_NAME"]
IMAGE, POOL = os.environ["BENCH_IMAGE"], os.environ["BENCH_POOL"]
client = connect(Endpoint())


def lxc(*args):
    subprocess.run(["lxc", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_configure(config):
    config.addinivalue_line("markers", "lxd(*names): containers (hand-written conftest)")


@pytest.fixture
def box():
    if MODE == "fresh":  # a new instance from the image for every test
        name = NAME + "-" + secrets.token_hex(2)
        lxc("launch", IMAGE, name, "--storage", POOL)
        yield Container(client, "web", name)
        lxc("delete", "--force", name)
        return
    if MODE == "tutorial":  # the tutorial chapter's recipe, step by step
        lxc("snapshot", NAME, "bench-snap")
    yield Container(client, "web", NAME)
    if MODE == "tutorial":
        lxc("stop", NAME)
        lxc("restore", NAME, "bench-snap")
        lxc("start", NAME)
        lxc("delete", NAME + "/bench-snap")
"""

DOCKER_CONFTEST = """
import os
from types import SimpleNamespace
import pytest
from testcontainers.core.container import DockerContainer


def pytest_configure(config):
    config.addinivalue_line("markers", "lxd(*names): containers (the peer ignores it)")


class Box:
    def __init__(self, container):
        self.container = container.get_wrapped_container()

    def exec(self, argv, check=False):
        rc, out = self.container.exec_run(argv)
        assert rc == 0 or not check, out
        return SimpleNamespace(exit_code=rc, stdout=out)


@pytest.fixture
def box():
    image = os.environ["BENCH_DOCKER_IMAGE"]
    with DockerContainer(image).with_command("sleep infinity").with_kwargs(network_mode="none") as container:
        yield Box(container)
"""


def lxc(*args: str) -> None:
    subprocess.run(["lxc", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def docker_answers() -> str:
    """Empty when a Docker daemon answers; otherwise why the Docker column is skipped."""
    if shutil.which("docker") is None:
        return "no docker command"
    answer = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if answer.returncode != 0:
        return ("no Docker daemon answers (Debian: apt-get install docker.io; "
                "setsid dockerd --bridge=none --iptables=false &)")
    return ""


def docker_image(image: str) -> str:
    """The LXD image's rootfs imported into Docker once (``lxdsnap-bench/<alias>:latest``)."""
    tag = "lxdsnap-bench/" + image.replace("lxdsnap/", "") + ":latest"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run(["lxc", "image", "export", image, f"{directory}/image"], check=True, capture_output=True)
        tarball = next(p for p in Path(directory).iterdir() if p.name.startswith("image") and "root" not in p.name)
        rootfs = Path(directory, "rootfs")
        with tarfile.open(tarball) as archive:  # a unified LXD image: metadata.yaml + rootfs/
            archive.extractall(directory, filter="fully_trusted")
        squash = next(Path(directory).glob("image.root*"), None)
        if squash is not None:  # a split image: the rootfs is a squashfs beside the metadata
            subprocess.run(["unsquashfs", "-f", "-d", str(rootfs), str(squash)], check=True, capture_output=True)
        packed = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", tag], stdin=packed.stdout, check=True, capture_output=True)
        packed.wait()
    return tag


def wait_booted(instance: str, systemd: bool) -> None:
    if systemd:
        subprocess.run(["lxc", "exec", instance, "--", "systemctl", "is-system-running", "--wait"],
                       capture_output=True)


def write_suite(directory: Path, n: int, conftest: str, declared: str = "") -> None:
    pyproject = '[tool.pytest.ini_options]\naddopts = "-p no:cacheprovider"\n' + declared
    (directory / "pyproject.toml").write_text(pyproject)
    (directory / "test_suite.py").write_text(TESTS.format(n=n))
    (directory / "conftest.py").write_text(conftest)


def run(directory: Path, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", *args], cwd=directory, capture_output=True,
                            text=True, env={**os.environ, **env})
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark suite failed ({args}, {env}):\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def overheads(image: str, pool: str, n: int, repeats: int, *, systemd: bool,
              docker: bool) -> tuple[dict[str, float], float]:
    """Per-test overhead (seconds) of each variant, and the reference's wall time, for one image."""
    running = PREFIX + secrets.token_hex(3)
    lxc("launch", image, running, "--storage", pool)
    ready = 'ready = "systemd"\n' if systemd else ""
    declared = f'\n[tool.lxdsnap.containers.web]\nimage = "{image}"\npool = "{pool}"\n{ready}'
    times: dict[str, list[float]] = {}
    try:
        wait_booted(running, systemd)
        with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as hand, \
                tempfile.TemporaryDirectory() as peer:
            write_suite(Path(plain), n, PLUGIN_CONFTEST, declared)
            write_suite(Path(hand), n, HAND_CONFTEST)
            write_suite(Path(peer), n, DOCKER_CONFTEST)
            hand_env = {"BENCH_NAME": running, "BENCH_IMAGE": image, "BENCH_POOL": pool}
            runs = {
                "reference": (hand, ["-p", "no:lxdsnap"], {**hand_env, "BENCH_MODE": "reference"}),
                "tutorial": (hand, ["-p", "no:lxdsnap"], {**hand_env, "BENCH_MODE": "tutorial"}),
                "fresh": (hand, ["-p", "no:lxdsnap"], {**hand_env, "BENCH_MODE": "fresh"}),
                "existing": (plain, ["--lxd-strategy=inplace"], {"BENCH_NAME": running, "BENCH_MODE": "plugin"}),
                "declared": (plain, [], {"BENCH_NAME": "web", "BENCH_MODE": "plugin"}),
            }
            if docker:
                runs["docker"] = (peer, ["-p", "no:lxdsnap"], {
                    "BENCH_NAME": "web", "BENCH_MODE": "docker", "BENCH_DOCKER_IMAGE": docker_image(image),
                    "TESTCONTAINERS_RYUK_DISABLED": "true"})
            lxc("snapshot", running, "bench-clean")
            for _ in range(repeats):  # interleaved, so drift on the machine hits every variant alike
                for variant, (directory, args, env) in runs.items():
                    times.setdefault(variant, []).append(run(Path(directory), args, env))
                    if variant == "reference":  # it dirtied the running container: clean it, untimed
                        lxc("restore", running, "bench-clean")
                        wait_booted(running, systemd)
    finally:
        subprocess.run(["lxc", "delete", "--force", running], check=False, capture_output=True)
    reference = statistics.median(times["reference"])
    return {v: (statistics.median(t) - reference) / n for v, t in times.items() if v != "reference"}, reference
