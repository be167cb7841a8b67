"""Readiness checks: wait until a container answers before a test (or the baseline snapshot) sees it."""

from __future__ import annotations

import shlex
import time

import pylxd

from .errors import ExecTimeout, ReadinessError
from .execution import ExecResult, exec_command
from .settings import ReadyCheck


def wait_ready(client: pylxd.Client, instance: str, check: ReadyCheck, container: str) -> float:
    """Run ``check.command`` until it exits 0; the seconds it took, or ReadinessError after the timeout."""
    start = time.monotonic()
    deadline = start + check.timeout
    last: ExecResult | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            last = exec_command(client, instance, check.command, timeout=max(remaining, 1.0), keep_logs=True)
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
        f"exited 0 ({detail}). Fix `ready` in [tool.lxdsnap.containers.{container}] or raise its timeout"
    )
