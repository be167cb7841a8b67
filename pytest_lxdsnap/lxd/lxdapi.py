"""Thin, typed wrappers over the LXD REST calls the plugin makes (no pytest here).

Every destructive call checks ownership first. Snapshots are deleted only through
:func:`delete_owned_snapshot`, whose URL always names ``/instances/<i>/snapshots/<s>`` with a
validated plugin snapshot name: that code path cannot delete an instance (the tutorial's
``lxc delete c/snap`` vs ``lxc delete c`` trap).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pylxd
import requests
from pylxd.exceptions import LXDAPIException, NotFound

from pytest_lxdsnap.errors import ConfigError, LxdSnapError, OperationFailed, OwnershipError
from pytest_lxdsnap.options import DEFAULT_TIMEOUT
from pytest_lxdsnap.safety.ownership import (
    CREATED_KEY,
    INSTANCE_PREFIX,
    OWNER_KEY,
    SessionIdentity,
    is_kept_snapshot_name,
    is_plugin_snapshot_name,
    kept_until,
    place,
)

RUNNING = "Running"
STOPPED = "Stopped"


LXD_FAULTS: tuple[type[BaseException], ...] = (LXDAPIException, OperationFailed, TimeoutError,
                                               requests.RequestException)
"""What a failing LXD call raises: the API's refusals, failed operations, timeouts, transport errors."""

FAULTS: tuple[type[BaseException], ...] = (*LXD_FAULTS, LxdSnapError)
"""What a step of the plugin's may raise: an LXD fault, or one of the plugin's own errors."""


@contextmanager
def quiet_pylxd() -> Iterator[None]:
    """Silence pylxd's 'Attempted to set unknown attribute' warnings for fields newer than it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempted to set unknown attribute", category=UserWarning)
        yield


def describe(exc: BaseException) -> str:
    """One line for an LXD fault: the daemon's own text when it sent one."""
    if isinstance(exc, LXDAPIException):
        return api_error(exc)
    return str(exc) or type(exc).__name__


def api_error(exc: LXDAPIException) -> str:
    """The daemon's own error text of a failed call."""
    try:
        return str(exc.response.json().get("error") or exc)
    except Exception:  # noqa: BLE001 - the response may not be JSON at all
        return str(exc)


WAIT_CHUNK = 30
"""Seconds of one long-poll on an operation: a daemon that stops answering is noticed within this
(plus the request timeout), even while an operation with no time limit runs."""


def wait(client: pylxd.Client, response: Any, timeout: float | None = None) -> dict[str, Any]:
    """Wait for the background operation a POST/PUT started; its metadata, or OperationFailed.

    ``timeout`` bounds the operation (TimeoutError); None lets it run as long as it needs. Either way
    every request to LXD has a time limit, so a stopped or hung daemon raises instead of hanging.
    """
    body = response.json()
    if body.get("type") != "async":
        return body.get("metadata") or {}
    op_id = operation_id(response)
    request_timeout = getattr(client.api, "_timeout", None) or DEFAULT_TIMEOUT
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_CHUNK if deadline is None else max(deadline - time.monotonic(), 0.0)
        chunk = max(1, math.ceil(min(left, WAIT_CHUNK, request_timeout)))  # LXD waits whole seconds
        try:
            op = client.api.operations[op_id].wait.get(params={"timeout": chunk},
                                                       timeout=chunk + request_timeout).json()["metadata"]
        except LXDAPIException as exc:
            if "deadline exceeded" not in api_error(exc):
                raise
            # Incus answers a wait that outlasts its timeout with an error; LXD with the running operation
            op = client.api.operations[op_id].get(timeout=request_timeout).json()["metadata"]
        if op["status"] != "Running":
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"LXD operation {op['description']!r} still running after {timeout:g} s")
    if op["status_code"] != 200:
        raise OperationFailed(op.get("err") or op["status"], op.get("metadata"))
    return op.get("metadata") or {}


def operation_id(response: Any) -> str:
    """The id of the background operation an async response started."""
    return str(response.json()["operation"]).split("?")[0].rstrip("/").rsplit("/", 1)[-1]


BUSY_MESSAGES = ("is busy running", "matching non-reusable operation")
"""How LXD says another operation holds the instance right now (its operation lock)."""
BUSY_WAIT = 30.0
"""Seconds to wait out an operation another client (say, a session that just died) still runs."""


