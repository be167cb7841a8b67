"""Running commands and moving files in an instance through LXD's REST API (no websockets).

``exec`` uses ``record-output``: LXD runs the command, stores stdout and stderr as log files, and
we read them back (~15 ms a call, against ~135 ms for pylxd's websocket ``execute``). Output is
kept as bytes and decoded on access, so large and binary output survive.

LXD can neither cap those logs nor cancel such a command, so every command carries a marker in its
environment (inherited by its children): a timeout, or output past the cap, kills what carries it.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

import pylxd
import requests
from pylxd.exceptions import LXDAPIException, NotFound

from pytest_lxdsnap.errors import ExecError, ExecOutputTooLarge, ExecTimeout, OperationFailed
from pytest_lxdsnap.lxd.lxdapi import LXD_FAULTS, api_error, describe, exec_logs, operation_id, wait

COMMAND_NOT_FOUND = 127

MAX_OUTPUT = 64 * 1024 * 1024
"""Default cap, in bytes, on each of a command's stdout and stderr (``max_output=`` sets it per call).
Far more than a test asserts on, small enough that a runaway command costs the host little: pytest holds at
most this much per stream, and the exec log on the host stops growing within about POLL seconds of the cap."""

POLL = 1
"""Seconds between size checks of a running command's output logs (LXD's operation waits take whole
seconds). A command that ends sooner costs no check at all."""

KILL_WAIT = 10.0
"""Seconds to wait for the kill of a command, and then for LXD to see it end."""

MARKER = "LXDSNAP_EXEC"
"""Environment variable with a token per command: a kill finds the command's processes by it (LXD's
process group of the command lies outside the container's pid namespace, out of reach)."""

_KILL = """for _ in 1 2 3 4 5; do
  found=
  for f in $(grep -lsxzF "$0" /proc/[0-9]*/environ); do p=${f#/proc/}; kill -9 "${p%/environ}" && found=1; done
  [ -n "$found" ] || exit 0
done
exit 1"""
"""sh script: SIGKILL every process whose environment holds $0 (MARKER=token), until none is left;
busybox and GNU grep both know -z."""

_STDIN = 'exec 0<"$0" && rm -f "$0" && exec "$@"'
"""sh wrapper: open the stdin file as fd 0, remove it, run the command (REST exec has no stdin)."""

READ_CHUNK = 1024 * 1024


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


def output_cap(max_output: int | None) -> int:
    """The cap a call runs with: its own ``max_output``, else :data:`MAX_OUTPUT` as it is now."""
    cap = MAX_OUTPUT if max_output is None else max_output
    if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
        raise ValueError(f"max_output must be a positive number of bytes, not {max_output!r}")
    return cap


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
    max_output: int | None = None,
) -> ExecResult:
    """Run ``cmd`` in ``instance`` and return its result; raise for check=True, a timeout (the command is
    killed) or output past ``max_output`` bytes on a stream (default :data:`MAX_OUTPUT`; killed if running).

    ``keep_logs`` leaves LXD's copy of the output in place (two calls fewer), for instances the plugin
    deletes itself: :func:`pytest_lxdsnap.lxd.lxdapi.delete_owned_instance` purges their exec logs first.
    """
    __tracebackhide__ = True
    command = argv(cmd)
    cap = output_cap(max_output)
    ids = None if user is None else (user, user if group is None else group)
    body: dict[str, object] = {"command": command, "record-output": True, "wait-for-websocket": False,
                               "interactive": False}
    if cwd is not None:
        body["cwd"] = cwd
    if ids is not None:
        body["user"], body["group"] = ids
    if stdin is None:
        return _checked(_run(client, instance, tuple(command), body, env, timeout, cap, keep_logs), instance, check)
    # The file belongs to the command's user (a root-owned one is unreadable to others); the wrapper
    # removes it, and so do we when the command may not have got that far.
    stdin_path = f"/tmp/.lxdsnap-stdin-{secrets.token_hex(6)}"
    uid, gid = ids or (0, 0)
    write_file(client, instance, stdin_path, stdin.encode() if isinstance(stdin, str) else stdin, mode=0o600,
               uid=uid, gid=gid)
    body["command"] = ["sh", "-c", _STDIN, stdin_path, *command]
    removed = False
    try:
        result = _run(client, instance, tuple(command), body, env, timeout, cap, keep_logs)
        removed = result.exit_code == 0  # the wrapper's `rm` ran before the command did
    finally:
        if not removed:
            remove_file(client, instance, stdin_path)
    return _checked(result, instance, check)


