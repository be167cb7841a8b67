"""Readiness checks: wait until a container answers before a test (or the baseline snapshot) sees it.

Three kinds (:class:`~pytest_lxdsnap.declarations.ReadyCheck`): a command retried until it exits 0, a
testcontainers wait strategy, or systemd's own verdict on its boot: ``systemctl is-system-running --wait``
(``running``, or ``degraded`` when allowed; a failure lists the failed units). Whether PID 1 is systemd is read
from ``/proc/1/exe`` (:func:`pid1_is_systemd`): containers that declare no check are waited for when it is.
"""

from __future__ import annotations

import importlib
import shlex
import time

import pylxd

from pytest_lxdsnap.declarations import ReadyCheck
from pytest_lxdsnap.errors import ExecError, ExecTimeout, ReadinessError
from pytest_lxdsnap.lxd import ports
from pytest_lxdsnap.lxd.execution import ExecResult, exec_command

SYSTEMD_STATES_FINAL = ("degraded", "maintenance")
"""States ``systemctl is-system-running --wait`` ends in that no further waiting changes."""


NO_BUS_RETRY = 0.02
"""Seconds before asking systemd again when it did not answer (its bus is not up yet): a restored container's is
up within a few tenths of a second, and every retry is one exec (about 20 ms)."""


def declared_where(container: str) -> str:
    return f"[tool.lxdsnap.containers.{container}]"


def wait_ready(client: pylxd.Client, instance: str, check: ReadyCheck, container: str, *,
               where: str | None = None, disposable: bool = True) -> float:
    """Run ``check.command`` until it exits 0 (or the wait strategy until it passes, or systemd until it has
    booted); the seconds it took, or ReadinessError after the timeout. ``where`` is the table the check comes
    from (for the error); ``disposable`` instances keep their exec logs (the plugin deletes them whole)."""
    where = where or declared_where(container)
    if check.systemd:
        return wait_systemd(client, instance, check, container, where=where, disposable=disposable)
    if check.wait_strategy is not None:
        return _wait_strategy(client, instance, check, container, where, disposable)
    assert check.command is not None
    start = time.monotonic()
    deadline = start + check.timeout
    last: ExecResult | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            last = exec_command(client, instance, check.command, timeout=max(remaining, 1.0), keep_logs=disposable)
        except ExecTimeout:
            last = None
        if last is not None and last.exit_code == 0:
            return time.monotonic() - start
        if time.monotonic() + check.interval >= deadline:
            break
        time.sleep(check.interval)
    shown = check.command if isinstance(check.command, str) else shlex.join(check.command)
    detail = (f"last exit {last.exit_code}, stdout: {last.stdout[-500:]!r}, stderr: {last.stderr[-500:]!r}"
              if last is not None else "the last attempt timed out")
    raise ReadinessError(
        f"container {container!r} (instance {instance}) was not ready within {check.timeout:g} s: `{shown}` never "
        f"exited 0 ({detail}). Fix `ready` in {where} or raise its timeout"
    )


def pid1_is_systemd(client: pylxd.Client, instance: str, *, disposable: bool = True) -> bool:
    """Whether the running instance's PID 1 is systemd: the binary ``/proc/1/exe`` points at (``/proc/1/comm``
    says "init" for the first moments after a start, until systemd renames itself; LXD's file API reads /proc
    files as empty)."""
    try:
        result = exec_command(client, instance, ["readlink", "/proc/1/exe"], timeout=10, keep_logs=disposable)
    except ExecError:
        return False
    return result.exit_code == 0 and result.stdout.strip().rsplit("/", 1)[-1] == "systemd"


