"""What the systemd tier's steps cost on a Debian 12 + systemd container: `make bench-systemd` (root).

Measured with the plugin's own functions on ``lxdsnap/debian-12`` (``lxdsnap setup --image debian``), medians
of ``--rounds``:

- a clone's identity: copy + start of clones of a baseline with the identity templates against one without,
  alternating (the difference is what each clone pays on the reset path), and installing the templates once;
- the systemd wait after a clone's start (``ready = "systemd"``), and after an in-place restore of a running
  container (what an existing container now waits for before the next test);
- ``apt-get update`` and ``apt-get install -y nginx-light`` through the host's package cache
  (``lxdsnap setup --package-cache``), warm: the first round fills the cache, the median is of the others.

Prints one table; leaves nothing behind (every instance it makes is ``bench-lxdsnap-sys-*``).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable

from pytest_lxdsnap.declarations import PACKAGE_CACHE, SYSTEMD_READY
from pytest_lxdsnap.host.debian import DEBIAN_ALIAS
from pytest_lxdsnap.host.image import IMAGE_ALIAS
from pytest_lxdsnap.lxd import aptproxy, lxdapi
from pytest_lxdsnap.lxd.connection import Endpoint, connect
from pytest_lxdsnap.lxd.execution import exec_command
from pytest_lxdsnap.lxd.identity import has_machine_id, install_identity_templates
from pytest_lxdsnap.lxd.readiness import wait_systemd

PREFIX = "bench-lxdsnap-sys-"
NONINTERACTIVE = {"DEBIAN_FRONTEND": "noninteractive"}


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--endpoint", default=None, help="unix socket (default: LXD's)")
    args = parser.parse_args()
    client = connect(Endpoint(url=args.endpoint))
    made: list[str] = []

    def create(source: dict[str, object], devices: dict[str, dict[str, str]] | None = None) -> str:
        name = f"{PREFIX}{secrets.token_hex(3)}"
        lxdapi.create_instance(client, {"name": name, "type": "container", "source": source, "profiles": ["default"],
                                        "devices": devices or {}})
        made.append(name)
        return name

    try:
        bases = {}
        for templates in (True, False):
            base = create({"type": "image", "alias": DEBIAN_ALIAS},
                          {aptproxy.DEVICE: aptproxy.device(PACKAGE_CACHE)})
            lxdapi.set_power(client, base, "start")
            first_boot = wait_systemd(client, base, SYSTEMD_READY, base, where="bench")
            if templates:
                once = timed(lambda: install_identity_templates(client, base))  # noqa: B023
            lxdapi.wait(client, client.api.instances[base].snapshots.post(json={"name": "base"}))
            bases[templates] = base
        base = bases[True]
        aptproxy.configure_apt(client, base, base, "bench")
        lxdapi.wait(client, client.api.instances[base].snapshots.post(json={"name": "base-apt"}))
        clones: dict[bool, list[float]] = {True: [], False: []}
        boot = []
        for _ in range(args.rounds):
            for templates, source in bases.items():
                start = time.perf_counter()
                clone = create({"type": "copy", "source": f"{source}/base", "instance_only": True})
                lxdapi.set_power(client, clone, "start")
                clones[templates].append(time.perf_counter() - start)
                if templates:
                    boot.append(wait_systemd(client, clone, SYSTEMD_READY, clone, where="bench"))
                lxdapi.stop_and_delete(client, clone, lxdapi.RUNNING)
                made.remove(clone)
        tiny = create({"type": "image", "alias": IMAGE_ALIAS})
        skip = [timed(lambda: has_machine_id(client, tiny)) for _ in range(args.rounds)]
        restore, restore_boot, update, install = [], [], [], []
        for _ in range(args.rounds):
            restore.append(timed(lambda: lxdapi.restore_snapshot(client, base, "base-apt")))
            restore_boot.append(wait_systemd(client, base, SYSTEMD_READY, base, where="bench"))
            update.append(timed(lambda: exec_command(client, base, ["apt-get", "update", "-q"], check=True,
                                                     keep_logs=True)))
            install.append(timed(lambda: exec_command(client, base, ["apt-get", "install", "-y", "-q", "nginx-light"],
                                                      env=NONINTERACTIVE, check=True, keep_logs=True)))
        rows = [
            ("first boot of the image to `systemctl is-system-running --wait`", [first_boot]),
            ("identity templates, installed once per baseline", [once]),
            ("clone copy + start, baseline with identity templates", clones[True]),
            ("clone copy + start, baseline without them", clones[False]),
            ("busybox baseline: the /etc/machine-id check (once; no templates)", skip),
            ("clone start -> systemd ready (ready = \"systemd\")", boot),
            ("in-place restore of the running container (LXD)", restore),
            ("  then systemd ready (existing containers wait for it now)", restore_boot),
            ("apt-get update through the cache (warm)", update[1:] or update),
            ("apt-get install -y nginx-light through the cache (warm)", install[1:] or install),
        ]
        print(f"\nDebian 12 + systemd ({DEBIAN_ALIAS}), medians of {args.rounds} (ms)")
        width = max(len(label) for label, _ in rows)
        for label, values in rows:
            print(f"  {label:<{width}}  {statistics.median(values) * 1000:8.0f}")
    finally:
        for name in made:
            if lxdapi.instance_exists(client, name):
                lxdapi.stop_and_delete(client, name, lxdapi.status(client, name))


if __name__ == "__main__":
    main()