BACKUP_RACE = "snapshot record count doesn't match"
"""LXD 5.0 failing to write an instance's backup file while another client's snapshot is half made
("Instance snapshot record count doesn't match instance snapshot volume record count"): seen on a config
update of an existing container that pytest-xdist workers take turns on. Retrying the update is safe."""


def when_idle(call: Callable[[], Any], busy_wait: float = BUSY_WAIT, also: tuple[str, ...] = ()) -> Any:
    """``call()``, retried while LXD answers that the instance is busy with another operation (or with
    one of the transient errors in ``also``)."""
    deadline = time.monotonic() + busy_wait
    while True:
        try:
            return call()
        except (LXDAPIException, OperationFailed) as exc:
            text = api_error(exc) if isinstance(exc, LXDAPIException) else str(exc)
            if not any(m in text for m in (*BUSY_MESSAGES, *also)) or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def settle(client: pylxd.Client, name: str, timeout: float = BUSY_WAIT) -> None:
    """Wait (up to ``timeout``) for the operations running on instance ``name`` to end: a session that died
    mid-reset leaves its restore running in LXD, and a second restore over it fails ("In use")."""
    deadline = time.monotonic() + timeout
    suffix = f"/instances/{name}"
    while time.monotonic() < deadline:
        running = (client.api.operations.get(params={"recursion": 1}).json()["metadata"] or {}).get("running") or []
        mine = [op for op in running if any(url.split("?")[0].endswith(suffix)
                                            for urls in (op.get("resources") or {}).values() for url in urls or [])]
        if not mine:
            return
        try:
            client.api.operations[mine[0]["id"]].wait.get(params={"timeout": 1}, timeout=10)
        except LXDAPIException:
            time.sleep(0.2)  # gone meanwhile, or Incus's "deadline exceeded": look again


def create_instance(client: pylxd.Client, body: dict[str, Any], *, target: str | None = None) -> None:
    """Create an instance (``POST /1.0/instances``), on cluster member ``target`` when given."""
    try:
        response = client.api.instances.post(json=body, target=target)
    except LXDAPIException as exc:
        if target and "only allowed when clustered" in api_error(exc):
            raise ConfigError(f"instance {body['name']!r} was to go to cluster member {target!r}, but the server "
                              f"refused: {api_error(exc)}. It is a standalone server: remove `target`, or point "
                              "--lxd-endpoint at a member of the cluster") from None
        raise
    wait(client, response)


def listing(node: Any, *, recursion: bool = True) -> list[Any]:
    """A collection (``GET /1.0/instances`` and the like): records, or URLs without recursion. Incus answers
    an empty one with ``null`` where LXD answers ``[]``."""
    response = node.get(params={"recursion": 1}) if recursion else node.get()
    return response.json()["metadata"] or []


def where(client: pylxd.Client, name: str) -> str:
    """The place an instance's tags are bound to: this server, the project, the name."""
    server = (getattr(client, "host_info", None) or {}).get("environment", {}).get("certificate_fingerprint", "")
    return place(getattr(client, "project", None), name, server)


def clustered(client: pylxd.Client) -> bool:
    """Whether the server is a member of a cluster."""
    return bool((getattr(client, "host_info", None) or {}).get("environment", {}).get("server_clustered"))


def location(client: pylxd.Client, name: str) -> str | None:
    """The cluster member an instance lives on (None on a standalone server): its copies are made there, so a
    clone is a local copy and never a migration between members."""
    return str(get_instance(client, name)["location"]) if clustered(client) else None


def response_time(response: Any) -> float:
    """The server's clock when it answered (its ``Date`` header; ours when it sent none)."""
    try:
        return parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return time.time()


def server_now(client: pylxd.Client) -> float:
    """The server's clock now (to a second): leases and snapshot expiries are judged by it, not ours."""
    return response_time(client.api.get())


def get_instance(client: pylxd.Client, name: str) -> dict[str, Any]:
    """The instance's record (config, devices, status ...); raises NotFound."""
    record: dict[str, Any] = client.api.instances[name].get().json()["metadata"]
    return record


def instance_exists(client: pylxd.Client, name: str) -> bool:
    try:
        get_instance(client, name)
    except NotFound:
        return False
    return True


def status(client: pylxd.Client, name: str) -> str:
    return str(client.api.instances[name].state.get().json()["metadata"]["status"])


def set_power(client: pylxd.Client, name: str, action: str, *, timeout: float = 60) -> None:
    """start / stop (forced: the snapshot is stateless, nothing to flush) / restart."""
    body: dict[str, Any] = {"action": action, "timeout": int(timeout)}
    if action in ("stop", "restart"):
        body["force"] = True
    when_idle(lambda: wait(client, client.api.instances[name].state.put(json=body), timeout))


