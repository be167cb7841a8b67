"""The inventory Ansible gets: one host per container, named as in the marker, all in group ``lxdsnap``, with the
host variables the ``lxdsnap`` connection plugin reaches it by (endpoint, TLS, project, instance)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_lxdsnap.lxd.connection import Endpoint, default_socket

GROUP = "lxdsnap"
CONNECTION = "lxdsnap"  # pytest_lxdsnap/ansible/connection/lxdsnap.py
PYTHON = "/usr/bin/python3"  # in the container: Ansible's modules need it (lxdsnap/debian-12 has it)


@dataclass(frozen=True)
class Target:
    """One container as Ansible reaches it: the host ``name`` (the marker's), the LXD ``instance`` behind it, and
    where that lives (the endpoint, its project, and the server certificate's pin under --lxd-insecure)."""

    name: str
    instance: str
    endpoint: Endpoint
    project: str | None = None
    fingerprint: str | None = None
    disposable: bool = False  # the plugin deletes the instance (and its exec logs) itself


def host_vars(target: Target) -> dict[str, Any]:
    """The variables of one host: the connection plugin's options (see its DOCUMENTATION)."""
    endpoint = target.endpoint
    found: dict[str, Any] = {
        "ansible_connection": CONNECTION,
        "ansible_python_interpreter": PYTHON,
        "lxdsnap_instance": target.instance,
        "lxdsnap_endpoint": endpoint.url or default_socket(),
        "lxdsnap_timeout": endpoint.timeout,
        "lxdsnap_disposable": target.disposable,
    }
    optional = {"lxdsnap_project": target.project, "lxdsnap_cert": endpoint.cert, "lxdsnap_key": endpoint.key,
                "lxdsnap_server_cert": endpoint.server_cert,
                "lxdsnap_fingerprint": target.fingerprint if endpoint.insecure else None}
    found.update({key: value for key, value in optional.items() if value})
    return found


def inventory(targets: list[Target]) -> dict[str, Any]:
    """The inventory as data: group ``lxdsnap`` holding every target."""
    return {GROUP: {"hosts": {t.name: host_vars(t) for t in targets}}}


def write_inventory(targets: list[Target], path: Path) -> Path:
    """Write the inventory to ``path`` (JSON, which Ansible's YAML inventory plugin reads: ``.yml``); ``path``."""
    path.write_text(json.dumps(inventory(targets), indent=2) + "\n")
    return path
