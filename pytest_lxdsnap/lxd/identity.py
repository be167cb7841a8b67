"""A clone's own identity, written into the stopped copy before its first boot: a fresh ``/etc/machine-id``, no
copy of systemd's random seed, and ``/etc/hostname`` naming the instance.

A copy of a baseline carries the baseline's machine-id, so clones running side by side would share a DHCP
client id (systemd-networkd derives it from the machine-id), a journal directory and every other identity made
from it, and would all start from the same random seed. The baseline itself keeps its identity.

Only images that have ``/etc/machine-id`` get this (the busybox image has none): :func:`has_machine_id` is
asked once per baseline, and the three file calls cost a few milliseconds per clone (LXD's file API on a stopped
instance).
"""

from __future__ import annotations

import secrets

import pylxd

from pytest_lxdsnap.lxd.execution import path_exists, remove_file, write_file

MACHINE_ID = "/etc/machine-id"
RANDOM_SEED = "/var/lib/systemd/random-seed"
HOSTNAME = "/etc/hostname"


def has_machine_id(client: pylxd.Client, instance: str) -> bool:
    return path_exists(client, instance, MACHINE_ID)


def new_machine_id() -> str:
    """32 lowercase hex digits, as systemd writes them (machine-id(5))."""
    return secrets.token_hex(16)


def give_identity(client: pylxd.Client, instance: str) -> str:
    """Give the stopped ``instance`` its own machine-id and hostname, and drop the copied random seed; the id."""
    machine_id = new_machine_id()
    write_file(client, instance, MACHINE_ID, f"{machine_id}\n".encode(), mode=0o444)
    remove_file(client, instance, RANDOM_SEED)
    write_file(client, instance, HOSTNAME, f"{instance}\n".encode())
    return machine_id
