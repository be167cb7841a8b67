"""Running commands and moving files in an instance through LXD's REST API (no websockets).

``exec`` uses ``record-output``: LXD runs the command, stores stdout and stderr as log files, and
we read them back (~15 ms a call, against ~135 ms for pylxd's websocket ``execute``). Output is
kept as bytes and decoded on access, so large and binary output survive.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pylxd
import requests
from pylxd.exceptions import LXDAPIException, NotFound

from .errors import ExecError, ExecTimeout
from .lxdapi import OperationFailed, api_error, exec_logs, operation_id, wait

COMMAND_NOT_FOUND = 127


@dataclass(frozen=True)
class ExecResult:
    """What a command did: exit code and its output (``stdout``/``stderr`` decoded, ``*_bytes`` raw)."""

    command: tuple[str, ...]
    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> bytes:
        """stdout then stderr, as bytes (what testcontainers' ExecWaitStrategy reads)."""
        return self.stdout_bytes + self.stderr_bytes

    def __repr__(self) -> str:
        return (f"ExecResult(command={shlex.join(self.command)!r}, exit_code={self.exit_code}, "
                f"stdout={self.stdout[:200]!r}, stderr={self.stderr[:200]!r})")


def argv(cmd: Sequence[str] | str) -> list[str]:
    """A list is run as it is (no shell); a plain string is run by ``sh -c``, on purpose."""
    if isinstance(cmd, str):
        return ["sh", "-c", cmd]
    if not cmd or not all(isinstance(a, str) for a in cmd):
        raise TypeError(f"exec takes a non-empty list of strings (argv) or a shell string, not {cmd!r}")
    return list(cmd)


def exec_command(
    client: pylxd.Client,
    instance: str,
    cmd: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: int | None = None,
    group: int | None = None,
    stdin: bytes | str | None = None,
    check: bool = False,
    timeout: float | None = None,
    keep_logs: bool = False,
) -> ExecResult:
    """Run ``cmd`` in ``instance`` and return its result; raise only for check=True or a timeout.

    ``keep_logs`` leaves LXD's copy of the output in place (two calls fewer), for instances the plugin
    deletes itself: :func:`pytest_lxdsnap.lxdapi.delete_owned_instance` purges their exec logs first.
    """
    __tracebackhide__ = True
    command = argv(cmd)
    shown = tuple(command)
    if stdin is not None:
        # REST exec without websockets has no stdin: hand the data over as a file, which the
        # wrapper opens as fd 0 and unlinks before it runs the command.
        stdin_path = f"/tmp/.lxdsnap-stdin-{secrets.token_hex(6)}"
        write_file(client, instance, stdin_path, stdin.encode() if isinstance(stdin, str) else stdin, mode=0o600)
        command = ["sh", "-c", 'exec 0<"$0" && rm -f "$0" && exec "$@"', stdin_path, *command]
    body: dict[str, object] = {
        "command": command,
        "record-output": True,
        "wait-for-websocket": False,
        "interactive": False,
        "environment": dict(env or {}),
    }
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        body["user"] = user
        body["group"] = user if group is None else group
    node = client.api.instances[instance]
    try:
        response = node.exec.post(json=body)
        metadata = wait(client, response, timeout)
    except LXDAPIException as exc:
        if api_error(exc) != "Command not found":
            raise ExecError(f"LXD refused to run {shlex.join(shown)} in {instance}: {api_error(exc)}") from None
        metadata = {"return": 127}  # Incus refuses the request itself; LXD runs it and reports 127
    except requests.RequestException as exc:
        raise ExecError(f"LXD stopped answering while running {shlex.join(shown)} in {instance}: {exc}. "
                        "Check the daemon with `lxdsnap doctor`") from None
    except TimeoutError:
        # LXD writes its output logs when the command ends (at the latest when the reset stops it).
        _UNREAD.setdefault(instance, set()).add(operation_id(response))
        raise ExecTimeout(
            f"{shlex.join(shown)} in {instance} did not finish within {timeout:g} s "
            "(it may run on until the container is reset)"
        ) from None
    except OperationFailed as exc:
        # LXD fails the operation for exit codes 126/127 ("Command not found") but still reports them.
        if "return" not in exc.metadata:
            raise ExecError(f"LXD could not run {shlex.join(shown)} in {instance}: {exc}") from None
        metadata = exc.metadata
    outputs = {fd: _read_log(client, path, delete=not keep_logs) for fd, path in (metadata.get("output") or {}).items()}
    result = ExecResult(shown, int(metadata.get("return", -1)), outputs.get("1", b""), outputs.get("2", b""))
    if result.exit_code in (126, 127) and not result.stderr_bytes:
        problem = "command not found" if result.exit_code == 127 else "not executable"
        result = replace(result, stderr_bytes=f"lxdsnap: {shown[0]}: {problem} in {instance}\n".encode())
    if check and result.exit_code != 0:
        raise ExecError(
            f"{shlex.join(shown)} in {instance} exited {result.exit_code}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}",
            result,
        )
    return result


_UNREAD: dict[str, set[str]] = {}
"""Per instance, the exec operations whose output logs were never read (their command timed out)."""


def purge_unread_logs(client: pylxd.Client, instance: str) -> None:
    """Delete the output logs of commands that timed out in ``instance`` (call after a reset stopped them)."""
    for op in _UNREAD.pop(instance, set()):
        for stream in ("stdout", "stderr"):
            try:
                exec_logs(client, instance)[f"exec_{op}.{stream}"].delete()
            except LXDAPIException:
                pass  # never written, or gone with the instance


def _read_log(client: pylxd.Client, path: str, *, delete: bool) -> bytes:
    """Read an exec log file and (normally) delete it, so repeated execs leave nothing in /var/log/lxd.
    ``path`` is the API path the operation reported (LXD: .../logs/<file>, Incus: .../logs/exec-output/<file>)."""
    log = client.api
    for segment in path.split("?", 1)[0].strip("/").split("/")[1:]:  # after "1.0"
        log = log[segment]
    data = log.get(is_api=False).content
    if not delete:
        return data
    try:
        log.delete()
    except LXDAPIException:
        pass  # a log we cannot delete is LXD's to rotate
    return data


def read_file(client: pylxd.Client, instance: str, path: str) -> bytes:
    """The bytes of a file in the instance; FileNotFoundError names the instance and path."""
    try:
        return client.api.instances[instance].files.get(params={"path": path}, is_api=False).content
    except NotFound:
        raise FileNotFoundError(f"{path} does not exist in {instance}") from None
    except LXDAPIException as exc:
        raise OSError(f"cannot read {path} in {instance}: {api_error(exc)}") from None


def path_exists(client: pylxd.Client, instance: str, path: str) -> bool:
    try:
        client.api.instances[instance].files.get(params={"path": path}, is_api=False)
    except NotFound:
        return False
    return True


def write_file(
    client: pylxd.Client, instance: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
) -> None:
    """Create or replace a file in the instance (parent directories must exist)."""
    headers = {"X-LXD-type": "file", "X-LXD-mode": f"{mode:04o}", "X-LXD-uid": str(uid), "X-LXD-gid": str(gid),
               "X-LXD-write": "overwrite", "Content-Type": "application/octet-stream"}
    try:
        client.api.instances[instance].files.post(params={"path": path}, data=data, headers=headers)
    except LXDAPIException as exc:
        raise OSError(f"cannot write {path} in {instance}: {api_error(exc)}") from None