def _checked(result: ExecResult, instance: str, check: bool) -> ExecResult:
    __tracebackhide__ = True
    if check and result.exit_code != 0:
        raise ExecError(
            f"{shlex.join(result.command)} in {instance} exited {result.exit_code}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}",
            result,
        )
    return result


class _Stop(Exception):
    """A running command has to be killed: ``why`` is "timeout" or the stream past its cap."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _run(client: pylxd.Client, instance: str, shown: tuple[str, ...], body: dict[str, object],
         env: Mapping[str, str] | None, timeout: float | None, cap: int, keep_logs: bool) -> ExecResult:
    """Start the command, wait for it (killing it on a timeout or a runaway output) and read its output."""
    __tracebackhide__ = True
    marker = f"{MARKER}={secrets.token_hex(8)}"
    body = {**body, "environment": {**(env or {}), MARKER: marker.split("=", 1)[1]}}
    where = f"{shlex.join(shown)} in {instance}"
    try:
        response = client.api.instances[instance].exec.post(json=body)
        metadata = _wait(client, instance, response, timeout, cap)
    except LXDAPIException as exc:
        if api_error(exc) != "Command not found":
            raise ExecError(f"LXD refused to run {where}: {api_error(exc)}") from None
        metadata = {"return": 127}  # Incus refuses the request itself; LXD runs it and reports 127
    except requests.RequestException as exc:
        raise ExecError(f"LXD stopped answering while running {where}: {exc}. "
                        "Check the daemon with `lxdsnap doctor`") from None
    except OperationFailed as exc:
        # LXD fails the operation for exit codes 126/127 ("Command not found") but still reports them.
        if "return" not in exc.metadata:
            raise ExecError(f"LXD could not run {where}: {exc}") from None
        metadata = exc.metadata
    except _Stop as stop:
        raise _stopped(client, instance, response, shown, marker, stop.why, timeout, cap) from None
    logs = {fd: _api_node(client, path) for fd, path in (metadata.get("output") or {}).items()}
    result, over = _collect(shown, int(metadata.get("return", -1)), logs.get("1"), logs.get("2"), cap, keep_logs)
    if over:
        raise ExecOutputTooLarge(f"{over} of {where} passed the output cap of {_size(cap)}. {_CAP_HINT}", result)
    if result.exit_code in (126, 127) and not result.stderr_bytes:
        problem = "command not found" if result.exit_code == 127 else "not executable"
        result = replace(result, stderr_bytes=f"lxdsnap: {shown[0]}: {problem} in {instance}\n".encode())
    return result


_CAP_HINT = ("Raise the cap for this call with exec(..., max_output=BYTES), or redirect the output to a file in "
             "the container (`cmd > /tmp/out.log`) and read it with read_bytes()")


def _size(cap: int) -> str:
    return f"{cap} bytes ({cap >> 20} MiB)" if cap % (1 << 20) == 0 else f"{cap} bytes"


def _wait(client: pylxd.Client, instance: str, response: Any, timeout: float | None, cap: int) -> dict[str, Any]:
    """The finished command's metadata; _Stop when it outlives ``timeout`` or a log grows past ``cap``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    op = operation_id(response)
    while True:
        left = POLL if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            return wait(client, response, min(left, POLL))
        except TimeoutError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            raise _Stop("timeout")
        for stream in ("stdout", "stderr"):
            if _log_size(_log_node(client, instance, op, stream)) > cap:
                raise _Stop(stream)


def _stopped(client: pylxd.Client, instance: str, response: Any, shown: tuple[str, ...], marker: str, why: str,
             timeout: float | None, cap: int) -> ExecError:
    """Kill a command that timed out or ran past the cap; the error to raise, with the output so far."""
    failed = kill_marked(client, instance, marker)
    op = operation_id(response)
    metadata = _finished(client, response)
    result = None
    if metadata is None:  # LXD writes the logs out when the command ends (at the latest at the reset)
        _UNREAD.setdefault(instance, set()).add(op)
    else:
        stdout, stderr = (_log_node(client, instance, op, stream) for stream in ("stdout", "stderr"))
        result, _ = _collect(shown, int(metadata.get("return", -1)), stdout, stderr, cap, False)
    where = f"{shlex.join(shown)} in {instance}"
    outcome = "and was stopped" if failed is None else \
        f"and stopping it failed ({failed}): it may run on until the container is reset"
    if why == "timeout":
        return ExecTimeout(f"{where} did not finish within {timeout:g} s {outcome}. Pass a larger timeout= if it "
                           "needs longer; the output so far is on this error's .result", result)
    return ExecOutputTooLarge(f"{why} of {where} passed the output cap of {_size(cap)} {outcome}. {_CAP_HINT}",
                              result)