PRECONDITION_FAILED = 412
_PUT_FIELDS = ("architecture", "config", "description", "devices", "ephemeral", "profiles", "stateful")


def read_instance(client: pylxd.Client, name: str) -> tuple[dict[str, Any], str]:
    """The instance's record and its ETag, for a later :func:`put_instance`."""
    response = client.api.instances[name].get()
    return response.json()["metadata"], response.headers.get("ETag", "")


def put_instance(client: pylxd.Client, name: str, record: dict[str, Any], etag: str, **fields: Any) -> bool:
    """Write ``record`` back with ``fields`` replaced, only if nobody changed it since it was read
    (If-Match ``etag``); False when someone did."""
    body = {**{k: record[k] for k in _PUT_FIELDS}, **fields}
    try:
        when_idle(lambda: wait(client, client.api.instances[name].put(json=body, headers={"If-Match": etag})),
                  also=(BACKUP_RACE,))
    except LXDAPIException as exc:
        if exc.response.status_code == PRECONDITION_FAILED:
            return False
        raise
    return True


def update_config(client: pylxd.Client, name: str, record: dict[str, Any], etag: str,
                  changes: dict[str, str | None]) -> bool:
    """Set (value) or remove (None) config keys of the record read with ``etag``; False on a conflict."""
    config = {k: v for k, v in {**record["config"], **changes}.items() if v is not None}
    return put_instance(client, name, record, etag, config=config)


def set_config_key(client: pylxd.Client, name: str, key: str, value: str | None) -> None:
    """Add, change (value) or remove (None) one config key, leaving every other key as it is."""
    set_config_keys(client, name, {key: value})


def set_config_keys(client: pylxd.Client, name: str, changes: dict[str, str | None]) -> None:
    """Add, change (value) or remove (None) config keys, leaving every other key as it is."""
    while not update_config(client, name, *read_instance(client, name), changes):
        pass  # changed by someone else between our read and write: apply it to the new record


def list_snapshots(client: pylxd.Client, instance: str) -> list[dict[str, Any]]:
    return listing(client.api.instances[instance].snapshots)


def create_owned_snapshot(
    client: pylxd.Client, instance: str, snapshot: str, identity: SessionIdentity, ttl: float
) -> None:
    """Take a stateless snapshot that expires after ``ttl`` seconds.

    The instance must already carry this session's owner tag (the snapshot copies its config).
    """
    if not is_plugin_snapshot_name(snapshot):
        raise ValueError(f"refusing to create a snapshot without the plugin prefix: {snapshot!r}")
    response = client.api.instances[instance].get()
    if not identity.owns(response.json()["metadata"]["config"], where(client, instance)):
        raise OwnershipError(f"instance {instance!r} does not carry this session's {OWNER_KEY} tag")
    body = {"name": snapshot, "stateful": False, "expires_at": expiry(ttl, response_time(response))}
    when_idle(lambda: wait(client, client.api.instances[instance].snapshots.post(json=body)))


def expiry(ttl: float, now: float) -> str:
    """``expires_at`` for ``ttl`` seconds after ``now`` (the server's clock: LXD expires by it)."""
    return datetime.fromtimestamp(now + ttl, UTC).isoformat()


def extend_snapshot_expiry(client: pylxd.Client, instance: str, snapshot: str, ttl: float) -> float:
    """Move a snapshot's expiry to ``ttl`` seconds from now (server's clock); the new expiry."""
    until = server_now(client) + ttl
    when_idle(lambda: wait(client, client.api.instances[instance].snapshots[snapshot].put(
        json={"expires_at": expiry(0, until)})))
    return until


def restore_snapshot(client: pylxd.Client, instance: str, snapshot: str, *,
                     timeout: float = DEFAULT_TIMEOUT) -> None:
    """Restore ``instance`` to ``snapshot`` (LXD stops and restarts a running instance itself)."""
    when_idle(lambda: wait(client, client.api.instances[instance].put(json={"restore": snapshot}), timeout))


def snapshot_is_owned(client: pylxd.Client, instance: str, snapshot: str, identity: SessionIdentity) -> bool:
    """True only when the snapshot has the plugin's name shape and this session's tag."""
    if not is_plugin_snapshot_name(snapshot):
        return False
    try:
        record = client.api.instances[instance].snapshots[snapshot].get().json()["metadata"]
    except NotFound:
        return False
    return identity.owns(record.get("config") or {}, where(client, instance))


