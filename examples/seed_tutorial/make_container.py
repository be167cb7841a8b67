"""Create (or delete) the tutorial's container for this example: `python make_container.py create|delete`.

The tutorial works on an existing container, `ubuntu-test`, with a snapshot of its own. Here it is
`demo-ubuntu-test`, made from the offline lxdsnap/busybox image, with the user snapshot `ubuntu-test-1`.
"""

import os
import subprocess
import sys

NAME = "demo-ubuntu-test"
MARK = "user.lxdsnap-demo"  # set on the container we create, so `delete` never removes someone else's


CLI = "incus" if os.environ.get("LXDSNAP_BACKEND") == "incus" else "lxc"  # the suite's Incus run sets it


def lxc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], check=check, capture_output=True, text=True)


def exists() -> bool:
    return lxc("info", NAME, check=False).returncode == 0


def create() -> None:
    if exists():
        if lxc("config", "get", NAME, MARK).stdout.strip() != "true":
            sys.exit(f"an instance named {NAME} exists and was not made by this example: rename or remove it")
        lxc("delete", "--force", NAME)
    lxc("launch", "lxdsnap/busybox", NAME, "--config", f"{MARK}=true")
    lxc("exec", NAME, "--", "sh", "-c", "echo 'Welcome to the tutorial container' > /etc/motd")
    lxc(*(["snapshot", "create"] if CLI == "incus" else ["snapshot"]), NAME, "ubuntu-test-1")
    print(f"created {NAME} (running) with the user snapshot ubuntu-test-1")


def delete() -> None:
    if exists() and lxc("config", "get", NAME, MARK).stdout.strip() == "true":
        lxc("delete", "--force", NAME)
        print(f"deleted {NAME}")


if __name__ == "__main__":
    {"create": create, "delete": delete}[sys.argv[1]]()