def wait_systemd(client: pylxd.Client, instance: str, check: ReadyCheck, container: str, *, where: str,
                 disposable: bool = True) -> float:
    """``systemctl is-system-running --wait`` until it says ``running`` (or ``degraded``, when allowed); retried
    while systemd is not up yet (no bus to talk to right after the start). ReadinessError lists the failed units."""
    start = time.monotonic()
    deadline = start + check.timeout
    state = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            result = exec_command(client, instance, ["systemctl", "is-system-running", "--wait"],
                                  timeout=max(remaining, 1.0), keep_logs=disposable)
        except ExecTimeout:
            state = "still starting"
            break
        if result.exit_code in (126, 127):
            raise ReadinessError(
                f"container {container!r} (instance {instance}): ready = \"systemd\", but it has no systemctl "
                f"({result.stderr.strip()}): its image does not boot systemd. Use a command in `ready` in {where}")
        lines = result.stdout.split()
        state = lines[-1] if lines else (result.stderr.strip().splitlines() or ["no answer"])[-1]
        if state == "running" or (state == "degraded" and check.allow_degraded):
            return time.monotonic() - start
        if state in SYSTEMD_STATES_FINAL or time.monotonic() + check.interval >= deadline:
            break
        # "initializing" or "starting": systemd is still coming up; no answer at all (no bus yet, right after a
        # start or a restore): it is about to listen, ask again at once
        time.sleep(check.interval if lines else min(check.interval, NO_BUS_RETRY))
    failed = failed_units(client, instance, disposable=disposable)
    listed = "\n".join(f"  {line}" for line in failed) if failed else "  (none)"
    status = unit_status(client, instance, [line.split()[0] for line in failed], disposable=disposable)
    if state != "degraded":
        status += pending_jobs(client, instance, disposable=disposable)
    fix = ("fix or remove the units in `provision` (or the image), or accept a degraded boot: "
           f"ready = {{systemd = true, allow_degraded = true}} in {where}" if state == "degraded" else
           f"fix the units in `provision` (or the image), or raise the timeout: ready = {{systemd = true, "
           f"timeout = {max(check.timeout * 2, 120):g}}} in {where}")
    raise ReadinessError(
        f"container {container!r} (instance {instance}) did not finish booting within {check.timeout:g} s: "
        f"`systemctl is-system-running --wait` says {state!r}"
        + (" (allow_degraded = false)" if state == "degraded" else "")
        + f".\nFailed units (systemctl --failed):\n{listed}\n{status}To go on: {fix}")


def failed_units(client: pylxd.Client, instance: str, *, disposable: bool = True) -> list[str]:
    """``systemctl --failed --no-legend --plain``: one line per failed unit (name, load, active, sub, description)."""
    try:
        result = exec_command(client, instance, ["systemctl", "--failed", "--no-legend", "--plain", "--no-pager"],
                              timeout=10, keep_logs=disposable)
    except ExecError:
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def pending_jobs(client: pylxd.Client, instance: str, *, disposable: bool = True) -> str:
    """``systemctl list-jobs``: what a boot that has not finished still waits for."""
    try:
        result = exec_command(client, instance, ["systemctl", "list-jobs", "--no-legend", "--no-pager", "--plain"],
                              timeout=10, keep_logs=disposable)
    except ExecError:
        return ""
    jobs = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return "Jobs still waiting (systemctl list-jobs):\n" + "\n".join(f"  {j}" for j in jobs[:20]) + "\n" if jobs else ""


def unit_status(client: pylxd.Client, instance: str, units: list[str], *, disposable: bool = True) -> str:
    """The last lines of ``systemctl status`` of ``units`` (the instance may be deleted before anyone looks)."""
    if not units:
        return ""
    try:
        result = exec_command(client, instance, ["systemctl", "status", "--no-pager", "--lines=5", "--full",
                                                 *units[:5]], timeout=10, keep_logs=disposable)
    except ExecError:
        return ""
    text = result.stdout.strip()
    return f"systemctl status {' '.join(units[:5])}:\n{text[-2000:]}\n" if text else ""


def _wait_strategy(client: pylxd.Client, instance: str, check: ReadyCheck, container: str, table: str,
                   disposable: bool) -> float:
    from pytest_lxdsnap.handle import Container

    assert check.wait_strategy is not None
    module, _, attribute = check.wait_strategy.partition(":")
    where = f"{table} ready.wait_strategy {check.wait_strategy!r}"
    try:
        strategy = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ReadinessError(f"{where}: cannot import it ({exc}); it must be importable from the test run") from None
    if not hasattr(strategy, "wait_until_ready") and callable(strategy):
        strategy = strategy()  # a factory: a fresh strategy per container
    if not hasattr(strategy, "wait_until_ready"):
        raise ReadinessError(f"{where}: expected a testcontainers wait strategy (or a callable returning one), "
                             f"got {type(strategy).__name__}")
    if hasattr(strategy, "with_startup_timeout"):
        strategy.with_startup_timeout(check.timeout)
    start = time.monotonic()
    try:
        strategy.wait_until_ready(Container(client, container, instance, disposable=disposable))
        ports.remove_all(client, instance)  # a port it exposed must not reach a snapshot or a test
    except Exception as exc:  # testcontainers raises TimeoutError and friends: one clear error
        raise ReadinessError(f"container {container!r} (instance {instance}) was not ready: "
                             f"{type(strategy).__name__} failed within {check.timeout:g} s: {exc}. Fix {where} or "
                             "raise its timeout") from exc
    return time.monotonic() - start