def kill_marked(client: pylxd.Client, instance: str, marker: str) -> str | None:
    """SIGKILL every process in ``instance`` whose environment holds ``marker``; None, or why it failed."""
    body = {"command": ["sh", "-c", _KILL, marker], "record-output": False, "wait-for-websocket": False,
            "interactive": False}
    try:
        metadata = wait(client, client.api.instances[instance].exec.post(json=body), KILL_WAIT)
    except LXD_FAULTS as exc:
        return describe(exc)
    return None if metadata.get("return") == 0 else f"the kill script exited {metadata.get('return')}"


def _finished(client: pylxd.Client, response: Any) -> dict[str, Any] | None:
    """The metadata of a killed command once LXD saw it end; None when it did not within KILL_WAIT."""
    try:
        return wait(client, response, KILL_WAIT)
    except OperationFailed as exc:
        return exc.metadata
    except LXD_FAULTS:
        return None


def _collect(shown: tuple[str, ...], code: int, stdout: Any, stderr: Any, cap: int,
             keep_logs: bool) -> tuple[ExecResult, str | None]:
    """Read both logs up to ``cap``; the result and the first stream that went past it (None if neither)."""
    out, out_over = _read_log(stdout, cap, keep=keep_logs)
    err, err_over = _read_log(stderr, cap, keep=keep_logs)
    over = "stdout" if out_over else "stderr" if err_over else None
    return ExecResult(shown, code, out, err), over


_UNREAD: dict[str, set[str]] = {}
"""Per instance, the exec operations whose output logs were never read (a killed command LXD had not seen end)."""


def purge_unread_logs(client: pylxd.Client, instance: str) -> None:
    """Delete the output logs of commands that timed out in ``instance`` (call after a reset stopped them)."""
    for op in _UNREAD.pop(instance, set()):
        for stream in ("stdout", "stderr"):
            try:
                exec_logs(client, instance)[f"exec_{op}.{stream}"].delete()
            except LXDAPIException:
                pass  # never written, or gone with the instance


def _api_node(client: pylxd.Client, path: str) -> Any:
    """The API node of a path an operation reported (LXD: .../logs/<file>, Incus: .../logs/exec-output/<file>)."""
    node = client.api
    for segment in path.split("?", 1)[0].strip("/").split("/")[1:]:  # after "1.0"
        node = node[segment]
    return node


def _log_node(client: pylxd.Client, instance: str, op: str, stream: str) -> Any:
    """The API node of a command's log, known before LXD reports it (it does when the command ends)."""
    return exec_logs(client, instance)[f"exec_{op}.{stream}"]


def _log_size(log: Any) -> int:
    """How big a running command's log is now: the length LXD announces, without reading the body."""
    try:
        with closing(log.get(is_api=False, stream=True)) as response:
            return int(response.headers.get("Content-Length") or 0)
    except LXDAPIException:
        return 0  # not created yet


def _read_log(log: Any, cap: int, *, keep: bool) -> tuple[bytes, bool]:
    """Stream an exec log up to ``cap`` bytes; (the bytes, whether there were more). The log is then deleted,
    so repeated execs leave nothing in /var/log/lxd, unless ``keep`` and it was within the cap."""
    if log is None:
        return b"", False
    data = bytearray()
    try:
        with closing(log.get(is_api=False, stream=True)) as response:
            for chunk in response.iter_content(READ_CHUNK):
                data += chunk
                if len(data) > cap:
                    break
    except NotFound:
        return b"", False  # a killed command's log that was never written
    over = len(data) > cap
    if not keep or over:
        try:
            log.delete()
        except LXDAPIException:
            pass  # a log we cannot delete is LXD's to rotate
    return bytes(data[:cap]), over


def read_file(client: pylxd.Client, instance: str, path: str) -> bytes:
    """The bytes of a file in the instance; FileNotFoundError names the instance and path."""
    try:
        content: bytes = client.api.instances[instance].files.get(params={"path": path}, is_api=False).content
        return content
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


def remove_file(client: pylxd.Client, instance: str, path: str) -> None:
    """Delete a file in the instance if it is there (quietly: for cleanups)."""
    try:
        client.api.instances[instance].files.delete(params={"path": path})
    except (LXDAPIException, requests.RequestException):
        pass


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
