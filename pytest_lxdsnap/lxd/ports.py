"""Reaching a container's services from the host: LXD proxy devices on 127.0.0.1 (never a bridge), and
the docker-like view testcontainers' wait strategies expect."""

from __future__ import annotations

import socket
from typing import Any

import pylxd
from pylxd.exceptions import LXDAPIException

from pytest_lxdsnap.errors import OperationFailed, PortError
from pytest_lxdsnap.lxd import lxdapi

HOST = "127.0.0.1"
DEVICE_PREFIX = "lxdsnap-port-"
_DOCKER_STATUS = {"Running": "running", "Stopped": "exited", "Frozen": "paused"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def expose(client: pylxd.Client, instance: str, name: str, port: int, host_port: int | None = None) -> int:
    """The host port (on 127.0.0.1) forwarded to ``port`` on the container's loopback; added on first use."""
    if not 0 < port < 65536:
        raise PortError(f"container {name!r}: {port} is not a TCP port (1-65535)")
    device = f"{DEVICE_PREFIX}{port}"
    node = client.api.instances[instance]
    response = node.get()
    record = response.json()["metadata"]
    existing = record["devices"].get(device)
    if existing:
        return int(existing["listen"].rsplit(":", 1)[1])
    chosen = host_port or _free_port()
    devices = {**record["devices"], device: {"type": "proxy", "listen": f"tcp:{HOST}:{chosen}",
                                             "connect": f"tcp:127.0.0.1:{port}", "bind": "host"}}
    try:
        lxdapi.when_idle(lambda: lxdapi.wait(client, node.patch(json={"devices": devices},
                                                                 headers={"If-Match": response.headers["ETag"]})))
    except (LXDAPIException, OperationFailed) as exc:
        text = lxdapi.describe(exc)
        hint = (f"host port {chosen} is already taken on {HOST}; pick another or free it"
                if "address already in use" in text.lower() else "see the LXD error above")
        raise PortError(f"container {name!r} (instance {instance}): forwarding {HOST}:{chosen} to port {port} "
                        f"failed: {text}. {hint}") from None
    return chosen


def remove_all(client: pylxd.Client, instance: str) -> None:
    """Remove the proxy devices :func:`expose` added (none may reach a baseline snapshot: every clone of it
    would try to listen on the same host port)."""
    record, etag = lxdapi.read_instance(client, instance)
    devices = record["devices"]
    if any(name.startswith(DEVICE_PREFIX) for name in devices):
        kept = {name: d for name, d in devices.items() if not name.startswith(DEVICE_PREFIX)}
        if not lxdapi.put_instance(client, instance, record, etag, devices=kept):
            remove_all(client, instance)  # changed meanwhile: read it again


def console_log(client: pylxd.Client, instance: str) -> bytes:
    try:
        log: bytes = client.api.instances[instance].console.get(is_api=False).content
        return log
    except LXDAPIException:
        return b""


class WrappedInstance:
    """What testcontainers reads from ``get_wrapped_container()``: ``status``, ``attrs`` and ``reload()``."""

    def __init__(self, client: pylxd.Client, instance: str) -> None:
        self._client = client
        self.name = instance
        self.attrs: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        state = self._client.api.instances[self.name].state.get().json()["metadata"]
        self.attrs = {"State": {"Status": _DOCKER_STATUS.get(state["status"], state["status"].lower()),
                                "ExitCode": 0, "Error": ""}}

    @property
    def status(self) -> str:
        return str(self.attrs["State"]["Status"])