def delete_owned_snapshot(client: pylxd.Client, instance: str, snapshot: str, identity: SessionIdentity) -> None:
    """Delete one of this session's snapshots; refuses anything else."""
    if not instance or not snapshot or "/" in instance or "/" in snapshot:
        raise OwnershipError(f"refusing to delete snapshot {instance!r}/{snapshot!r}: malformed name")
    if not snapshot_is_owned(client, instance, snapshot, identity):
        raise OwnershipError(
            f"refusing to delete snapshot {instance}/{snapshot}: it does not carry this session's {OWNER_KEY} tag"
        )
    when_idle(lambda: wait(client, client.api.instances[instance].snapshots[snapshot].delete()))


def owned_snapshots(client: pylxd.Client, instance: str, identity: SessionIdentity) -> list[str]:
    """Names of this session's snapshots on ``instance`` (name shape and tag both checked)."""
    return [
        s["name"]
        for s in list_snapshots(client, instance)
        if is_plugin_snapshot_name(s["name"]) and not is_kept_snapshot_name(s["name"])
        and identity.owns(s.get("config") or {}, where(client, instance))
    ]


def delete_owned_instance(client: pylxd.Client, name: str, identity: SessionIdentity) -> None:
    """Stop and delete an instance this session created; refuses any other instance."""
    record = get_instance(client, name)
    if not identity.owns(record["config"], where(client, name), CREATED_KEY):
        raise OwnershipError(f"refusing to delete instance {name!r}: this session did not create it")
    purge_exec_logs(client, name)
    stop_and_delete(client, name, record["status"])


def is_incus(client: pylxd.Client) -> bool:
    return bool(client.host_info.get("environment", {}).get("server") == "incus")


def exec_logs(client: pylxd.Client, name: str) -> Any:
    """The API folder of an instance's exec output logs: LXD keeps them among its logs, Incus apart."""
    logs = client.api.instances[name].logs
    return logs["exec-output"] if is_incus(client) else logs


def exec_log_names(client: pylxd.Client, name: str) -> list[str]:
    """The exec output logs an instance has (Incus has no folder for them until a command ran)."""
    try:
        urls = listing(exec_logs(client, name), recursion=False)
    except LXDAPIException as exc:
        if isinstance(exc, NotFound) or "no such file or directory" in api_error(exc):
            return []
        raise
    return [log for log in (url.rsplit("/", 1)[-1] for url in urls) if log.startswith("exec_")]


def purge_exec_logs(client: pylxd.Client, name: str) -> None:
    """Delete the exec output logs LXD keeps for an instance (LXD 5.0 leaves its log folder behind)."""
    folder = exec_logs(client, name)
    for log in exec_log_names(client, name):
        folder[log].delete()


def stop_and_delete(client: pylxd.Client, name: str, status: str) -> None:
    """Stop (unless ``status`` says it is stopped) and delete; callers check ownership first."""
    if status != STOPPED:
        set_power(client, name, "stop")
    when_idle(lambda: wait(client, client.api.instances[name].delete()))


def delete_kept_instance(client: pylxd.Client, name: str) -> None:
    """Delete an instance kept after a failed test (it carries the kept key and the plugin prefix)."""
    record = get_instance(client, name)
    if kept_until(record["config"], where(client, name)) is None or not name.startswith(INSTANCE_PREFIX):
        raise OwnershipError(f"refusing to delete instance {name!r}: it is not a kept lxdsnap state")
    purge_exec_logs(client, name)
    stop_and_delete(client, name, record["status"])


def owned_instances(client: pylxd.Client, identity: SessionIdentity) -> list[str]:
    """Names of instances this session created (tag checked)."""
    records = listing(client.api.instances)
    return [r["name"] for r in records if identity.owns(r.get("config") or {}, where(client, r["name"]), CREATED_KEY)]



def root_pool(client: pylxd.Client, record: dict[str, Any]) -> tuple[str, str]:
    """The storage pool of an instance's root disk and that pool's driver ("", "" if it has none)."""
    devices = record.get("expanded_devices") or record.get("devices") or {}
    pool = next((d.get("pool", "") for d in devices.values() if d.get("type") == "disk" and d.get("path") == "/"), "")
    if not pool:
        return "", ""
    return pool, client.api.storage_pools[pool].get().json()["metadata"]["driver"]
