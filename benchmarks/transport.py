"""What HTTPS costs against the local socket, for LXD and Incus: `make bench-transport` (root, both running).

For each daemon: connect, `exec true`, an in-place reset (restore a running container's snapshot) and
a copy-on-write clone (copy from the snapshot, start, stop, delete), over its unix socket and over HTTPS on
loopback with a client certificate and the server's certificate pinned. Both transports in the same run,
in two interleaved halves (the median of each half, averaged); a table with the HTTPS/socket ratio.
Leaves nothing behind (the https address and the trusted certificate go again when it set them).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pylxd

from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import lxdapi
from pytest_lxdsnap.lxd.backends import BACKENDS
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.execution import exec_command

PORTS = {"lxd": "127.0.0.1:8443", "incus": "127.0.0.1:8444"}
CERT_NAME = "lxdsnap-bench"


def median_ms(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def client_certificate(folder: Path) -> tuple[str, str]:
    crt, key = folder / "bench.crt", folder / "bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=lxdsnap-bench"],
                   check=True, capture_output=True)
    return str(crt), str(key)


def measure(socket_client: pylxd.Client, endpoint: Endpoint, rounds: int) -> dict[str, float]:
    """Every figure for one transport, on a container of its own."""
    client = connect(endpoint)
    name = f"lxdsnap-bench-{secrets.token_hex(3)}"
    body = {"name": name, "source": {"type": "image", "alias": IMAGE_ALIAS}}
    lxdapi.create_instance(socket_client, body)
    try:
        lxdapi.set_power(socket_client, name, "start")
        lxdapi.wait(socket_client, socket_client.api.instances[name].snapshots.post(json={"name": "base"}))

        def clone() -> None:
            copy = f"{name}-c"
            lxdapi.create_instance(client, {"name": copy, "source": {"type": "copy", "source": f"{name}/base",
                                                                     "instance_only": True},
                                           "profiles": ["default"]})
            lxdapi.set_power(client, copy, "start")
            lxdapi.stop_and_delete(client, copy, lxdapi.RUNNING)

        return {
            "connect": median_ms(lambda: connect(endpoint), rounds),
            "exec true": median_ms(lambda: exec_command(client, name, ["true"]), rounds * 5),
            "in-place reset": median_ms(lambda: lxdapi.restore_snapshot(client, name, "base"), rounds),
            "clone + start + delete": median_ms(clone, rounds),
        }
    finally:
        lxdapi.stop_and_delete(socket_client, name, lxdapi.status(socket_client, name))


def bench_backend(backend_name: str, rounds: int, folder: Path) -> dict[str, dict[str, float]]:
    backend = BACKENDS[backend_name]
    local = Endpoint(url=backend.socket)
    client = connect(local)
    address = client.host_info["config"].get("core.https_address", "")
    if not address:
        address = PORTS[backend_name]
        lxdapi.wait(client, client.api.patch(json={"config": {"core.https_address": address}}))
    crt, key = client_certificate(folder)
    remote = Endpoint(url=f"https://{address}", cert=crt, key=key,
                      server_cert=os.path.join(os.path.dirname(backend.socket), "server.crt"))
    try:
        with open(crt, "rb") as fh, lxdapi.quiet_pylxd():
            client.certificates.create(password="", cert_data=fh.read(), name=CERT_NAME)
        halves: dict[str, dict[str, list[float]]] = {"socket": {}, "https": {}}
        for _ in range(2):  # interleaved halves: drift on a noisy machine hits both transports alike
            for label, endpoint in (("socket", local), ("https", remote)):
                for metric, value in measure(client, endpoint, max(1, rounds // 2)).items():
                    halves[label].setdefault(metric, []).append(value)
        return {label: {m: statistics.mean(v) for m, v in by.items()} for label, by in halves.items()}
    finally:
        for record in lxdapi.listing(client.api.certificates):
            if record.get("name") == CERT_NAME:
                client.api.certificates[record["fingerprint"]].delete()
        if address == PORTS[backend_name]:
            lxdapi.wait(client, client.api.patch(json={"config": {"core.https_address": ""}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="lxd,incus", help="comma-separated: lxd, incus (default both)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per figure (exec: 5x as many)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {b: bench_backend(b, args.rounds, Path(tmp)) for b in args.backends.split(",")}
    print(f"\nmedians in ms, {args.rounds} rounds ({args.rounds * 5} for exec), socket and HTTPS interleaved")
    print(f"{'daemon':<7} {'what':<24} {'socket':>9} {'https':>9} {'https/socket':>13}")
    for backend, figures in results.items():
        for metric, unix in figures["socket"].items():
            https = figures["https"][metric]
            print(f"{backend:<7} {metric:<24} {unix:>9.1f} {https:>9.1f} {https / unix:>12.2f}x")


if __name__ == "__main__":
    main()
